//! Steps run across the fleet: the worker driving a run queues each step attempt as a
//! task ([`FleetExecutor`]), and any worker claims it, runs it with its own executor and
//! records the result under the task's lease ([`run_task`]).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use plan_core::{EventKind, Step};
use plan_exec::{EventLog, EventSink as _, StepContext, StepError, StepErrorKind, StepExecutor};
use plan_postgres::{PostgresStore, StepClaim, StepListener, StepTask};
use serde_json::{Value, json};
use tracing::Instrument as _;

/// How long a waiting step looks at its task again without a notification.
const RECHECK: Duration = Duration::from_millis(500);

/// A step executor that runs nothing itself: it queues the step attempt for the fleet
/// and waits for the result a worker records (the events the step emitted there, its
/// model calls, are emitted here, into the run's journal).
pub struct FleetExecutor {
    store: PostgresStore,
    listener: Arc<StepListener>,
}

impl FleetExecutor {
    /// An executor queueing steps in `store`, woken by `listener`.
    pub fn new(store: PostgresStore, listener: Arc<StepListener>) -> Self {
        Self { store, listener }
    }
}

/// The task's step key: the id, and a digest of the body (a fallback attempt runs
/// another body under the same id and is another task).
fn step_key(step: &Step) -> String {
    let mut h = DefaultHasher::new();
    serde_json::to_string(step).unwrap_or_default().hash(&mut h);
    format!("{}@{:08x}", step.id, h.finish() as u32)
}

#[async_trait]
impl StepExecutor for FleetExecutor {
    async fn execute(&self, ctx: &StepContext) -> Result<String, StepError> {
        let dependencies: Vec<Value> = ctx
            .dependencies()
            .iter()
            .map(|d| json!({"id": d.id, "description": d.description, "output": d.output}))
            .collect();
        let task = StepTask::new(
            ctx.run_id().clone(),
            step_key(ctx.step()),
            i32::try_from(ctx.attempt()).unwrap_or(i32::MAX),
            json!({
                "goal": ctx.goal(),
                "step": ctx.step(),
                "dependencies": dependencies,
                // The worker running it continues the trace of the step's span here.
                "traceparent": plan_exec::traceparent(&tracing::Span::current()),
                // And records the step's calls as the run does (requests in full or not).
                "record_requests": plan_exec::replay::records_full_requests(),
            }),
        );
        let unavailable = |e: plan_exec::StoreError| {
            StepError::retryable(format!("the fleet's store failed: {e}"))
        };
        self.store.enqueue_step(&task).await.map_err(unavailable)?;
        let mut looks = 0u32;
        loop {
            if let Some(result) = self
                .store
                .step_result(&task.run, &task.step, task.attempt)
                .await
                .map_err(unavailable)?
            {
                return decode(&result, ctx);
            }
            tokio::select! {
                () = self.listener.wait(&task.run, &task.step, RECHECK) => {
                    // Now and then, queue it again should it be gone: a driver that lost
                    // this run to us drops the tasks it was waiting for when it stops.
                    looks += 1;
                    if looks.is_multiple_of(4) {
                        self.store.enqueue_step(&task).await.map_err(unavailable)?;
                    }
                }
                () = ctx.cancel_token().cancelled() => {
                    let _ = self.store.drop_step(&task.run, &task.step, task.attempt).await;
                    return Err(StepError::cancelled());
                }
            }
        }
    }
}

/// A recorded result back into what the runner expects, emitting its events.
fn decode(result: &Value, ctx: &StepContext) -> Result<String, StepError> {
    if let Some(events) = result.get("events").and_then(Value::as_array) {
        for e in events {
            match serde_json::from_value::<EventKind>(e.clone()) {
                // The worker's calls, recorded for replay, join the run's journal.
                Ok(EventKind::CallRecorded { call }) => plan_exec::replay::forward(call),
                Ok(kind) => ctx.emit(kind),
                Err(_) => {}
            }
        }
    }
    if let Some(ok) = result.get("ok").and_then(Value::as_str) {
        return Ok(ok.to_owned());
    }
    let error = result.get("error").cloned().unwrap_or_default();
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("the step failed on a worker")
        .to_owned();
    let mut e = match error.get("kind").and_then(Value::as_str) {
        Some("fatal") => StepError::fatal(message),
        Some("cancelled") => StepError::cancelled(),
        _ => StepError::retryable(message),
    };
    if let Some(ms) = error.get("retry_after_ms").and_then(Value::as_u64) {
        e.retry_after = Some(Duration::from_millis(ms));
    }
    Err(e)
}

