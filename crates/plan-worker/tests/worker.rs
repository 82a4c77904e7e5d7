//! A `Worker` over a real PostgreSQL store (the throwaway cluster of plan-postgres's test
//! support) and the workspace's fake OpenAI server: it runs a queued run with the spec the
//! run recorded, and leaves a run whose spec needs what only its starting process has.

use std::sync::Arc;
use std::time::{Duration, Instant};

use plan_core::{RunId, RunStatus};
use plan_exec::context::CancelToken;
use plan_exec::session::SessionBuilder;
use plan_exec::store::RunStore as _;
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

/// Waits until `run` has ended and returns how, or panics after `secs`.
async fn wait_for_end(store: &PostgresStore, run: &RunId, secs: u64) -> RunStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let stored = store.load_run(run).await.unwrap().unwrap();
        if stored.status.is_terminal() {
            return stored.status;
        }
        assert!(
            Instant::now() < deadline,
            "run {run} is {} after {secs} s, not ended",
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
    let report = plan_exec::report::RunReport::from_stored(&stored);
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

/// Four parallel steps, then two that need them all: the first four run on two workers at
/// once (each holds at most two step tasks, and a call takes 1.5 s, so both take some),
/// and together they use the run's token budget, which no single worker's share reaches.
const WIDE_PLAN: &str = r#"{"goal": "g", "steps": [
    {"id": "a1", "description": "Write part one at length", "dependencies": []},
    {"id": "a2", "description": "Write part two at length", "dependencies": []},
    {"id": "a3", "description": "Write part three at length", "dependencies": []},
    {"id": "a4", "description": "Write part four at length", "dependencies": []},
    {"id": "b1", "description": "Combine the parts into one", "dependencies": ["a1", "a2", "a3", "a4"]},
    {"id": "b2", "description": "Combine the parts into another", "dependencies": ["a1", "a2", "a3", "a4"]}]}"#;

/// A run's token budget holds for the run as a whole across the fleet: two workers run
/// its parallel steps, every model call (planning, steps on either worker) is charged to
/// the run's ledger in the store, and once the ledger's total reaches the budget the next
/// steps are refused before any model call, wherever they run. Metered per worker (each
/// agent with the budget less what the journal showed when it was built), each worker's
/// share stays under the budget and the run would go on to succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runs_token_budget_holds_across_the_workers_running_its_steps() {
    let Some(cluster) = TempCluster::shared_or_skip() else {
        return;
    };
    let store = PostgresStore::connect(&cluster.create_database())
        .await
        .unwrap();
    let fake = FakeOpenAi::start().await;
    // A step's reply is 40 000 characters: 10 001 completion tokens by the fake's count
    // (4 characters a token), so four steps pass a budget of 30 000 tokens that the
    // planning call and any two steps stay under.
    let long = "x".repeat(40_000);
    fake.on("You are a planner", FakeReply::text(WIDE_PLAN))
        .on("You write the final answer", FakeReply::text("the answer"))
        .on("Combine the parts", FakeReply::text("combined"))
        .otherwise(FakeReply::text(long))
        .latency(Duration::from_millis(1500));
    let budget = 30_000;
    let mut spec = RunSpec::new("openai:fake-model", "dag");
    spec.base_url = Some(fake.base_url());
    spec.limits.max_steps = Some(6);
    spec.limits.concurrency = 4;
    spec.budget.tokens = Some(budget);
    let run = queue(&store, &spec, "Write four parts and combine them").await;

    let stop = CancelToken::new();
    let workers: Vec<_> = ["worker-a", "worker-b"]
        .into_iter()
        .map(|name| {
            let worker = Worker::new(
                store.clone(),
                WorkerConfig::new(name).with_concurrency(2),
                Arc::new(runtime()),
            );
            let stop = stop.clone();
            tokio::spawn(async move { worker.run(stop).await })
        })
        .collect();
    let status = wait_for_end(&store, &run, 120).await;
    stop.cancel();
    for w in workers {
        w.await.unwrap().unwrap();
    }

    let stored = store.load_run(&run).await.unwrap().unwrap();
    let report = plan_exec::report::RunReport::from_stored(&stored);
    assert_eq!(
        status,
        RunStatus::Failed,
        "a run past its budget does not succeed; usage {:?}",
        report.usage
    );
    assert!(
        fake.max_in_flight() >= 3,
        "both workers ran steps at once (each holds at most two)"
    );
    for a in ["a1", "a2", "a3", "a4"] {
        let step = report.steps.iter().find(|s| s.id.as_str() == a).unwrap();
        assert_eq!(step.status, plan_core::StepStatus::Completed, "{a}");
    }
    assert_eq!(
        fake.count("Combine the parts"),
        0,
        "no step model call once the run's total passed its budget"
    );
    let refused: Vec<_> = report
        .steps
        .iter()
        .filter(|s| s.id.as_str().starts_with('b'))
        .map(|s| s.error.clone().unwrap_or_default())
        .collect();
    assert!(
        refused.iter().all(|e| e.contains("token budget exceeded")),
        "{refused:?}"
    );

    // The ledger holds every call the fake server answered, each once: the journal's
    // usage (the tokens in the server's replies), and no less than the four long replies.
    let ledger = store.ledger_usage(&run).await.unwrap();
    let journal = plan_exec::report::usage_of(&stored.events);
    assert_eq!(
        (ledger.prompt_tokens, ledger.completion_tokens),
        (journal.prompt_tokens, journal.completion_tokens)
    );
    assert!(journal.completion_tokens >= 4 * 10_001, "{journal:?}");
    assert!(ledger.total_tokens() >= budget, "{ledger:?}");
    assert_eq!(report.usage, journal);
}
