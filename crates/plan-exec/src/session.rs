//! [`RunSession`]: the one owner of a run's lifecycle — create (or reopen) the run, record
//! plan revisions, journal events (batched) and step outputs, move its status, finish it.
//!
//! Everything a run writes goes through its session: runners, strategies and services
//! never write to a [`RunStore`] themselves. The session also keeps an in-memory copy of
//! everything it journaled (a [`StoredRun`]), so a run without a store has the same
//! report as one with a store: [`RunReport::from_stored`] of the same journal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use plan_core::{Event, EventKind, Plan, RunId, RunStatus, StepId, Timestamp};
use tokio::sync::{mpsc, oneshot};

use crate::error::{ExecError, StoreError};
use crate::events::{Emitter, EventSink, JournalMsg, NoopSink};
use crate::report::RunReport;
use crate::store::{PlanRevision, RunEnd, RunRecord, RunStore, StepOutputRecord, StoredRun};

/// Where a run's sessions write: the store (if any) and the event sink. Cheap to clone;
/// runners, agents and services keep one and open a [`RunSession`] per run.
#[derive(Clone)]
pub struct SessionBuilder {
    store: Option<Arc<dyn RunStore>>,
    sink: Arc<dyn EventSink>,
}

impl Default for SessionBuilder {
    fn default() -> Self {
        Self {
            store: None,
            sink: Arc::new(NoopSink),
        }
    }
}

impl std::fmt::Debug for SessionBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionBuilder")
            .field("store", &self.store.is_some())
            .finish_non_exhaustive()
    }
}

impl SessionBuilder {
    /// No store, no sink: the run lives in memory only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Journals runs in `store`.
    pub fn store(mut self, store: Arc<dyn RunStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Sends every event of every run to `sink`.
    pub fn event_sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sink = sink;
        self
    }

    /// The store, if any.
    pub fn store_ref(&self) -> Option<&Arc<dyn RunStore>> {
        self.store.as_ref()
    }

    /// The event sink.
    pub fn sink(&self) -> &Arc<dyn EventSink> {
        &self.sink
    }

    /// Creates a new run (status `running`) and emits `run_started`.
    ///
    /// # Errors
    /// [`ExecError::Store`] when the store cannot record it.
    pub async fn create(&self, mut record: RunRecord) -> Result<RunSession, ExecError> {
        // The run's span is the root of its trace; its context is recorded with the run,
        // so whoever continues the run continues the trace.
        let session = self.open(StoredRun::new(record.clone()));
        let context =
            crate::trace::traceparent(session.span()).unwrap_or_else(crate::trace::new_traceparent);
        set_option(
            &mut record.options,
            crate::trace::TRACEPARENT,
            context.clone(),
        );
        if let Ok(mut mirror) = session.inner.mirror.lock() {
            set_option(
                &mut mirror.record.options,
                crate::trace::TRACEPARENT,
                context,
            );
        }
        if let Some(store) = &self.store {
            store.create_run(&record).await?;
        }
        let goal = session.record().goal.clone();
        session.emit(EventKind::RunStarted { goal });
        Ok(session)
    }

    /// Creates a run with status `queued` for a fleet to pick up, and emits nothing: the
    /// worker that claims it opens it with [`reopen`](Self::reopen).
    ///
    /// # Errors
    /// [`ExecError::NoStore`] without a store; [`ExecError::Store`].
    pub async fn enqueue(&self, mut record: RunRecord) -> Result<RunId, ExecError> {
        let store = self.store.as_ref().ok_or(ExecError::NoStore)?;
        // The trace the workers continue: the enqueuer's, or a new one.
        let context = crate::trace::traceparent(&tracing::Span::current())
            .unwrap_or_else(crate::trace::new_traceparent);
        set_option(&mut record.options, crate::trace::TRACEPARENT, context);
        store.create_run(&record).await?;
        store.set_status(&record.id, RunStatus::Queued).await?;
        Ok(record.id)
    }

