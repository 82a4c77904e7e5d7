//! `plan submit` and `plan worker`: runs queued in a shared PostgreSQL store, and the
//! workers (plan-worker's `Worker`) that claim and run them.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use plan_exec::{CancelToken, RunRecord, SessionBuilder};
use plan_postgres::PostgresStore;
use plan_worker::{Worker, WorkerConfig};

use crate::cli::{Strategy, SubmitArgs, WorkerArgs};
use crate::config::{Overrides, Settings, StoreSpec};
use crate::exit::Usage;
use crate::session;

/// The fleet's store: only PostgreSQL can be shared by workers on several machines.
async fn fleet_store(settings: &Settings, command: &str) -> anyhow::Result<PostgresStore> {
    match &settings.store {
        StoreSpec::Postgres(url) => session::connect_postgres(url).await,
        StoreSpec::Sqlite(path) => Err(Usage::new(format!(
            "plan {command} needs a fleet store, and {} is a SQLite file: a fleet needs a postgres:// store shared by its workers (--store postgres://USER@HOST:PORT/DB or PLAN_STORE); to run on this machine alone, use `plan run`",
            path.display()
        ))
        .into()),
    }
}

/// `plan submit GOAL`: records the run as `queued` with its strategy, model spec, endpoint
/// and settings (never a key) and prints its id, and only that, on stdout.
pub async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let mut overrides = Overrides::store(args.store.clone());
    overrides.model = args.model.clone();
    overrides.planning = args.planning.clone();
    overrides.execution.concurrency = args.concurrency;
    overrides.execution.max_replans = args.max_replans;
    let settings = Settings::from_process(&overrides)?;
    if settings.budget_usd.is_some() {
        return Err(Usage::new(
            "--budget-usd is not supported by plan submit yet: the worker that runs the plan would have to check it; use `plan run --budget-usd` instead",
        )
        .into());
    }
    if args.goal.trim().is_empty() {
        return Err(Usage::new("the goal is empty: say what the run should achieve").into());
    }
    let store = fleet_store(&settings, "submit").await?;
    let record = queued_record(&settings, &args.goal, args.approve.as_deref());
    let id = SessionBuilder::new()
        .store(Arc::new(store))
        .enqueue(record)
        .await
        .map_err(|e| anyhow::anyhow!("cannot queue the run: {e}"))?;
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

/// The record of a run queued for the fleet: its strategy, model spec, endpoint and
/// settings (never a key), and the approval it asks for (`plan`, `replans`).
pub fn queued_record(settings: &Settings, goal: &str, approve: Option<&str>) -> RunRecord {
    let mut record = RunRecord::new(goal)
        .with_strategy(settings.strategy.name())
        .with_model(settings.model.clone())
        .with_options(serde_json::json!({
            "concurrency": settings.concurrency,
            "max_replans": settings.max_replans,
            "max_depth": settings.max_depth,
            "max_steps": settings.max_steps,
            "approve": approve,
        }));
    if let Some(url) = &settings.base_url {
        record = record.with_base_url(url);
    }
    record
}

/// `plan worker`: claims runs until SIGTERM or Ctrl-C, then stops claiming, lets the runs
/// in hand finish (briefly) and gives up the leases of the rest.
pub async fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let base = Settings::from_process(&Overrides::store(args.store.clone()))?;
    let store = fleet_store(&base, "worker").await?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| session::process_name("plan-worker"));
    let mut config = WorkerConfig::new(name).with_concurrency(args.concurrency.unwrap_or(4));
    if let Some(secs) = args.lease_secs {
        config = config.with_lease(Duration::from_secs(secs));
    }
    let factory = Arc::new(move |record: &RunRecord| agent_for(&base, record));
    let stop = stop_on_signals();
    Worker::new(store, config, factory)
        .run(stop)
        .await
        .map_err(|e| anyhow::anyhow!("plan worker: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

/// The agent for a claimed run: this machine's settings and keys, with the model spec,
/// endpoint, strategy and options the run recorded.
fn agent_for(base: &Settings, record: &RunRecord) -> Result<plan_strategies::AgentBuilder, String> {
    if let Some(needs) = record.options.get("local_only").and_then(|v| v.as_str()) {
        return Err(format!(
            "run {id} was started by `plan run` with {needs}, which a worker does not have: continue it where it started, with `plan resume {id}` and the same flags",
            id = record.id
        ));
    }
    let mut settings = base.clone();
    if let Some(model) = &record.model {
        settings.model.clone_from(model);
    }
    settings.base_url.clone_from(&record.base_url);
    if let Some(s) = record.strategy.as_deref().and_then(Strategy::from_name) {
        settings.strategy = s;
    }
    let option = |key: &str| record.options.get(key).and_then(serde_json::Value::as_u64);
    if let Some(n) = option("concurrency") {
        settings.concurrency = usize::try_from(n).unwrap_or(1).max(1);
    }
    if let Some(n) = option("max_replans") {
        settings.max_replans = u32::try_from(n).unwrap_or(u32::MAX);
    }
    if let Some(n) = option("max_depth") {
        settings.max_depth = u32::try_from(n).unwrap_or(u32::MAX);
    }
    if let Some(n) = option("max_steps") {
        settings.max_steps = usize::try_from(n).ok();
    }
    let provider = session::provider(&settings, true)
        .map_err(|e| format!("cannot use the model `{}` here: {e}", settings.model))?;
    session::headless_agent(&settings, provider).map_err(|e| e.to_string())
}

/// A token cancelled by SIGTERM or Ctrl-C.
fn stop_on_signals() -> CancelToken {
    let stop = CancelToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let terminated = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = terminated => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("stopping: no new claims; finishing or giving up the runs in hand");
        token.cancel();
    });
    stop
}
