//! [`Runner`]: runs a plan's steps through an executor, sequentially or in parallel, on
//! the one scheduling core ([`plan_core::Scheduler`]).

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use futures::{FutureExt as _, Stream, StreamExt as _};
use plan_core::{
    EventKind, Plan, PlanGraph, PlanProblem, RunId, RunStatus, Scheduler, Step, StepId, StepState,
    StepStatus, Timestamp,
};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::context::{CancelToken, DependencyOutput, StepContext, cap_output};
use crate::error::{ExecError, StepError, StepErrorKind};
use crate::events::{Emitter, EventSink};
use crate::executor::StepExecutor;
use crate::policy::{RunOptions, StepPolicy};
use crate::report::{Execution, RunReport};
use crate::session::{RunSession, SessionBuilder};
use crate::store::{RunRecord, RunStore, StepOutputRecord};

/// A plan revision to execute inside an existing run: the lower-level entry point for
/// strategies that plan, replan and synthesise around the runner
/// ([`Runner::execute`], [`Runner::execute_stream`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PlanRun {
    /// The run the steps belong to (already created in the store, if there is one).
    pub run_id: RunId,
    /// The plan (for [`Runner::execute_stream`]: the goal and any steps known already).
    pub plan: Plan,
    /// The plan revision (0 for the first plan).
    pub revision: u32,
    /// Outputs of steps already done (kept across a replan, or committed before a
    /// crash): these steps are not run again and their outputs feed their dependents.
    pub completed: HashMap<StepId, String>,
    /// Attempts made before, per step, so attempt numbers continue after a resume.
    pub prior_attempts: HashMap<StepId, u32>,
    /// Whether `plan` was validated already (by the runner itself).
    validated: bool,
}

impl PlanRun {
    /// Revision 0 of `plan` in run `run_id`, nothing done yet.
    pub fn new(run_id: RunId, plan: Plan) -> Self {
        Self {
            run_id,
            plan,
            revision: 0,
            completed: HashMap::new(),
            prior_attempts: HashMap::new(),
            validated: false,
        }
    }

    /// Sets the revision.
    pub fn with_revision(mut self, revision: u32) -> Self {
        self.revision = revision;
        self
    }

    /// Sets the outputs of steps already done.
    pub fn with_completed(mut self, completed: HashMap<StepId, String>) -> Self {
        self.completed = completed;
        self
    }

    /// Sets the attempts made before, per step.
    pub fn with_prior_attempts(mut self, attempts: HashMap<StepId, u32>) -> Self {
        self.prior_attempts = attempts;
        self
    }
}

/// Runs plans: starts each step the moment its last dependency completes, up to the
/// concurrency bound (1 for [`Runner::sequential`]), with per-step timeouts, retries with
/// backoff, fallbacks, skipping of the dependents of failed steps, and cancellation.
///
/// There are no waves and no polling: a finished step wakes the runner, which hands the
/// steps it made ready to new tasks at once.
///
/// A runner executes plan revisions inside a [`RunSession`] ([`execute`](Self::execute)),
/// which owns the run's journal. For a plan on its own, [`run`](Self::run),
/// [`run_stream`](Self::run_stream) and [`resume`](Self::resume) open the session
/// themselves, with the store and event sink given to the runner.
#[derive(Clone)]
pub struct Runner {
    executor: Arc<dyn StepExecutor>,
    options: RunOptions,
    sequential: bool,
    sessions: SessionBuilder,
    cancel: CancelToken,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("options", &self.options)
            .field("sequential", &self.sequential)
            .field("sessions", &self.sessions)
            .finish()
    }
}

impl Runner {
    /// A parallel runner with the default [`RunOptions`] (concurrency 4).
    pub fn parallel(executor: impl StepExecutor + 'static) -> Self {
        Self::parallel_arc(Arc::new(executor))
    }

    /// A parallel runner over a shared executor.
    pub fn parallel_arc(executor: Arc<dyn StepExecutor>) -> Self {
        Self {
            executor,
            options: RunOptions::default(),
            sequential: false,
            sessions: SessionBuilder::new(),
            cancel: CancelToken::new(),
        }
    }

    /// A sequential runner: one step at a time, in plan order among the ready steps.
    pub fn sequential(executor: impl StepExecutor + 'static) -> Self {
        Self {
            sequential: true,
            ..Self::parallel(executor)
        }
    }

