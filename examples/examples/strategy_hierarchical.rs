//! Hierarchical planning: the goal is split into sub-goals, recursively, until the model
//! says a goal is atomic or the depth limit is reached; the leaves run as a DAG and their
//! results roll up to their sub-goals.
//!
//!     cargo run -p plan-examples --example strategy_hierarchical

use plan_llm::{Purpose, Reply, Request, ScriptedModel};
use plan_strategies::{Agent, GoalResult, ReportExt, StrategyKind};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let split = |parts: &[(&str, &str, &[&str])]| {
        let subgoals: Vec<_> = parts
            .iter()
            .map(|(id, goal, deps)| json!({"id": id, "goal": goal, "dependencies": deps}))
            .collect();
        Reply::json(json!({"atomic": false, "subgoals": subgoals}))
    };
    let atomic = Reply::json(json!({"atomic": true, "subgoals": []}));
    let model = ScriptedModel::new()
        .when_purpose(
            Purpose::Synthesize,
            Reply::text("The blog platform is planned and built."),
        )
        .when(
            decomposing("Create a blog platform"),
            split(&[
                ("backend", "Set up the backend", &[]),
                ("frontend", "Build the frontend", &["backend"]),
                ("deploy", "Deploy it", &["frontend"]),
            ]),
        )
        .when(
            decomposing("Set up the backend"),
            split(&[
                ("schema", "Create the database schema", &[]),
                ("auth", "Implement user auth", &["schema"]),
                ("posts", "Build the post API", &["schema"]),
            ]),
        )
        .when(
            decomposing("Build the frontend"),
            split(&[
                ("layout", "Create layout components", &[]),
                ("editor", "Build the post editor", &["layout"]),
            ]),
        )
        // Every other goal is atomic.
        .when_purpose(Purpose::Decompose, atomic)
        .otherwise(Reply::text("done"));

    let agent = Agent::builder()
        .provider(model)
        .strategy(StrategyKind::Hierarchical)
        .max_depth(3)
        .build()?;
    let report = agent.run("Create a blog platform").await?;

    if let Some(tree) = &report.tree() {
        print_tree(tree, 0);
    }
    println!("\nleaf steps run as a DAG:");
    for step in &report.plan.as_ref().expect("the run made a plan").steps {
        let deps: Vec<&str> = step.dependencies.iter().map(|d| d.as_str()).collect();
        println!("  {:<16} after {:?}", step.id, deps);
    }
    println!("\n{}", report.answer.unwrap_or_default());
    Ok(())
}

/// Whether a request asks to decompose `goal` (the goal ends the request's prompt).
fn decomposing(goal: &'static str) -> impl Fn(&Request) -> bool + Send + Sync {
    move |r: &Request| {
        r.purpose == Some(Purpose::Decompose)
            && r.messages
                .last()
                .is_some_and(|m| m.content.trim_end().ends_with(goal))
    }
}

fn print_tree(node: &GoalResult, depth: usize) {
    println!("{}{} [{}]", "  ".repeat(depth), node.goal, node.status);
    for child in &node.children {
        print_tree(child, depth + 1);
    }
}
