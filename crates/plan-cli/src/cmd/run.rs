//! `plan run`, `plan plan`, `plan exec` and `plan resume`: the commands that run an agent.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use plan_core::{RunId, RunStatus};
use plan_exec::context::CancelToken;
use plan_exec::forecast::Forecaster;
use plan_strategies::{
    AgentFactory as _, Continuation, DEFAULT_REJECTION, GroundedRun, Planning, RunReport, Runs,
    RunsError, StrategyError, WaitFor,
};

use crate::approve::{self, Decision};
use crate::cli::{
    ApproveArgs, ExecArgs, PlanArgs, PlanFormat, RejectArgs, RerunArgs, ResumeArgs, RunArgs,
    SandboxArg, Strategy, WaitArgs,
};
use crate::cmd::graph::load_plan_file;
use crate::cmd::tools::RunTools;
use crate::config::{Overrides, Settings, StoreSpec};
use crate::exit::{self, Code, Usage};
use crate::forecast;
use crate::interrupt;
use crate::session::{self, Ui};
use crate::style::Palette;

/// `plan run GOAL`.
pub async fn run(args: RunArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_process(&Overrides {
        model: args.model.clone(),
        planning: args.planning.clone(),
        execution: args.execution.clone(),
    })?;
    let ui = Ui::start(quiet, args.execution.events.as_deref())?;
    let cancel = interrupt::install();
    let search = match (&args.research, &args.search) {
        (Some(dir), _) => Some(SearchChoice::Local(dir.clone())),
        (None, Some(spec)) => Some(SearchChoice::parse(spec)?),
        (None, None) => None,
    };
    if search.is_some() && args.tools.agents.is_some() {
        return Err(Usage::new(
            "--agents cannot be combined with --research or --search yet: research runs use their own agents (researcher, analyst, writer)",
        )
        .into());
    }
    let runtime = session::runtime(&settings, quiet);
    let mut spec = settings.spec();
    spec.record_requests = args.execution.record_requests;
    spec.needs = needs(
        search.as_ref().map(SearchChoice::name),
        &args.tools,
        &settings,
    )?;
    if args.execution.approve {
        spec.approve = plan_strategies::Approval::Plan;
    }
    let builder = session::agent(&runtime, &spec, &ui, &cancel)?;
    let driving = session::DrivingStore::open(&settings.store, "run", &cancel).await?;
    let store = driving.store.clone();
    let research = match search {
        Some(choice) => {
            let model = builder
                .layered_model()
                .ok_or_else(|| anyhow::anyhow!("the agent has no model"))?;
            Some(open_research(choice, model, &args.goal).await?)
        }
        None => None,
    };
    let tools = RunTools::open(
        &settings,
        &args.tools,
        research.as_ref().map(GroundedRun::backend),
    )
    .await?;
    // One forecaster for the live view and the run's report, so both say the same.
    let forecaster = forecast::open(&settings, store.as_ref()).await;
    ui.set_forecaster(forecaster.clone());
    let mut builder = builder.store(store).forecaster(forecaster.clone());
    if let Some(research) = research {
        // Plain steps work from the documents, unless they have tools to call.
        builder = research.wire(builder, tools.is_none());
    }
    let (agent, tools) = build_with_tools(builder, tools).await?;
    // A plan is made first when someone must approve it or its cost must be checked; a
    // goal the strategy answers with no plan (`auto`'s direct route) needs neither.
    let result = if args.execution.approve || settings.budget_usd.is_some() {
        match agent.plan_or_answer(args.goal.clone()).await {
            Ok(Planning::Answered(report)) => {
                if args.execution.approve {
                    ui.suspend(|| {
                        eprintln!(
                            "note: the goal was answered directly, with no plan: there was nothing to approve"
                        );
                    });
                }
                Ok(report)
            }
            Ok(Planning::Plan(outcome)) => {
                let budget = settings.budget_usd;
                let checked = check_plan(outcome, (&forecaster, budget), &args, &ui, &cancel);
                match checked.await? {
                    Ok(outcome) => agent.execute_planned(outcome).await,
                    Err(why) => {
                        drop(agent);
                        shutdown(tools).await;
                        ui.finish().await;
                        eprintln!("{why}");
                        return Ok(ExitCode::from(exit::RUN_FAILED));
                    }
                }
            }
            Err(e) => Err(e),
        }
    } else {
        agent.run(args.goal.clone()).await
    };
    finish_run(
        result,
        agent,
        tools,
        ui,
        &args,
        (&cancel, settings.sandbox, &driving),
    )
    .await
}

