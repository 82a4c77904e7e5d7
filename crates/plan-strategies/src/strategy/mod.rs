//! The [`Strategy`] trait — how plans are made and revised — with the six built-in
//! strategies, the [`StrategyContext`] they work through, and the [`StrategyRegistry`]
//! that resolves `--strategy NAME`.
//!
//! A strategy works inside a run's [`RunSession`]: it records plan revisions and model
//! calls there, and executes plans with the context's [`Runner`]. It never writes to the
//! store itself and never writes the answer: the [`Agent`](crate::Agent) opens the
//! session, calls the strategy, writes the answer and finishes the run.

mod auto;
mod builtin;
mod drive;
mod edited;
mod streamed;
mod unfinished;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use plan_core::{EventKind, GoalTree, Plan, RunStatus, StepId, StepState};
use plan_exec::report::Execution;
use plan_exec::runner::Runner;
use plan_exec::session::RunSession;
use plan_llm::{CallRecord, Provider, UsageTotals};
use serde::{Deserialize, Serialize};

use crate::agents::AgentCatalogue;
use crate::calls::Critique;
use crate::error::StrategyError;
use crate::hierarchy::RunTree;
use crate::options::StrategyOptions;
use crate::planner::{Planner, RepairNote};
use crate::report::GoalResult;

pub use auto::Auto;
pub(crate) use auto::{DIRECT, PLANNED, choose};
pub use builtin::{Adaptive, Dag, Hierarchical, Linear, Reflective};
pub(crate) use drive::chain;
pub(crate) use edited::{EditedStart, carried_start, edited_start};
pub(crate) use unfinished::plan_again;

/// How plans are made and revised. Implement it to add a strategy of your own and
/// register it in a [`StrategyRegistry`]; the built-in ones are [`Auto`], [`Linear`],
/// [`Dag`], [`Hierarchical`], [`Adaptive`] and [`Reflective`] (or [`StrategyKind`] by
/// name).
///
/// [`plan`](Self::plan) makes a plan without running anything; [`execute`](Self::execute)
/// runs any plan — model-written, approved, edited, read from a file, or reloaded to
/// resume — under the strategy's failure handling; [`run`](Self::run) does both.
#[async_trait]
pub trait Strategy: Send + Sync {
    /// The name used by `--strategy`, reports and the store (`"dag"`).
    fn name(&self) -> &str;

    /// Makes the plan this strategy would run for `goal`, without running it.
    ///
    /// # Errors
    /// A model call failed, or no valid plan could be made.
    async fn plan(&self, cx: &StrategyContext, goal: &str) -> Result<PlanOutcome, StrategyError>;

    /// Meets `goal` as far as it can before anything runs: a plan to check, approve or
    /// run, or, for a strategy that answers goals that need no plan ([`Auto`]), the answer
    /// itself. What a door calls when it plans first (approval, a cost check). The default
    /// is [`plan`](Self::plan).
    ///
    /// # Errors
    /// As [`plan`](Self::plan).
    async fn plan_or_answer(
        &self,
        cx: &StrategyContext,
        goal: &str,
    ) -> Result<Planning, StrategyError> {
        self.plan(cx, goal).await.map(Planning::Plan)
    }

    /// Makes a plan given as it is (`plan exec`) ready to run as this strategy would
    /// before running it, without running anything: what a door checks against a budget
    /// or asks a person to approve, then runs with
    /// [`Agent::execute_prepared`](crate::Agent::execute_prepared). [`Reflective`]
    /// critiques and improves it (the critiques and the revision are in the outcome, and
    /// [`execute`](Self::execute) does not review it again); the default takes it as it
    /// is.
    ///
    /// # Errors
    /// A model call the preparation makes failed.
    async fn prepare_given(
        &self,
        cx: &StrategyContext,
        plan: Plan,
    ) -> Result<PlanOutcome, StrategyError> {
        let _ = cx;
        Ok(PlanOutcome::new(plan))
    }

    /// Runs `start` inside `session` until it succeeds or the strategy gives up. The plan
    /// is recorded in the session (unless [`PlanStart::announced`]) before any step runs.
    ///
    /// # Errors
    /// The runner or the store failed, or a model call needed to revise the plan failed.
    /// Failed steps are not errors: the [`Outcome`] says `failed` and why.
    async fn execute(
        &self,
        cx: &StrategyContext,
        session: &RunSession,
        start: PlanStart,
    ) -> Result<Outcome, StrategyError>;

