//! Plan rendering for the terminal: thin wrappers over plan-core's renderers.

use plan_core::{Limits, Plan, PlanGraph, RunState, render_text};

/// A graph of `plan` for rendering only: the step cap is not enforced here.
pub fn graph(plan: &Plan) -> Option<PlanGraph> {
    PlanGraph::with_limits(plan.clone(), &Limits::with_max_steps(usize::MAX)).ok()
}

/// The plan as an indented text tree (status marks when `state` is given).
pub fn tree_with(plan: &Plan, state: Option<&RunState>) -> String {
    match graph(plan) {
        Some(g) => render_text(&g, state),
        // Only plans that failed validation get here; list their steps as written.
        None => plan
            .steps
            .iter()
            .map(|s| format!("{}: {}\n", s.id, s.description))
            .collect(),
    }
}

/// The plan as an indented text tree.
pub fn tree(plan: &Plan) -> String {
    tree_with(plan, None)
}