/// The plan of `plan run` made first, checked against `--budget-usd` and, with
/// `--approve`, approved (perhaps edited) by the user: the plan to run, or why it is not
/// run (its forecast is over the budget, or the user aborted).
async fn check_plan(
    mut outcome: plan_strategies::PlanOutcome,
    (forecaster, budget_usd): (&Forecaster, Option<f64>),
    args: &RunArgs,
    ui: &Ui,
    cancel: &CancelToken,
) -> anyhow::Result<Result<plan_strategies::PlanOutcome, String>> {
    if let Some(refusal) = forecast::over_budget(forecaster, budget_usd, &outcome.plan) {
        return Ok(Err(refusal));
    }
    if !args.execution.approve {
        return Ok(Ok(outcome));
    }
    match ask(ui, outcome.plan.clone(), forecaster, cancel).await? {
        Some(plan) => {
            // An edited plan keeps what planning produced (a goal tree only while the
            // plan is the one it was flattened into).
            if plan != outcome.plan {
                outcome.tree = None;
            }
            outcome.plan = plan;
            Ok(Ok(outcome))
        }
        None => Ok(Err(ABORTED.to_owned())),
    }
}

/// Ends `plan run`: releases the agent and tools, then reports `result` (the agent put
/// its forecast beside what it took).
async fn finish_run(
    result: Result<RunReport, StrategyError>,
    agent: plan_strategies::Agent,
    tools: Option<RunTools>,
    ui: Ui,
    args: &RunArgs,
    (cancel, sandbox, driving): (&CancelToken, SandboxArg, &session::DrivingStore),
) -> anyhow::Result<ExitCode> {
    drop(agent);
    shutdown(tools).await;
    ui.finish().await;
    let (result, note) = stopped(driving, result);
    conclude(
        result,
        args.execution.json,
        &args.execution.store,
        cancel,
        false,
        sandbox,
        note,
    )
}

/// `plan exec PLAN.json`.
pub async fn exec(args: ExecArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let plan = load_plan_file(&args.plan, args.max_steps)?;
    let mut overrides = Overrides {
        model: args.model.clone(),
        execution: args.execution.clone(),
        ..Overrides::default()
    };
    overrides.planning.strategy = args.strategy;
    let mut settings = Settings::from_process(&overrides)?;
    // A given plan is run, never routed: auto's execution is dag's, and the report says so.
    if settings.strategy == Strategy::Auto {
        settings.strategy = Strategy::Dag;
    }
    let ui = Ui::start(quiet, args.execution.events.as_deref())?;
    let cancel = interrupt::install();
    let runtime = session::runtime(&settings, quiet);
    let mut spec = settings.spec();
    spec.record_requests = args.execution.record_requests;
    spec.needs = needs(None, &args.tools, &settings)?;
    if args.execution.approve {
        spec.approve = plan_strategies::Approval::Plan;
    }
    let builder = session::agent(&runtime, &spec, &ui, &cancel)?;
    let driving = session::DrivingStore::open(&settings.store, "exec", &cancel).await?;
    let store = driving.store.clone();
    let tools = RunTools::open(&settings, &args.tools, None).await?;
    let forecaster = forecast::open(&settings, store.as_ref())
        .await
        .for_given_plan();
    ui.set_forecaster(forecaster.clone());
    let builder = builder.store(store).forecaster(forecaster.clone());
    let (agent, tools) = build_with_tools(builder, tools).await?;
    // Approval and the cost check see the plan as it will run: prepared as the strategy
    // prepares a given plan (the reflective strategy's critique and improvement).
    let result = if args.execution.approve || settings.budget_usd.is_some() {
        let prepared = match agent.prepare(plan).await {
            Ok(prepared) => prepared,
            Err(e) => {
                drop(agent);
                shutdown(tools).await;
                ui.finish().await;
                return Err(session::strategy_error(e));
            }
        };
        let budget = (&forecaster, settings.budget_usd);
        let checked = check_prepared(prepared, budget, &args, (&ui, &cancel));
        match checked.await {
            Ok(Ok(prepared)) => agent.execute_prepared(prepared).await,
            Ok(Err(why)) => {
                drop(agent);
                shutdown(tools).await;
                ui.finish().await;
                return match why {
                    Refused::Aborted => aborted(),
                    Refused::OverBudget(refusal) => {
                        eprintln!("{refusal}");
                        Err(Code(exit::RUN_FAILED).into())
                    }
                };
            }
            Err(e) => {
                shutdown(tools).await;
                return Err(e);
            }
        }
    } else {
        agent.execute(plan).await
    };
    drop(agent);
    shutdown(tools).await;
    ui.finish().await;
    let (result, note) = stopped(&driving, result);
    conclude(
        result,
        args.execution.json,
        &args.execution.store,
        &cancel,
        true,
        settings.sandbox,
        note,
    )
}

