//! The repair pass applied when re-prompting did not give a valid plan: plan-core's
//! [`repair`](plan_core::repair), then the step cap.

use std::collections::HashSet;

use plan_core::{Plan, RepairReport, StepId};

/// Repairs `plan` with plan-core's repair pass and cuts it to `max_steps` steps. Returns
/// the plan, plan-core's report, and every change in words.
pub(crate) fn repair_plan(plan: Plan, max_steps: usize) -> (Plan, RepairReport, Vec<String>) {
    let (mut plan, report) = plan_core::repair(plan);
    let mut changes: Vec<String> = report.changes.iter().map(ToString::to_string).collect();
    if plan.steps.len() > max_steps {
        changes.push(format!(
            "dropped the last {} steps to stay within {max_steps}",
            plan.steps.len() - max_steps
        ));
        plan.steps.truncate(max_steps);
        let ids: HashSet<StepId> = plan.steps.iter().map(|s| s.id.clone()).collect();
        for s in &mut plan.steps {
            s.dependencies.retain(|d| ids.contains(d));
        }
    }
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
        let (plan, report, changes) = repair_plan(plan, 3);
        assert!(PlanGraph::new(plan.clone()).is_ok(), "{changes:?}");
        assert_eq!(plan.steps.len(), 3);
        assert!(!report.is_empty());
        assert!(changes.iter().any(|c| c.contains("cycle")), "{changes:?}");
        assert!(
            changes.iter().any(|c| c.contains("within 3")),
            "{changes:?}"
        );
    }
}
