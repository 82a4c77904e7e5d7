//! `plan graph PLAN.json --format mermaid|dot|tree`.

use std::path::Path;
use std::process::ExitCode;

use plan_core::{Plan, PlanGraph, RunId, RunState, render_dot, render_mermaid, render_text};
use plan_exec::RunStore;

use crate::cli::{GraphArgs, GraphFormat};
use crate::config::{Overrides, Settings, read_input};
use crate::exit::Usage;
use crate::render;
use crate::session;

/// Runs the command.
pub async fn run(args: GraphArgs) -> anyhow::Result<ExitCode> {
    let (plan, state) = match (&args.plan, &args.run) {
        (Some(path), _) => (load_plan_file(path)?, None),
        (None, Some(id)) => run_plan(id, &args).await?,
        (None, None) => return Err(Usage::new("give a plan file or --run RUN_ID").into()),
    };
    let graph = render::graph(&plan).ok_or_else(|| {
        Usage::new("the plan is not valid: run `plan graph` on its file to see why")
    })?;
    let state = state.as_ref();
    let text = match args.format {
        GraphFormat::Tree => render_text(&graph, state),
        GraphFormat::Mermaid => render_mermaid(&graph, state),
        GraphFormat::Dot => render_dot(&graph, state),
    };
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}

/// The latest plan of a stored run, with its step statuses.
async fn run_plan(id: &str, args: &GraphArgs) -> anyhow::Result<(Plan, Option<RunState>)> {
    let settings = Settings::from_process(&Overrides::store(args.store.clone()))?;
    let missing = || {
        Usage::new(format!(
            "no run `{id}` in {}: list runs with `plan runs` (or pass the --store the run used)",
            settings.store.display()
        ))
    };
    let store = session::open_existing_store(&settings.store)?.ok_or_else(missing)?;
    let run = store
        .load_run(&RunId::new(id))
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the run store: {e}"))?
        .ok_or_else(missing)?;
    let plan = run
        .latest_plan()
        .map(|p| p.plan.clone())
        .ok_or_else(|| Usage::new(format!("run `{id}` has no plan yet")))?;
    let state = crate::cmd::runs::state_of(&run);
    Ok((plan, state))
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
    PlanGraph::new(plan.clone()).map_err(|errors| Usage::new(format!("{name}: {errors}")))?;
    Ok(plan)
}