    /// Reopens a stored run to continue it (after a crash, a cancellation, or a claim by a
    /// worker): sets it `running`, emits `run_started`, and returns where it stands.
    /// Completed steps are in the [`ResumePoint`] and are never run again. A run awaiting
    /// approval is answered with [`reopen_awaiting`](Self::reopen_awaiting) instead.
    ///
    /// # Errors
    /// [`ExecError::AwaitsApproval`], [`ExecError::NoStore`], [`ExecError::UnknownRun`],
    /// [`ExecError::Store`].
    pub async fn reopen(&self, run: &RunId) -> Result<(RunSession, ResumePoint), ExecError> {
        let store = self.store.as_ref().ok_or(ExecError::NoStore)?;
        let stored = store
            .load_run(run)
            .await?
            .ok_or_else(|| ExecError::UnknownRun(run.clone()))?;
        if stored.status == RunStatus::AwaitingApproval {
            return Err(ExecError::AwaitsApproval(run.clone()));
        }
        let point = ResumePoint::of(&stored);
        store.set_status(run, RunStatus::Running).await?;
        let mut stored = stored;
        stored.status = RunStatus::Running;
        let session = self.open(stored);
        let goal = session.record().goal.clone();
        session.emit(EventKind::RunStarted { goal });
        Ok((session, point))
    }

    /// Reopens a run that awaits approval, to run its plan (approved) or to end it
    /// (rejected). The move out of `awaiting_approval` is atomic in the store, so of two
    /// callers answering the same approval only one gets the session.
    ///
    /// # Errors
    /// [`ExecError::NotAwaitingApproval`] when the run is in another status (answered
    /// already, or never waiting); [`ExecError::NoStore`], [`ExecError::UnknownRun`],
    /// [`ExecError::Store`].
    pub async fn reopen_awaiting(
        &self,
        run: &RunId,
    ) -> Result<(RunSession, ResumePoint), ExecError> {
        let store = self.store.as_ref().ok_or(ExecError::NoStore)?;
        let load = || async {
            store
                .load_run(run)
                .await?
                .ok_or_else(|| ExecError::UnknownRun(run.clone()))
        };
        let mut stored = load().await?;
        let moved = stored.status == RunStatus::AwaitingApproval
            && store
                .change_status(run, RunStatus::AwaitingApproval, RunStatus::Running)
                .await?;
        if !moved {
            return Err(ExecError::NotAwaitingApproval {
                run: run.clone(),
                status: load().await?.status,
            });
        }
        let point = ResumePoint::of(&stored);
        stored.status = RunStatus::Running;
        let session = self.open(stored);
        let goal = session.record().goal.clone();
        session.emit(EventKind::RunStarted { goal });
        Ok((session, point))
    }

    fn open(&self, stored: StoredRun) -> RunSession {
        let id = stored.record.id.clone();
        let mirror = Arc::new(Mutex::new(stored));
        let journal = self.store.as_ref().map(|store| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(pump(store.clone(), id.clone(), rx));
            tx
        });
        let strategy = mirror_strategy(&mirror);
        // The root of the run's trace: planning, steps and model calls are inside it.
        let span = tracing::info_span!(
            parent: None,
            "invoke_workflow",
            otel.name = "invoke_workflow plan",
            otel.status_code = tracing::field::Empty,
            gen_ai.operation.name = "invoke_workflow",
            gen_ai.agent.name = "plan",
            plan.run.id = %id,
            plan.strategy = strategy,
            error.type = tracing::field::Empty,
        );
        // A stored run continues the trace it started in (another process, perhaps).
        let context = mirror.lock().ok().and_then(|m| {
            m.record
                .options
                .get(crate::trace::TRACEPARENT)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        });
        if let Some(context) = context {
            crate::trace::continue_trace(&span, &context);
        }
        RunSession {
            inner: Arc::new(Inner {
                id,
                span,
                store: self.store.clone(),
                emitter: Emitter::new(self.sink.clone(), journal, Some(mirror.clone())),
                mirror,
            }),
        }
    }
}

/// Sets `key` in a record's options (an object, or nothing yet).
fn set_option(options: &mut serde_json::Value, key: &str, value: String) {
    if !options.is_object() {
        *options = serde_json::json!({});
    }
    if let Some(map) = options.as_object_mut() {
        map.insert(key.to_owned(), serde_json::Value::String(value));
    }
}

fn mirror_strategy(mirror: &Mutex<StoredRun>) -> String {
    mirror
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .record
        .strategy
        .clone()
        .unwrap_or_default()
}

/// The report extra that marks an incomplete plan revision.
const INCOMPLETE_PLAN: &str = "incomplete_plan";

/// Where a stored run stands, for continuing it: its latest plan, the outputs of the
/// steps that completed (never run again), attempts so far and replans used.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ResumePoint {
    /// The latest plan revision, if one was recorded.
    pub plan: Option<PlanRevision>,
    /// Whether planning had not finished: there is no plan, or the latest one is only
    /// the steps handed out before planning stopped (cancelled, failed or crashed while
    /// streaming; see [`RunSession::plan_incomplete`]). A resume plans again.
    pub planning_unfinished: bool,
    /// Outputs of the completed steps of that plan; when planning had not finished, of
    /// every step that completed.
    pub completed: HashMap<StepId, String>,
    /// Attempts started per step so far.
    pub attempts: HashMap<StepId, u32>,
    /// Replans made so far.
    pub replans: u32,
    /// The strategy the run was started with.
    pub strategy: Option<String>,
    /// The status it had before it was reopened.
    pub status: Option<RunStatus>,
}

