//! A `Worker` over a real PostgreSQL store (the throwaway cluster of plan-postgres's test
//! support) and the workspace's fake OpenAI server: it runs a queued run with the spec the
//! run recorded, and leaves a run whose spec needs what only its starting process has.

use std::sync::Arc;
use std::time::{Duration, Instant};

use plan_core::{RunId, RunStatus};
use plan_exec::{CancelToken, RunStore as _, SessionBuilder};
use plan_llm::testing::{FakeOpenAi, FakeReply};
use plan_llm::{ProviderConfig, ProviderRegistry};
use plan_postgres::PostgresStore;
use plan_postgres::testing::TempCluster;
use plan_strategies::{RunSpec, Runtime};
use plan_worker::{Worker, WorkerConfig};

const PLAN: &str = r#"{"goal": "g", "steps": [
    {"id": "a", "description": "Describe the first thing", "dependencies": []},
    {"id": "b", "description": "Describe the second thing", "dependencies": []},
    {"id": "c", "description": "Compare them", "dependencies": ["a", "b"]}]}"#;

fn runtime() -> Runtime {
    Runtime::new(
        ProviderRegistry::builtin(),
        ProviderConfig::from_vars([("OPENAI_API_KEY", "sk-test")]),
    )
}

async fn queue(store: &PostgresStore, spec: &RunSpec, goal: &str) -> RunId {
    SessionBuilder::new()
        .store(Arc::new(store.clone()))
        .enqueue(spec.to_record(goal))
        .await
        .unwrap()
}

/// Waits until `run` has `status`, or panics after `secs`.
async fn wait_for(store: &PostgresStore, run: &RunId, status: RunStatus, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let stored = store.load_run(run).await.unwrap().unwrap();
        if stored.status == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "run {run} is {} after {secs} s, not {status}",
            stored.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_run_runs_with_the_spec_it_recorded() {
    let Some(cluster) = TempCluster::shared_or_skip() else {
        return;
    };
    let store = PostgresStore::connect(&cluster.create_database())
        .await
        .unwrap();
    let fake = FakeOpenAi::start().await;
    fake.on("You are a planner", FakeReply::text(PLAN))
        .on("You write the final answer", FakeReply::text("the answer"))
        .otherwise(FakeReply::text("part done"));
    let mut spec = RunSpec::new("openai:fake-model", "dag");
    spec.base_url = Some(fake.base_url());
    spec.limits.max_steps = Some(3);
    let run = queue(&store, &spec, "Compare two things").await;

    let stop = CancelToken::new();
    let stopper = stop.clone();
    let worker = Worker::new(
        store.clone(),
        WorkerConfig::new("test-worker"),
        Arc::new(runtime()),
    );
    let handle = tokio::spawn(async move { worker.run(stop.clone()).await });
    wait_for(&store, &run, RunStatus::Succeeded, 60).await;
    stopper.cancel();
    handle.await.unwrap().unwrap();

    let stored = store.load_run(&run).await.unwrap().unwrap();
    let report = plan_exec::RunReport::from_stored(&stored);
    assert_eq!(report.answer.as_deref(), Some("the answer"));
    assert_eq!(report.steps.len(), 3);
    assert_eq!(fake.count("You are a planner"), 1);
    assert_eq!(RunSpec::from_record(&stored.record).unwrap(), spec);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_needs_its_starting_process_is_left_alone() {
    let Some(cluster) = TempCluster::shared_or_skip() else {
        return;
    };
    let store = PostgresStore::connect(&cluster.create_database())
        .await
        .unwrap();
    let fake = FakeOpenAi::start().await;
    let mut spec = RunSpec::new("openai:fake-model", "dag");
    spec.base_url = Some(fake.base_url());
    spec.needs.tools = vec!["read_file".to_owned()];
    let run = queue(&store, &spec, "Read a file").await;

    let stop = CancelToken::new();
    let stopper = stop.clone();
    let worker = Worker::new(
        store.clone(),
        WorkerConfig::new("test-worker"),
        Arc::new(runtime()),
    );
    let handle = tokio::spawn(async move { worker.run(stop.clone()).await });
    // Several claim rounds pass (the poll is 1 s); the run stays queued, untouched.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stopper.cancel();
    handle.await.unwrap().unwrap();
    let stored = store.load_run(&run).await.unwrap().unwrap();
    assert_eq!(stored.status, RunStatus::Queued);
    assert_eq!(
        fake.requests().len(),
        0,
        "no model call for a run left alone"
    );
}
