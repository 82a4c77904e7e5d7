//! The [`Agent`] facade: a goal in, a run session opened, the strategy run inside it, the
//! answer written and the report out. Built by [`AgentBuilder`](crate::AgentBuilder).

use std::sync::Arc;

use plan_core::{Plan, PlanGraph, RunId};
use plan_exec::context::CancelToken;
use plan_exec::report::RunReport;
use plan_exec::session::{RunSession, SessionBuilder};
use tracing::Instrument;

use crate::answer;
use crate::builder::AgentBuilder;
use crate::error::StrategyError;
use crate::forecast::{Ending, Forecasting, PlanSource};
use crate::strategy::{
    DirectAnswer, Outcome, PlanOutcome, PlanStart, Planning, Strategy, StrategyContext,
    StrategyRegistry,
};

/// The warning of a run that was to stop for approval of its plan but was answered
/// directly, with no plan.
const NO_PLAN_TO_APPROVE: &str =
    "the goal was answered directly, with no plan: there was no plan to approve";

/// A planning agent: turns a goal into a plan, runs it with the chosen strategy, and
/// writes the answer.
///
/// Each run lives in a [`RunSession`] (journaled in the store, if any); the strategy
/// plans and executes inside it, and the report is built from the run's journal, so the
/// report of `run` equals the report read back from the store later.
///
/// A run journaled in a store is forecast: its report's `forecast` says what its first
/// plan was expected to take (model calls, tokens, wall time and, when the model's price
/// is known, dollars, as `[low, high]` ranges, from the store's earlier runs of the same
/// model, else from defaults, said as such), and its `actual` what the run took, both
/// recorded with the run's end ([`AgentBuilder::forecaster`],
/// [`AgentBuilder::without_forecasts`]).
///
/// ```no_run
/// use plan_strategies::{Agent, StrategyKind};
/// # async fn f(provider: std::sync::Arc<dyn plan_llm::Provider>) -> Result<(), plan_strategies::StrategyError> {
/// let agent = Agent::builder()
///     .provider(provider)
///     .strategy(StrategyKind::Adaptive)
///     .max_replans(2)
///     .build()?;
/// let report = agent.run("Compare the three most used Rust web frameworks").await?;
/// println!("{}", report.answer.unwrap_or_default());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Agent {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) cx: StrategyContext,
    pub(crate) strategy: Arc<dyn Strategy>,
    pub(crate) registry: StrategyRegistry,
    pub(crate) sessions: SessionBuilder,
    pub(crate) model: String,
    pub(crate) cancel: CancelToken,
    /// The spec recorded with every run ([`AgentBuilder::spec`]).
    pub(crate) spec: crate::spec::RunSpec,
    /// How runs are forecast, when they are journaled in a store.
    pub(crate) forecasting: Option<Forecasting>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("strategy", &self.inner.strategy.name())
            .field("model", &self.inner.model)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// A builder; [`provider`](AgentBuilder::provider) is required.
    pub fn builder() -> AgentBuilder {
        AgentBuilder::new()
    }

    /// The spec this agent records with every run it starts.
    pub fn spec(&self) -> &crate::spec::RunSpec {
        &self.inner.spec
    }

    /// The strategy's name.
    pub fn strategy_name(&self) -> &str {
        self.inner.strategy.name()
    }

    /// What the strategies work with (model, planner, runner, settings).
    pub fn context(&self) -> &StrategyContext {
        &self.inner.cx
    }

    /// The cancel token: cancelling it stops the current run (it can be resumed).
    pub fn cancel_token(&self) -> &CancelToken {
        &self.inner.cancel
    }

    /// Plans, runs and answers `goal` with the agent's strategy.
    ///
    /// Failed steps, exhausted replans and stalls are not errors: the report says
    /// `failed` and why ([`RunReport::failure`]).
    ///
    /// # Errors
    /// A model call for planning failed, no valid plan could be made, or the store failed.
    pub async fn run(&self, goal: impl Into<String>) -> Result<RunReport, StrategyError> {
        let goal = goal.into();
        if goal.trim().is_empty() {
            return Err(StrategyError::Config(
                "the goal is empty: say what the agent should achieve".to_owned(),
            ));
        }
        let session = self.open(&goal).await?;
        self.run_started(session, &goal).await
    }

    /// Makes the plan the strategy would run, without running it (`plan plan`).
    ///
    /// # Errors
    /// As for planning in [`run`](Self::run).
    pub async fn plan_only(&self, goal: impl Into<String>) -> Result<PlanOutcome, StrategyError> {
        let goal = goal.into();
        self.inner.strategy.plan(&self.inner.cx, &goal).await
    }

    /// Meets `goal` as far as the strategy can before anything runs, for a door that
    /// plans first (an approval, a cost check): the plan, to run with
    /// [`execute_planned`](Self::execute_planned) once checked, or, when the strategy
    /// answered the goal with no plan (`auto`'s direct route), the report of the finished
    /// run: `succeeded`, `route: direct`, and, when the agent's spec asks for approval of
    /// the plan, a warning that there was no plan to approve.
    ///
    /// # Errors
    /// As for planning in [`run`](Self::run); the store failed.
    pub async fn plan_or_answer(
        &self,
        goal: impl Into<String>,
    ) -> Result<Planning<RunReport>, StrategyError> {
        let goal = goal.into();
        match self
            .inner
            .strategy
            .plan_or_answer(&self.inner.cx, &goal)
            .await?
        {
            Planning::Plan(planned) => Ok(Planning::Plan(planned)),
            Planning::Answered(direct) => {
                let session = self.open(&goal).await?;
                let note = (self.inner.spec.approve == crate::spec::Approval::Plan)
                    .then_some(NO_PLAN_TO_APPROVE);
                let report = self.answered(&session, &goal, direct, note).await?;
                Ok(Planning::Answered(report))
            }
        }
    }

    /// Ends the run in `session` with a direct answer, `note` (if any) among its warnings.
    async fn answered(
        &self,
        session: &RunSession,
        goal: &str,
        direct: DirectAnswer,
        note: Option<&str>,
    ) -> Result<RunReport, StrategyError> {
        let cx = &self.inner.cx;
        async {
            direct.record(cx, session);
            if let Some(note) = note {
                cx.record_adjustments(session, &[note.to_owned()]);
            }
            let outcome = Ok(Outcome::direct(goal, direct.answer));
            answer::finish(cx, session, outcome, self.ending(PlanSource::Planned)).await
        }
        .instrument(session.span().clone())
        .journaled(self, session)
        .await
    }

    /// Runs a given plan, with no planning call (`plan exec`), under the agent's strategy:
    /// its failure handling (replanning, for the adaptive strategy) applies as for a plan
    /// it made itself. The answer is synthesised.
    ///
    /// # Errors
    /// [`StrategyError::Plan`] when the plan is invalid (every problem listed), or the
    /// store failed.
    pub async fn execute(&self, plan: Plan) -> Result<RunReport, StrategyError> {
        self.execute_from(PlanOutcome::new(plan), PlanSource::Given)
            .await
    }

    /// Makes a given plan ready to run as the agent's strategy would, without running
    /// anything ([`Strategy::prepare_given`]: the reflective strategy critiques and
    /// improves it): the plan a door checks against a budget or asks a person to approve
    /// (perhaps edited), then runs with [`execute_prepared`](Self::execute_prepared).
    ///
    /// # Errors
    /// [`StrategyError::Plan`] when the plan is invalid (every problem listed); a model
    /// call of the preparation failed.
    pub async fn prepare(&self, plan: Plan) -> Result<PlanOutcome, StrategyError> {
        PlanGraph::with_limits(plan.clone(), &plan_core::Limits::with_max_steps(usize::MAX))?;
        self.inner
            .strategy
            .prepare_given(&self.inner.cx, plan)
            .await
    }

    /// Runs a given plan [`prepare`](Self::prepare)d before (and perhaps approved or
    /// edited since), keeping what the preparation produced (critiques, calls); its
    /// forecast has no planning call, as [`execute`](Self::execute)'s.
    ///
    /// # Errors
    /// As [`execute`](Self::execute).
    pub async fn execute_prepared(
        &self,
        prepared: PlanOutcome,
    ) -> Result<RunReport, StrategyError> {
        self.execute_from(prepared, PlanSource::Given).await
    }

    /// Runs a plan made by [`plan_only`](Self::plan_only) (and perhaps approved or edited
    /// since), keeping what planning produced (the goal tree, critiques, repairs, calls).
    ///
    /// # Errors
    /// As [`execute`](Self::execute).
    pub async fn execute_planned(&self, planned: PlanOutcome) -> Result<RunReport, StrategyError> {
        self.execute_from(planned, PlanSource::Planned).await
    }

    /// Runs `planned`, whose plan comes from `source` (for its forecast).
    async fn execute_from(
        &self,
        planned: PlanOutcome,
        source: PlanSource,
    ) -> Result<RunReport, StrategyError> {
        PlanGraph::with_limits(
            planned.plan.clone(),
            &plan_core::Limits::with_max_steps(usize::MAX),
        )?;
        if let Some(catalogue) = &self.inner.cx.agents {
            catalogue.check_plan(&planned.plan)?;
        }
        let session = self.open(&planned.plan.goal).await?;
        let cx = &self.inner.cx;
        cx.record_plan_outcome(&session, &planned);
        async {
            let outcome = self
                .inner
                .strategy
                .execute(cx, &session, PlanStart::from_outcome(planned))
                .await;
            answer::finish(cx, &session, outcome, self.ending(source)).await
        }
        .instrument(session.span().clone())
        .journaled(self, &session)
        .await
    }

    /// Continues a run from the store after a crash or a cancellation, with the strategy
    /// it was started with (resolved through the [registry](AgentBuilder::registry)):
    /// completed steps are never run again; an adaptive run keeps replanning within what
    /// is left of its replans.
    ///
    /// # Errors
    /// [`StrategyError::Config`] without a store; [`StrategyError::Exec`] for an unknown
    /// run or a store failure; [`StrategyError::UnknownStrategy`] when the run's strategy
    /// is not registered.
    pub async fn resume(&self, run_id: &RunId) -> Result<RunReport, StrategyError> {
        if self.inner.sessions.store_ref().is_none() {
            return Err(StrategyError::Config(
                "resuming needs a run store: build the agent with .store(..)".to_owned(),
            ));
        }
        let (session, point) = self.inner.sessions.reopen(run_id).await?;
        self.note_overrides(&session);
        let strategy = self
            .stored_strategy(&session, point.strategy.as_deref())
            .await?;
        let cx = &self.inner.cx;
        async {
            let outcome = match point.plan.clone() {
                Some(latest) if !point.planning_unfinished => {
                    strategy
                        .execute(cx, &session, PlanStart::resume(point, latest))
                        .await
                }
                // It stopped before its plan was complete: plan again under the same
                // run, keeping the steps that finished.
                _ => crate::strategy::plan_again(strategy.as_ref(), cx, &session, &point).await,
            };
            answer::finish(cx, &session, outcome, self.ending(PlanSource::Planned)).await
        }
        .instrument(session.span().clone())
        .journaled(self, &session)
        .await
    }

    /// What runs one step of this agent's plans (its router: code steps in the sandbox,
    /// the others with the model and tools), for running steps one at a time elsewhere (a
    /// fleet worker executing steps of runs another worker drives).
    pub fn step_executor(&self) -> Arc<dyn plan_exec::executor::StepExecutor> {
        self.inner.cx.runner().executor().clone()
    }

    /// Plans `goal` into a new stored run and stops it there, `awaiting_approval`: a wait
    /// that outlives the process. Someone answers it later, perhaps from another process,
    /// with [`approve`](Self::approve) (which runs the plan, or an edited one) or
    /// [`reject`](Self::reject). The report has the plan and no steps run.
    ///
    /// A goal the strategy answers with no plan (`auto`'s direct route) has nothing to
    /// approve: the run ends `succeeded` with the answer, and its warnings say so.
    ///
    /// # Errors
    /// [`StrategyError::Config`] without a store; as for planning in [`run`](Self::run).
    pub async fn plan_for_approval(
        &self,
        goal: impl Into<String>,
    ) -> Result<RunReport, StrategyError> {
        let goal = goal.into();
        self.need_store("waiting for approval")?;
        let session = self.open(&goal).await?;
        self.park(session, &goal).await
    }

    /// Plans a stored run that has no plan yet (a run queued for a fleet) and stops it,
    /// `awaiting_approval`, as [`plan_for_approval`](Self::plan_for_approval) does.
    ///
    /// # Errors
    /// As [`plan_for_approval`](Self::plan_for_approval); [`StrategyError::Exec`] for an
    /// unknown run.
    pub async fn plan_stored_for_approval(
        &self,
        run_id: &RunId,
    ) -> Result<RunReport, StrategyError> {
        self.need_store("waiting for approval")?;
        let (session, _) = self.inner.sessions.reopen(run_id).await?;
        let goal = session.record().goal;
        self.park(session, &goal).await
    }

    /// Plans `goal` in `session` and leaves the run awaiting approval (a failure ends it);
    /// a goal the strategy answers with no plan (`auto`'s direct route) ends `succeeded`
    /// at once, with a warning that there was no plan to approve.
    async fn park(&self, session: RunSession, goal: &str) -> Result<RunReport, StrategyError> {
        let cx = &self.inner.cx;
        // `Ok(Err(direct))`: answered with no plan, so nothing waits.
        let parked = async {
            let planned = match self.inner.strategy.plan_or_answer(cx, goal).await? {
                Planning::Plan(planned) => planned,
                Planning::Answered(direct) => return Ok(Err(direct)),
            };
            cx.record_plan_outcome(&session, &planned);
            cx.plan_created(&session, &planned.plan, 0).await?;
            // Whoever approves the plan sees what it is expected to take.
            if let Some(forecasting) = &self.inner.forecasting {
                forecasting
                    .note_forecast(&session, PlanSource::Planned)
                    .await;
            }
            session
                .set_status(plan_core::RunStatus::AwaitingApproval)
                .await?;
            Ok::<_, StrategyError>(Ok(session.report()))
        }
        .instrument(session.span().clone())
        .journaled(self, &session)
        .await;
        match parked {
            Ok(Ok(waiting)) => Ok(waiting),
            Ok(Err(direct)) => {
                self.answered(&session, goal, direct, Some(NO_PLAN_TO_APPROVE))
                    .await
            }
            Err(e) => {
                let _ = session
                    .finish(plan_core::RunStatus::Failed, None, Some(e.to_string()))
                    .await;
                Err(e)
            }
        }
    }

    /// Approves a run that awaits approval and runs it to the end under the strategy it
    /// was started with: its plan as it is, or `edited` in its place (recorded as the
    /// next revision). An edited plan is checked first, and a plan with problems is
    /// refused with every problem listed, leaving the run waiting.
    ///
    /// Steps the run has finished (an adaptive run whose replan waits) stay done: a step
    /// the edit leaves unchanged (the same id, description, kind, agent, fallback,
    /// expected output, program and dependencies) keeps its output and is not run again;
    /// a finished step the edit changed runs again under a fresh id (`b_v2`), as do the
    /// steps after it, and the report's warnings say so. A goal tree kept with the run
    /// stays while its leaves are still the plan's steps, and is dropped otherwise.
    ///
    /// # Errors
    /// [`StrategyError::Plan`] for an invalid edited plan; [`StrategyError::Exec`] with
    /// [`ExecError::NotAwaitingApproval`](plan_exec::error::ExecError::NotAwaitingApproval) when
    /// the run is not waiting (answered already); [`StrategyError::Config`] without a
    /// store.
    pub async fn approve(
        &self,
        run_id: &RunId,
        edited: Option<Plan>,
    ) -> Result<RunReport, StrategyError> {
        self.need_store("approving a run")?;
        if let Some(plan) = &edited {
            PlanGraph::with_limits(plan.clone(), &plan_core::Limits::with_max_steps(usize::MAX))?;
            if let Some(catalogue) = &self.inner.cx.agents {
                catalogue.check_plan(plan)?;
            }
        }
        let (session, point) = self.inner.sessions.reopen_awaiting(run_id).await?;
        self.note_overrides(&session);
        let strategy = self
            .stored_strategy(&session, point.strategy.as_deref())
            .await?;
        let cx = &self.inner.cx;
        async {
            let outcome = match (point.plan.clone(), edited) {
                (Some(latest), Some(plan)) if plan != latest.plan => {
                    let snapshot = session.snapshot();
                    let crate::strategy::EditedStart { mut start, changes } =
                        crate::strategy::edited_start(&snapshot, &point, plan, latest.revision + 1);
                    cx.record_adjustments(&session, &changes);
                    match cx.plan_created(&session, &start.plan, start.revision).await {
                        Ok(()) => {
                            start.announced = true;
                            strategy.execute(cx, &session, start).await
                        }
                        Err(e) => Err(e),
                    }
                }
                (Some(latest), _) => {
                    strategy
                        .execute(cx, &session, PlanStart::resume(point, latest))
                        .await
                }
                (None, _) => Err(StrategyError::Exec(plan_exec::error::ExecError::NoPlan(
                    run_id.clone(),
                ))),
            };
            answer::finish(cx, &session, outcome, self.ending(PlanSource::Planned)).await
        }
        .instrument(session.span().clone())
        .journaled(self, &session)
        .await
    }

    /// Rejects a run that awaits approval: it ends `rejected`, with `reason` as its
    /// failure, and nothing runs.
    ///
    /// # Errors
    /// As [`approve`](Self::approve) for a run that is not waiting, or without a store.
    pub async fn reject(
        &self,
        run_id: &RunId,
        reason: Option<String>,
    ) -> Result<RunReport, StrategyError> {
        self.need_store("rejecting a run")?;
        let Some(store) = self.inner.sessions.store_ref() else {
            return Err(StrategyError::Config(
                "rejecting a run needs a run store: build the agent with .store(..)".to_owned(),
            ));
        };
        crate::runs::Runs::new(store.clone())
            .event_sink(self.inner.sessions.sink().clone())
            .reject(run_id, reason)
            .await
            .map_err(crate::runs::RunsError::into_strategy_error)
    }

    /// Records in the report the changes the door continuing the run made to its spec
    /// (`spec_overrides`: field, from, to, and which door).
    fn note_overrides(&self, session: &RunSession) {
        let overrides = &self.inner.spec.overrides;
        if !overrides.is_empty() {
            session.set_extra(
                "spec_overrides",
                serde_json::to_value(overrides).unwrap_or_default(),
            );
        }
    }

    /// How a run's end is recorded: with its forecast and what it took, when runs are
    /// forecast.
    pub(crate) fn ending(&self, source: PlanSource) -> Ending<'_> {
        Ending::new(self.inner.forecasting.as_ref(), source)
    }

    fn need_store(&self, what: &str) -> Result<(), StrategyError> {
        if self.inner.sessions.store_ref().is_none() {
            return Err(StrategyError::Config(format!(
                "{what} needs a run store: build the agent with .store(..)"
            )));
        }
        Ok(())
    }

    /// The strategy a stored run was started with (the agent's own when it names none);
    /// an unknown name ends the run as failed.
    async fn stored_strategy(
        &self,
        session: &RunSession,
        name: Option<&str>,
    ) -> Result<Arc<dyn Strategy>, StrategyError> {
        match name {
            Some(name) => match self.inner.registry.get(name) {
                Ok(s) => Ok(s),
                Err(e) => {
                    let e = StrategyError::UnknownStrategy(e);
                    let _ = session
                        .finish(plan_core::RunStatus::Failed, None, Some(e.to_string()))
                        .await;
                    Err(e)
                }
            },
            None => Ok(self.inner.strategy.clone()),
        }
    }

    pub(crate) async fn open(&self, goal: &str) -> Result<RunSession, StrategyError> {
        let record = self.inner.spec.to_record(goal);
        Ok(self.inner.sessions.create(record).await?)
    }

    /// Starts a run of `goal` in the background and returns as soon as the run exists
    /// (created in the store, `run_started` emitted), with a [`RunHandle`]: the run's id
    /// at once, its events, a way to cancel it, and its report when awaited.
    ///
    /// The run is the one [`run`](Self::run) makes; when the agent's spec asks for
    /// approval of the plan ([`Approval::Plan`](crate::Approval::Plan)), it stops after
    /// planning, awaiting approval, as [`plan_for_approval`](Self::plan_for_approval)
    /// does, and the handle's report is the waiting run's.
    ///
    /// Cancelling the handle cancels the agent's [cancel token](Self::cancel_token), so
    /// it stops every run this agent runs: build one agent per run (a child of a shared
    /// token with [`CancelToken::child`]) to cancel runs one by one.
    ///
    /// # Errors
    /// [`StrategyError::Config`] for an empty goal, outside a tokio runtime, or when
    /// approval is asked for without a store; [`StrategyError::Exec`] when the store
    /// cannot record the run.
    pub async fn start(&self, goal: impl Into<String>) -> Result<RunHandle, StrategyError> {
        let goal = goal.into();
        if goal.trim().is_empty() {
            return Err(StrategyError::Config(
                "the goal is empty: say what the agent should achieve".to_owned(),
            ));
        }
        let parks = self.inner.spec.approve == crate::spec::Approval::Plan;
        if parks {
            self.need_store("waiting for approval")?;
        }
        self.spawn_run(&goal.clone(), move |agent, session| async move {
            if parks {
                agent.park(session, &goal).await
            } else {
                agent.run_started(session, &goal).await
            }
        })
        .await
    }

    /// Creates a run of `goal` and runs `work` on it in the background: the handle has
    /// the run's id at once, its events and its cancel.
    pub(crate) async fn spawn_run<F, Fut>(
        &self,
        goal: &str,
        work: F,
    ) -> Result<RunHandle, StrategyError>
    where
        F: FnOnce(Agent, RunSession) -> Fut,
        Fut: std::future::Future<Output = Result<RunReport, StrategyError>> + Send + 'static,
    {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            StrategyError::Config(
                "starting a run needs a tokio runtime: call start from async code running on tokio"
                    .to_owned(),
            )
        })?;
        let (events_in, events) = plan_exec::events::event_channel();
        let sink = Arc::new(Tee(self.inner.sessions.sink().clone(), events_in));
        let sessions = self.inner.sessions.clone().event_sink(sink);
        let session = sessions.create(self.inner.spec.to_record(goal)).await?;
        let id = session.id().clone();
        let task = runtime.spawn(work(self.clone(), session));
        Ok(RunHandle {
            id,
            cancel: self.inner.cancel.clone(),
            events: Some(events),
            task,
        })
    }

    /// Lets the strategy run `goal` in `session`, a run just created, and writes the
    /// answer.
    async fn run_started(
        &self,
        session: RunSession,
        goal: &str,
    ) -> Result<RunReport, StrategyError> {
        let cx = &self.inner.cx;
        async {
            let outcome = self.inner.strategy.run(cx, &session, goal).await;
            answer::finish(cx, &session, outcome, self.ending(PlanSource::Planned)).await
        }
        .instrument(session.span().clone())
        .journaled(self, &session)
        .await
    }
}