impl ResumePoint {
    /// Where `stored` stands.
    pub fn of(stored: &StoredRun) -> Self {
        let plan = stored.latest_plan().cloned();
        let incomplete = stored
            .extras
            .get(INCOMPLETE_PLAN)
            .and_then(|v| v.get("revision"))
            .and_then(serde_json::Value::as_u64);
        let planning_unfinished = match &plan {
            None => true,
            Some(latest) => incomplete == Some(u64::from(latest.revision)),
        };
        let mut point = ResumePoint {
            plan,
            planning_unfinished,
            strategy: stored.record.strategy.clone(),
            status: Some(stored.status),
            ..ResumePoint::default()
        };
        match &point.plan {
            Some(latest) if !planning_unfinished => {
                for step in &latest.plan.steps {
                    if let Some(out) = stored.output(step.id.as_str()) {
                        point.completed.insert(step.id.clone(), out.output.clone());
                    }
                    let n = stored.attempts(step.id.as_str());
                    if n > 0 {
                        point.attempts.insert(step.id.clone(), n);
                    }
                }
            }
            // Steps handed out while the plan was still being written may have finished:
            // their outputs are committed, under ids the next plan may reuse.
            _ => {
                for out in &stored.outputs {
                    point.completed.insert(out.step.clone(), out.output.clone());
                    let n = stored.attempts(out.step.as_str());
                    if n > 0 {
                        point.attempts.insert(out.step.clone(), n);
                    }
                }
            }
        }
        point.replans = stored
            .events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Replanned { .. }))
            .count() as u32;
        point
    }
}

/// One run in progress: the only writer of its journal. Cheap to clone (clones share the
/// run).
///
/// The session owns the run's lifecycle: it was created (or reopened) by a
/// [`SessionBuilder`], records plan revisions ([`plan_created`](Self::plan_created),
/// [`replanned`](Self::replanned)), journals events (batched) and step outputs, moves the
/// run's status and [`finish`](Self::finish)es it. Runners, strategies and services never
/// write to a [`RunStore`] themselves. It keeps an in-memory copy of everything it
/// journaled, so a run without a store reports the same as one with a store.
#[derive(Clone)]
pub struct RunSession {
    inner: Arc<Inner>,
}

struct Inner {
    id: RunId,
    span: tracing::Span,
    store: Option<Arc<dyn RunStore>>,
    emitter: Emitter,
    mirror: Arc<Mutex<StoredRun>>,
}

impl std::fmt::Debug for RunSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunSession")
            .field("id", &self.inner.id)
            .field("store", &self.inner.store.is_some())
            .finish_non_exhaustive()
    }
}

impl RunSession {
    /// The run's tracing span (`invoke_workflow`, the root of its trace): instrument the
    /// run's work with it so planning, step and model-call spans nest inside.
    pub fn span(&self) -> &tracing::Span {
        &self.inner.span
    }

    /// The run's id.
    pub fn id(&self) -> &RunId {
        &self.inner.id
    }

    /// What the run was started with.
    pub fn record(&self) -> RunRecord {
        self.with_mirror(|m| m.record.clone())
    }

    /// Emits an event: to the sink at once, to the store's journal in batches.
    pub fn emit(&self, kind: EventKind) {
        self.inner.emitter.emit(&self.inner.id, kind);
    }

    /// Accounts a model call made for the run (planning, critique, the answer): its
    /// `llm_call` event, from which the run's usage and forecasts are derived.
    pub fn account_call(&self, call: &plan_llm::CallRecord) {
        self.emit(crate::context::llm_call_event(call, None));
    }

    /// Commits `output`, taken from run `from`, as the output of step `step` of plan
    /// revision `revision`, with a `step_reused` event: a re-run's step that is not run
    /// again.
    ///
    /// # Errors
    /// [`ExecError::Store`] (a step commits one output per run).
    pub async fn reuse_output(
        &self,
        step: &StepId,
        output: String,
        from: &RunId,
        revision: u32,
    ) -> Result<(), ExecError> {
        let mut record = StepOutputRecord::new(step.clone(), output);
        record.attempts = 0;
        record.revision = revision;
        let emitter = &self.inner.emitter;
        let event = emitter.event(
            &self.inner.id,
            EventKind::StepReused {
                step: step.clone(),
                from: from.clone(),
            },
        );
        emitter.commit(record, event).await?;
        Ok(())
    }

