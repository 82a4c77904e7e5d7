//! [`AgentBuilder`]: how an [`Agent`] is put together (model, planner, executors, sandbox,
//! routes, retry layer, strategy, store, events).

use plan_exec::replay::JournaledModel;
use std::sync::Arc;

use plan_core::StepKind;
use plan_exec::code_step::CodeStepExecutor;
use plan_exec::context::CancelToken;
use plan_exec::events::{EventSink, NoopSink};
use plan_exec::executor::StepExecutor;
use plan_exec::forecast::Forecaster;
use plan_exec::llm::LlmStepExecutor;
use plan_exec::policy::RunOptions;
use plan_exec::router::Router;
use plan_exec::runner::Runner;
use plan_exec::session::SessionBuilder;
use plan_exec::store::RunStore;
use plan_llm::{BudgetLedger, Price, Provider, ProviderExt as _, RetryPolicy, UsageMeter};
use plan_sandbox::{Sandbox, SandboxChoice};
use plan_tools::{ToolSet, ToolStepExecutor};

use crate::agent::{Agent, Inner};
use crate::agents::{AgentCatalogue, AgentTeam, ModelResolver};
use crate::error::StrategyError;
use crate::options::{AnswerSource, PlanningMode, StrategyOptions};
use crate::planner::{LlmPlanner, Planner, PlannerConfig};
use crate::spec::{Approval, RunSpec};
use crate::strategy::{Strategy, StrategyContext, StrategyKind, StrategyRegistry};

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
    tools: Option<ToolSet>,
    team: bool,
    resolver: Option<Arc<dyn ModelResolver>>,
    spec: Option<RunSpec>,
    /// The run's budget meter, as the [`Runtime`](crate::Runtime) layered it.
    meter: Option<UsageMeter>,
    ledger: Option<Arc<dyn BudgetLedger>>,
    /// The model's price, for the runs' forecasts and what they cost.
    price: Option<Price>,
    /// A forecaster to use instead of mining the store's history.
    forecaster: Option<Forecaster>,
    /// Whether runs journaled in a store are forecast.
    forecasts: bool,
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
    /// A builder with the defaults; [`provider`](Self::provider) is required.
    pub(crate) fn new() -> Self {
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
            tools: None,
            team: false,
            resolver: None,
            spec: None,
            meter: None,
            ledger: None,
            price: None,
            forecaster: None,
            forecasts: true,
        }
    }

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

    /// Wraps the strategy chosen so far in a layer of your own that adds behaviour around
    /// any strategy (as [`Grounded`](crate::Grounded) grounds research answers). Call it
    /// after [`strategy`](Self::strategy).
    pub fn wrap_strategy(
        mut self,
        wrap: impl FnOnce(Arc<dyn Strategy>) -> Arc<dyn Strategy>,
    ) -> Self {
        self.strategy = wrap(self.strategy);
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

    /// Whether a replan waits for approval before it runs (default false; see
    /// [`StrategyOptions::approve_replans`]).
    pub fn approve_replans(mut self, yes: bool) -> Self {
        self.options.approve_replans = yes;
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

    /// Runs steps with this executor (a [`plan_exec::router::Router`] to route by agent or kind)
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

    /// The spec recorded with every run this agent starts, for whoever continues the run
    /// later (a resume, an approval, a fleet worker). [`Runtime`](crate::Runtime) sets
    /// it; its strategy, model and limits are replaced by what this builder ends up
    /// with, so the record always says what the agent does. Without one, a spec is
    /// made from the builder's settings.
    pub fn spec(mut self, spec: RunSpec) -> Self {
        self.spec = Some(spec);
        self
    }

    /// The budget meter the provider (and agent profiles' models) were metered with, so
    /// that [`budget_ledger`](Self::budget_ledger) reaches it.
    pub(crate) fn usage_meter(mut self, meter: UsageMeter) -> Self {
        if let Some(ledger) = &self.ledger {
            meter.clone().with_ledger(ledger.clone());
        }
        self.meter = Some(meter);
        self
    }

    /// Meters the run against its shared usage ledger (the one usage account of a run
    /// whose calls are made by several processes, such as a fleet's workers): every
    /// model call of the agent is charged to `ledger`, and the run's budget and spending
    /// limit hold for the run's total there rather than for this agent's calls alone.
    ///
    /// The budget is the meter's that [`Runtime`](crate::Runtime) gives the agent from
    /// the spec: build the agent with the spec's whole budget
    /// ([`AgentFactory::continuing_with_ledger`](crate::AgentFactory::continuing_with_ledger)),
    /// not what was left of it, since the ledger holds what was used. A builder with no
    /// budget meter gets one at [`build`](Self::build), without a limit, so the run's
    /// usage is still charged.
    pub fn budget_ledger(mut self, ledger: Arc<dyn BudgetLedger>) -> Self {
        if let Some(meter) = &self.meter {
            meter.clone().with_ledger(ledger.clone());
        }
        self.ledger = Some(ledger);
        self
    }

    /// The model's price: a run's `actual` then says what it cost, and its `forecast` what
    /// it was expected to cost ([`Runtime`](crate::Runtime) sets it when it knows the
    /// price). Without one the dollar figures are left out.
    pub fn price(mut self, price: Price) -> Self {
        self.price = Some(price);
        self
    }

    /// Forecasts runs with `forecaster` (mined once, say, and shared with a live view that
    /// shows the forecast and an ETA, so both say the same) instead of mining the store's
    /// history of the agent's model each time a run's forecast is made.
    ///
    /// Runs are forecast when the agent has a [`store`](Self::store): the report of each
    /// run has `forecast` (what its first plan was expected to take) and `actual` (what it
    /// took), recorded with the run's end.
    pub fn forecaster(mut self, forecaster: Forecaster) -> Self {
        self.forecaster = Some(forecaster);
        self
    }

    /// Leaves `forecast` and `actual` out of the reports of runs journaled in a store.
    pub fn without_forecasts(mut self) -> Self {
        self.forecasts = false;
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

    /// The tools steps may call. Steps other than code steps then run through the tool
    /// loop ([`ToolStepExecutor`] over the agent's model, with its retry layer and
    /// tracing) instead of one model call, and agent profiles given to
    /// [`agent_profiles`](Self::agent_profiles) pick their tools from this set. An empty
    /// set changes nothing. Ignored when [`executor`](Self::executor) is set.
    pub fn tools(mut self, tools: ToolSet) -> Self {
        self.tools = (!tools.is_empty()).then_some(tools);
        self
    }

    /// Specialised agents that also run their steps: as [`agents`](Self::agents) (the
    /// planner is told about them, plans naming unknown agents are rejected), and each
    /// profile becomes a route of the default router (by name and by the kinds it
    /// handles) through [`AgentTeam`]: its system prompt, its model (resolved with
    /// [`model_resolver`](Self::model_resolver)) or the agent's, and its tools from
    /// [`tools`](Self::tools). A profile naming a missing tool fails [`build`](Self::build)
    /// with [`StrategyError::Agents`]. Ignored when [`executor`](Self::executor) is set.
    pub fn agent_profiles(mut self, catalogue: AgentCatalogue) -> Self {
        self.agents = Some(Arc::new(catalogue));
        self.team = true;
        self
    }

    /// How agent profiles' model specs (`openai:gpt-4o-mini`) become providers; see
    /// [`agent_profiles`](Self::agent_profiles).
    pub fn model_resolver(mut self, resolver: impl ModelResolver + 'static) -> Self {
        self.resolver = Some(Arc::new(resolver));
        self
    }

    /// Where the answer comes from; [`AnswerSource::SynthesizeStep`] keeps the output of
    /// the plan's final `synthesize` step (with its citations) as the answer.
    pub fn answer_source(mut self, source: AnswerSource) -> Self {
        self.options.answer = source;
        self
    }

    /// The agent's model with the layers [`build`](Self::build) gives it (the retry
    /// layer, a `chat` span per call) over whatever the given provider carries (a
    /// timeout, the run's budget meter): for model calls made beside the agent, such as
    /// a research agent's, so they are retried, metered and traced like the agent's own,
    /// and give up when the run is cancelled (the [`cancel_token`](Self::cancel_token) set
    /// so far). `None` before [`provider`](Self::provider) is set.
    pub fn layered_model(&self) -> Option<Arc<dyn Provider>> {
        self.provider.clone().map(|p| {
            crate::cancellable::Cancellable::wrap(
                layered(p, self.retry.clone()),
                self.cancel.clone(),
            )
        })
    }

    /// Builds the agent.
    ///
    /// # Errors
    /// [`StrategyError::Config`] when no provider was given; [`StrategyError::Agents`]
    /// when an agent profile cannot be built (a missing tool or model).
    pub fn build(self) -> Result<Agent, StrategyError> {
        let Some(provider) = self.provider else {
            return Err(StrategyError::Config(
                "the agent has no model: call .provider(..) on the builder".to_owned(),
            ));
        };
        let provider = match (&self.ledger, &self.meter) {
            (Some(ledger), None) => {
                let meter = UsageMeter::new().with_ledger(ledger.clone());
                Arc::new(provider.with_usage_meter(&meter)) as Arc<dyn Provider>
            }
            _ => provider,
        };
        // Outermost, so that a cancelled run stops waiting on a call and on its retries.
        let provider = crate::cancellable::Cancellable::wrap(
            layered(provider, self.retry),
            self.cancel.clone(),
        );
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
        let planner: Arc<dyn Planner> = Arc::new(crate::traced::TracedPlanner::new(planner));
        let executor: Arc<dyn StepExecutor> = match self.executor {
            Some(e) => e,
            None => {
                let sandbox = self
                    .sandbox
                    .unwrap_or_else(|| Arc::new(SandboxChoice::Auto.lazy()));
                let code = Arc::new(CodeStepExecutor::new(provider.clone(), sandbox));
                let mut router = match &self.tools {
                    Some(tools) => Router::default()
                        .with_default(ToolStepExecutor::new(provider.clone(), tools.clone())),
                    None => Router::default().with_default(LlmStepExecutor::new(provider.clone())),
                }
                .route_kind(StepKind::Code, code.clone())
                .route_programs(code);
                if self.team
                    && let Some(catalogue) = &self.agents
                {
                    let mut team = AgentTeam::new((**catalogue).clone(), provider.clone())
                        .with_tools(self.tools.clone().unwrap_or_default());
                    if let Some(resolver) = self.resolver.clone() {
                        team = team.with_model_resolver(move |spec: &str| {
                            resolver.resolve(spec).map(JournaledModel::wrap)
                        });
                    }
                    router = team.routes(router)?;
                }
                Arc::new(match self.routes {
                    Some(add) => add(router),
                    None => router,
                })
            }
        };
        let model = self.model.unwrap_or_else(|| provider.name().to_owned());
        let spec = recorded_spec(
            self.spec,
            &RecordedSettings {
                strategy: self.strategy.name(),
                model: &model,
                base_url: self.base_url.as_deref(),
                options: &self.options,
                concurrency: self.run_options.concurrency,
                max_steps: self.planner_config.max_steps,
            },
        );
        let forecasting = match &self.store {
            Some(store) if self.forecasts => Some(crate::forecast::Forecasting::new(
                store.clone(),
                model.clone(),
                self.run_options.concurrency,
                self.price,
                self.forecaster,
            )),
            _ => None,
        };
        let mut sessions = SessionBuilder::new().event_sink(self.sink);
        if let Some(store) = self.store {
            sessions = sessions.store(store);
        }
        let runner = Runner::parallel_arc(executor)
            .with_options(self.run_options.clone())
            .with_cancel(self.cancel.clone());
        let mut cx = StrategyContext::new(provider, planner, runner).with_options(self.options);
        cx.max_steps = self.planner_config.max_steps;
        cx.agents = self.agents;
        Ok(Agent {
            inner: Arc::new(Inner {
                cx,
                strategy: self.strategy,
                registry: self.registry,
                sessions,
                model,
                cancel: self.cancel,
                spec,
                forecasting,
            }),
        })
    }
}

/// `provider` with the agent's retry layer, one GenAI `chat` span per model call
/// (retries included), under the step's or the planning's span, and each call journaled
/// for replay (or served from the journal when a run is replayed).
fn layered(provider: Arc<dyn Provider>, retry: Option<RetryPolicy>) -> Arc<dyn Provider> {
    let provider: Arc<dyn Provider> = match retry {
        Some(policy) => Arc::new(provider.with_retry(policy)),
        None => provider,
    };
    JournaledModel::wrap(Arc::new(provider.with_tracing()))
}

/// What an agent was built with, as its spec records it.
struct RecordedSettings<'a> {
    strategy: &'a str,
    model: &'a str,
    base_url: Option<&'a str>,
    options: &'a StrategyOptions,
    concurrency: usize,
    max_steps: usize,
}

/// The spec an agent records: the one it was given (budget, sandbox, needs, approval,
/// overrides), with the strategy, model and limits it was built with.
fn recorded_spec(given: Option<RunSpec>, built: &RecordedSettings<'_>) -> RunSpec {
    let mut spec = given.unwrap_or_default();
    spec.strategy = built.strategy.to_owned();
    spec.model = built.model.to_owned();
    spec.base_url = built.base_url.map(str::to_owned);
    let o = built.options;
    let l = &mut spec.limits;
    l.max_replans = o.max_replans;
    l.max_depth = u32::try_from(o.max_depth).unwrap_or(u32::MAX);
    l.reflection_rounds = o.reflection_rounds;
    l.concurrency = built.concurrency;
    l.max_steps = Some(built.max_steps);
    if o.approve_replans {
        spec.approve = Approval::Replans;
    } else if spec.approve == Approval::Replans {
        spec.approve = Approval::None;
    }
    spec
}
