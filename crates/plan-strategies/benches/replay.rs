//! Replay benchmark (`cargo bench -p plan-strategies --bench replay`): a 2,000-step plan
//! (five stages of 400, each step reading two of the stage before) run by the DAG strategy
//! with a scripted model and a SQLite store, then replayed from its recording.
//!
//! Prints what recording costs in store space (the journal's `call_recorded` entries per
//! step, with request hashes only and with requests in full) and how long a replay of the
//! whole run takes (no model is called: every reply is served from the recording).

use std::sync::Arc;
use std::time::{Duration, Instant};

use plan_core::EventKind;
use plan_exec::replay::{ReplayModel, Replayer};
use plan_exec::store::{RunStore, StoredRun};
use plan_exec::testing::workloads::layered;
use plan_llm::{Reply, ScriptedModel};
use plan_sqlite::SqliteStore;
use plan_strategies::{Agent, AgentBuilder, RunSpec, StrategyKind};

const CONCURRENCY: usize = 64;

fn builder(spec: RunSpec) -> AgentBuilder {
    Agent::builder()
        .strategy(StrategyKind::Dag)
        .concurrency(CONCURRENCY)
        .max_steps(10_000)
        .spec(spec)
}

/// Runs the plan with requests recorded in full or not; returns the stored run and the
/// store file's size.
async fn record(full_requests: bool) -> (StoredRun, u64) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("runs.sqlite");
    let store = SqliteStore::open(&path).expect("a store");
    let model = ScriptedModel::new().when(
        |_| true,
        Reply::text("Done: the task is complete, with the figures it asked for."),
    );
    let mut spec = RunSpec::default();
    spec.record_requests = full_requests;
    let agent = builder(spec)
        .provider(model)
        .store(store.clone())
        .without_forecasts()
        .build()
        .expect("an agent");
    let report = agent
        .execute(layered(&[400; 5]))
        .await
        .expect("the run ends");
    assert_eq!(report.status.as_str(), "succeeded");
    drop(agent);
    let stored = store
        .load_run(&report.run_id)
        .await
        .expect("the store reads")
        .expect("the run is stored");
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    (stored, bytes)
}

/// Bytes of the journal's recorded calls, as JSON.
fn recorded_bytes(stored: &StoredRun) -> usize {
    stored
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::CallRecorded { .. }))
        .map(|e| e.to_json_line().len())
        .sum()
}

async fn replay_once(stored: &StoredRun) -> Duration {
    let replayer = Arc::new(Replayer::of(stored));
    let spec = RunSpec::default();
    let started = Instant::now();
    let replay = plan_strategies::replay::replay(
        stored,
        replayer.clone(),
        builder(spec).provider(ReplayModel::new("scripted", replayer)),
    )
    .await
    .expect("the replay runs");
    let took = started.elapsed();
    assert!(
        replay.is_faithful(),
        "the replay differs: {:?} {:?}",
        replay.divergence.map(|d| d.to_string()),
        replay.differences
    );
    took
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let (stored, file) = record(false).await;
        let (full, full_file) = record(true).await;
        let steps = stored.outputs.len();
        let calls = Replayer::of(&stored).recorded();
        println!("replay: a {steps}-step DAG, {calls} recorded calls (steps and synthesis)");
        println!(
            "  recording, hashes only:     {:>7.0} bytes per step in the journal ({} KiB store file)",
            recorded_bytes(&stored) as f64 / steps as f64,
            file / 1024
        );
        println!(
            "  recording, requests in full: {:>6.0} bytes per step in the journal ({} KiB store file)",
            recorded_bytes(&full) as f64 / steps as f64,
            full_file / 1024
        );
        let mut times = Vec::new();
        for _ in 0..5 {
            times.push(replay_once(&stored).await);
        }
        times.sort();
        println!(
            "  replay of the whole run: median {:.0} ms, best {:.0} ms (5 replays, no model call)",
            times[2].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3
        );
    });
}
