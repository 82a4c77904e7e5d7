//! `plan submit` and `plan worker`: runs queued in a shared PostgreSQL store, and the
//! workers (plan-worker's `Worker`) that claim and run them.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use plan_exec::context::CancelToken;
use plan_exec::session::SessionBuilder;
use plan_exec::store::RunRecord;
use plan_postgres::PostgresStore;
use plan_worker::{Worker, WorkerConfig};

use plan_strategies::Approval;

use crate::cli::{SubmitArgs, WorkerArgs};
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
    if args.goal.trim().is_empty() {
        return Err(Usage::new("the goal is empty: say what the run should achieve").into());
    }
    let store = fleet_store(&settings, "submit").await?;
    let record = queued_record(
        &settings,
        &args.goal,
        args.approve.as_deref(),
        args.record_requests,
    );
    let id = SessionBuilder::new()
        .store(Arc::new(store))
        .enqueue(record)
        .await
        .map_err(|e| anyhow::anyhow!("cannot queue the run: {e}"))?;
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

/// The record of a run queued for the fleet: its goal and spec (strategy, model spec,
/// endpoint, limits, budget; never a key), the approval it asks for (`plan`,
/// `replans`), and whether its calls' requests are recorded in full.
pub fn queued_record(
    settings: &Settings,
    goal: &str,
    approve: Option<&str>,
    record_requests: bool,
) -> RunRecord {
    let mut spec = settings.spec();
    spec.record_requests = record_requests;
    spec.approve = match approve {
        Some("plan") => Approval::Plan,
        Some("replans") => Approval::Replans,
        _ => Approval::None,
    };
    spec.to_record(goal)
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
    let runtime = session::runtime(&base, true);
    let stop = stop_on_signals();
    crate::cmd::runs::spawn_retention(&base, "plan worker").await?;
    Worker::new(store, config, Arc::new(runtime))
        .run(stop)
        .await
        .map_err(|e| anyhow::anyhow!("plan worker: {e}"))?;
    Ok(ExitCode::SUCCESS)
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