/// Why `plan exec` does not run the plan it prepared.
enum Refused {
    /// The user aborted at the approval.
    Aborted,
    /// Its forecast is over `--budget-usd` (the refusal, worded).
    OverBudget(String),
}

/// The prepared plan of `plan exec`, checked against `--budget-usd` and, with
/// `--approve`, approved (perhaps edited, then checked again) by the user: the plan to
/// run, or why it is not run.
async fn check_prepared(
    mut prepared: plan_strategies::PlanOutcome,
    (forecaster, budget_usd): (&Forecaster, Option<f64>),
    args: &ExecArgs,
    (ui, cancel): (&Ui, &CancelToken),
) -> anyhow::Result<Result<plan_strategies::PlanOutcome, Refused>> {
    let over = |plan: &plan_core::Plan| forecast::over_budget(forecaster, budget_usd, plan);
    if let Some(refusal) = over(&prepared.plan) {
        return Ok(Err(Refused::OverBudget(refusal)));
    }
    if args.execution.approve {
        match ask(ui, prepared.plan.clone(), forecaster, cancel).await? {
            Some(plan) => {
                if plan != prepared.plan
                    && let Some(refusal) = over(&plan)
                {
                    return Ok(Err(Refused::OverBudget(refusal)));
                }
                prepared.plan = plan;
            }
            None => return Ok(Err(Refused::Aborted)),
        }
    }
    Ok(Ok(prepared))
}