/// A run started with [`Agent::start`]: its id from the start, its events, its cancel
/// signal, and, awaited (it is a future), its report.
///
/// Dropping the handle does not stop the run: it goes on in the background, recorded in
/// the store, and its report can be read from there.
///
/// ```no_run
/// # async fn f(agent: plan_strategies::Agent) -> Result<(), plan_strategies::StrategyError> {
/// let mut run = agent.start("Compare the three most used Rust web frameworks").await?;
/// println!("started run {}", run.id());
/// let mut events = run.events().expect("taken once");
/// tokio::spawn(async move {
///     while let Some(event) = events.recv().await {
///         eprintln!("{}", event.kind.name());
///     }
/// });
/// let report = run.await?;
/// println!("{}", report.answer.unwrap_or_default());
/// # Ok(()) }
/// ```
#[must_use = "the run goes on without it; await it for the report"]
pub struct RunHandle {
    id: RunId,
    cancel: CancelToken,
    events: Option<plan_exec::events::EventReceiver>,
    task: tokio::task::JoinHandle<Result<RunReport, StrategyError>>,
}

impl std::fmt::Debug for RunHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunHandle")
            .field("id", &self.id)
            .field("finished", &self.task.is_finished())
            .finish_non_exhaustive()
    }
}

impl RunHandle {
    /// The run's id, as the store, the events and the report name it.
    pub fn id(&self) -> &RunId {
        &self.id
    }