/// Runs a claimed step task with `executor`, renewing its lease, and records the result
/// (refused if the lease was lost meanwhile).
pub(crate) async fn run_task(
    store: PostgresStore,
    claim: StepClaim,
    executor: Arc<dyn StepExecutor>,
    ttl: Duration,
) {
    let t = &claim.task;
    let goal = t
        .task
        .get("goal")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let step: Option<Step> = t
        .task
        .get("step")
        .and_then(|s| serde_json::from_value(s.clone()).ok());
    let Some(step) = step else {
        let _ = store
            .complete_step(
                &claim,
                &json!({"error": {"kind": "fatal", "message": "the step task could not be read"}}),
            )
            .await;
        return;
    };
    let log = EventLog::new();
    let mut ctx = StepContext::new(goal, step)
        .with_run_id(t.run.clone())
        .with_attempt(u32::try_from(t.attempt).unwrap_or(1))
        .with_event_sink(Arc::new(log.clone()));
    for d in t
        .task
        .get("dependencies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = d.get("id").and_then(Value::as_str).unwrap_or_default();
        let description = d
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let output = d.get("output").and_then(Value::as_str).unwrap_or_default();
        ctx = ctx.with_dependency(&Step::new(id, description), output);
    }
    let renewal = {
        let store = store.clone();
        let claim = claim.clone();
        let cancel = ctx.cancel_token().clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                if !store.renew_step(&claim, ttl).await.unwrap_or(true) {
                    tracing::warn!(worker = %claim.worker, run = %claim.task.run, step = %claim.task.step, "lost the lease of a step; stopping it here");
                    cancel.cancel();
                    return;
                }
            }
        })
    };
    // The step's work is part of the run's trace: a child of the driver's step span.
    let span = tracing::info_span!(
        parent: None,
        "execute_step",
        otel.name = format!("execute_step {}", t.step),
        plan.run.id = %t.run,
        plan.step.id = %t.step,
        plan.worker = %claim.worker,
    );
    if let Some(parent) = t.task.get("traceparent").and_then(Value::as_str) {
        plan_exec::continue_trace(&span, parent);
    }
    // The step's calls are recorded for replay and go back with its result.
    let recorded = {
        let log = log.clone();
        let run = t.run.clone();
        Arc::new(move |call| {
            log.on_event(&plan_core::Event::now(
                run.clone(),
                EventKind::CallRecorded { call },
            ))
        }) as Arc<dyn Fn(plan_core::RecordedCall) + Send + Sync>
    };
    let full_requests = t
        .task
        .get("record_requests")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let outcome = plan_exec::replay::recording_into(
        recorded,
        plan_core::StepId::new(t.step.clone()),
        full_requests,
        executor.execute(&ctx).instrument(span),
    )
    .await;
    renewal.abort();
    let events: Vec<Value> = log
        .kinds()
        .into_iter()
        .filter_map(|k| serde_json::to_value(k).ok())
        .collect();
    let result = match outcome {
        Ok(output) => json!({"ok": output, "events": events}),
        Err(e) => {
            let kind = match e.kind {
                StepErrorKind::Fatal => "fatal",
                StepErrorKind::Cancelled => "cancelled",
                _ => "retryable",
            };
            json!({"error": {
                "kind": kind,
                "message": e.message,
                "retry_after_ms": e.retry_after.map(|d| d.as_millis() as u64),
            }, "events": events})
        }
    };
    match store.complete_step(&claim, &result).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            worker = %claim.worker, run = %t.run, step = %t.step,
            "the step's result came after its lease was lost: refused (another worker runs it)"
        ),
        Err(e) => {
            tracing::warn!(worker = %claim.worker, run = %t.run, error = %e, "cannot record a step result")
        }
    }
}