    /// Sets the run options (a sequential runner keeps a concurrency of 1).
    pub fn with_options(mut self, options: RunOptions) -> Self {
        self.options = options;
        self
    }

    /// Sends every event of the runs it opens to `sink`.
    pub fn with_event_sink(mut self, sink: impl EventSink + 'static) -> Self {
        self.sessions = self.sessions.event_sink(Arc::new(sink));
        self
    }

    /// Journals the runs it opens in `store`, so they can be listed, shown and resumed.
    pub fn with_store(mut self, store: impl RunStore + 'static) -> Self {
        self.sessions = self.sessions.store(Arc::new(store));
        self
    }

    /// Opens runs with `sessions` (a store and an event sink).
    pub fn with_sessions(mut self, sessions: SessionBuilder) -> Self {
        self.sessions = sessions;
        self
    }

    /// Uses `cancel` as the run's cancel token (cancel it on Ctrl-C).
    pub fn with_cancel(mut self, cancel: CancelToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// The step executor (the router of an agent's runner): what runs one step.
    pub fn executor(&self) -> &Arc<dyn StepExecutor> {
        &self.executor
    }

    /// The run's cancel token: cancelling it stops the run; in-flight steps are cancelled
    /// and the run can be resumed.
    pub fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }

    /// The options in force.
    pub fn options(&self) -> &RunOptions {
        &self.options
    }

    /// Where the runs it opens are journaled.
    pub fn sessions(&self) -> &SessionBuilder {
        &self.sessions
    }

    fn concurrency(&self) -> usize {
        if self.sequential {
            1
        } else {
            self.options.concurrency.max(1)
        }
    }

    /// Runs a plan as a new run: validates it, opens a session (recording the run in the
    /// store, if any), emits `run_started`, `plan_created`, the step events and
    /// `run_finished`.
    ///
    /// # Errors
    /// [`ExecError::InvalidPlan`] listing every problem; [`ExecError::Store`]. Failed
    /// steps are not errors: see [`RunReport::status`].
    pub async fn run(&self, plan: Plan) -> Result<RunReport, ExecError> {
        let record = RunRecord::new(plan.goal.clone());
        self.run_with_record(record, plan).await
    }

    /// Like [`run`](Self::run), recording `record` (model spec, strategy, options).
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub async fn run_with_record(
        &self,
        record: RunRecord,
        plan: Plan,
    ) -> Result<RunReport, ExecError> {
        PlanGraph::with_limits(plan.clone(), &unlimited())?;
        let session = self.sessions.create(record).await?;
        let result = async {
            session.plan_created(&plan, 0).await?;
            self.drive(
                &session,
                PlanRun {
                    validated: true,
                    ..PlanRun::new(session.id().clone(), plan)
                },
                no_stream(),
            )
            .await
        }
        .await;
        finish(&session, result).await
    }

    /// Runs a plan whose steps are still arriving (streamed planning) as a new run: each
    /// step may start as soon as it and its dependencies are in, before the plan is
    /// complete. The plan is validated when the stream ends; `plan_created` is emitted and
    /// the plan saved then.
    ///
    /// # Errors
    /// [`ExecError::InvalidPlan`] when the streamed plan turns out invalid (steps that
    /// could run have run and their outputs are saved); [`ExecError::Store`].
    pub async fn run_stream<S>(&self, record: RunRecord, steps: S) -> Result<RunReport, ExecError>
    where
        S: Stream<Item = Step> + Send,
    {
        let session = self.sessions.create(record).await?;
        let record = session.record();
        let run = PlanRun::new(
            record.id.clone(),
            Plan::new(record.goal.clone(), Vec::new()),
        );
        let result = self.drive(&session, run, Some(Box::pin(steps))).await;
        finish(&session, result).await
    }

    /// Continues a run from the store after a crash or a cancellation: reloads the latest
    /// plan revision and the committed outputs, never re-runs a completed step, and runs
    /// every other step (those in flight when the process died included).
    ///
    /// # Errors
    /// [`ExecError::NoStore`], [`ExecError::UnknownRun`], [`ExecError::NoPlan`],
    /// [`ExecError::Store`].
    pub async fn resume(&self, run_id: &RunId) -> Result<RunReport, ExecError> {
        let (session, point) = self.sessions.reopen(run_id).await?;
        // A runner cannot plan: a plan that is missing or incomplete stays unrun.
        let Some(latest) = point.plan.filter(|_| !point.planning_unfinished) else {
            let err = ExecError::NoPlan(run_id.clone());
            return finish(&session, Err(err)).await;
        };
        let run = PlanRun::new(run_id.clone(), latest.plan)
            .with_revision(latest.revision)
            .with_completed(point.completed)
            .with_prior_attempts(point.attempts);
        let result = self.drive(&session, run, no_stream()).await;
        finish(&session, result).await
    }

