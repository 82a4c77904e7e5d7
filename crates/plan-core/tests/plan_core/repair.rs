//! `repair` on random malformed plans.

use plan_core::{Plan, PlanGraph, PlanProblem, RepairChange, Step, repair};
use proptest::prelude::*;

/// Plans as a weak model writes them: ids from a small pool (some empty, some repeated),
/// descriptions from a small pool (some blank, some repeated), dependencies on any id
/// including unknown ones and the step itself.
fn messy_plan() -> impl Strategy<Value = Plan> {
    let ids = prop::sample::select(vec!["", "a", "b", "c", "d", "e", "f", "g", "h"]);
    let descriptions = prop::sample::select(vec![
        "", " ", "search", "Search ", "compare", "write", "check", "sum up", "plot",
    ]);
    let deps = prop::collection::vec(
        prop::sample::select(vec!["a", "b", "c", "d", "e", "f", "g", "h", "ghost", ""]),
        0..4,
    );
    prop::collection::vec((ids, descriptions, deps), 0..14).prop_map(|steps| {
        Plan::new(
            "messy",
            steps
                .into_iter()
                .map(|(id, description, deps)| Step::new(id, description).depends_on(deps))
                .collect(),
        )
    })
}

proptest! {
    #[test]
    fn repaired_plans_validate_and_repair_is_idempotent(plan in messy_plan()) {
        let original = plan.steps.len();
        let (fixed, report) = repair(plan);
        let removed = report
            .changes
            .iter()
            .filter(|c| matches!(c, RepairChange::DroppedEmptyStep { .. } | RepairChange::MergedDuplicate { .. }))
            .count();
        prop_assert_eq!(fixed.steps.len() + removed, original);
        match PlanGraph::new(fixed.clone()) {
            Ok(_) => {}
            Err(e) => prop_assert_eq!(e.problems, vec![PlanProblem::Empty], "{}\n{}", report, fixed.to_json_pretty()),
        }
        let (again, second) = repair(fixed.clone());
        prop_assert!(second.is_empty(), "{}", second);
        prop_assert_eq!(again, fixed);
        // The report is plain data: it survives JSON.
        let json = serde_json::to_string(&report).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(serde_json::from_str::<plan_core::RepairReport>(&json).ok(), Some(report));
    }
}
