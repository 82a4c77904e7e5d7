//! The repair pass applied when re-prompting did not give a valid plan: plan-core's
//! [`repair`](plan_core::repair). It never cuts a plan: one over the step cap stays over
//! it, and planning fails saying so.

use plan_core::{Plan, RepairReport};

/// Repairs `plan` with plan-core's repair pass. Returns the plan, plan-core's report, and
/// every change in words.
pub(crate) fn repair_plan(plan: Plan) -> (Plan, RepairReport, Vec<String>) {
    let (plan, report) = plan_core::repair(plan);
    let changes: Vec<String> = report.changes.iter().map(ToString::to_string).collect();
    (plan, report, changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use plan_core::{PlanGraph, Step};

    #[test]
    fn repairs_cycles_duplicates_unknown_dependencies_and_length() {
        let plan = Plan::new(
            "g",
            vec![
                Step::new("a", "a").depends_on(["c"]),
                Step::new("b", "b").depends_on(["a", "zz", "b"]),
                Step::new("c", "c").depends_on(["b"]),
                Step::new("a", "again"),
            ],
        );
        let (plan, report, changes) = repair_plan(plan);
        assert!(PlanGraph::new(plan.clone()).is_ok(), "{changes:?}");
        assert!(!report.is_empty());
        assert!(changes.iter().any(|c| c.contains("cycle")), "{changes:?}");
    }

    #[test]
    fn a_long_plan_is_never_cut() {
        let steps: Vec<Step> = (0..12)
            .map(|i| Step::new(format!("s{i}"), format!("do part {i}")))
            .collect();
        let (plan, _, changes) = repair_plan(Plan::new("g", steps));
        assert_eq!(plan.steps.len(), 12, "{changes:?}");
    }
}