    /// Executes one plan revision inside a run's session (the session emitted
    /// `run_started`; the caller records the plan with
    /// [`RunSession::plan_created`]/[`RunSession::replanned`] and ends the run with
    /// [`RunSession::finish`]). Emits the step events and `progress`, and commits outputs
    /// through the session.
    ///
    /// # Errors
    /// [`ExecError::InvalidPlan`]; [`ExecError::Store`].
    pub async fn execute(
        &self,
        session: &RunSession,
        run: PlanRun,
    ) -> Result<Execution, ExecError> {
        self.drive(session, run, no_stream()).await
    }

    /// Like [`execute`](Self::execute), with the plan's steps arriving on `steps` (added
    /// to the steps already in `run.plan`). Steps start as soon as they and their
    /// dependencies are in; the plan is recorded (`plan_created`) when the stream ends.
    /// Cancelled before that, the steps handed out so far are recorded, marked as an
    /// incomplete plan ([`RunSession::plan_incomplete`]) that a resume plans again.
    ///
    /// # Errors
    /// As [`run_stream`](Self::run_stream).
    pub async fn execute_stream<S>(
        &self,
        session: &RunSession,
        run: PlanRun,
        steps: S,
    ) -> Result<Execution, ExecError>
    where
        S: Stream<Item = Step> + Send,
    {
        self.drive(session, run, Some(Box::pin(steps))).await
    }

    async fn drive<S>(
        &self,
        session: &RunSession,
        run: PlanRun,
        mut stream: Option<std::pin::Pin<Box<S>>>,
    ) -> Result<Execution, ExecError>
    where
        S: Stream<Item = Step> + Send + ?Sized,
    {
        let t0 = Instant::now();
        let emitter = session.emitter().clone();
        let PlanRun {
            run_id,
            mut plan,
            revision,
            completed,
            prior_attempts,
            validated,
        } = run;
        let goal: Arc<str> = Arc::from(plan.goal.as_str());
        // A child, so that a failure cancelling the run leaves the caller's token alone.
        let cancel = self.cancel.child();
        let concurrency = self.concurrency();

        let mut state = State {
            sched: Scheduler::new(),
            steps: Vec::with_capacity(plan.steps.len()),
            outputs: Vec::with_capacity(plan.steps.len()),
            reports: Vec::with_capacity(plan.steps.len()),
            problems: Vec::new(),
        };
        if stream.is_none() && !validated {
            // Every problem at once, before anything runs.
            PlanGraph::with_limits(plan.clone(), &unlimited())?;
        }
        let initial = std::mem::take(&mut plan.steps);
        for step in initial {
            state.add(step, &completed, &prior_attempts);
        }
        if stream.is_none() {
            state.sched.finish_adding()?;
        }
        if let Some(problem) = state.problems.pop() {
            return Err(ExecError::InvalidStep(problem));
        }
        if !completed.is_empty() {
            session.emit(EventKind::progress(
                state.sched.counts().finished(),
                state.sched.len(),
            ));
        }

        let mut ready: BTreeSet<usize> = BTreeSet::new();
        let mut tasks: JoinSet<StepRun> = JoinSet::new();
        let mut cancelled = cancel.is_cancelled();
        let mut failure: Option<ExecError> = None;

        loop {
            ready.extend(state.sched.take_ready());
            let blocked = state.sched.take_blocked();
            if !blocked.is_empty() {
                for b in blocked {
                    state.skip(
                        b,
                        session,
                        "a step it depends on failed or was skipped".into(),
                    );
                }
                state.progress(session);
            }
            while !cancelled && failure.is_none() && tasks.len() < concurrency {
                let Some(i) = ready.pop_first() else { break };
                let job = StepJob {
                    index: i,
                    run: run_id.clone(),
                    goal: goal.clone(),
                    step: state.steps[i].clone(),
                    dependencies: state.dependency_outputs(i, self.options.max_dependency_chars),
                    policy: self.options.policy_for(&state.steps[i].id).clone(),
                    prior_attempts: state.reports[i].attempts,
                    cancel: cancel.child(),
                    emitter: emitter.clone(),
                    executor: self.executor.clone(),
                    t0,
                };
                let span = step_span(session.span(), &state.steps[i]);
                let recorder = span.clone();
                // The step's calls are recorded (or replayed) as the run's are.
                let calls = crate::replay::current();
                let step_id = state.steps[i].id.clone();
                tasks.spawn(crate::replay::in_step(
                    calls,
                    step_id,
                    async move {
                        let run = job.run().await;
                        if let Err(e) = &run.result {
                            recorder.record("error.type", e.kind.as_str());
                            recorder.record("otel.status_code", "ERROR");
                        }
                        run
                    }
                    .instrument(span),
                ));
            }
            if tasks.is_empty() && (stream.is_none() || cancelled || failure.is_some()) {
                break;
            }
            tokio::select! {
                biased;
                () = cancel.cancelled(), if !cancelled => {
                    cancelled = true;
                }
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    let outcome = match joined {
                        Ok(outcome) => outcome,
                        Err(e) => {
                            failure.get_or_insert(ExecError::StepPanicked {
                                step: "unknown".to_owned(),
                                message: e.to_string(),
                            });
                            continue;
                        }
                    };
                    if let Err(e) = state.finish(outcome, session, revision, &cancel).await {
                        failure.get_or_insert(e);
                        cancel.cancel();
                    }
                }
                item = next_step(&mut stream), if stream.is_some() => {
                    match item {
                        Some(step) => state.add(step, &completed, &prior_attempts),
                        None => {
                            stream = None;
                            if let Err(e) = state.sched.finish_adding() {
                                failure.get_or_insert(ExecError::InvalidPlan(e));
                                cancel.cancel();
                            }
                            let plan_so_far = Plan::new(goal.to_string(), state.steps.clone());
                            if let Err(e) = session.plan_created(&plan_so_far, revision).await {
                                failure.get_or_insert(e);
                            }
                        }
                    }
                    if let Some(problem) = state.problems.pop() {
                        failure.get_or_insert(ExecError::InvalidStep(problem));
                        cancel.cancel();
                    }
                }
            }
        }

