//! Steps run across the fleet: the worker driving a run queues each step attempt as a
//! task ([`FleetExecutor`]), and any worker claims it, runs it with its own executor and
//! records the result under the task's lease ([`run_task`]). The store calls the steps of
//! a run (or of a worker) make at once go in batches: one statement queues the tasks the
//! run's steps start together, one reads the results announced together, and a worker
//! records the results of its steps that finish together, and renews the leases of all
//! its steps, in one statement each.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use plan_core::{EventKind, RunId, Step};
use plan_exec::context::{CancelToken, StepContext};
use plan_exec::error::{StepError, StepErrorKind};
use plan_exec::events::{EventLog, EventSink as _};
use plan_exec::executor::StepExecutor;
use plan_postgres::{PostgresStore, StepClaim, StepListener, StepTask};
use serde_json::{Value, json};
use tracing::Instrument as _;

use crate::batch::Batcher;

/// How long a waiting step waits for its result's notification before it looks anyway
/// (and queues its task again should it be gone).
const RECHECK: Duration = Duration::from_secs(2);

/// The most requests in one batched statement.
const BATCH: usize = 256;

/// A step executor that runs nothing itself: it queues the step attempt for the fleet
/// and waits for the result a worker records (the events the step emitted there, its
/// model calls, are emitted here, into the run's journal).
pub struct FleetExecutor {
    store: PostgresStore,
    listener: Arc<StepListener>,
    /// Queues tasks; says for each whether it was queued now.
    enqueue: Batcher<StepTask, bool>,
    /// Reads results: (run, step key, attempt).
    results: Batcher<(RunId, String, i32), Option<Value>>,
    /// When the driving worker runs the steps it has room for itself.
    local: Option<Local>,
}

/// What a driving worker needs to run its run's steps itself: its free step slots, the
/// run's step executor there, and its step work (leases, results).
pub(crate) struct Local {
    slots: crate::claimer::Slots,
    executor: Arc<crate::ExecutorCell>,
    agents: crate::Agents,
    work: StepWork,
    /// Queues tasks claimed by this worker: the claim of each, or `None` when it was
    /// queued already.
    enqueue: Batcher<StepTask, Option<StepClaim>>,
}

impl Local {
    /// For the steps of `run`, driven by `worker` (step leases of `ttl`).
    pub(crate) fn new(
        store: &PostgresStore,
        worker: &str,
        ttl: Duration,
        slots: crate::claimer::Slots,
        executor: Arc<crate::ExecutorCell>,
        agents: crate::Agents,
        work: StepWork,
    ) -> Self {
        let (queue, worker) = (store.clone(), worker.to_owned());
        Self {
            slots,
            executor,
            agents,
            work,
            enqueue: Batcher::new(BATCH, move |tasks: Vec<StepTask>| {
                let (store, worker) = (queue.clone(), worker.clone());
                async move { store.enqueue_claimed_steps(&worker, ttl, &tasks).await }
            }),
        }
    }

    /// Runs `task` here if a slot is free and the run's executor can be made here:
    /// queued claimed by this worker, run, and its result recorded under that claim.
    /// `Ok(Some(result))` once recorded; `Ok(None)` when it was not run here (no free
    /// slot, queued already, or its lease was lost meanwhile: the fleet runs it).
    async fn run(&self, task: &StepTask) -> Result<Option<Value>, plan_exec::error::StoreError> {
        let Some(slot) = self.slots.try_take() else {
            return Ok(None);
        };
        let made = self
            .executor
            .get_or_init(|| self.agents.executor_for(task.run.clone()))
            .await;
        let Ok(executor) = made else {
            return Ok(None);
        };
        let Some(claim) = self.enqueue.call(task.clone()).await? else {
            return Ok(None);
        };
        Ok(run_task(claim, executor.clone(), self.work.clone(), slot).await)
    }
}

impl FleetExecutor {
    /// An executor queueing steps in `store`, woken by `listener`. Needs a tokio runtime.
    pub fn new(store: PostgresStore, listener: Arc<StepListener>) -> Self {
        let queue = store.clone();
        let read = store.clone();
        Self {
            store,
            listener,
            enqueue: Batcher::new(BATCH, move |tasks: Vec<StepTask>| {
                let store = queue.clone();
                async move { store.enqueue_steps(&tasks).await }
            }),
            results: Batcher::new(BATCH, move |wanted: Vec<(RunId, String, i32)>| {
                let store = read.clone();
                async move { store.step_results(&wanted).await }
            }),
            local: None,
        }
    }

