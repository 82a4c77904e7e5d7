//! Plan rendering for the terminal. Thin wrappers over plan-core's renderers.

use plan_core::Plan;

/// The plan as an indented text tree.
pub fn tree(plan: &Plan) -> String {
    let mut out = String::new();
    for step in &plan.steps {
        let deps: Vec<&str> = step.dependencies.iter().map(|d| d.as_str()).collect();
        out.push_str(&format!("○ {}: {}", step.id, step.description));
        if !deps.is_empty() {
            out.push_str(&format!(" (after {})", deps.join(", ")));
        }
        out.push('\n');
    }
    out
}