        if let Some(e) = failure {
            return Err(e);
        }
        // Cancelled while the plan was still streaming in: the steps handed out so far
        // are recorded (the journal names them), as an incomplete plan a resume replaces.
        if stream.is_some() && !state.steps.is_empty() {
            let plan_so_far = Plan::new(goal.to_string(), state.steps.clone());
            session.plan_created(&plan_so_far, revision).await?;
            session.plan_incomplete(revision, "cancelled while the plan was streaming in");
        }
        // Steps that can never become ready (only possible for a streamed plan, which
        // reported its problems above) are skipped.
        if !cancelled {
            let stuck = state.sched.block_stuck();
            for i in stuck {
                state.skip(
                    i,
                    session,
                    "it can never run: a dependency is missing".into(),
                );
            }
        }
        for report in &mut state.reports {
            if matches!(report.status, StepStatus::Pending | StepStatus::Running) {
                report.status = StepStatus::Cancelled;
            }
        }
        let status = if cancelled {
            RunStatus::Cancelled
        } else if state
            .reports
            .iter()
            .all(|r| r.status == StepStatus::Completed)
        {
            RunStatus::Succeeded
        } else {
            RunStatus::Failed
        };
        plan.steps = state.steps;
        Ok(Execution {
            run_id,
            status,
            plan,
            revision,
            steps: state.reports,
            usage: emitter.usage(),
            duration_ms: millis(t0.elapsed()),
        })
    }
}

/// A placeholder stream type for runs without a stream.
type Nothing = futures::stream::Empty<Step>;

fn no_stream() -> Option<std::pin::Pin<Box<Nothing>>> {
    None
}

async fn next_step<S: Stream<Item = Step> + ?Sized>(
    stream: &mut Option<std::pin::Pin<Box<S>>>,
) -> Option<Step> {
    match stream {
        Some(s) => s.next().await,
        None => None,
    }
}