    /// Plans `goal` and runs the plan inside `session`. The default records the planning
    /// calls and the plan's extras (critiques, repairs), then calls
    /// [`execute`](Self::execute).
    ///
    /// # Errors
    /// As [`plan`](Self::plan) and [`execute`](Self::execute).
    async fn run(
        &self,
        cx: &StrategyContext,
        session: &RunSession,
        goal: &str,
    ) -> Result<Outcome, StrategyError> {
        let planned = self.plan(cx, goal).await?;
        cx.record_plan_outcome(session, &planned);
        self.execute(cx, session, PlanStart::from_outcome(planned))
            .await
    }
}

#[async_trait]
impl<S: Strategy + ?Sized> Strategy for Arc<S> {
    fn name(&self) -> &str {
        (**self).name()
    }
    async fn plan(&self, cx: &StrategyContext, goal: &str) -> Result<PlanOutcome, StrategyError> {
        (**self).plan(cx, goal).await
    }
    async fn plan_or_answer(
        &self,
        cx: &StrategyContext,
        goal: &str,
    ) -> Result<Planning, StrategyError> {
        (**self).plan_or_answer(cx, goal).await
    }
    async fn prepare_given(
        &self,
        cx: &StrategyContext,
        plan: Plan,
    ) -> Result<PlanOutcome, StrategyError> {
        (**self).prepare_given(cx, plan).await
    }
    async fn execute(
        &self,
        cx: &StrategyContext,
        session: &RunSession,
        start: PlanStart,
    ) -> Result<Outcome, StrategyError> {
        (**self).execute(cx, session, start).await
    }
    async fn run(
        &self,
        cx: &StrategyContext,
        session: &RunSession,
        goal: &str,
    ) -> Result<Outcome, StrategyError> {
        (**self).run(cx, session, goal).await
    }
}

/// A plan made without running it ([`Strategy::plan`], [`Agent::plan_only`](crate::Agent::plan_only)).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PlanOutcome {
    /// The plan.
    pub plan: Plan,
    /// The goal tree (hierarchical strategy).
    pub tree: Option<GoalTree>,
    /// The reviews (reflective strategy).
    pub critiques: Vec<Critique>,
    /// Repairs applied to model plans.
    pub repairs: Vec<RepairNote>,
    /// Every change made to the model's plan (re-prompts, repairs), in words.
    pub adjustments: Vec<String>,
    /// The model calls made (their usage: [`usage`](Self::usage)).
    pub calls: Vec<CallRecord>,
    /// The route the strategy chose for the goal ([`Auto`]: `planned`), recorded as the
    /// report's `route` with the plan; `None` for strategies that always plan.
    pub route: Option<String>,
}

impl PlanOutcome {
    /// An outcome holding `plan` and nothing else.
    pub fn new(plan: Plan) -> Self {
        Self {
            plan,
            tree: None,
            critiques: Vec::new(),
            repairs: Vec::new(),
            adjustments: Vec::new(),
            calls: Vec::new(),
            route: None,
        }
    }

    /// Adds model calls.
    pub fn with_calls(mut self, calls: Vec<CallRecord>) -> Self {
        self.calls.extend(calls);
        self
    }

    /// The model usage of the calls made.
    pub fn usage(&self) -> UsageTotals {
        UsageTotals::of_calls(&self.calls)
    }
}

/// What planning first made of a goal ([`Strategy::plan_or_answer`],
/// [`Agent::plan_or_answer`](crate::Agent::plan_or_answer)): a plan, or the goal answered
/// with no plan. `A` is the form of the answer: a [`DirectAnswer`] from a strategy, the
/// finished run's [`RunReport`](plan_exec::report::RunReport) from the agent. Exactly these two
/// (not `non_exhaustive`), so a door can match both.
#[derive(Clone, Debug)]
// One is made per run and matched at once: boxing the plan would only burden callers.
#[allow(clippy::large_enum_variant)]
pub enum Planning<A = DirectAnswer> {
    /// A plan, not yet run: check or approve it, then run it
    /// ([`Agent::execute_planned`](crate::Agent::execute_planned)).
    Plan(PlanOutcome),
    /// The goal needed no plan and was answered directly: there is nothing to approve.
    Answered(A),
}

/// A goal answered directly, with no plan ([`Auto`]'s `direct` route).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DirectAnswer {
    /// The answer.
    pub answer: String,
    /// The model calls that wrote it (the routing call, and the call that wrote a long
    /// answer in full).
    pub calls: Vec<CallRecord>,
    /// What may still be wrong with the answer (it may be cut), in words; recorded as the
    /// report's `warnings`.
    pub warnings: Vec<String>,
    /// Fields the strategy adds to the report (a grounded answer's `sources` and
    /// `grounding`), recorded with the run.
    pub extras: serde_json::Map<String, serde_json::Value>,
}

