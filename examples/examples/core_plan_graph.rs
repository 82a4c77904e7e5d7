//! The plan graph without any model: repair a sloppy plan, validate it, query the graph,
//! schedule it as a parallel runner would (with simulated step durations), and render it.
//! Then break a goal into sub-goals and flatten it into a plan.
//!
//! Run with `cargo run -p plan-examples --example core_plan_graph`.

use plan_core::{
    GoalNode, GoalTree, Plan, PlanGraph, RunState, Scheduler, Step, StepKind, render_goal_tree,
    render_mermaid, render_text, repair,
};

/// A plan as a small model might write it: a self-dependency, a dependency on a step that
/// does not exist, a repeated step and a cycle.
const SLOPPY_PLAN: &str = r#"{
  "goal": "Recommend a Rust web framework for a small team",
  "steps": [
    {"id": "search", "description": "Find the most used Rust web frameworks", "kind": "search",
     "dependencies": ["search"]},
    {"id": "bench", "description": "Collect benchmark results for each framework",
     "dependencies": ["search", "report"]},
    {"id": "docs", "description": "Rate the documentation of each framework",
     "dependencies": ["search", "survey"]},
    {"id": "search-again", "description": "find the most used  Rust web frameworks", "kind": "search"},
    {"id": "compare", "description": "Compare speed, documentation and ecosystem", "kind": "analyze",
     "dependencies": ["bench", "docs", "search-again"]},
    {"id": "report", "description": "Write the recommendation", "kind": "synthesize",
     "dependencies": ["compare"]}
  ]
}"#;

/// Simulated seconds each step takes, by id.
fn seconds(id: &str) -> u64 {
    match id {
        "search" => 3,
        "bench" => 8,
        "docs" => 4,
        "compare" => 5,
        _ => 2,
    }
}

fn main() -> anyhow::Result<()> {
    let plan = Plan::from_json(SLOPPY_PLAN)?;
    if let Err(errors) = PlanGraph::new(plan.clone()) {
        println!("{errors}\n");
    }
    let (plan, report) = repair(plan);
    println!("{report}\n");
    let graph = PlanGraph::new(plan)?;

    let name = |i: usize| graph.step(i).id.as_str();
    for (l, level) in graph.levels().iter().enumerate() {
        let ids: Vec<&str> = level.iter().map(|&i| name(i)).collect();
        println!("level {l}: {}", ids.join(", "));
    }
    let path = graph.critical_path_weighted(|i| seconds(name(i)) as f64);
    let ids: Vec<&str> = path.steps.iter().map(|&i| name(i)).collect();
    println!(
        "critical path: {} ({} s with unlimited parallelism)\n",
        ids.join(" -> "),
        path.length
    );

    // A parallel runner's loop on a simulated clock: start whatever is ready, then finish
    // the step that ends first. The scheduler never rescans the plan.
    let mut scheduler = Scheduler::from_graph(&graph);
    let mut state = RunState::new(graph.plan());
    let mut running: Vec<(u64, usize)> = Vec::new(); // (finish time, step)
    let mut clock = 0;
    while !scheduler.is_finished() {
        for i in scheduler.take_ready() {
            state.start(&graph.step(i).id)?;
            println!("t={clock:>2}s start  {}", name(i));
            running.push((clock + seconds(name(i)), i));
        }
        running.sort_unstable_by(|a, b| b.cmp(a));
        let Some((end, i)) = running.pop() else {
            anyhow::bail!("nothing is running and nothing is ready");
        };
        clock = end;
        state.complete(&graph.step(i).id, format!("output of {}", name(i)))?;
        scheduler.complete(i);
        println!("t={clock:>2}s done   {}", name(i));
    }
    println!("\nfinished after {clock} s\n");

    print!("{}", render_text(&graph, Some(&state)));
    println!("\n{}", render_mermaid(&graph, None));

    // The same kind of work as a goal tree, flattened into a plan.
    let tree = GoalTree::new(
        "Recommend a Rust web framework for a small team",
        vec![
            GoalNode::sub_goal(
                "research",
                "Gather the facts",
                vec![
                    GoalNode::leaf(
                        Step::new("search", "Find the most used frameworks")
                            .with_kind(StepKind::Search),
                    ),
                    GoalNode::leaf(Step::new("bench", "Collect benchmarks")).depends_on(["search"]),
                ],
            ),
            GoalNode::leaf(Step::new("report", "Write the recommendation"))
                .depends_on(["research"]),
        ],
    );
    print!("{}", render_goal_tree(&tree, None));
    let flat = tree.flatten()?;
    for (i, step) in flat.plan.steps.iter().enumerate() {
        let deps: Vec<&str> = step.dependencies.iter().map(|d| d.as_str()).collect();
        println!(
            "{:<16} under {:?}, after [{}]",
            step.id.as_str(),
            flat.path(i).iter().map(|p| p.as_str()).collect::<Vec<_>>(),
            deps.join(", ")
        );
    }
    Ok(())
}