/// `plan plan GOAL`.
pub async fn plan(args: PlanArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let mut overrides = Overrides::store(args.store.clone());
    overrides.model = args.model.clone();
    overrides.planning = args.planning.clone();
    let settings = Settings::from_process(&overrides)?;
    let forecaster = if args.estimate {
        match session::open_existing_store(&settings.store).await? {
            Some(store) => Some(forecast::open(&settings, store.as_ref()).await),
            // No store yet: no history, and the forecast says it uses the defaults.
            None => Some(forecast::without_history(&settings)),
        }
    } else {
        None
    };
    let ui = Ui::start(quiet, args.events.as_deref())?;
    let cancel = interrupt::install();
    let runtime = session::runtime(&settings, quiet);
    let agent = session::agent(&runtime, &settings.spec(), &ui, &cancel)?
        .build()
        .map_err(session::strategy_error)?;
    let result = agent.plan_only(args.goal.clone()).await;
    drop(agent);
    ui.finish().await;
    if cancel.is_cancelled() {
        eprintln!("interrupted: no plan was made");
        return Err(Code(exit::INTERRUPTED).into());
    }
    let outcome = result.map_err(session::strategy_error)?;
    for change in &outcome.adjustments {
        eprintln!("note: {change}");
    }
    let text = match args.format {
        PlanFormat::Json => outcome.plan.to_json_pretty(),
        PlanFormat::Tree => match &outcome.tree {
            Some(tree) => plan_core::render_goal_tree(tree, None),
            None => crate::render::tree(&outcome.plan),
        },
        PlanFormat::Mermaid | PlanFormat::Dot => {
            let graph = crate::render::graph(&outcome.plan)
                .ok_or_else(|| anyhow::anyhow!("the planner returned an invalid plan"))?;
            if args.format == PlanFormat::Mermaid {
                plan_core::render_mermaid(&graph, None)
            } else {
                plan_core::render_dot(&graph, None)
            }
        }
    };
    println!("{}", text.trim_end());
    if let Some(forecaster) = forecaster {
        let line = forecaster.forecast(&outcome.plan).summary();
        if args.format == PlanFormat::Tree {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `plan resume RUN_ID`.
pub async fn resume(args: ResumeArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    continue_stored(args, quiet, None).await
}

/// `plan rerun RUN_ID [--plan FILE] [--from STEP]... [--model SPEC]`: a new run of the
/// stored run's goal with its spec (the model and endpoint changed where a flag says),
/// running only the steps whose content or inputs changed.
pub async fn rerun(args: RerunArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_process(&Overrides::store(args.store.clone()))?;
    let cancel = interrupt::install();
    let (_, parent) = crate::cmd::runs::load(&settings, &args.run_id).await?;
    let edited = match &args.plan {
        Some(file) => Some(load_plan_file(file, usize::MAX)?),
        None => None,
    };
    let mut spec = plan_strategies::RunSpec::from_record(&parent.record)
        .map_err(|e| Usage::new(format!("run `{}` cannot be re-run: {e}", args.run_id)))?;
    spec.overrides.clear();
    let mut changes = plan_strategies::SpecChanges::default();
    changes.model.clone_from(&args.model);
    changes.base_url.clone_from(&args.base_url);
    spec.apply(&changes, "rerun");
    spec.validate()
        .map_err(|e| Usage::new(format!("invalid setting {e}")))?;
    let ui = Ui::start(quiet, args.events.as_deref())?;
    let runtime = session::runtime(&settings, quiet);
    let builder = session::agent(&runtime, &spec, &ui, &cancel)?;
    let driving = session::DrivingStore::open(&settings.store, "rerun", &cancel).await?;
    let builder = builder.store(driving.store.clone());
    let tools = RunTools::open(&settings, &args.tools, None).await?;
    let (agent, tools) = build_with_tools(builder, tools).await?;
    let mut rerun = plan_strategies::Rerun::new();
    if let Some(plan) = edited {
        rerun = rerun.with_plan(plan);
    }
    for step in &args.from {
        rerun = rerun.from_step(step.as_str());
    }
    let result = agent.rerun(&parent, rerun).await;
    drop(agent);
    shutdown(tools).await;
    ui.finish().await;
    let (result, note) = stopped(&driving, result);
    conclude(
        result,
        args.json,
        &args.store,
        &cancel,
        true,
        settings.sandbox,
        note,
    )
}

/// `plan approve RUN_ID [--plan FILE]`: runs the plan of a run awaiting approval (or the
/// edited one in FILE, checked first) to the end.
pub async fn approve(args: ApproveArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let edited = match &args.plan {
        Some(file) => Some(load_plan_file(file, usize::MAX)?),
        None => None,
    };
    continue_stored(args.run, quiet, Some(edited)).await
}

/// `plan resume`, or with `approval` `plan approve`: reopens a stored run with the model,
/// endpoint and strategy it recorded (unless overridden) and runs it to the end.
async fn continue_stored(
    args: ResumeArgs,
    quiet: bool,
    approval: Option<Option<plan_core::Plan>>,
) -> anyhow::Result<ExitCode> {
    let mut overrides = Overrides::store(args.store.clone());
    overrides.execution.concurrency = args.concurrency;
    overrides.execution.sandbox = args.sandbox;
    let base = Settings::from_process(&overrides)?;
    let cancel = interrupt::install();
    let command = if approval.is_some() {
        "approve"
    } else {
        "resume"
    };
    if args.tools.tools.iter().any(|t| t == "search_docs") {
        return Err(Usage::new(format!(
            "--tools search_docs needs a search backend, and plan {command} cannot attach one (--search and --research are not stored with a run): give the other tools only"
        ))
        .into());
    }
    let driving = session::DrivingStore::open_existing(&base.store, command, &cancel)
        .await?
        .ok_or_else(|| no_run(&args.run_id, &base))?;
    let store = driving.store.clone();
    let id = RunId::new(args.run_id.clone());
    let how = if approval.is_some() {
        Continuation::Approve
    } else {
        Continuation::Resume
    };
    let runs = Runs::new(store.clone());
    let continuable = match runs.check_continuable(&id, how).await {
        Ok(continuable) => continuable,
        Err(RunsError::AlreadySucceeded(_)) => {
            eprintln!("run {id} already succeeded; nothing to resume");
            let report = runs
                .report(&id)
                .await
                .map_err(|e| runs_error(e, &args.run_id, &base))?;
            return conclude(
                Ok(report),
                args.json,
                &args.store,
                &cancel,
                false,
                SandboxArg::Auto,
                None,
            );
        }
        Err(e) => return Err(not_continuable(e, &args.run_id, &base)),
    };
    // On a shared store, a run some live process holds is left to it.
    driving.claim(&id).await?;
    // The run continues with the spec it recorded (model, endpoint, strategy, limits,
    // budget), changed only where a flag says so (and the change recorded); keys come
    // from the environment again.
    let used = continuable.used();
    let mut spec = continuable.spec;
    let mut changes = plan_strategies::SpecChanges::default();
    changes.model.clone_from(&args.model);
    changes.base_url.clone_from(&args.base_url);
    changes.concurrency = args.concurrency;
    changes.sandbox = args.sandbox.map(SandboxArg::choice);
    spec.apply(&changes, command);
    spec.validate()
        .map_err(|e| Usage::new(format!("invalid setting {e}")))?;
    let settings = base;
    let runtime = session::runtime(&settings, quiet);
    let ui = Ui::start(quiet, args.events.as_deref())?;
    // The budget left is the run's own less what it used, wherever it ran.
    let builder = runtime
        .continuing(&spec, used)
        .map_err(|e| session::runtime_error(e, &spec.model))?
        .event_sink(ui.sink())
        .cancel_token(cancel.clone())
        .store(store);
    let tools = RunTools::open(&settings, &args.tools, None).await?;
    let (agent, tools) = build_with_tools(builder, tools).await?;
    let result = match approval {
        None => agent.resume(&id).await,
        Some(edited) => agent.approve(&id, edited).await,
    };
    drop(agent);
    shutdown(tools).await;
    ui.finish().await;
    let (result, note) = stopped(&driving, result);
    conclude(
        result,
        args.json,
        &args.store,
        &cancel,
        false,
        SandboxArg::from_choice(spec.sandbox),
        note,
    )
}

/// Why a run that did not succeed was stopped by its shared store (its lease lost, a
/// cancellation asked through the API, or the database unreachable for longer than the
/// store waits: then the run ends here as interrupted, with the report this process
/// has), to say before the usual ending.
fn stopped(
    driving: &session::DrivingStore,
    result: Result<RunReport, StrategyError>,
) -> (Result<RunReport, StrategyError>, Option<String>) {
    let note = match &result {
        Ok(report) if report.status == RunStatus::Succeeded => None,
        Ok(report) => driving.stopped_by_store(report.run_id.as_str()),
        Err(e) => match driving.outage(e) {
            Some((report, why)) => return (Ok(report), Some(why)),
            None => None,
        },
    };
    (result, note)
}

/// Builds the agent with the run's tools wired in; when it cannot be built, the tools
/// (MCP servers) are shut down before the error is returned.
async fn build_with_tools(
    builder: plan_strategies::AgentBuilder,
    tools: Option<RunTools>,
) -> anyhow::Result<(plan_strategies::Agent, Option<RunTools>)> {
    let builder = match &tools {
        Some(t) => t.wire(builder),
        None => builder,
    };
    match builder.build().map_err(session::strategy_error) {
        Ok(agent) => Ok((agent, tools)),
        Err(e) => {
            shutdown(tools).await;
            Err(e)
        }
    }
}

/// What a run uses that only this machine has (documents, tools, MCP servers, agents),
/// which a fleet worker taking the run over would lack: recorded in its spec, so workers
/// leave it.
fn needs(
    research: Option<&str>,
    tools: &crate::cli::ToolArgs,
    settings: &Settings,
) -> anyhow::Result<plan_strategies::RunNeeds> {
    let mut needs = plan_strategies::RunNeeds::default();
    needs.research = research.map(str::to_owned);
    needs.tools = tools.tools.iter().map(|t| t.trim().to_owned()).collect();
    needs.agents = tools.agents.is_some();
    if tools.any() || !settings.mcp.is_empty() {
        needs.mcp = settings.mcp.iter().map(|m| m.name.clone()).collect();
        for spec in &tools.mcp {
            let server = plan_mcp::McpServerConfig::parse(spec)
                .map_err(|e| Usage::new(format!("--mcp: {e}")))?;
            needs.mcp.push(server.name);
        }
    }
    Ok(needs)
}

/// `plan wait RUN_ID`: blocks until the run ends (a run awaiting approval has not), then
/// prints what `plan run` prints for it, with the same exit code; 124 after `--timeout`.
pub async fn wait(args: WaitArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_process(&Overrides::store(args.store.clone()))?;
    let store = session::open_existing_store(&settings.store)
        .await?
        .ok_or_else(|| no_run(&args.run_id, &settings))?;
    let runs = Runs::new(store);
    let id = RunId::new(args.run_id.clone());
    let cancel = interrupt::install();
    let timeout = args.timeout.map(std::time::Duration::from_secs);
    let waited = tokio::select! {
        r = runs.wait(&id, WaitFor::End, timeout) => r,
        () = cancel.cancelled() => return Err(Code(exit::INTERRUPTED).into()),
    };
    let run = match waited {
        Ok(run) => run,
        Err(RunsError::StillWaiting { status, waited, .. }) => {
            eprintln!(
                "run {id} is still {status} after {} s; wait again with `plan wait {id}`",
                waited.as_secs()
            );
            return Ok(ExitCode::from(exit::TIMED_OUT));
        }
        Err(e) => return Err(runs_error(e, &args.run_id, &settings)),
    };
    let report = RunReport::from_stored(&run);
    conclude(
        Ok(report),
        args.json,
        &args.store,
        &cancel,
        false,
        SandboxArg::Auto,
        None,
    )
}

/// `plan reject RUN_ID`: ends a run awaiting approval as `rejected` (exit 1); nothing runs.
pub async fn reject(args: RejectArgs) -> anyhow::Result<ExitCode> {
    let base = Settings::from_process(&Overrides::store(args.store.clone()))?;
    let store = session::open_existing_store(&base.store)
        .await?
        .ok_or_else(|| no_run(&args.run_id, &base))?;
    let id = RunId::new(args.run_id.clone());
    let report = Runs::new(store)
        .reject(&id, args.reason)
        .await
        .map_err(|e| match e {
            RunsError::Store(e) => anyhow::anyhow!("cannot record the rejection: {e}"),
            e => runs_error(e, &args.run_id, &base),
        })?;
    if args.json {
        println!("{}", report.to_json_pretty());
    } else {
        let reason = report.failure.as_deref().unwrap_or(DEFAULT_REJECTION);
        eprintln!("run {id} rejected: {reason}");
    }
    Ok(ExitCode::from(exit::RUN_FAILED))
}

/// Why the stored run `id` cannot be resumed or approved, in the CLI's words (its
/// commands named).
fn not_continuable(e: RunsError, id: &str, settings: &Settings) -> anyhow::Error {
    match e {
        RunsError::AwaitsApproval(id) => Usage::new(format!(
            "run {id} awaits approval of its plan: run it with `plan approve {id}` (or `plan approve {id} --plan FILE` for an edited plan), or end it with `plan reject {id}`"
        ))
        .into(),
        RunsError::NotAwaitingApproval { run, status } => Usage::new(format!(
            "run {run} is {status}, not awaiting approval: only a run that stopped for approval can be approved"
        ))
        .into(),
        RunsError::Spec { run, source } => {
            Usage::new(format!("cannot continue run {run}: {source}")).into()
        }
        e => runs_error(e, id, settings),
    }
}

/// The error of an operation on the stored run `id`: an unknown run says how to find
/// one, a run in the wrong status is a usage error, a store failure is just that.
fn runs_error(e: RunsError, id: &str, settings: &Settings) -> anyhow::Error {
    match e {
        RunsError::NotFound(_) => no_run(id, settings),
        RunsError::Store(e) => anyhow::anyhow!("cannot read the run store: {e}"),
        e => Usage::new(e.to_string()).into(),
    }
}

fn no_run(id: &str, settings: &Settings) -> anyhow::Error {
    Usage::new(format!(
        "no run `{id}` in {}: list runs with `plan runs` (or pass the --store the run used)",
        settings.store
    ))
    .into()
}

/// What `plan run` and `plan exec` say when the user aborts at the approval question.
const ABORTED: &str = "aborted: the plan was not run";

fn aborted() -> anyhow::Result<ExitCode> {
    eprintln!("{ABORTED}");
    Ok(ExitCode::from(exit::RUN_FAILED))
}

/// The approval question, off the async threads (it reads stdin and may run an editor).
async fn ask(
    ui: &Ui,
    plan: plan_core::Plan,
    forecaster: &Forecaster,
    cancel: &CancelToken,
) -> anyhow::Result<Option<plan_core::Plan>> {
    let decision = ui.suspend(|| {
        tokio::task::block_in_place(|| {
            let stdin = std::io::stdin();
            let mut input = stdin.lock();
            approve::ask_with(plan, Some(forecaster), &mut input)
        })
    })?;
    if cancel.is_cancelled() {
        return Err(Code(exit::INTERRUPTED).into());
    }
    Ok(match decision {
        Decision::Run(plan) => Some(plan),
        Decision::Abort => None,
    })
}

/// Prints the outcome of a run and chooses the exit code.
fn conclude(
    result: Result<RunReport, StrategyError>,
    json: bool,
    store_flag: &Option<PathBuf>,
    cancel: &CancelToken,
    plan_from_file: bool,
    sandbox: SandboxArg,
    stopped_by_store: Option<String>,
) -> anyhow::Result<ExitCode> {
    if let Some(why) = stopped_by_store {
        eprintln!("note: {why}");
    }
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            if cancel.is_cancelled() {
                eprintln!("interrupted before the run started: {e}");
                return Err(Code(exit::INTERRUPTED).into());
            }
            if plan_from_file && let StrategyError::Plan(problems) = &e {
                return Err(Usage::new(format!("the plan file is not valid: {problems}")).into());
            }
            return Err(session::strategy_error(e));
        }
    };
    if json {
        println!("{}", report.to_json_pretty());
    }
    let p = Palette::stderr();
    let store = store_flag
        .as_ref()
        .map(|s| format!(" --store {}", StoreSpec::from_path(s.clone())))
        .unwrap_or_default();
    let id = &report.run_id;
    match report.status {
        RunStatus::Succeeded => {
            if !json {
                let answer = report.answer.as_deref().unwrap_or("");
                println!("{}", answer.trim_end());
            }
            eprintln!(
                "{}run {id} succeeded{:#}: {} steps, {} model calls, {} tokens, {}",
                p.ok,
                p.ok,
                report.steps.len(),
                report.usage.llm_calls,
                report.usage.prompt_tokens + report.usage.completion_tokens,
                crate::display::seconds(report.duration_ms)
            );
            Ok(ExitCode::SUCCESS)
        }
        RunStatus::Cancelled => {
            eprintln!(
                "{}interrupted{:#}: run {id} was saved; continue it with:\n  plan resume {id}{store}",
                p.warn, p.warn
            );
            Ok(ExitCode::from(exit::INTERRUPTED))
        }
        _ => {
            eprintln!("{}run {id} failed{:#}", p.error, p.error);
            for step in report
                .steps
                .iter()
                .filter(|s| s.status == plan_core::StepStatus::Failed)
            {
                eprintln!(
                    "  {}{}{:#}: {}",
                    p.bold,
                    step.id,
                    p.bold,
                    step.error.as_deref().unwrap_or("failed")
                );
            }
            if let Some(why) = &report.failure {
                eprintln!("  {why}");
            }
            if let Some(hint) = sandbox_hint(&report, sandbox) {
                eprintln!("  hint: {hint}");
            }
            eprintln!(
                "inspect it with `plan show {id}{store}`, or continue it with `plan resume {id}{store}`"
            );
            Ok(ExitCode::from(exit::RUN_FAILED))
        }
    }
}

/// The `--sandbox` advice for a run whose code steps failed because no sandbox could run
/// them (the library's messages name backends, not flags).
fn sandbox_hint(report: &RunReport, sandbox: SandboxArg) -> Option<&'static str> {
    let plan = report.plan.as_ref()?;
    let code_failures = report
        .steps
        .iter()
        .filter(|s| s.status == plan_core::StepStatus::Failed)
        .filter(|s| {
            plan.steps
                .iter()
                .any(|p| p.id == s.id && p.kind == plan_core::StepKind::Code)
        });
    let mut unavailable = false;
    for step in code_failures {
        if sandbox == SandboxArg::None {
            return Some(
                "code execution is off; choose --sandbox auto (needs bubblewrap) or --sandbox process (unisolated)",
            );
        }
        unavailable |= step
            .error
            .as_deref()
            .is_some_and(|e| e.contains("sandbox backend `") && e.contains("is unavailable"));
    }
    unavailable.then_some("choose another backend with --sandbox (process runs unisolated)")
}

