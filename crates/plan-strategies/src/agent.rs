//! The [`Agent`] facade: planner, strategy, runner, executors, events, store and synthesis
//! behind a builder and one `run` call.

use std::sync::Arc;

use plan_core::{Plan, PlanGraph, RunId, StepKind};
use plan_exec::{
    CancelToken, CodeStepExecutor, EventSink, LlmStepExecutor, NoopSink, Router, RunOptions,
    RunRecord, RunReport, RunSession, RunStore, Runner, Sandbox, SandboxChoice, SessionBuilder,
    StepExecutor,
};
use plan_llm::{Provider, ProviderExt as _, RetryPolicy};

use crate::agents::AgentCatalogue;
use crate::answer;
use crate::error::StrategyError;
use crate::options::{AnswerSource, PlanningMode, StrategyOptions};
use crate::planner::{LlmPlanner, Planner, PlannerConfig};
use crate::strategy::{
    PlanOutcome, PlanStart, Strategy, StrategyContext, StrategyKind, StrategyRegistry,
};

/// Adds routes to the default router ([`AgentBuilder::routes`]).
type RouteFn = Box<dyn FnOnce(Router) -> Router + Send>;

/// Builds an [`Agent`]; see [`Agent::builder`].
#[must_use]
pub struct AgentBuilder {
    provider: Option<Arc<dyn Provider>>,
    planner: Option<Arc<dyn Planner>>,
    planner_config: PlannerConfig,
    executor: Option<Arc<dyn StepExecutor>>,
    sandbox: Option<Arc<dyn Sandbox>>,
    routes: Option<RouteFn>,
    retry: Option<RetryPolicy>,
    strategy: Arc<dyn Strategy>,
    registry: StrategyRegistry,
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
            .field("strategy", &self.strategy.name())
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

    /// The strategy (default [`StrategyKind::Dag`]); any [`Strategy`] of your own works.
    pub fn strategy(mut self, strategy: impl Strategy + 'static) -> Self {
        self.strategy = Arc::new(strategy);
        self
    }

    /// The strategies a stored run's strategy name resolves through on
    /// [`Agent::resume`] (default: the built-in five). Register your own strategies here
    /// so their runs can be resumed.
    pub fn registry(mut self, registry: StrategyRegistry) -> Self {
        self.registry = registry;
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

    /// The most steps per plan (default 30); see [`PlannerConfig::max_steps`].
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

    /// How model calls are retried (429, 5xx, timeouts, resets): the one retry layer of a
    /// run, wrapped around the provider. Default: [`RetryPolicy::default`] (at most 4
    /// attempts a call, `Retry-After` honoured up to a cap, a bounded total wait). Steps
    /// do not retry model errors again; their fallback or a replan comes next.
    pub fn provider_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Calls the provider without a retry layer (yours already retries).
    pub fn without_provider_retry(mut self) -> Self {
        self.retry = None;
        self
    }

    /// Adds routes on top of the default routing (code steps to the sandbox, every other
    /// step to the model): `routes` gets the default [`Router`] and returns it with more
    /// routes (by kind or agent), e.g. a research agent's. Ignored when
    /// [`executor`](Self::executor) is set.
    pub fn routes(mut self, routes: impl FnOnce(Router) -> Router + Send + 'static) -> Self {
        self.routes = Some(Box::new(routes));
        self
    }

    /// Extra guidance for the planner's system prompt (what the steps can do, how to
    /// shape the plan).
    pub fn planner_guidance(mut self, guidance: impl Into<String>) -> Self {
        self.planner_config.guidance = Some(guidance.into());
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
        let provider: Arc<dyn Provider> = match self.retry {
            Some(policy) => Arc::new(provider.with_retry(policy)),
            None => provider,
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
                let router = Router::default()
                    .with_default(LlmStepExecutor::new(provider.clone()))
                    .route_kind(StepKind::Code, code.clone())
                    .route_programs(code);
                Arc::new(match self.routes {
                    Some(add) => add(router),
                    None => router,
                })
            }
        };
        let model = self.model.unwrap_or_else(|| provider.name().to_owned());
        let mut sessions = SessionBuilder::new().event_sink(self.sink);
        if let Some(store) = self.store {
            sessions = sessions.store(store);
        }
        let runner = Runner::parallel_arc(executor)
            .with_options(self.run_options.clone())
            .with_cancel(self.cancel.clone());
        let mut cx = StrategyContext::new(provider, planner, runner).with_options(self.options);
        cx.agents = self.agents;
        Ok(Agent {
            inner: Arc::new(Inner {
                cx,
                strategy: self.strategy,
                registry: self.registry,
                sessions,
                concurrency: self.run_options.concurrency,
                model,
                base_url: self.base_url,
                cancel: self.cancel,
            }),
        })
    }
}

