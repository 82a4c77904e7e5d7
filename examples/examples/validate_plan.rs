//! Load a plan from JSON, validate it and print its topological order.

fn main() -> anyhow::Result<()> {
    let plan = plan_core::Plan::from_json(
        r#"{"goal": "Compare the top 3 Python web frameworks", "steps": [
            {"id": "search", "description": "Find the most used frameworks", "dependencies": []},
            {"id": "compare", "description": "Compare them", "dependencies": ["search"]}
        ]}"#,
    )?;
    let graph = plan_core::PlanGraph::new(plan)?;
    for i in graph.topological_order() {
        println!("{}", graph.step(i).id);
    }
    Ok(())
}