    /// Journals a call the run made outside itself with its reply, for replay
    /// ([`crate::replay`]); event sinks never see it.
    pub fn record_call(&self, call: plan_core::RecordedCall) {
        self.inner
            .emitter
            .journal_only(&self.inner.id, EventKind::CallRecorded { call });
    }

    /// Records a plan revision and emits `plan_created`.
    ///
    /// # Errors
    /// [`ExecError::Store`].
    pub async fn plan_created(&self, plan: &Plan, revision: u32) -> Result<(), ExecError> {
        self.save_plan(plan, revision).await?;
        self.emit(EventKind::PlanCreated {
            plan: plan.clone(),
            revision,
        });
        Ok(())
    }

    /// Records a revised plan and emits `replanned`.
    ///
    /// # Errors
    /// [`ExecError::Store`].
    pub async fn replanned(
        &self,
        plan: &Plan,
        revision: u32,
        reason: impl Into<String>,
        kept: Vec<StepId>,
    ) -> Result<(), ExecError> {
        self.save_plan(plan, revision).await?;
        self.emit(EventKind::Replanned {
            revision,
            reason: reason.into(),
            kept,
            plan: plan.clone(),
        });
        Ok(())
    }

    async fn save_plan(&self, plan: &Plan, revision: u32) -> Result<(), ExecError> {
        // Events before the plan reach the store first, so the journal reads in order.
        self.flush().await?;
        if let Some(store) = &self.inner.store {
            store.save_plan(&self.inner.id, revision, plan).await?;
        }
        self.with_mirror(|m| {
            m.plans.retain(|p| p.revision != revision);
            m.plans.push(PlanRevision::new(revision, plan.clone()));
        });
        Ok(())
    }

    /// Keeps a named part of the report (a goal tree, critiques, repairs); it is stored
    /// when the run finishes and appears as a top-level key of the report.
    pub fn set_extra(&self, key: impl Into<String>, value: serde_json::Value) {
        self.with_mirror(|m| {
            m.extras.insert(key.into(), value);
        });
    }

    /// Marks plan revision `revision` as incomplete: planning stopped (cancelled or
    /// failed) while the plan was streaming into the runner, so the revision recorded
    /// holds only the steps handed out by then. The report says so (`incomplete_plan`),
    /// and a resume plans again instead of running what is there
    /// ([`ResumePoint::planning_unfinished`]).
    pub fn plan_incomplete(&self, revision: u32, why: &str) {
        self.set_extra(
            INCOMPLETE_PLAN,
            serde_json::json!({ "revision": revision, "reason": why }),
        );
    }

    /// Clears the mark of [`plan_incomplete`](Self::plan_incomplete), once a complete plan
    /// has replaced the incomplete one.
    pub fn plan_completed(&self) {
        self.remove_extra(INCOMPLETE_PLAN);
    }

    /// Drops a named part of the report (a goal tree that no longer fits the plan), so
    /// the run no longer shows it.
    pub fn remove_extra(&self, key: &str) {
        self.with_mirror(|m| {
            m.extras.remove(key);
        });
    }

    /// Adds named parts to the report of a run that has ended (a caller's own view of it,
    /// such as the CLI's forecast beside what the run took), keeping its status, answer,
    /// failure and the parts it has. A run still going is left alone: its own session
    /// writes its end.
    ///
    /// # Errors
    /// [`ExecError::Store`] when the run cannot be read or written, or is not in `store`.
    pub async fn amend_ended(
        store: &dyn RunStore,
        run: &RunId,
        extras: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), ExecError> {
        let stored = store
            .load_run(run)
            .await?
            .ok_or_else(|| StoreError::new(format!("no run `{run}` in the run store")))?;
        if !stored.status.is_terminal() {
            return Ok(());
        }
        let mut end = RunEnd::new(stored.status);
        end.answer = stored.answer;
        end.failure = stored.failure;
        end.extras = stored.extras;
        end.extras.extend(extras);
        store.finish_run(run, &end).await?;
        Ok(())
    }