impl DirectAnswer {
    /// `answer`, written by `calls`, with nothing wrong with it.
    pub fn new(answer: impl Into<String>, calls: Vec<CallRecord>) -> Self {
        Self {
            answer: answer.into(),
            calls,
            warnings: Vec::new(),
            extras: serde_json::Map::new(),
        }
    }

    /// Records the answer's calls and warnings in `session`, and the `direct` route (the
    /// report's `route` and a `route_chosen` event).
    pub(crate) fn record(&self, cx: &StrategyContext, session: &RunSession) {
        cx.record_calls(session, &self.calls);
        choose(session, DIRECT);
        cx.record_adjustments(session, &self.warnings);
        for (key, value) in &self.extras {
            session.set_extra(key, value.clone());
        }
    }
}

/// Where [`Strategy::execute`] starts: a plan, and what is already done.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PlanStart {
    /// The plan to run.
    pub plan: Plan,
    /// Its revision (0 for the first plan).
    pub revision: u32,
    /// Outputs of steps already done (never run again).
    pub completed: HashMap<StepId, String>,
    /// Attempts made before, per step (attempt numbers continue).
    pub prior_attempts: HashMap<StepId, u32>,
    /// Replans made before (they count against the limit).
    pub replans: u32,
    /// Whether the plan is already recorded in the session (a resumed run).
    pub announced: bool,
    /// The goal tree the plan was flattened from (hierarchical).
    pub tree: Option<GoalTree>,
}

impl PlanStart {
    /// Revision 0 of `plan`, nothing done, not yet recorded.
    pub fn new(plan: Plan) -> Self {
        Self {
            plan,
            revision: 0,
            completed: HashMap::new(),
            prior_attempts: HashMap::new(),
            replans: 0,
            announced: false,
            tree: None,
        }
    }

    /// Starts from a plan made by [`Strategy::plan`] (keeping its goal tree).
    pub fn from_outcome(outcome: PlanOutcome) -> Self {
        Self {
            tree: outcome.tree,
            ..Self::new(outcome.plan)
        }
    }

    /// Continues a stored run: its latest plan (already recorded), completed outputs,
    /// attempts and replans.
    pub fn resume(
        point: plan_exec::session::ResumePoint,
        plan: plan_exec::store::PlanRevision,
    ) -> Self {
        Self {
            plan: plan.plan,
            revision: plan.revision,
            completed: point.completed,
            prior_attempts: point.attempts,
            replans: point.replans,
            announced: true,
            tree: None,
        }
    }
}

/// What a strategy did, before the answer is written.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Outcome {
    /// The plan that ran last.
    pub plan: Plan,
    /// Its steps, in plan order.
    pub steps: Vec<StepState>,
    /// How it ended (`succeeded`, `failed`, `cancelled`).
    pub status: RunStatus,
    /// Why it failed, in words (what failed and what to try).
    pub failure: Option<String>,
    /// The answer, when the strategy wrote it itself (a direct answer); otherwise it is
    /// synthesised from the steps.
    pub answer: Option<String>,
}

impl Outcome {
    /// A goal answered in one call, with no plan and no steps.
    pub fn direct(goal: &str, answer: String) -> Self {
        Self {
            plan: Plan::new(goal, Vec::new()),
            steps: Vec::new(),
            status: RunStatus::Succeeded,
            failure: None,
            answer: Some(answer),
        }
    }

    /// The outcome of one execution, with the failure text the runner's report implies.
    pub fn from_execution(execution: &Execution) -> Self {
        Self {
            plan: execution.plan.clone(),
            steps: execution.steps.clone(),
            status: execution.status,
            failure: drive::failure_text(execution),
            answer: None,
        }
    }
}

/// What a strategy works with: the model, the planner, the runner and the settings. The
/// [`Agent`](crate::Agent) builds one per agent.
#[derive(Clone)]
pub struct StrategyContext {
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) planner: Arc<dyn Planner>,
    pub(crate) runner: Runner,
    pub(crate) options: StrategyOptions,
    /// The most steps a plan may have (the planner's cap), for plans made outside the
    /// planner (the `auto` strategy's routing reply).
    pub(crate) max_steps: usize,
    pub(crate) agents: Option<Arc<AgentCatalogue>>,
}