/// Ends a run's MCP servers, if it had any.
async fn shutdown(tools: Option<RunTools>) {
    if let Some(tools) = tools {
        tools.shutdown().await;
    }
}

/// The search backend of `--search` (or `--research DIR`).
enum SearchChoice {
    /// Brave web search (`BRAVE_API_KEY`).
    Brave,
    /// A folder of documents, indexed locally.
    Local(PathBuf),
}

impl SearchChoice {
    /// The backend's name, as a run's spec records it.
    fn name(&self) -> &'static str {
        match self {
            SearchChoice::Brave => "brave",
            SearchChoice::Local(_) => "local",
        }
    }

    fn parse(spec: &str) -> anyhow::Result<SearchChoice> {
        let spec = spec.trim();
        if spec == "brave" {
            return Ok(SearchChoice::Brave);
        }
        match spec.strip_prefix("local:") {
            Some(dir) if !dir.trim().is_empty() => Ok(SearchChoice::Local(PathBuf::from(dir))),
            _ => Err(Usage::new(format!(
                "--search {spec}: unknown search backend; use `brave` (web search, BRAVE_API_KEY) or `local:DIR` (a folder of documents)"
            ))
            .into()),
        }
    }
}

/// The most characters of each passage the research prompts show.
const SNIPPET_CHARS: usize = 320;

