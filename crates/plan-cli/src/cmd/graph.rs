//! `plan graph PLAN.json --format mermaid|dot|tree`.

use std::path::Path;
use std::process::ExitCode;

use plan_core::{
    Limits, Plan, PlanGraph, RunId, RunState, render_dot, render_mermaid, render_text,
};
use plan_exec::store::RunStore;

use crate::cli::{GraphArgs, GraphFormat};
use crate::config::{Overrides, Settings, read_input};
use crate::exit::Usage;
use crate::render;
use crate::session;

/// Runs the command.
pub async fn run(args: GraphArgs) -> anyhow::Result<ExitCode> {
    let (graph, state) = match (&args.plan, &args.run) {
        (Some(path), _) => (load_plan_graph(path, args.max_steps)?, None),
        (None, Some(id)) => {
            let (plan, state) = run_plan(id, &args).await?;
            let graph = render::graph(&plan)
                .ok_or_else(|| Usage::new("the run's plan is not valid: it cannot be drawn"))?;
            (graph, state)
        }
        (None, None) => return Err(Usage::new("give a plan file or --run RUN_ID").into()),
    };
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
            settings.store
        ))
    };
    let store = session::open_existing_store(&settings.store)
        .await?
        .ok_or_else(missing)?;
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

/// Reads and validates a plan file of at most `max_steps` steps; every problem is listed
/// in one usage error.
pub fn load_plan_file(path: &Path, max_steps: usize) -> anyhow::Result<Plan> {
    Ok(load_plan_graph(path, max_steps)?.plan().clone())
}

/// Reads and validates a plan file of at most `max_steps` steps, as a graph.
pub fn load_plan_graph(path: &Path, max_steps: usize) -> anyhow::Result<PlanGraph> {
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
    let limits = Limits::with_max_steps(max_steps);
    let graph = PlanGraph::with_limits(plan, &limits).map_err(|errors| {
        let over = errors
            .problems
            .iter()
            .any(|p| matches!(p, plan_core::PlanProblem::TooManySteps { .. }));
        let hint = if over {
            format!("\n  hint: raise --max-steps (now {max_steps})")
        } else {
            String::new()
        };
        Usage::new(format!("{name}: {errors}{hint}"))
    })?;
    Ok(graph)
}