/// A planning agent: turns a goal into a plan, runs it with the chosen strategy, and
/// writes the answer.
///
/// Each run lives in a [`RunSession`] (journaled in the store, if any); the strategy
/// plans and executes inside it, and the report is built from the run's journal, so the
/// report of `run` equals the report read back from the store later.
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
    inner: Arc<Inner>,
}

struct Inner {
    cx: StrategyContext,
    strategy: Arc<dyn Strategy>,
    registry: StrategyRegistry,
    sessions: SessionBuilder,
    concurrency: usize,
    model: String,
    base_url: Option<String>,
    cancel: CancelToken,
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
        AgentBuilder {
            provider: None,
            planner: None,
            planner_config: PlannerConfig::default(),
            executor: None,
            sandbox: None,
            routes: None,
            retry: Some(RetryPolicy::default()),
            strategy: Arc::new(StrategyKind::default()),
            registry: StrategyRegistry::builtin(),
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
        let cx = &self.inner.cx;
        let outcome = self.inner.strategy.run(cx, &session, &goal).await;
        answer::finish(cx, &session, outcome).await
    }

    /// Makes the plan the strategy would run, without running it (`plan plan`).
    ///
    /// # Errors
    /// As for planning in [`run`](Self::run).
    pub async fn plan_only(&self, goal: impl Into<String>) -> Result<PlanOutcome, StrategyError> {
        let goal = goal.into();
        self.inner.strategy.plan(&self.inner.cx, &goal).await
    }

    /// Runs a given plan, with no planning call (`plan exec`), under the agent's strategy:
    /// its failure handling (replanning, for the adaptive strategy) applies as for a plan
    /// it made itself. The answer is synthesised.
    ///
    /// # Errors
    /// [`StrategyError::Plan`] when the plan is invalid (every problem listed), or the
    /// store failed.
    pub async fn execute(&self, plan: Plan) -> Result<RunReport, StrategyError> {
        self.execute_planned(PlanOutcome::new(plan)).await
    }

    /// Runs a plan made by [`plan_only`](Self::plan_only) (and perhaps approved or edited
    /// since), keeping what planning produced (the goal tree, critiques, repairs, calls).
    ///
    /// # Errors
    /// As [`execute`](Self::execute).
    pub async fn execute_planned(&self, planned: PlanOutcome) -> Result<RunReport, StrategyError> {
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
        let outcome = self
            .inner
            .strategy
            .execute(cx, &session, PlanStart::from_outcome(planned))
            .await;
        answer::finish(cx, &session, outcome).await
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
        let strategy = match point.strategy.as_deref() {
            Some(name) => match self.inner.registry.get(name) {
                Ok(s) => s,
                Err(e) => {
                    let e = StrategyError::UnknownStrategy(e);
                    let _ = session
                        .finish(plan_core::RunStatus::Failed, None, Some(e.to_string()))
                        .await;
                    return Err(e);
                }
            },
            None => self.inner.strategy.clone(),
        };
        let cx = &self.inner.cx;
        let outcome = match point.plan.clone() {
            // It stopped before a plan was saved: plan again under the same run.
            None => {
                let goal = session.record().goal;
                strategy.run(cx, &session, &goal).await
            }
            Some(latest) => {
                strategy
                    .execute(cx, &session, PlanStart::resume(point, latest))
                    .await
            }
        };
        answer::finish(cx, &session, outcome).await
    }

    async fn open(&self, goal: &str) -> Result<RunSession, StrategyError> {
        let o = &self.inner.cx.options;
        let mut record = RunRecord::new(goal)
            .with_strategy(self.inner.strategy.name())
            .with_model(self.inner.model.clone())
            .with_options(serde_json::json!({
                "max_replans": o.max_replans,
                "max_depth": o.max_depth,
                "reflection_rounds": o.reflection_rounds,
                "concurrency": self.inner.concurrency,
            }));
        if let Some(url) = &self.inner.base_url {
            record = record.with_base_url(url);
        }
        Ok(self.inner.sessions.create(record).await?)
    }
}
