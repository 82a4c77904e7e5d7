//! The [`Agent`] facade: planner, strategy, runner, executors, events, store and synthesis
//! behind a builder and one `run` call.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use plan_core::{
    Event, EventKind, GoalTree, Plan, PlanGraph, RunId, RunStatus, Step, StepId, StepKind,
};
use plan_exec::{
    CancelToken, CodeStepExecutor, EventLog, EventSink, LlmStepExecutor, NoopSink, PlanRun, Router,
    RunOptions, RunRecord, RunStore, Runner, Sandbox, SandboxChoice, StepExecutor, StepOutcome,
};
use plan_llm::Provider;

use crate::agents::AgentCatalogue;
use crate::calls::{Critique, SynthesisInput, critique, synthesize};
use crate::error::StrategyError;
use crate::hierarchy::{TreeLimits, build_tree, render_tree, roll_up};
use crate::planner::{
    FailedStep, FinishedStep, LlmCall, LlmPlanner, PlanRequest, Planned, Planner, PlannerConfig,
    RepairNote, ReplanContext, step_channel, streamed_consistent,
};
use crate::prompts::bounded;
use crate::report::{AgentReport, GoalResult, Replan, StepResult, Strategy, Usage};

/// Whether a streamed plan is fed to the runner while it is being written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanningMode {
    /// Stream the plan into the runner when the planner and provider can (DAG strategy):
    /// the first steps start before the plan is complete.
    #[default]
    Streamed,
    /// Always make the whole plan first, then run it.
    PlanThenRun,
}

/// Where a successful run's answer comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnswerSource {
    /// A final model call writes the answer from the goal and every step's output.
    #[default]
    SynthesisCall,
    /// The answer is the output of the plan's final `synthesize` step, kept as it is (a
    /// research answer keeps its citations and `Sources:` section). When the plan has no
    /// succeeded `synthesize` step, a synthesis call writes the answer.
    SynthesizeStep,
}

/// Settings of the strategies; the defaults follow the design.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StrategyOptions {
    /// Hierarchical: levels of sub-goals under the goal (default 3).
    pub max_depth: usize,
    /// Hierarchical: the most sub-goals a goal is split into (default 4).
    pub max_subgoals: usize,
    /// Hierarchical: the most leaf steps in the tree (default 24).
    pub max_leaves: usize,
    /// Adaptive: the most replans before the run fails (default 3).
    pub max_replans: u32,
    /// Reflective: the most critique rounds before running (default 2).
    pub reflection_rounds: u32,
    /// DAG: streamed or plan-then-run.
    pub planning: PlanningMode,
    /// The most characters of each step output the synthesis sees (default 2000).
    pub synthesis_output_cap: usize,
    /// Whether to write an answer with a final model call (default true).
    pub synthesize: bool,
    /// Where the answer comes from (default: a synthesis call).
    pub answer: AnswerSource,
}

impl Default for StrategyOptions {
    fn default() -> Self {
        Self {
            max_depth: 3,
            max_subgoals: 4,
            max_leaves: 24,
            max_replans: 3,
            reflection_rounds: 2,
            planning: PlanningMode::Streamed,
            synthesis_output_cap: 2000,
            synthesize: true,
            answer: AnswerSource::SynthesisCall,
        }
    }
}

/// A plan made without running it ([`Agent::plan_only`]).
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
    /// Model usage.
    pub usage: Usage,
}

/// Builds an [`Agent`]; see [`Agent::builder`].
#[must_use]
pub struct AgentBuilder {
    provider: Option<Arc<dyn Provider>>,
    planner: Option<Arc<dyn Planner>>,
    planner_config: PlannerConfig,
    executor: Option<Arc<dyn StepExecutor>>,
    sandbox: Option<Arc<dyn Sandbox>>,
    strategy: Strategy,
    options: StrategyOptions,
    run_options: RunOptions,
    sink: Arc<dyn EventSink>,
    store: Option<Arc<dyn RunStore>>,
    model: Option<String>,
    base_url: Option<String>,
    cancel: CancelToken,
    agents: Option<Arc<AgentCatalogue>>,
}

