//! Run a DAG with the parallel runner: independent steps run at once (each starts the
//! moment its last dependency completes), a failing step falls back to its `fallback`
//! body, and the run is journaled in a SQLite run store so it could
//! be resumed with `Runner::resume`.

use std::time::Duration;

use plan_core::{Plan, Step, StepBody, StepKind};
use plan_exec::events::event_channel;
use plan_exec::llm::LlmStepExecutor;
use plan_exec::policy::{Backoff, RunOptions, StepPolicy};
use plan_exec::runner::Runner;
use plan_exec::store::RunStore;
use plan_llm::{LlmError, Reply, ScriptedModel};
use plan_sqlite::SqliteStore;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Every call takes 200 ms; `broken` always fails with a non-retryable error, so its
    // fallback runs (rules are checked in the order added: the fallback's rule first).
    let model = ScriptedModel::new()
        .with_latency(Duration::from_millis(200))
        .when_user_contains("from memory", Reply::text("(the fallback's answer)"))
        .when_user_contains(
            "Your step (`broken`)",
            Reply::error(LlmError::BadRequest {
                provider: "scripted".into(),
                status: 400,
                message: "this step always fails".into(),
            }),
        )
        .otherwise(Reply::text("(an answer)"));

    let plan = Plan::new(
        "Compare the top 3 Python web frameworks",
        vec![
            Step::new("django", "Collect facts about Django").with_kind(StepKind::Search),
            Step::new("flask", "Collect facts about Flask").with_kind(StepKind::Search),
            Step::new("fastapi", "Collect facts about FastAPI").with_kind(StepKind::Search),
            Step::new("broken", "Fetch benchmark numbers from a dead site")
                .with_fallback(StepBody::new("Estimate relative speed from memory")),
            Step::new("compare", "Compare them on speed, features, ecosystem")
                .depends_on(["django", "flask", "fastapi", "broken"])
                .with_kind(StepKind::Analyze),
            Step::new("check", "Check the comparison covers all three")
                .depends_on(["compare"])
                .with_kind(StepKind::Verify),
        ],
    );

    let dir = std::env::temp_dir().join(format!("plan-exec-example-{}", std::process::id()));
    let store = SqliteStore::open(dir.join("runs.db"))?;
    let (sink, mut events) = event_channel();
    let printer = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            eprintln!("{}", event.to_json_line());
        }
    });

    let runner = Runner::parallel(LlmStepExecutor::new(model))
        .with_options(
            RunOptions::default().with_concurrency(4).with_policy(
                StepPolicy::default()
                    .with_retries(2)
                    .with_timeout(Duration::from_secs(30))
                    .with_backoff(Backoff::exponential(
                        Duration::from_millis(50),
                        Duration::from_secs(1),
                    )),
            ),
        )
        .with_event_sink(sink)
        .with_store(store.clone());
    let report = runner.run(plan).await?;
    drop(runner); // lets the event channel close
    printer.await?;

    println!(
        "run {} {} in {} ms",
        report.run_id, report.status, report.duration_ms
    );
    for step in &report.steps {
        println!(
            "{:<8} {:<10} attempts={} fallback={} {}",
            step.id,
            step.status.as_str(),
            step.attempts,
            step.fallback,
            step.output.as_deref().unwrap_or("-")
        );
    }
    for run in store.list_runs().await? {
        println!(
            "stored: {} {} {}/{} steps",
            run.id, run.status, run.steps_done, run.steps_total
        );
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