impl fmt::Debug for StrategyContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StrategyContext")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl StrategyContext {
    /// A context over `provider` (for critique, decomposition, synthesis), `planner` and
    /// `runner`.
    pub fn new(provider: Arc<dyn Provider>, planner: Arc<dyn Planner>, runner: Runner) -> Self {
        Self {
            provider,
            planner,
            runner,
            options: StrategyOptions::default(),
            max_steps: crate::planner::PlannerConfig::default().max_steps,
            agents: None,
        }
    }

    /// With these settings.
    pub fn with_options(mut self, options: StrategyOptions) -> Self {
        self.options = options;
        self
    }

    /// The model.
    pub fn provider(&self) -> &Arc<dyn Provider> {
        &self.provider
    }

    /// The planner.
    pub fn planner(&self) -> &Arc<dyn Planner> {
        &self.planner
    }

    /// The runner that executes plans.
    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// The settings.
    pub fn options(&self) -> &StrategyOptions {
        &self.options
    }

    /// Records a plan revision in the session (`plan_created`), after checking that every
    /// agent it names exists.
    ///
    /// # Errors
    /// [`StrategyError::Agents`] for an unknown agent; [`StrategyError::Exec`].
    pub async fn plan_created(
        &self,
        session: &RunSession,
        plan: &Plan,
        revision: u32,
    ) -> Result<(), StrategyError> {
        if let Some(catalogue) = &self.agents {
            catalogue.check_plan(plan)?;
        }
        session.plan_created(plan, revision).await?;
        Ok(())
    }

    /// Accounts model calls made outside the runner (their `llm_call` events).
    pub fn record_calls(&self, session: &RunSession, calls: &[CallRecord]) {
        for c in calls {
            session.account_call(c);
        }
    }

    /// Records a plan outcome's calls, its route (if it has one) and adjustments
    /// (`plan_adjusted`), and its critiques,
    /// repairs and goal tree (nothing run yet, while the plan is the one the tree was
    /// flattened into) as report extras, so a run that stops for approval keeps them.
    pub fn record_plan_outcome(&self, session: &RunSession, outcome: &PlanOutcome) {
        self.record_calls(session, &outcome.calls);
        if let Some(route) = &outcome.route {
            choose(session, route);
        }
        self.record_adjustments(session, &outcome.adjustments);
        if !outcome.critiques.is_empty()
            && let Ok(v) = serde_json::to_value(&outcome.critiques)
        {
            session.set_extra("critiques", v);
        }
        add_repairs(session, &outcome.repairs);
        if let Some(tree) = &outcome.tree
            && let Some(tree) = RunTree::planned(tree.clone(), &outcome.plan)
        {
            record_tree(session, &tree.roll_up(&[]));
        }
    }

    /// Emits `plan_adjusted` listing `changes` made to the model's plan (none: nothing).
    pub fn record_adjustments(&self, session: &RunSession, changes: &[String]) {
        if !changes.is_empty() {
            session.emit(EventKind::PlanAdjusted {
                changes: changes.to_vec(),
            });
        }
    }

    /// Runs `start` in `session`; with `replan`, replans after each failure from the
    /// current state (keeping finished steps) until it succeeds, stalls, or runs out of
    /// replans ([`StrategyOptions::max_replans`]).
    ///
    /// # Errors
    /// As [`Strategy::execute`].
    pub async fn drive(
        &self,
        session: &RunSession,
        start: PlanStart,
        replan: bool,
    ) -> Result<Outcome, StrategyError> {
        drive::drive(self, session, start, replan).await
    }
}

/// Keeps `tree` as the run's `tree` extra ([`ReportExt::tree`](crate::ReportExt::tree)).
pub(crate) fn record_tree(session: &RunSession, tree: &GoalResult) {
    if let Ok(v) = serde_json::to_value(tree) {
        session.set_extra(TREE, v);
    }
}

/// The goal tree kept with the run (recorded when it was planned, stopped for approval or
/// ended), if any.
pub(crate) fn kept_tree(session: &RunSession) -> Option<GoalResult> {
    let extras = session.snapshot().extras;
    serde_json::from_value(extras.get(TREE)?.clone()).ok()
}

/// Drops the run's goal tree, saying why (`plan_adjusted`).
pub(crate) fn drop_tree(cx: &StrategyContext, session: &RunSession, why: &str) {
    session.remove_extra(TREE);
    cx.record_adjustments(
        session,
        &[format!("the goal tree was dropped from the report: {why}")],
    );
}

/// The report extra holding the goal tree.
const TREE: &str = "tree";

/// Adds repair notes to the run's `repairs` extra.
pub(crate) fn add_repairs(session: &RunSession, repairs: &[RepairNote]) {
    if repairs.is_empty() {
        return;
    }
    let mut all: Vec<RepairNote> = session
        .snapshot()
        .extras
        .get("repairs")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    all.extend(repairs.iter().cloned());
    if let Ok(v) = serde_json::to_value(&all) {
        session.set_extra("repairs", v);
    }
}

