//! The crash test: real runs in child processes (this test binary, re-invoked) against a
//! slow fake OpenAI-compatible server, killed with SIGKILL at random points, then resumed.
//! Checks that every run completes, that no step completed before a kill is sent to the
//! model again, and that no output is lost or duplicated.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use plan_core::{EventKind, Plan, RunId, RunStatus, Step};
use plan_exec::llm::LlmStepExecutor;
use plan_exec::policy::{Backoff, RunOptions, StepPolicy};
use plan_exec::runner::Runner;
use plan_exec::store::{RunRecord, RunStore};
use plan_exec::testing::{answer_by_step, default_reply};
use plan_llm::testing::FakeOpenAi;
use plan_llm::{Flavour, OpenAi};
use plan_sqlite::SqliteStore;

const CHILD_ENV: &str = "PLAN_EXEC_CRASH_CHILD";
const WIDTHS: [usize; 4] = [3, 3, 3, 3];

/// 12 steps in 4 layers; each step after the first layer depends on two of the layer
/// before. Ids carry a per-run prefix so the server can count requests per step.
fn crash_plan(prefix: &str) -> Plan {
    let mut steps = Vec::new();
    for (layer, &width) in WIDTHS.iter().enumerate() {
        for k in 0..width {
            let id = format!("{prefix}-l{layer}s{k}");
            let mut step = Step::new(id.as_str(), format!("work item {k} of layer {layer}"));
            if layer > 0 {
                let prev = WIDTHS[layer - 1];
                step = step.depends_on([
                    format!("{prefix}-l{}s{}", layer - 1, k % prev),
                    format!("{prefix}-l{}s{}", layer - 1, (k + 1) % prev),
                ]);
            }
            steps.push(step);
        }
    }
    Plan::new(format!("crash test {prefix}"), steps)
}

/// The child's side: start or resume the run named in the environment. Does nothing
/// unless the crash test started this process.
#[test]
fn crash_child_process() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let var = |k: &str| std::env::var(k).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(var("CRASH_STORE")).unwrap();
        let provider = OpenAi::new("fake-model", None)
            .with_base_url(var("CRASH_URL"))
            .with_flavour(Flavour::compatible());
        let runner = Runner::parallel(LlmStepExecutor::new(provider))
            .with_store(store.clone())
            .with_options(RunOptions::default().with_concurrency(3).with_policy(
                StepPolicy::default().with_backoff(Backoff::exponential(
                    Duration::from_millis(20),
                    Duration::from_millis(100),
                )),
            ));
        let id = RunId::new(var("CRASH_RUN"));
        let plan = crash_plan(&var("CRASH_PREFIX"));
        let report = match store.load_run(&id).await.unwrap() {
            None => runner
                .run_with_record(RunRecord::new(plan.goal.clone()).with_id(id), plan)
                .await
                .unwrap(),
            Some(run) => {
                if run.plans.is_empty() {
                    // Killed between recording the run and its plan.
                    store.save_plan(&id, 0, &plan).await.unwrap();
                }
                runner.resume(&id).await.unwrap()
            }
        };
        assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    });
}

struct Snapshot {
    committed: Vec<String>,
    requests: HashMap<String, usize>,
}

async fn committed(store_path: &Path, id: &RunId) -> Vec<String> {
    let store = SqliteStore::open(store_path).unwrap();
    match store.load_run(id).await.unwrap() {
        Some(run) => run.outputs.iter().map(|o| o.step.to_string()).collect(),
        None => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_survive_sigkill_at_random_points_and_resume_without_redoing_work() {
    let server = FakeOpenAi::start().await;
    answer_by_step(&server).latency(Duration::from_millis(150));
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("runs.db");
    let exe = std::env::current_exe().unwrap();
    let mut kills = 0;
    let mut runs = 0;
    while kills < 20 && runs < 25 {
        runs += 1;
        let prefix = format!("r{runs}");
        let id = plan_exec::store::new_run_id();
        let plan = crash_plan(&prefix);
        let mut snapshots: Vec<Snapshot> = Vec::new();
        let mut kills_this_run = 0;
        loop {
            let mut child = tokio::process::Command::new(&exe)
                .args([
                    "--exact",
                    "crash::crash_child_process",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, "1")
                .env("CRASH_STORE", &store_path)
                .env("CRASH_URL", server.base_url())
                .env("CRASH_RUN", id.as_str())
                .env("CRASH_PREFIX", &prefix)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            if kills_this_run < 4 {
                let delay = Duration::from_millis(rand::random_range(10..450));
                let exited = tokio::time::timeout(delay, child.wait()).await;
                if exited.is_err() {
                    child.start_kill().unwrap();
                    let status = child.wait().await.unwrap();
                    assert!(!status.success());
                    kills += 1;
                    kills_this_run += 1;
                    // The child is dead: what it committed and what it asked are final.
                    let steps = committed(&store_path, &id).await;
                    let requests = plan
                        .steps
                        .iter()
                        .map(|s| (s.id.to_string(), server.count_for(s.id.as_str())))
                        .collect();
                    snapshots.push(Snapshot {
                        committed: steps,
                        requests,
                    });
                    continue;
                }
            }
            let output = child.wait_with_output().await.unwrap();
            assert!(
                output.status.success(),
                "the child failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            break;
        }

        // The run completed, with every output exactly once and intact.
        let store = SqliteStore::open(&store_path).unwrap();
        let run = store.load_run(&id).await.unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Succeeded);
        assert_eq!(run.outputs.len(), plan.steps.len());
        for step in &plan.steps {
            let out = run.output(step.id.as_str()).unwrap();
            assert_eq!(out.output, default_reply(step.id.as_str()));
            let completions = run
                .events
                .iter()
                .filter(|e| matches!(&e.kind, EventKind::StepCompleted { step: s, .. } if *s == step.id))
                .count();
            assert_eq!(
                completions, 1,
                "step {} completed {completions} times",
                step.id
            );
        }
        // No step committed before a kill was sent to the model again.
        for snap in &snapshots {
            for step in &snap.committed {
                assert_eq!(
                    server.count_for(step),
                    snap.requests[step],
                    "step {step} was committed before a kill and asked again after it"
                );
            }
        }
    }
    assert!(kills >= 20, "only {kills} kills in {runs} runs");
}