impl std::fmt::Debug for AgentBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentBuilder")
            .field("strategy", &self.strategy)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl AgentBuilder {
    /// The model used for planning, critique, decomposition and synthesis, and (unless
    /// [`executor`](Self::executor) is set) for the steps.
    pub fn provider(mut self, provider: impl Provider + 'static) -> Self {
        self.provider = Some(Arc::new(provider));
        self
    }

    /// The strategy (default [`Strategy::Dag`]).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Strategy settings (depth, replans, rounds, streaming, synthesis).
    pub fn options(mut self, options: StrategyOptions) -> Self {
        self.options = options;
        self
    }

    /// Adaptive: the most replans (default 3).
    pub fn max_replans(mut self, n: u32) -> Self {
        self.options.max_replans = n;
        self
    }

    /// Hierarchical: the most levels of sub-goals (default 3).
    pub fn max_depth(mut self, n: usize) -> Self {
        self.options.max_depth = n;
        self
    }

    /// Reflective: the most critique rounds (default 2).
    pub fn reflection_rounds(mut self, n: u32) -> Self {
        self.options.reflection_rounds = n;
        self
    }

    /// Streamed planning or plan-then-run (DAG strategy).
    pub fn planning_mode(mut self, mode: PlanningMode) -> Self {
        self.options.planning = mode;
        self
    }

    /// How the LLM planner plans (step bounds, agents, fix attempts).
    pub fn planner_config(mut self, config: PlannerConfig) -> Self {
        self.planner_config = config;
        self
    }

    /// The most steps per plan (default 10).
    pub fn max_steps(mut self, n: usize) -> Self {
        let min = self.planner_config.min_steps;
        self.planner_config = self.planner_config.with_step_bounds(min.min(n), n);
        self
    }

    /// Uses a planner of your own instead of the LLM planner.
    pub fn planner(mut self, planner: impl Planner + 'static) -> Self {
        self.planner = Some(Arc::new(planner));
        self
    }

    /// Runs steps with this executor (a [`plan_exec::Router`] to route by agent or kind)
    /// instead of the default executors over the provider.
    ///
    /// By default, steps of kind `code` and steps that carry their own `code` run in the
    /// [`sandbox`](Self::sandbox) through a [`CodeStepExecutor`] (the model writes the
    /// program unless the step has one; errors are fed back), and every other step is one
    /// model call ([`LlmStepExecutor`]).
    pub fn executor(mut self, executor: impl StepExecutor + 'static) -> Self {
        self.executor = Some(Arc::new(executor));
        self
    }

    /// The sandbox that code steps run in (default: [`SandboxChoice::Auto`], opened on
    /// the first code step: bubblewrap when it works here, otherwise code steps fail with
    /// an error that says how to install it). [`SandboxChoice::lazy`] turns a user's
    /// choice into one. Ignored when [`executor`](Self::executor) is set.
    pub fn sandbox(mut self, sandbox: impl Sandbox + 'static) -> Self {
        self.sandbox = Some(Arc::new(sandbox));
        self
    }

    /// Runner options: concurrency, step policies (timeout, retries, fallback).
    pub fn run_options(mut self, options: RunOptions) -> Self {
        self.run_options = options;
        self
    }

    /// The most steps running at once (default 4).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.run_options = self.run_options.with_concurrency(n);
        self
    }

    /// Sends every event of every run to `sink`.
    pub fn event_sink(mut self, sink: impl EventSink + 'static) -> Self {
        self.sink = Arc::new(sink);
        self
    }

    /// Journals runs in `store` so they can be listed, shown and resumed.
    pub fn store(mut self, store: impl RunStore + 'static) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// The model spec recorded in reports and the store (`openai:gpt-4o-mini`; default:
    /// the provider's name). Never a key.
    pub fn model_spec(mut self, spec: impl Into<String>) -> Self {
        self.model = Some(spec.into());
        self
    }

    /// The base URL recorded with the run (user info and query strings are stripped).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// Cancels runs when this token is cancelled (Ctrl-C); a cancelled run can be resumed.
    pub fn cancel_token(mut self, cancel: CancelToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// The specialised agents steps may be routed to (`step.agent`). The LLM planner is
    /// told their names and descriptions, and every plan the agent would run (planned or
    /// given to [`Agent::execute`]) is checked first: one naming an unknown agent is
    /// rejected with [`StrategyError::Agents`] before any step runs. Route the steps
    /// themselves with an executor, e.g. [`AgentTeam::routes`](crate::AgentTeam::routes).
    pub fn agents(mut self, catalogue: AgentCatalogue) -> Self {
        self.agents = Some(Arc::new(catalogue));
        self
    }

    /// Where the answer comes from; [`AnswerSource::SynthesizeStep`] keeps the output of
    /// the plan's final `synthesize` step (with its citations) as the answer.
    pub fn answer_source(mut self, source: AnswerSource) -> Self {
        self.options.answer = source;
        self
    }

    /// Builds the agent.
    ///
    /// # Errors
    /// [`StrategyError::Config`] when no provider was given.
    pub fn build(self) -> Result<Agent, StrategyError> {
        let Some(provider) = self.provider else {
            return Err(StrategyError::Config(
                "the agent has no model: call .provider(..) on the builder".to_owned(),
            ));
        };
        let mut planner_config = self.planner_config.clone();
        if let Some(catalogue) = &self.agents
            && planner_config.agents.is_empty()
        {
            planner_config.agents = catalogue.agent_infos();
        }
        let planner: Arc<dyn Planner> = match self.planner {
            Some(p) => p,
            None => Arc::new(LlmPlanner::new(provider.clone()).with_config(planner_config)),
        };
        let executor: Arc<dyn StepExecutor> = match self.executor {
            Some(e) => e,
            None => {
                let sandbox = self
                    .sandbox
                    .unwrap_or_else(|| Arc::new(SandboxChoice::Auto.lazy()));
                let code = Arc::new(CodeStepExecutor::new(provider.clone(), sandbox));
                Arc::new(
                    Router::default()
                        .with_default(LlmStepExecutor::new(provider.clone()))
                        .route_kind(StepKind::Code, code.clone())
                        .route_programs(code),
                )
            }
        };
        let model = self.model.unwrap_or_else(|| provider.name().to_owned());
        Ok(Agent {
            inner: Arc::new(Inner {
                provider,
                planner,
                executor,
                strategy: self.strategy,
                options: self.options,
                run_options: self.run_options,
                sink: self.sink,
                store: self.store,
                model,
                base_url: self.base_url,
                cancel: self.cancel,
                agents: self.agents,
            }),
        })
    }
}

/// A planning agent: turns a goal into a plan, runs it with the chosen strategy, and
/// writes the answer.
///
/// ```no_run
/// use plan_strategies::{Agent, Strategy};
/// # async fn f(provider: std::sync::Arc<dyn plan_llm::Provider>) -> Result<(), plan_strategies::StrategyError> {
/// let agent = Agent::builder()
///     .provider(provider)
///     .strategy(Strategy::Adaptive)
///     .max_replans(2)
///     .build()?;
/// let report = agent.run("Compare the three most used Rust web frameworks").await?;
/// println!("{}", report.answer.unwrap_or_default());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

struct Inner {
    provider: Arc<dyn Provider>,
    planner: Arc<dyn Planner>,
    executor: Arc<dyn StepExecutor>,
    strategy: Strategy,
    options: StrategyOptions,
    run_options: RunOptions,
    sink: Arc<dyn EventSink>,
    store: Option<Arc<dyn RunStore>>,
    model: String,
    base_url: Option<String>,
    cancel: CancelToken,
    agents: Option<Arc<AgentCatalogue>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("strategy", &self.inner.strategy)
            .field("model", &self.inner.model)
            .finish_non_exhaustive()
    }
}