fn unlimited() -> plan_core::Limits {
    plan_core::Limits::with_max_steps(usize::MAX)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Ends a run opened by the runner itself: its status follows the execution, and an
/// error is returned after the run is recorded as failed.
async fn finish(
    session: &RunSession,
    result: Result<Execution, ExecError>,
) -> Result<RunReport, ExecError> {
    match result {
        Ok(execution) => {
            let failure = (execution.status == RunStatus::Failed).then(|| {
                let failed: Vec<String> = execution
                    .failures()
                    .map(|s| format!("`{}`", s.id))
                    .collect();
                if failed.is_empty() {
                    "the run did not complete every step".to_owned()
                } else {
                    format!("step(s) {} failed", failed.join(", "))
                }
            });
            session.finish(execution.status, None, failure).await
        }
        Err(e) => {
            let _ = session
                .finish(RunStatus::Failed, None, Some(e.to_string()))
                .await;
            Err(e)
        }
    }
}

struct State {
    sched: Scheduler,
    steps: Vec<Step>,
    outputs: Vec<Option<Arc<str>>>,
    reports: Vec<StepState>,
    problems: Vec<PlanProblem>,
}

impl State {
    fn add(
        &mut self,
        step: Step,
        completed: &HashMap<StepId, String>,
        prior_attempts: &HashMap<StepId, u32>,
    ) {
        match self.sched.add_step(&step) {
            Ok(i) => {
                let done = completed.get(&step.id);
                let mut report = match done {
                    Some(output) => {
                        let mut s = StepState::completed(step.id.clone(), output.clone());
                        s.reused = true;
                        s
                    }
                    None => StepState::pending(step.id.clone()),
                };
                report.attempts = prior_attempts.get(&step.id).copied().unwrap_or(0);
                self.reports.push(report);
                self.outputs.push(done.map(|o| Arc::from(o.as_str())));
                self.steps.push(step);
                if done.is_some() {
                    self.sched.mark_completed(i);
                }
            }
            Err(problem) => self.problems.push(problem),
        }
    }

    fn dependency_outputs(&self, i: usize, max_chars: usize) -> Vec<DependencyOutput> {
        let step = &self.steps[i];
        let mut out = Vec::with_capacity(step.dependencies.len());
        for (k, dep) in step.dependencies.iter().enumerate() {
            if step.dependencies[..k].contains(dep) {
                continue;
            }
            let Some(d) = self.sched.index_of(dep.as_str()) else {
                continue;
            };
            let Some(text) = &self.outputs[d] else {
                continue;
            };
            let (output, truncated) = cap_output(text, max_chars);
            out.push(DependencyOutput {
                id: dep.clone(),
                description: self.steps[d].description.clone(),
                output,
                truncated,
            });
        }
        out
    }

    fn skip(&mut self, i: usize, session: &RunSession, reason: String) {
        let failed_deps: Vec<&str> = self.steps[i]
            .dependencies
            .iter()
            .filter(|d| {
                self.sched.index_of(d.as_str()).is_some_and(|k| {
                    matches!(
                        self.reports[k].status,
                        StepStatus::Failed | StepStatus::Skipped
                    )
                })
            })
            .map(StepId::as_str)
            .collect();
        let reason = if failed_deps.is_empty() {
            reason
        } else {
            format!(
                "skipped because {} did not complete",
                failed_deps
                    .iter()
                    .map(|d| format!("`{d}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let report = &mut self.reports[i];
        report.status = StepStatus::Skipped;
        report.error = Some(reason.clone());
        session.emit(EventKind::StepSkipped {
            step: self.steps[i].id.clone(),
            reason,
        });
    }

    fn progress(&self, session: &RunSession) {
        session.emit(EventKind::progress(
            self.sched.counts().finished(),
            self.sched.len(),
        ));
    }

    async fn finish(
        &mut self,
        run: StepRun,
        session: &RunSession,
        revision: u32,
        cancel: &CancelToken,
    ) -> Result<(), ExecError> {
        let i = run.index;
        {
            let report = &mut self.reports[i];
            report.attempts = run.attempts;
            report.fallback = run.fallback;
            report.started_ms = Some(run.started_ms);
            report.duration_ms = Some(run.duration_ms);
        }
        match run.result {
            Ok(output) => {
                let id = self.steps[i].id.clone();
                let record = StepOutputRecord {
                    step: id.clone(),
                    output: output.clone(),
                    attempts: run.attempts,
                    fallback: run.fallback,
                    revision,
                    duration_ms: run.last_attempt_ms,
                    ts: Timestamp::now(),
                };
                let event = session.emitter().event(
                    session.id(),
                    EventKind::StepCompleted {
                        step: id,
                        duration_ms: run.last_attempt_ms,
                    },
                );
                session.emitter().commit(record, event).await?;
                let report = &mut self.reports[i];
                report.status = StepStatus::Completed;
                self.outputs[i] = Some(Arc::from(output.as_str()));
                report.output = Some(output);
                self.sched.complete(i);
                self.progress(session);
            }
            Err(e) if e.is_cancelled() && cancel.is_cancelled() => {
                self.reports[i].status = StepStatus::Cancelled;
            }
            Err(e) => {
                let report = &mut self.reports[i];
                report.status = StepStatus::Failed;
                report.error = Some(e.message);
                for b in self.sched.fail(i) {
                    self.skip(b, session, "a step it depends on failed".into());
                }
                self.progress(session);
            }
        }
        Ok(())
    }
}

/// What a step task reports back.
struct StepRun {
    index: usize,
    result: Result<String, StepError>,
    attempts: u32,
    fallback: bool,
    started_ms: u64,
    duration_ms: u64,
    last_attempt_ms: u64,
}

/// A step's GenAI `invoke_agent` span, a child of the run's span whichever task runs it.
fn step_span(run: &tracing::Span, step: &Step) -> tracing::Span {
    let agent = step.agent.as_deref().unwrap_or("default");
    tracing::info_span!(
        parent: run,
        "invoke_agent",
        otel.name = format!("invoke_agent {agent}"),
        otel.status_code = tracing::field::Empty,
        gen_ai.operation.name = "invoke_agent",
        gen_ai.agent.name = agent,
        plan.step.id = %step.id,
        plan.step.kind = step.kind.as_str(),
        error.type = tracing::field::Empty,
    )
}

/// Everything a step task needs.
struct StepJob {
    index: usize,
    run: RunId,
    goal: Arc<str>,
    step: Step,
    dependencies: Vec<DependencyOutput>,
    policy: StepPolicy,
    prior_attempts: u32,
    cancel: CancelToken,
    emitter: Emitter,
    executor: Arc<dyn StepExecutor>,
    t0: Instant,
}

impl StepJob {
    async fn run(self) -> StepRun {
        let start = Instant::now();
        let started_ms = millis(start.duration_since(self.t0));
        let index = self.index;
        let mut attempts = self.prior_attempts;
        let mut fallback = false;
        let mut last_attempt_ms = 0;
        let result =
            AssertUnwindSafe(self.attempts(&mut attempts, &mut fallback, &mut last_attempt_ms))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".to_owned());
                    let error = StepError::fatal(format!("the step executor panicked: {message}"));
                    self.emitter.emit(
                        &self.run,
                        EventKind::StepFailed {
                            step: self.step.id.clone(),
                            error: error.message.clone(),
                            retrying: false,
                        },
                    );
                    Err(error)
                });
        StepRun {
            index,
            result,
            attempts,
            fallback,
            started_ms,
            duration_ms: millis(start.elapsed()),
            last_attempt_ms,
        }
    }

    async fn attempts(
        &self,
        attempts: &mut u32,
        fallback: &mut bool,
        last_attempt_ms: &mut u64,
    ) -> Result<String, StepError> {
        let mut step = self.step.clone();
        loop {
            let mut delays: Option<Vec<Duration>> = None;
            let mut tries: u32 = 0;
            let error = loop {
                *attempts += 1;
                tries += 1;
                self.emit(EventKind::StepStarted {
                    step: step.id.clone(),
                    attempt: *attempts,
                });
                let ctx = StepContext {
                    run: self.run.clone(),
                    goal: self.goal.clone(),
                    step: step.clone(),
                    dependencies: self.dependencies.clone(),
                    attempt: *attempts,
                    cancel: self.cancel.clone(),
                    events: self.emitter.clone(),
                };
                let attempt_start = Instant::now();
                let calls = Arc::new(ModelCalls::default());
                let work = MODEL_CALLS.scope(calls.clone(), self.executor.execute(&ctx));
                let result = tokio::select! {
                    biased;
                    () = self.cancel.cancelled() => Err(StepError::cancelled()),
                    r = with_timeout(self.policy.timeout, work) => r,
                };
                *last_attempt_ms = millis(attempt_start.elapsed());
                match result {
                    Ok(output) => return Ok(output),
                    Err(_) if self.cancel.is_cancelled() => return Err(StepError::cancelled()),
                    Err(e) => {
                        let e = if e.is_cancelled() {
                            StepError::fatal(
                                "the step executor gave up (cancelled) although the run was not cancelled",
                            )
                        } else if e.kind == StepErrorKind::Timeout && calls.cut() {
                            cut_model_call(e)
                        } else {
                            e
                        };
                        let retrying = retryable(&e, &calls) && tries <= self.policy.retries;
                        self.emit(EventKind::StepFailed {
                            step: step.id.clone(),
                            error: e.message.clone(),
                            retrying,
                        });
                        if !retrying {
                            break e;
                        }
                        let delay = delays
                            .get_or_insert_with(|| self.policy.backoff.delays(self.policy.retries))
                            .get(tries as usize - 1)
                            .copied()
                            .unwrap_or(Duration::ZERO);
                        // A server that said when to come back is not asked sooner.
                        let delay = match e.retry_after {
                            Some(after) => delay.max(after.min(crate::error::MAX_RETRY_AFTER)),
                            None => delay,
                        };
                        if !delay.is_zero() {
                            tokio::select! {
                                () = self.cancel.cancelled() => return Err(StepError::cancelled()),
                                () = tokio::time::sleep(delay) => {}
                            }
                        }
                    }
                }
            };
            if !*fallback
                && self.policy.fallback
                && let Some(fb) = self.step.fallback_step()
            {
                self.emit(EventKind::FallbackUsed {
                    step: step.id.clone(),
                    error: error.message.clone(),
                });
                *fallback = true;
                step = fb;
                continue;
            }
            return Err(error);
        }
    }

    fn emit(&self, kind: EventKind) {
        self.emitter.emit(&self.run, kind);
    }
}

tokio::task_local! {
    /// The model calls of the step attempt this task is running (see [`model_call`]).
    static MODEL_CALLS: Arc<ModelCalls>;
}

/// How many model calls a step attempt started and how many of them returned.
#[derive(Debug, Default)]
struct ModelCalls {
    started: AtomicUsize,
    finished: AtomicUsize,
}

impl ModelCalls {
    /// Whether a model call was abandoned before it returned (cut by the step timeout).
    fn cut(&self) -> bool {
        self.started.load(Ordering::SeqCst) > self.finished.load(Ordering::SeqCst)
    }
}

/// Runs `call`, a model call an executor makes for a step (through its provider, retry
/// layer included), so that the runner knows whether the step's timeout cut it.
///
/// That is how the bound on model calls holds: the provider's retry layer makes at most
/// its `max_attempts` of one call, and a step attempt whose timeout cuts a model call is
/// not tried again (that would make the call again, retry layer and all); its fallback
/// runs, or the plan is revised. Outside a step attempt (a tool loop of its own) it only
/// runs `call`.
pub async fn model_call<F: Future>(call: F) -> F::Output {
    let calls = MODEL_CALLS.try_with(Arc::clone).ok();
    if let Some(calls) = &calls {
        calls.started.fetch_add(1, Ordering::SeqCst);
    }
    let output = call.await;
    if let Some(calls) = &calls {
        calls.finished.fetch_add(1, Ordering::SeqCst);
    }
    output
}

/// Whether a failed attempt may be tried again: a retryable error, or a timeout that did
/// not cut a model call (the provider's retry layer has retried that call already).
fn retryable(e: &StepError, calls: &ModelCalls) -> bool {
    e.is_retryable() && !(e.kind == StepErrorKind::Timeout && calls.cut())
}

/// A step timeout that cut a model call, saying why the step is not tried again.
fn cut_model_call(mut e: StepError) -> StepError {
    e.message.push_str(
        " (it cut a model call, which the provider's own timeout and retry layer bound, so \
         the step is not tried again: give the step at least the provider's timeout times \
         its attempts, as StepPolicy::with_model_call_timeout does)",
    );
    e
}

async fn with_timeout<F>(timeout: Option<Duration>, work: F) -> Result<String, StepError>
where
    F: std::future::Future<Output = Result<String, StepError>>,
{
    match timeout {
        Some(limit) => match tokio::time::timeout(limit, work).await {
            Ok(r) => r,
            Err(_) => Err(StepError::timeout(limit)),
        },
        None => work.await,
    }
}