    /// Moves the run to `status` without ending it (`awaiting_approval`, `queued`). A run
    /// that stops to wait for approval keeps the parts of its report it has so far (a goal
    /// tree, critiques, repairs) with it in the store, for whoever answers the approval,
    /// perhaps in another process.
    ///
    /// # Errors
    /// [`ExecError::Store`].
    pub async fn set_status(&self, status: RunStatus) -> Result<(), ExecError> {
        self.flush().await?;
        if let Some(store) = &self.inner.store {
            let extras = self.with_mirror(|m| m.extras.clone());
            if status == RunStatus::AwaitingApproval && !extras.is_empty() {
                // The store's one write of a run's extras; nothing ends here (no
                // `run_finished`): the run waits, with what it has.
                let waiting = RunEnd::new(status).with_extras(extras);
                store.finish_run(&self.inner.id, &waiting).await?;
            } else {
                store.set_status(&self.inner.id, status).await?;
            }
        }
        self.with_mirror(|m| m.status = status);
        Ok(())
    }

    /// Waits until every event emitted so far is in the store.
    ///
    /// # Errors
    /// [`ExecError::Store`] when writing the journal failed.
    pub async fn flush(&self) -> Result<(), ExecError> {
        self.inner.emitter.flush().await.map_err(ExecError::from)
    }

    /// Everything journaled so far, as the store would return it.
    pub fn snapshot(&self) -> StoredRun {
        self.with_mirror(|m| m.clone())
    }

    /// The report of the run as it stands.
    pub fn report(&self) -> RunReport {
        RunReport::from_stored(&self.snapshot())
    }

    /// Ends the run: emits `run_finished`, records its status, answer, failure and extras,
    /// and returns its report.
    ///
    /// # Errors
    /// [`ExecError::Store`].
    pub async fn finish(
        &self,
        status: RunStatus,
        answer: Option<String>,
        failure: Option<String>,
    ) -> Result<RunReport, ExecError> {
        if status != RunStatus::Succeeded {
            self.inner.span.record("error.type", status.as_str());
            self.inner.span.record("otel.status_code", "ERROR");
        }
        // The end is stored before `run_finished` is journaled, so whoever follows the
        // journal reads the final status once it sees `run_finished`.
        self.flush().await?;
        let end = self.with_mirror(|m| {
            m.status = status;
            m.answer.clone_from(&answer);
            m.failure.clone_from(&failure);
            m.updated = Timestamp::now();
            RunEnd::new(status)
                .with_answer(answer.clone())
                .with_failure(failure.clone())
                .with_extras(m.extras.clone())
        });
        if let Some(store) = &self.inner.store {
            store.finish_run(&self.inner.id, &end).await?;
        }
        self.emit(EventKind::RunFinished { status, answer });
        self.flush().await?;
        Ok(self.report())
    }

    pub(crate) fn emitter(&self) -> &Emitter {
        &self.inner.emitter
    }

    fn with_mirror<T>(&self, f: impl FnOnce(&mut StoredRun) -> T) -> T {
        let mut guard = self
            .inner
            .mirror
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }
}

/// Writes a run's events and outputs to the store, in order, batching events. The first
/// failure is kept and reported to the next flush.
async fn pump(store: Arc<dyn RunStore>, run: RunId, mut rx: mpsc::UnboundedReceiver<JournalMsg>) {
    let mut pending: Vec<Event> = Vec::new();
    let mut failed: Option<StoreError> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut flushes: Vec<oneshot::Sender<Result<(), StoreError>>> = Vec::new();
        for msg in batch {
            match msg {
                JournalMsg::Event(e) => pending.push(e),
                JournalMsg::Commit { output, event, ack } => {
                    pending.push(event);
                    let result = store.commit_output(&run, &output, &pending).await;
                    pending.clear();
                    let _ = ack.send(result);
                }
                JournalMsg::Flush(ack) => flushes.push(ack),
            }
        }
        if !pending.is_empty() {
            if let Err(e) = append_with_retry(store.as_ref(), &run, &pending).await {
                tracing::warn!(run = %run, error = %e, "could not journal events");
                failed.get_or_insert(e);
            }
            pending.clear();
        }
        for ack in flushes {
            let _ = ack.send(match &failed {
                Some(e) => Err(StoreError::new(format!(
                    "some events of run `{run}` could not be journaled: {e}"
                ))),
                None => Ok(()),
            });
        }
    }
}

/// A busy store (SQLite under a concurrent writer) gets a few short retries.
async fn append_with_retry(
    store: &dyn RunStore,
    run: &RunId,
    events: &[Event],
) -> Result<(), StoreError> {
    let mut delay = Duration::from_millis(20);
    let mut tries = 0;
    loop {
        match store.append_events(run, events).await {
            Ok(()) => return Ok(()),
            Err(e) if tries < 3 => {
                tracing::debug!(run = %run, error = %e, "retrying the event journal");
                tries += 1;
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
            Err(e) => return Err(e),
        }
    }
}