/// Opens the search backend of `--search` / `--research` (a folder's index, cached under
/// the user cache directory, or Brave web search) with the research agent over it, and
/// retrieves passages for the question before anything is planned.
async fn open_research(
    choice: SearchChoice,
    provider: Arc<dyn plan_llm::Provider>,
    question: &str,
) -> anyhow::Result<GroundedRun> {
    use plan_strategies::{
        RESEARCH_PLANNER_GUIDANCE, ResearchAgent, ResearchConfig, ResearchSetup,
    };
    use plan_tools::search::LocalIndexConfig;

    // `provider` is the agent's model with its layers (retry, budget meter, span).
    match choice {
        SearchChoice::Local(dir) => {
            if !dir.is_dir() {
                return Err(Usage::new(format!(
                    "--research {}: not a folder; give the folder of documents to answer from",
                    dir.display()
                ))
                .into());
            }
            let mut config = LocalIndexConfig::new(&dir).with_snippet_chars(SNIPPET_CHARS);
            if let Some(cache) = dirs::cache_dir() {
                config = config.with_cache_dir(cache.join("plan").join("index"));
            }
            let setup = ResearchSetup::open(config, provider, ResearchConfig::default())
                .await
                .map_err(|e| anyhow::anyhow!("cannot index {}: {e}", dir.display()))?;
            setup
                .ground(question)
                .await
                .map_err(|e| anyhow::anyhow!("cannot search {}: {e}", dir.display()))
        }
        SearchChoice::Brave => {
            let brave = plan_tools::search::BraveSearch::from_env()
                .map_err(|e| Usage::new(format!("--search brave: {e}")))?;
            let backend: Arc<dyn plan_tools::search::SearchBackend> = Arc::new(brave);
            let agent = ResearchAgent::new(backend.clone(), provider);
            let about = format!("{RESEARCH_PLANNER_GUIDANCE} The search steps search the web.");
            GroundedRun::retrieve(agent, backend, &about, question)
                .await
                .map_err(|e| anyhow::anyhow!("cannot search the web: {e}"))
        }
    }
}