/// Sends events to the user's sink and keeps them for the report.
struct Tee {
    user: Arc<dyn EventSink>,
    log: EventLog,
}

impl EventSink for Tee {
    fn on_event(&self, event: &Event) {
        self.log.on_event(event);
        self.user.on_event(event);
    }
}

/// One run in progress.
struct RunCtx {
    id: RunId,
    goal: String,
    strategy: Strategy,
    sink: Arc<Tee>,
    runner: Runner,
    store: Option<Arc<dyn RunStore>>,
    started: Instant,
    agents: Option<Arc<AgentCatalogue>>,
}

impl RunCtx {
    async fn emit(&self, kind: EventKind) -> Result<(), StrategyError> {
        let event = Event::now(self.id.clone(), kind);
        self.sink.on_event(&event);
        if let Some(store) = &self.store {
            store
                .append_events(&self.id, std::slice::from_ref(&event))
                .await
                .map_err(|e| StrategyError::Exec(e.to_string()))?;
        }
        Ok(())
    }

    async fn record_calls(&self, calls: &[LlmCall]) -> Result<(), StrategyError> {
        for c in calls {
            self.emit(EventKind::LlmCall {
                purpose: c.purpose.clone(),
                step: None,
                prompt_tokens: c.usage.prompt_tokens,
                completion_tokens: c.usage.completion_tokens,
                duration_ms: millis(c.duration),
            })
            .await?;
        }
        Ok(())
    }

    async fn plan_created(&self, plan: &Plan, revision: u32) -> Result<(), StrategyError> {
        if let Some(catalogue) = &self.agents {
            catalogue.check_plan(plan)?;
        }
        if let Some(store) = &self.store {
            store
                .save_plan(&self.id, revision, plan)
                .await
                .map_err(|e| StrategyError::Exec(e.to_string()))?;
        }
        self.emit(EventKind::PlanCreated {
            plan: plan.clone(),
            revision,
        })
        .await
    }
}

/// What a strategy did, before synthesis.
struct Execution {
    plan: Plan,
    steps: Vec<StepResult>,
    status: RunStatus,
    failure: Option<String>,
    replans: u32,
    replan_log: Vec<Replan>,
    tree: Option<GoalResult>,
    critiques: Vec<Critique>,
    repairs: Vec<RepairNote>,
}