    /// Runs the steps it has room for on this worker itself ([`Local`]), queued claimed.
    pub(crate) fn with_local(mut self, local: Local) -> Self {
        self.local = Some(local);
        self
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
                "traceparent": plan_exec::trace::traceparent(&tracing::Span::current()),
                // And records the step's calls as the run does (requests in full or not).
                "record_requests": plan_exec::replay::records_full_requests(),
            }),
        );
        let unavailable = |e: plan_exec::error::StoreError| {
            StepError::retryable(format!("the fleet's store failed: {e}"))
        };
        let wanted = (task.run.clone(), task.step.clone(), task.attempt);
        // A task queued before (by a driver that lost the run to this one) may have its
        // result already; a new one has none until its notification.
        // Watched before it is queued: a result recorded at once is not missed.
        let watch = self.listener.watch(&task.run, &task.step);
        // A step this worker has room for runs here, claimed as it is queued; the others
        // (and one whose lease was lost meanwhile) are the fleet's.
        if let Some(local) = &self.local {
            let ran = tokio::select! {
                ran = local.run(&task) => ran.map_err(unavailable)?,
                () = ctx.cancel_token().cancelled() => {
                    let _ = self.store.drop_step(&task.run, &task.step, task.attempt).await;
                    return Err(StepError::cancelled());
                }
            };
            if let Some(result) = ran {
                return decode(&result, ctx);
            }
        }
        let queued_now = self.enqueue.call(task.clone()).await.map_err(unavailable)?;
        if !queued_now
            && let Some(result) = self
                .results
                .call(wanted.clone())
                .await
                .map_err(unavailable)?
        {
            return decode(&result, ctx);
        }
        loop {
            tokio::select! {
                () = watch.wait(RECHECK) => {}
                () = ctx.cancel_token().cancelled() => {
                    let _ = self.store.drop_step(&task.run, &task.step, task.attempt).await;
                    return Err(StepError::cancelled());
                }
            }
            if let Some(result) = self
                .results
                .call(wanted.clone())
                .await
                .map_err(unavailable)?
            {
                return decode(&result, ctx);
            }
            // Woken with no result (the task was dropped), or none for a while: queue it
            // again should it be gone, as a driver that lost this run to us drops the
            // tasks it was waiting for when it stops.
            self.enqueue.call(task.clone()).await.map_err(unavailable)?;
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

/// What a worker shares among the steps it runs: one statement records the results of
/// the steps that finish together, and one renews the leases of all its steps.
#[derive(Clone)]
pub(crate) struct StepWork {
    complete: Arc<Batcher<(StepClaim, Value), bool>>,
    leases: Arc<StepLeases>,
}

impl StepWork {
    /// For a worker on `store` whose step leases last `ttl`. Needs a tokio runtime; the
    /// renewals stop when the last clone is dropped.
    pub(crate) fn new(store: PostgresStore, ttl: Duration) -> Self {
        let recorder = store.clone();
        let leases = Arc::new(StepLeases::default());
        let renewing = Arc::downgrade(&leases);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                let Some(leases) = renewing.upgrade() else {
                    return;
                };
                leases.renew(&store, ttl).await;
            }
        });
        Self {
            complete: Arc::new(Batcher::new(BATCH, move |done: Vec<(StepClaim, Value)>| {
                let store = recorder.clone();
                async move { store.complete_steps(&done).await }
            })),
            leases,
        }
    }
}

/// The step leases a worker holds, renewed together; a lost one cancels its step.
#[derive(Default)]
struct StepLeases {
    next: AtomicU64,
    held: Mutex<HashMap<u64, (StepClaim, CancelToken)>>,
}

impl StepLeases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (StepClaim, CancelToken)>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Renews the held leases until `forget` is called with the returned key.
    fn hold(&self, claim: StepClaim, cancel: CancelToken) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(key, (claim, cancel));
        key
    }

    fn forget(&self, key: u64) {
        self.lock().remove(&key);
    }

    /// Renews every held lease in one statement; a lost one cancels its step. A failed
    /// renewal is tried again next time.
    async fn renew(&self, store: &PostgresStore, ttl: Duration) {
        let held: Vec<(u64, StepClaim)> = self
            .lock()
            .iter()
            .map(|(k, (c, _))| (*k, c.clone()))
            .collect();
        if held.is_empty() {
            return;
        }
        let claims: Vec<StepClaim> = held.iter().map(|(_, c)| c.clone()).collect();
        let Ok(renewed) = store.renew_steps(&claims, ttl).await else {
            return;
        };
        for ((key, claim), kept) in held.iter().zip(renewed) {
            if kept {
                continue;
            }
            if let Some((_, cancel)) = self.lock().remove(key) {
                tracing::warn!(worker = %claim.worker, run = %claim.task.run, step = %claim.task.step, "lost the lease of a step; stopping it here");
                cancel.cancel();
            }
        }
    }
}

/// Runs a claimed step task with `executor`, its lease renewed with the worker's other
/// steps', and records the result with theirs (refused if the lease was lost meanwhile).
/// The step's slot is given back once it ran, before its result is recorded.
pub(crate) async fn run_task(
    claim: StepClaim,
    executor: Arc<dyn StepExecutor>,
    work: StepWork,
    slot: crate::claimer::Slot,
) -> Option<Value> {
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
        let unreadable =
            json!({"error": {"kind": "fatal", "message": "the step task could not be read"}});
        let recorded = work
            .complete
            .call((claim.clone(), unreadable.clone()))
            .await;
        return matches!(recorded, Ok(true)).then_some(unreadable);
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
    // Renewed until the step ran, or its run here was dropped (its driver cancelled).
    let renewal = Held {
        leases: &work.leases,
        key: work.leases.hold(claim.clone(), ctx.cancel_token().clone()),
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
        plan_exec::trace::continue_trace(&span, parent);
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
    drop(renewal);
    drop(slot);
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
    match work.complete.call((claim.clone(), result.clone())).await {
        Ok(true) => Some(result),
        Ok(false) => {
            tracing::warn!(
                worker = %claim.worker, run = %t.run, step = %t.step,
                "the step's result came after its lease was lost: refused (another worker runs it)"
            );
            None
        }
        Err(e) => {
            tracing::warn!(worker = %claim.worker, run = %t.run, error = %e, "cannot record a step result");
            None
        }
    }
}

/// A step lease renewed with the worker's others until dropped.
struct Held<'a> {
    leases: &'a StepLeases,
    key: u64,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.leases.forget(self.key);
    }
}
