//! A step executor of your own: implement `plan_exec::executor::StepExecutor` and the runner runs
//! your steps with its scheduling, retries, fallbacks and journal around them.
//!
//! This one answers `search` steps from a local glossary (a stand-in for a database or an
//! internal API), reports each lookup as a `tool_call` event, and fails retryably the first
//! time it is asked (a flaky backend), so the runner's retry policy shows. Other steps go
//! to the model through a `Router`.
//!
//!     cargo run -p plan-examples --example custom_executor

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use plan_core::{EventKind, Plan, Step, StepKind, StepStatus};
use plan_exec::context::StepContext;
use plan_exec::error::StepError;
use plan_exec::events::EventLog;
use plan_exec::executor::StepExecutor;
use plan_exec::llm::LlmStepExecutor;
use plan_exec::policy::{Backoff, RunOptions, StepPolicy};
use plan_exec::router::Router;
use plan_exec::runner::Runner;
use plan_llm::{Reply, ScriptedModel};

/// Looks terms up in a glossary; the first lookup of each term fails as a flaky backend
/// would.
struct Glossary {
    entries: HashMap<&'static str, &'static str>,
    seen: Mutex<Vec<String>>,
}

#[async_trait]
impl StepExecutor for Glossary {
    async fn execute(&self, ctx: &StepContext) -> Result<String, StepError> {
        let started = Instant::now();
        let description = ctx.step().description.to_lowercase();
        let Some((term, text)) = self
            .entries
            .iter()
            .find(|(term, _)| description.contains(*term))
        else {
            // Not retryable: no second attempt will find it; the step fails (or falls back).
            return Err(StepError::fatal(format!(
                "the glossary has no entry for `{}`; add one or route the step elsewhere",
                ctx.step().description
            )));
        };
        let first_time = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let first = !seen.iter().any(|t| t == term);
            seen.push((*term).to_owned());
            first
        };
        ctx.emit(EventKind::ToolCall {
            step: ctx.step().id.clone(),
            tool: "glossary".to_owned(),
            ok: !first_time,
            duration_ms: started.elapsed().as_millis() as u64,
        });
        if first_time {
            return Err(StepError::retryable(
                "the glossary service is busy; try again",
            ));
        }
        Ok(format!("{term}: {text}"))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let glossary = Glossary {
        entries: HashMap::from([
            ("borrow", "a reference that does not own its value"),
            ("lifetime", "the region of code a reference is valid for"),
        ]),
        seen: Mutex::new(Vec::new()),
    };
    let model = ScriptedModel::new().otherwise(Reply::text(
        "A borrow is a reference; its lifetime says how long it may be used.",
    ));
    let executor = Router::default()
        .with_default(LlmStepExecutor::new(model.clone()))
        .route_kind(StepKind::Search, glossary);

    let plan = Plan::new(
        "Explain borrowing in Rust",
        vec![
            Step::new("borrow", "Look up borrow").with_kind(StepKind::Search),
            Step::new("lifetime", "Look up lifetime").with_kind(StepKind::Search),
            Step::new("explain", "Explain both in one sentence").depends_on(["borrow", "lifetime"]),
        ],
    );
    let events = EventLog::new();
    let runner = Runner::parallel(executor)
        .with_options(
            RunOptions::default().with_policy(StepPolicy::default().with_retries(2).with_backoff(
                Backoff::exponential(Duration::from_millis(10), Duration::from_millis(100)),
            )),
        )
        .with_event_sink(events.clone());
    let report = runner.run(plan).await?;

    for step in &report.steps {
        println!(
            "{:<9} {:<10} attempts={} {}",
            step.id.as_str(),
            step.status.as_str(),
            step.attempts,
            step.output.as_deref().unwrap_or("-")
        );
    }
    let lookups = events
        .kinds()
        .iter()
        .filter(|k| matches!(k, EventKind::ToolCall { .. }))
        .count();
    println!("{lookups} glossary lookups");

    anyhow::ensure!(report.is_success(), "the run failed: {:?}", report.failure);
    for id in ["borrow", "lifetime"] {
        let step = report
            .step(id)
            .ok_or_else(|| anyhow::anyhow!("no step {id}"))?;
        anyhow::ensure!(
            step.status == StepStatus::Completed && step.attempts == 2,
            "`{id}` should complete on its second attempt: {step:?}"
        );
    }
    anyhow::ensure!(
        lookups == 4,
        "expected 4 lookups (2 failed, 2 ok), saw {lookups}"
    );
    // The model step saw both glossary outputs as its inputs.
    let prompt = model
        .last_request()
        .map(|r| {
            r.messages
                .iter()
                .map(|m| m.content.clone())
                .collect::<String>()
        })
        .unwrap_or_default();
    anyhow::ensure!(
        prompt.contains("a reference that does not own its value")
            && prompt.contains("the region of code"),
        "the model step did not see its dependencies' outputs"
    );
    anyhow::ensure!(model.call_count() == 1, "only `explain` goes to the model");
    Ok(())
}