impl Execution {
    fn new(plan: Plan) -> Self {
        Self {
            plan,
            steps: Vec::new(),
            status: RunStatus::Running,
            failure: None,
            replans: 0,
            replan_log: Vec::new(),
            tree: None,
            critiques: Vec::new(),
            repairs: Vec::new(),
        }
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn exec_err(e: plan_exec::ExecError) -> StrategyError {
    match e {
        plan_exec::ExecError::InvalidPlan(p) => StrategyError::Plan(p),
        other => StrategyError::Exec(other.to_string()),
    }
}

/// Step results of an execution, keeping the earlier result of steps reused from an
/// earlier revision (so their attempts are not lost).
fn step_results(
    report: &plan_exec::RunReport,
    earlier: &HashMap<StepId, StepResult>,
) -> Vec<StepResult> {
    report
        .steps
        .iter()
        .map(|s| {
            if s.reused
                && let Some(prev) = earlier.get(&s.id)
            {
                let mut prev = prev.clone();
                prev.reused = true;
                return prev;
            }
            StepResult {
                id: s.id.clone(),
                status: s.status.as_str().to_owned(),
                attempts: s.attempts,
                output: s.output.clone(),
                error: s.error.clone(),
                fallback: s.fallback,
                reused: s.reused,
            }
        })
        .collect()
}

/// Makes each step depend on the one before it, in a valid running order.
fn chain(plan: Plan) -> Plan {
    let order = match PlanGraph::new(plan.clone()) {
        Ok(g) => g.topological_order(),
        Err(_) => (0..plan.steps.len()).collect(),
    };
    let mut steps = Vec::with_capacity(order.len());
    let mut prev: Option<StepId> = None;
    for i in order {
        let mut s = plan.steps[i].clone();
        s.dependencies = prev.iter().cloned().collect();
        prev = Some(s.id.clone());
        steps.push(s);
    }
    Plan::new(plan.goal, steps)
}

impl Agent {
    /// A builder; [`provider`](AgentBuilder::provider) is required.
    pub fn builder() -> AgentBuilder {
        AgentBuilder {
            provider: None,
            planner: None,
            planner_config: PlannerConfig::default(),
            executor: None,
            sandbox: None,
            strategy: Strategy::default(),
            options: StrategyOptions::default(),
            run_options: RunOptions::default(),
            sink: Arc::new(NoopSink),
            store: None,
            model: None,
            base_url: None,
            cancel: CancelToken::new(),
            agents: None,
        }
    }

    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.inner.strategy
    }

    /// The cancel token: cancelling it stops the current run (it can be resumed).
    pub fn cancel_token(&self) -> &CancelToken {
        &self.inner.cancel
    }

    /// Plans, runs and answers `goal` with the agent's strategy.
    ///
    /// Failed steps, exhausted replans and stalls are not errors: the report says
    /// `failed` and why ([`AgentReport::failure`]).
    ///
    /// # Errors
    /// A model call for planning failed, no valid plan could be made, or the store failed.
    pub async fn run(&self, goal: impl Into<String>) -> Result<AgentReport, StrategyError> {
        let goal = goal.into();
        if goal.trim().is_empty() {
            return Err(StrategyError::Config(
                "the goal is empty: say what the agent should achieve".to_owned(),
            ));
        }
        let run = self.start(&goal, self.inner.strategy, None).await?;
        let outcome = match self.inner.strategy {
            Strategy::Linear => self.run_planned(&run, true).await,
            Strategy::Dag => {
                if self.inner.options.planning == PlanningMode::Streamed
                    && self.inner.planner.streams()
                {
                    self.run_streamed(&run).await
                } else {
                    self.run_planned(&run, false).await
                }
            }
            Strategy::Hierarchical => self.run_hierarchical(&run).await,
            Strategy::Adaptive => self.run_adaptive(&run).await,
            Strategy::Reflective => self.run_reflective(&run).await,
        };
        self.finish(run, outcome).await
    }

    /// Makes the plan the strategy would run, without running it (`plan plan`).
    ///
    /// # Errors
    /// As for planning in [`run`](Self::run).
    pub async fn plan_only(&self, goal: impl Into<String>) -> Result<PlanOutcome, StrategyError> {
        let goal = goal.into();
        let mut calls = Vec::new();
        let mut out = PlanOutcome {
            plan: Plan::new(goal.clone(), Vec::new()),
            tree: None,
            critiques: Vec::new(),
            repairs: Vec::new(),
            usage: Usage::default(),
        };
        match self.inner.strategy {
            Strategy::Hierarchical => {
                let tree = build_tree(
                    self.inner.provider.as_ref(),
                    &goal,
                    self.tree_limits(),
                    &mut calls,
                )
                .await?;
                out.plan = tree.flatten()?.plan;
                out.tree = Some(tree);
            }
            Strategy::Reflective => {
                let (planned, critiques) = self.reflect(&goal, &mut calls).await?;
                out.repairs.extend(planned.repair.clone());
                out.plan = planned.plan;
                out.critiques = critiques;
            }
            strategy => {
                let planned = self.inner.planner.plan(&PlanRequest::new(goal)).await?;
                calls.extend(planned.calls.iter().cloned());
                out.repairs.extend(planned.repair.clone());
                out.plan = if strategy == Strategy::Linear {
                    chain(planned.plan)
                } else {
                    planned.plan
                };
            }
        }
        out.usage = usage_of(&calls);
        Ok(out)
    }

    /// Runs a given plan, with no planning call (`plan exec`); the answer is synthesised.
    ///
    /// # Errors
    /// [`StrategyError::Plan`] when the plan is invalid (every problem listed), or the
    /// store failed.
    pub async fn execute(&self, plan: Plan) -> Result<AgentReport, StrategyError> {
        PlanGraph::with_limits(plan.clone(), &plan_core::Limits::with_max_steps(usize::MAX))?;
        if let Some(catalogue) = &self.inner.agents {
            catalogue.check_plan(&plan)?;
        }
        let run = self.start(&plan.goal, self.inner.strategy, None).await?;
        let outcome = async {
            run.plan_created(&plan, 0).await?;
            let mut ex = Execution::new(plan.clone());
            let report = run
                .runner
                .execute(PlanRun::new(run.id.clone(), plan))
                .await
                .map_err(exec_err)?;
            ex.steps = step_results(&report, &HashMap::new());
            ex.status = report.status;
            ex.failure = failure_text(&report);
            Ok(ex)
        }
        .await;
        self.finish(run, outcome).await
    }

    /// Continues a run from the store after a crash or a cancellation: completed steps are
    /// never run again; an adaptive run keeps replanning within what is left of its
    /// replans.
    ///
    /// # Errors
    /// [`StrategyError::Config`] without a store; [`StrategyError::Exec`] for an unknown
    /// run or a store failure.
    pub async fn resume(&self, run_id: &RunId) -> Result<AgentReport, StrategyError> {
        let Some(store) = &self.inner.store else {
            return Err(StrategyError::Config(
                "resuming needs a run store: build the agent with .store(..)".to_owned(),
            ));
        };
        let stored = store
            .load_run(run_id)
            .await
            .map_err(|e| StrategyError::Exec(e.to_string()))?
            .ok_or_else(|| {
                StrategyError::Exec(format!(
                    "no run `{run_id}` in the run store: list runs with `plan runs`"
                ))
            })?;
        let strategy = stored
            .record
            .strategy
            .as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or(self.inner.strategy);
        let goal = stored.record.goal.clone();
        let run = self.start(&goal, strategy, Some(run_id.clone())).await?;
        let Some(latest) = stored.latest_plan().cloned() else {
            // It stopped before a plan was saved: plan again under the same run.
            let outcome = match strategy {
                Strategy::Adaptive => self.run_adaptive(&run).await,
                Strategy::Hierarchical => self.run_hierarchical(&run).await,
                Strategy::Reflective => self.run_reflective(&run).await,
                Strategy::Linear => self.run_planned(&run, true).await,
                Strategy::Dag => self.run_planned(&run, false).await,
            };
            return self.finish(run, outcome).await;
        };
        let mut completed = HashMap::new();
        let mut attempts = HashMap::new();
        for step in &latest.plan.steps {
            if let Some(out) = stored.output(step.id.as_str()) {
                completed.insert(step.id.clone(), out.output.clone());
            }
            let n = stored.attempts(step.id.as_str());
            if n > 0 {
                attempts.insert(step.id.clone(), n);
            }
        }
        let replans = stored
            .events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Replanned { .. }))
            .count() as u32;
        let outcome = self
            .drive(
                &run,
                Drive {
                    revision: latest.revision,
                    completed,
                    prior_attempts: attempts,
                    adaptive: strategy == Strategy::Adaptive,
                    replans,
                    announced: true,
                    ..Drive::new(latest.plan)
                },
            )
            .await;
        self.finish(run, outcome).await
    }

    fn tree_limits(&self) -> TreeLimits {
        TreeLimits {
            max_depth: self.inner.options.max_depth,
            max_subgoals: self.inner.options.max_subgoals.max(2),
            max_leaves: self.inner.options.max_leaves.max(1),
        }
    }

    async fn start(
        &self,
        goal: &str,
        strategy: Strategy,
        resume: Option<RunId>,
    ) -> Result<RunCtx, StrategyError> {
        let tee = Arc::new(Tee {
            user: self.inner.sink.clone(),
            log: EventLog::new(),
        });
        let mut runner = Runner::parallel(self.inner.executor.clone())
            .with_options(self.inner.run_options.clone())
            .with_event_sink(tee.clone())
            .with_cancel(self.inner.cancel.clone());
        if let Some(store) = &self.inner.store {
            runner = runner.with_store(store.clone());
        }
        let id = match resume {
            Some(id) => {
                if let Some(store) = &self.inner.store {
                    store
                        .set_status(&id, RunStatus::Running, None)
                        .await
                        .map_err(|e| StrategyError::Exec(e.to_string()))?;
                }
                id
            }
            None => {
                let o = &self.inner.options;
                let mut record = RunRecord::new(goal)
                    .with_strategy(strategy.as_str())
                    .with_model(self.inner.model.clone())
                    .with_options(serde_json::json!({
                        "max_replans": o.max_replans,
                        "max_depth": o.max_depth,
                        "reflection_rounds": o.reflection_rounds,
                        "concurrency": self.inner.run_options.concurrency,
                    }));
                if let Some(url) = &self.inner.base_url {
                    record = record.with_base_url(url);
                }
                if let Some(store) = &self.inner.store {
                    store
                        .create_run(&record)
                        .await
                        .map_err(|e| StrategyError::Exec(e.to_string()))?;
                }
                record.id
            }
        };
        let run = RunCtx {
            id,
            goal: goal.to_owned(),
            strategy,
            sink: tee,
            runner,
            store: self.inner.store.clone(),
            started: Instant::now(),
            agents: self.inner.agents.clone(),
        };
        run.emit(EventKind::RunStarted {
            goal: goal.to_owned(),
        })
        .await?;
        Ok(run)
    }

    async fn finish(
        &self,
        run: RunCtx,
        outcome: Result<Execution, StrategyError>,
    ) -> Result<AgentReport, StrategyError> {
        let mut ex = match outcome {
            Ok(ex) => ex,
            Err(e) => {
                let status = if self.inner.cancel.is_cancelled() {
                    RunStatus::Cancelled
                } else {
                    RunStatus::Failed
                };
                run.emit(EventKind::RunFinished {
                    status,
                    answer: None,
                })
                .await?;
                if let Some(store) = &run.store {
                    store
                        .set_status(&run.id, status, None)
                        .await
                        .map_err(|e| StrategyError::Exec(e.to_string()))?;
                }
                return Err(e);
            }
        };
        if self.inner.cancel.is_cancelled() && ex.status != RunStatus::Succeeded {
            ex.status = RunStatus::Cancelled;
            ex.failure.get_or_insert_with(|| {
                "the run was cancelled: continue it with `plan resume`".to_owned()
            });
        }
        let mut answer = None;
        if ex.status == RunStatus::Succeeded
            && self.inner.options.answer == AnswerSource::SynthesizeStep
        {
            answer = final_synthesize_output(&ex);
        }
        if answer.is_none() && ex.status == RunStatus::Succeeded && self.inner.options.synthesize {
            let cap = self.inner.options.synthesis_output_cap;
            let inputs: Vec<SynthesisInput> = ex
                .plan
                .steps
                .iter()
                .map(|s| {
                    let r = ex.steps.iter().find(|r| r.id == s.id);
                    SynthesisInput {
                        id: s.id.to_string(),
                        description: s.description.clone(),
                        status: r.map_or("pending".to_owned(), |r| r.status.clone()),
                        output: r.and_then(|r| r.output.as_deref()).map(|o| bounded(o, cap)),
                        error: r.and_then(|r| r.error.clone()),
                    }
                })
                .collect();
            let tree = ex.tree.as_ref().map(render_tree);
            let mut calls = Vec::new();
            match synthesize(
                self.inner.provider.as_ref(),
                &run.goal,
                &inputs,
                tree.as_deref(),
                &mut calls,
            )
            .await
            {
                Ok(text) => answer = Some(text),
                Err(e) => {
                    ex.status = RunStatus::Failed;
                    ex.failure = Some(format!(
                        "every step completed but the answer could not be written: {e}"
                    ));
                }
            }
            run.record_calls(&calls).await?;
        }
        run.emit(EventKind::RunFinished {
            status: ex.status,
            answer: answer.clone(),
        })
        .await?;
        if let Some(store) = &run.store {
            store
                .set_status(&run.id, ex.status, answer.as_deref())
                .await
                .map_err(|e| StrategyError::Exec(e.to_string()))?;
        }
        let events = run.sink.log.events();
        let mut usage = Usage::default();
        for e in &events {
            if let EventKind::LlmCall {
                prompt_tokens,
                completion_tokens,
                ..
            } = &e.kind
            {
                usage.llm_calls += 1;
                usage.prompt_tokens += prompt_tokens;
                usage.completion_tokens += completion_tokens;
            }
        }
        Ok(AgentReport {
            run_id: run.id,
            status: ex.status,
            goal: run.goal,
            strategy: run.strategy,
            model: self.inner.model.clone(),
            plan: ex.plan,
            steps: ex.steps,
            answer,
            usage,
            replans: ex.replans,
            duration_ms: millis(run.started.elapsed()),
            failure: ex.failure,
            tree: ex.tree,
            critiques: ex.critiques,
            repairs: ex.repairs,
            replan_log: ex.replan_log,
            events,
        })
    }

    /// Linear and plan-then-run DAG: plan, then run.
    async fn run_planned(&self, run: &RunCtx, linear: bool) -> Result<Execution, StrategyError> {
        let planned = self
            .inner
            .planner
            .plan(&PlanRequest::new(&run.goal))
            .await?;
        run.record_calls(&planned.calls).await?;
        let plan = if linear {
            chain(planned.plan)
        } else {
            planned.plan
        };
        let mut ex = self.drive(run, Drive::new(plan)).await?;
        ex.repairs.extend(planned.repair);
        Ok(ex)
    }

    /// DAG with streamed planning: steps start while the plan is still being written.
    ///
    /// If the finished plan is invalid, the planner re-prompts and repairs it; when that
    /// changes a step that was already handed out, the streamed execution is cancelled and
    /// the final plan runs as revision 1, keeping the outputs of streamed steps that are
    /// unchanged in it (a changed step that had completed runs again under a new id).
    async fn run_streamed(&self, run: &RunCtx) -> Result<Execution, StrategyError> {
        let (sink, source) = step_channel();
        let stream_cancel = self.inner.cancel.child();
        let runner = run.runner.clone().with_cancel(stream_cancel.clone());
        let request = PlanRequest::new(&run.goal);
        let planning = async {
            let result = self.inner.planner.plan_streamed(&request, sink).await;
            match &result {
                // The runner saves the plan and emits `plan_created` when the stream ends.
                Ok(planned) if streamed_consistent(planned) => {
                    run.record_calls(&planned.calls).await?;
                }
                _ => stream_cancel.cancel(),
            }
            result
        };
        let executing = runner.execute_stream(
            PlanRun::new(run.id.clone(), Plan::new(run.goal.clone(), Vec::new())),
            source.into_stream(),
        );
        let (planned, report) = tokio::join!(planning, executing);
        let planned = planned?;
        if streamed_consistent(&planned) {
            let report = report.map_err(exec_err)?;
            let mut ex = Execution::new(planned.plan);
            ex.steps = step_results(&report, &HashMap::new());
            ex.status = report.status;
            ex.failure = failure_text(&report);
            ex.repairs.extend(planned.repair);
            return Ok(ex);
        }
        // The fixed plan differs from what was streamed: run it, keeping what is unchanged.
        tracing::info!("streamed plan was replaced after validation; running the fixed plan");
        run.record_calls(&planned.calls).await?;
        let done: HashMap<StepId, String> = match &report {
            Ok(r) => r.completed_outputs(),
            Err(_) => HashMap::new(),
        };
        let streamed: HashMap<&StepId, &Step> =
            planned.streamed.iter().map(|s| (&s.id, s)).collect();
        let mut plan = planned.plan.clone();
        let mut kept = HashMap::new();
        let mut renames = HashMap::new();
        for s in &plan.steps {
            match (streamed.get(&s.id), done.get(&s.id)) {
                (Some(old), Some(out)) if *old == s => {
                    kept.insert(s.id.clone(), out.clone());
                }
                (Some(_), Some(_)) => {
                    renames.insert(s.id.clone(), StepId::new(format!("{}_v2", s.id)));
                }
                _ => {}
            }
        }
        for s in &mut plan.steps {
            if let Some(new) = renames.get(&s.id) {
                s.id = new.clone();
            }
            for d in &mut s.dependencies {
                if let Some(new) = renames.get(d) {
                    *d = new.clone();
                }
            }
        }
        run.plan_created(&plan, 1).await?;
        let mut ex = self
            .drive(
                run,
                Drive {
                    revision: 1,
                    completed: kept,
                    announced: true,
                    ..Drive::new(plan)
                },
            )
            .await?;
        ex.repairs.extend(planned.repair);
        Ok(ex)
    }

    async fn run_hierarchical(&self, run: &RunCtx) -> Result<Execution, StrategyError> {
        let mut calls = Vec::new();
        let tree = build_tree(
            self.inner.provider.as_ref(),
            &run.goal,
            self.tree_limits(),
            &mut calls,
        )
        .await;
        run.record_calls(&calls).await?;
        let tree = tree?;
        let flat = tree.flatten()?;
        let mut ex = self.drive(run, Drive::new(flat.plan.clone())).await?;
        ex.tree = Some(roll_up(&tree, &flat, &ex.steps));
        Ok(ex)
    }

    /// Plans, then critiques and improves up to `reflection_rounds` times.
    async fn reflect(
        &self,
        goal: &str,
        calls: &mut Vec<LlmCall>,
    ) -> Result<(Planned, Vec<Critique>), StrategyError> {
        let mut planned = self.inner.planner.plan(&PlanRequest::new(goal)).await?;
        calls.extend(planned.calls.iter().cloned());
        let mut critiques = Vec::new();
        for _ in 0..self.inner.options.reflection_rounds {
            let verdict = critique(
                self.inner.provider.as_ref(),
                goal,
                &planned.plan.to_json_pretty(),
                calls,
            )
            .await?;
            let approved = verdict.approved || verdict.issues.is_empty();
            let issues = verdict.issues.clone();
            critiques.push(verdict);
            if approved {
                break;
            }
            let improved = self
                .inner
                .planner
                .plan(&PlanRequest::improve(planned.plan.clone(), issues))
                .await?;
            calls.extend(improved.calls.iter().cloned());
            planned = improved;
        }
        Ok((planned, critiques))
    }

    async fn run_reflective(&self, run: &RunCtx) -> Result<Execution, StrategyError> {
        let mut calls = Vec::new();
        let reflected = self.reflect(&run.goal, &mut calls).await;
        run.record_calls(&calls).await?;
        let (planned, critiques) = reflected?;
        let mut ex = self.drive(run, Drive::new(planned.plan)).await?;
        ex.critiques = critiques;
        ex.repairs.extend(planned.repair);
        Ok(ex)
    }

    async fn run_adaptive(&self, run: &RunCtx) -> Result<Execution, StrategyError> {
        let planned = self
            .inner
            .planner
            .plan(&PlanRequest::new(&run.goal))
            .await?;
        run.record_calls(&planned.calls).await?;
        let mut ex = self
            .drive(
                run,
                Drive {
                    adaptive: true,
                    ..Drive::new(planned.plan)
                },
            )
            .await?;
        ex.repairs.splice(0..0, planned.repair);
        Ok(ex)
    }

    /// Runs `plan` (announcing it as `revision`), and, when `adaptive`, replans after each
    /// failure from the current state until it succeeds, stalls or runs out of replans.
    async fn drive(&self, run: &RunCtx, start: Drive) -> Result<Execution, StrategyError> {
        let Drive {
            mut plan,
            mut revision,
            mut completed,
            prior_attempts,
            adaptive,
            replans,
            mut announced,
        } = start;
        let mut ex = Execution::new(plan.clone());
        ex.replans = replans;
        let mut results: HashMap<StepId, StepResult> = HashMap::new();
        let mut last_failure: Option<(StepId, String, String)> = None;
        loop {
            if !announced {
                run.plan_created(&plan, revision).await?;
            }
            let mut job = PlanRun::new(run.id.clone(), plan.clone())
                .with_revision(revision)
                .with_completed(completed.clone());
            job.prior_attempts = prior_attempts.clone();
            let report = run.runner.execute(job).await.map_err(exec_err)?;
            let steps = step_results(&report, &results);
            for s in &steps {
                results.insert(s.id.clone(), s.clone());
            }
            ex.plan = plan.clone();
            ex.steps = steps;
            ex.status = report.status;
            ex.failure = failure_text(&report);
            if report.status != RunStatus::Failed || !adaptive {
                return Ok(ex);
            }
            completed.extend(report.completed_outputs());
            let Some(failed) = report.failures().next() else {
                return Ok(ex);
            };
            let error = failed.error.clone().unwrap_or_default();
            let failed_step = plan
                .step(failed.id.as_str())
                .cloned()
                .unwrap_or_else(|| Step::new(failed.id.clone(), failed.id.to_string()));
            if let Some((prev_id, prev_desc, prev_err)) = &last_failure {
                let same_step = *prev_id == failed_step.id || *prev_desc == failed_step.description;
                if same_step && prev_err.trim() == error.trim() {
                    ex.failure = Some(format!(
                        "stalled: step `{}` failed the same way after a replan ({}); stopped instead of replanning again — the goal may need a different approach, another model or a tool",
                        failed_step.id,
                        error.trim()
                    ));
                    return Ok(ex);
                }
            }
            if ex.replans >= self.inner.options.max_replans {
                ex.failure = Some(format!(
                    "step `{}` failed ({}) and the {} replans allowed are used up; raise --max-replans or change the goal",
                    failed_step.id,
                    error.trim(),
                    self.inner.options.max_replans
                ));
                return Ok(ex);
            }
            let finished: Vec<FinishedStep> = plan
                .steps
                .iter()
                .filter_map(|s| {
                    completed.get(&s.id).map(|o| FinishedStep {
                        step: s.clone(),
                        output: o.clone(),
                    })
                })
                .collect();
            let kept: Vec<StepId> = finished.iter().map(|f| f.step.id.clone()).collect();
            let kept_set: HashSet<&StepId> = kept.iter().collect();
            let abandoned: Vec<StepId> = plan
                .steps
                .iter()
                .filter(|s| !kept_set.contains(&s.id) && s.id != failed_step.id)
                .map(|s| s.id.clone())
                .collect();
            let request = PlanRequest::replan(
                run.goal.clone(),
                ReplanContext {
                    finished,
                    failed: FailedStep {
                        step: failed_step.clone(),
                        error: error.clone(),
                    },
                    abandoned,
                },
            );
            let planned = self.inner.planner.plan(&request).await?;
            run.record_calls(&planned.calls).await?;
            ex.repairs.extend(planned.repair.clone());
            revision += 1;
            ex.replans += 1;
            let reason = format!("step `{}` failed: {}", failed_step.id, error.trim());
            if let Some(store) = &run.store {
                store
                    .save_plan(&run.id, revision, &planned.plan)
                    .await
                    .map_err(|e| StrategyError::Exec(e.to_string()))?;
            }
            run.emit(EventKind::Replanned {
                revision,
                reason: reason.clone(),
                kept: kept.clone(),
                plan: planned.plan.clone(),
            })
            .await?;
            ex.replan_log.push(Replan {
                revision,
                reason,
                kept,
            });
            last_failure = Some((
                failed_step.id.clone(),
                failed_step.description.clone(),
                error,
            ));
            completed.retain(|id, _| planned.plan.step(id.as_str()).is_some());
            plan = planned.plan;
            announced = true;
        }
    }
}

