//! Replay as a regression check (`plan_strategies::replay`): each reference workload is
//! planned and run by a scripted model into a store, then replayed from the store with a
//! stand-in model that can answer nothing. The replay must be faithful (every request in
//! the recording, every recorded call asked for, the same report) and call nothing; a run
//! whose recording no longer matches the code's requests must not be.

use std::sync::Arc;

use plan_core::EventKind;
use plan_exec::replay::{ReplayModel, Replayer};
use plan_exec::store::{RunStore, StoredRun};
use plan_exec::testing::workloads::reference;
use plan_llm::{Purpose, Reply, ScriptedModel};
use plan_sqlite::SqliteStore;
use plan_strategies::{Agent, AgentBuilder, StrategyKind};

fn builder(strategy: StrategyKind) -> AgentBuilder {
    Agent::builder()
        .strategy(strategy)
        .concurrency(4)
        .max_steps(100)
        .without_forecasts()
}

/// Plans `plan` (the scripted model writes it) and runs it; the stored run.
async fn record(plan: &plan_core::Plan, strategy: StrategyKind) -> StoredRun {
    let store = SqliteStore::in_memory().unwrap();
    let model = ScriptedModel::new()
        .when_purpose(Purpose::Plan, Reply::text(plan.to_json_pretty()))
        .when(|_| true, Reply::text("Done, with the details asked for."));
    let agent = builder(strategy)
        .provider(model)
        .store(store.clone())
        .build()
        .unwrap();
    let report = agent.run(plan.goal.clone()).await.unwrap();
    assert_eq!(report.status.as_str(), "succeeded");
    store.load_run(&report.run_id).await.unwrap().unwrap()
}

async fn replay(stored: &StoredRun, strategy: StrategyKind) -> plan_strategies::replay::Replay {
    let replayer = Arc::new(Replayer::of(stored));
    let model = ReplayModel::new("scripted", replayer.clone());
    plan_strategies::replay::replay(stored, replayer, builder(strategy).provider(model))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reference_workload_replays_faithfully() {
    for w in reference() {
        for strategy in [StrategyKind::Dag, StrategyKind::Linear] {
            let stored = record(&w.plan, strategy).await;
            let replay = replay(&stored, strategy).await;
            assert!(
                replay.is_faithful(),
                "{} ({strategy:?}): {:?} {:?} {:?}",
                w.name,
                replay.divergence.as_ref().map(ToString::to_string),
                replay.unserved.len(),
                replay.differences
            );
            // A planning call, one per step, and the synthesis.
            assert!(replay.calls_served > w.plan.steps.len(), "{}", w.name);
            assert_eq!(replay.calls_served, replay.calls_recorded, "{}", w.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_that_no_longer_matches_is_not_faithful() {
    let w = reference().remove(0);
    let mut stored = record(&w.plan, StrategyKind::Dag).await;
    // The first step's recorded reply says something else: the second step's request,
    // which carries it, is not the one the run made.
    let first = w.plan.steps[0].id.clone();
    for e in &mut stored.events {
        if let EventKind::CallRecorded { call } = &mut e.kind
            && call.step.as_ref() == Some(&first)
        {
            let text = call.reply.to_string().replace("Done", "Changed");
            call.reply = serde_json::from_str(&text).unwrap();
        }
    }
    let replay = replay(&stored, StrategyKind::Dag).await;
    assert!(!replay.is_faithful());
    let d = replay.divergence.expect("a divergence");
    assert_eq!(d.step, Some(w.plan.steps[1].id.clone()), "{d}");
    assert_eq!(d.purpose, "step");
    assert!(!replay.unserved.is_empty());
}
