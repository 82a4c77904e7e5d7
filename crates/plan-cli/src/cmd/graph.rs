//! `plan graph PLAN.json --format mermaid|dot|tree`.

use std::path::Path;
use std::process::ExitCode;

use plan_core::{Plan, PlanGraph, render_dot, render_mermaid, render_text};

use crate::cli::{GraphArgs, GraphFormat};
use crate::config::read_input;
use crate::exit::Usage;
use crate::render;

/// Runs the command.
pub fn run(args: GraphArgs) -> anyhow::Result<ExitCode> {
    let plan = match (&args.plan, &args.run) {
        (Some(path), _) => load_plan_file(path)?,
        (None, Some(_run)) => {
            return Err(Usage::new("--run needs the run store, which is not wired yet").into());
        }
        (None, None) => return Err(Usage::new("give a plan file or --run RUN_ID").into()),
    };
    let graph = render::graph(&plan)
        .ok_or_else(|| Usage::new("the plan is not valid: run `plan graph` on its file to see why"))?;
    let text = match args.format {
        GraphFormat::Tree => render_text(&graph, None),
        GraphFormat::Mermaid => render_mermaid(&graph, None),
        GraphFormat::Dot => render_dot(&graph, None),
    };
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads and validates a plan file; every problem is listed in one usage error.
pub fn load_plan_file(path: &Path) -> anyhow::Result<Plan> {
    let text = read_input(path)?;
    let name = if path == Path::new("-") {
        "standard input".to_owned()
    } else {
        path.display().to_string()
    };
    let plan = Plan::from_json(&text).map_err(|e| {
        Usage::new(format!(
            "{name} is not a plan: {e}\n  a plan is {{\"goal\": \"...\", \"steps\": [{{\"id\": \"a\", \"description\": \"...\", \"dependencies\": []}}]}}"
        ))
    })?;
    PlanGraph::new(plan.clone())
        .map_err(|errors| Usage::new(format!("{name}: {errors}")))?;
    Ok(plan)
}