/// Where [`Agent::drive`] starts.
struct Drive {
    plan: Plan,
    revision: u32,
    completed: HashMap<StepId, String>,
    prior_attempts: HashMap<StepId, u32>,
    adaptive: bool,
    replans: u32,
    /// Whether `plan_created` was already emitted for this revision.
    announced: bool,
}

impl Drive {
    fn new(plan: Plan) -> Self {
        Self {
            plan,
            revision: 0,
            completed: HashMap::new(),
            prior_attempts: HashMap::new(),
            adaptive: false,
            replans: 0,
            announced: false,
        }
    }
}

fn failure_text(report: &plan_exec::RunReport) -> Option<String> {
    match report.status {
        RunStatus::Succeeded => None,
        RunStatus::Cancelled => {
            Some("the run was cancelled: continue it with `plan resume`".to_owned())
        }
        _ => {
            let failed: Vec<String> = report
                .failures()
                .map(|s| {
                    format!(
                        "`{}` ({})",
                        s.id,
                        s.error.as_deref().unwrap_or("no error text")
                    )
                })
                .collect();
            let skipped = report.count(StepOutcome::Skipped);
            Some(if failed.is_empty() {
                "the run did not complete every step".to_owned()
            } else {
                format!(
                    "step{} {} failed{}; try the adaptive strategy, more retries, or a fallback",
                    if failed.len() == 1 { "" } else { "s" },
                    failed.join(", "),
                    if skipped > 0 {
                        format!(" and {skipped} dependent step(s) were skipped")
                    } else {
                        String::new()
                    }
                )
            })
        }
    }
}

fn usage_of(calls: &[LlmCall]) -> Usage {
    let mut u = Usage::default();
    for c in calls {
        u.llm_calls += 1;
        u.prompt_tokens += c.usage.prompt_tokens;
        u.completion_tokens += c.usage.completion_tokens;
    }
    u
}

/// The output of the plan's last succeeded `synthesize` step that no other step depends on.
fn final_synthesize_output(ex: &Execution) -> Option<String> {
    let depended: HashSet<&StepId> = ex
        .plan
        .steps
        .iter()
        .flat_map(|s| s.dependencies.iter())
        .collect();
    ex.plan
        .steps
        .iter()
        .rev()
        .filter(|s| s.kind == StepKind::Synthesize && !depended.contains(&s.id))
        .find_map(|s| {
            ex.steps
                .iter()
                .find(|r| r.id == s.id && r.status == "completed")
                .and_then(|r| r.output.clone())
                .filter(|o| !o.trim().is_empty())
        })
}