/// The built-in strategies by name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StrategyKind {
    /// [`Auto`].
    Auto,
    /// [`Linear`].
    Linear,
    /// [`Dag`].
    #[default]
    Dag,
    /// [`Hierarchical`].
    Hierarchical,
    /// [`Adaptive`].
    Adaptive,
    /// [`Reflective`].
    Reflective,
}

impl StrategyKind {
    /// All built-in strategies.
    pub const ALL: [StrategyKind; 6] = [
        StrategyKind::Auto,
        StrategyKind::Linear,
        StrategyKind::Dag,
        StrategyKind::Hierarchical,
        StrategyKind::Adaptive,
        StrategyKind::Reflective,
    ];

    /// The name used by the CLI and in reports (`"dag"`).
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyKind::Auto => "auto",
            StrategyKind::Linear => "linear",
            StrategyKind::Dag => "dag",
            StrategyKind::Hierarchical => "hierarchical",
            StrategyKind::Adaptive => "adaptive",
            StrategyKind::Reflective => "reflective",
        }
    }

    fn imp(self) -> &'static dyn Strategy {
        match self {
            StrategyKind::Auto => &Auto,
            StrategyKind::Linear => &Linear,
            StrategyKind::Dag => &Dag,
            StrategyKind::Hierarchical => &Hierarchical,
            StrategyKind::Adaptive => &Adaptive,
            StrategyKind::Reflective => &Reflective,
        }
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StrategyKind {
    type Err = UnknownStrategy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StrategyKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownStrategy::new(s, StrategyKind::ALL.map(|k| k.as_str())))
    }
}

#[async_trait]
impl Strategy for StrategyKind {
    fn name(&self) -> &str {
        self.as_str()
    }
    async fn plan(&self, cx: &StrategyContext, goal: &str) -> Result<PlanOutcome, StrategyError> {
        self.imp().plan(cx, goal).await
    }
    async fn plan_or_answer(
        &self,
        cx: &StrategyContext,
        goal: &str,
    ) -> Result<Planning, StrategyError> {
        self.imp().plan_or_answer(cx, goal).await
    }
    async fn prepare_given(
        &self,
        cx: &StrategyContext,
        plan: Plan,
    ) -> Result<PlanOutcome, StrategyError> {
        self.imp().prepare_given(cx, plan).await
    }
    async fn execute(
        &self,
        cx: &StrategyContext,
        session: &RunSession,
        start: PlanStart,
    ) -> Result<Outcome, StrategyError> {
        self.imp().execute(cx, session, start).await
    }
    async fn run(
        &self,
        cx: &StrategyContext,
        session: &RunSession,
        goal: &str,
    ) -> Result<Outcome, StrategyError> {
        self.imp().run(cx, session, goal).await
    }
}

/// A strategy name that no registry entry has.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown strategy `{name}`: use one of {}", known.join(", "))]
pub struct UnknownStrategy {
    /// The name asked for.
    pub name: String,
    /// The names registered.
    pub known: Vec<String>,
}

impl UnknownStrategy {
    fn new<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            name: name.to_owned(),
            known: known.into_iter().map(str::to_owned).collect(),
        }
    }
}

/// Strategies by name: the built-in six, plus any a user registers. `--strategy NAME`
/// and resuming a stored run resolve through it.
#[derive(Clone)]
pub struct StrategyRegistry {
    entries: Vec<Arc<dyn Strategy>>,
}

impl fmt::Debug for StrategyRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Default for StrategyRegistry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl StrategyRegistry {
    /// The six built-in strategies.
    pub fn builtin() -> Self {
        let mut r = Self::empty();
        for k in StrategyKind::ALL {
            r.register(k);
        }
        r
    }

    /// No strategies.
    pub fn empty() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// Adds `strategy`, replacing one of the same name.
    pub fn register(&mut self, strategy: impl Strategy + 'static) -> &mut Self {
        let strategy: Arc<dyn Strategy> = Arc::new(strategy);
        self.entries.retain(|s| s.name() != strategy.name());
        self.entries.push(strategy);
        self
    }

    /// The strategy called `name` (case-insensitive).
    ///
    /// # Errors
    /// [`UnknownStrategy`] listing the registered names.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Strategy>, UnknownStrategy> {
        self.entries
            .iter()
            .find(|s| s.name().eq_ignore_ascii_case(name.trim()))
            .cloned()
            .ok_or_else(|| UnknownStrategy::new(name, self.names()))
    }

    /// The registered names, in registration order.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|s| s.name()).collect()
    }
}