    /// The run's events from `run_started` on, as they happen; the receiver ends after
    /// the run's last event. `None` once taken.
    pub fn events(&mut self) -> Option<plan_exec::events::EventReceiver> {
        self.events.take()
    }

    /// Stops the run (and any other run of the same agent); it ends `cancelled` and can
    /// be resumed. Await the handle for its report.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The token that cancels the run (the agent's).
    pub fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }

    /// Whether the run has ended here (its report is ready).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for the run's end and returns its report; the same as awaiting the handle.
    ///
    /// # Errors
    /// As [`Agent::run`]; [`StrategyError::Cancelled`] when the runtime shut down first.
    pub async fn join(self) -> Result<RunReport, StrategyError> {
        self.await
    }
}

impl std::future::Future for RunHandle {
    type Output = Result<RunReport, StrategyError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.task).poll(cx).map(|joined| {
            joined.unwrap_or_else(|e| match e.try_into_panic() {
                // A panic in the run is a bug: it goes on in the caller.
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => Err(StrategyError::Cancelled),
            })
        })
    }
}

/// Sends each event to the agent's own sink and to a started run's handle.
struct Tee(
    Arc<dyn plan_exec::events::EventSink>,
    plan_exec::events::ChannelSink,
);

impl plan_exec::events::EventSink for Tee {
    fn on_event(&self, event: &plan_core::Event) {
        self.0.on_event(event);
        self.1.on_event(event);
    }
}

/// A session's work, with every call it makes outside the run journaled for replay.
trait Journaled: std::future::Future + Sized {
    fn journaled(
        self,
        agent: &Agent,
        session: &RunSession,
    ) -> impl std::future::Future<Output = Self::Output> {
        plan_exec::replay::recording(session, agent.inner.spec.record_requests, self)
    }
}

impl<F: std::future::Future> Journaled for F {}
