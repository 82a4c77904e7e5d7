//! [`Runtime`]: turns a [`RunSpec`] into an agent, the same way on every door.
//!
//! The runtime holds what a process brings to a run (its provider and strategy
//! registries, its environment's keys, model prices, the provider timeout), and
//! [`AgentFactory::agent`] maps a spec onto an [`AgentBuilder`]: the model with its
//! layers (timeout, retry, budget meter, span), the strategy by name (a user-registered
//! one too), every limit, the sandbox, the approval of replans and the spec itself, which
//! the agent records with every run it starts. The CLI, the HTTP server, the MCP server
//! and the fleet worker all get their agents here, so a setting holds on every door.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use plan_llm::{
    BudgetLedger, LlmError, ModelSpec, Price, Provider, ProviderConfig, ProviderExt as _,
    ProviderRegistry, RetryPolicy, UsageMeter,
};

use plan_exec::policy::{RunOptions, StepPolicy};
use plan_llm::UsageTotals;

use crate::agent::Agent;
use crate::builder::AgentBuilder;
use crate::spec::{Approval, RunSpec, SpecError};
use crate::strategy::{StrategyRegistry, UnknownStrategy};

/// How long one remote model call may take by default.
pub const DEFAULT_PROVIDER_TIMEOUT: Duration = StepPolicy::DEFAULT_MODEL_CALL_TIMEOUT;

/// Makes the agent of a run from its spec: what the HTTP server, the MCP server and the
/// fleet worker are given instead of closures. [`Runtime`] is the implementation.
pub trait AgentFactory: Send + Sync {
    /// An agent builder for `spec`, ready for the door's store, events and cancel token.
    ///
    /// # Errors
    /// [`RuntimeError`] naming what in the spec cannot be served here.
    fn agent(&self, spec: &RunSpec) -> Result<AgentBuilder, RuntimeError>;

    /// The strategy names a spec may give, as a door lists them (the MCP tools' schema):
    /// by default the built-in ones; [`Runtime`] lists its registry, strategies a user
    /// registered included.
    fn strategy_names(&self) -> Vec<String> {
        crate::StrategyRegistry::builtin()
            .names()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// The price of `spec`'s model, when known (for forecasts in dollars). The default
    /// knows no prices; [`Runtime`] knows its own list and the ones it was given.
    fn model_price(&self, spec: &RunSpec) -> Option<Price> {
        let _ = spec;
        None
    }

    /// An agent builder that continues a stored run of `spec` which has used `used` so
    /// far. [`Runtime`] gives it what is left of the run's own budget (tokens, and
    /// dollars at the model's price), so a run continued elsewhere, by a resume, an
    /// approval or another worker, cannot spend its budget twice. The default
    /// implementation knows no prices and ignores `used`: it is
    /// [`agent`](Self::agent) with the spec as it is.
    ///
    /// # Errors
    /// As [`agent`](Self::agent).
    fn continuing(&self, spec: &RunSpec, used: UsageTotals) -> Result<AgentBuilder, RuntimeError> {
        let _ = used;
        self.agent(spec)
    }

    /// An agent builder that works on a stored run of `spec` whose usage, wherever its
    /// calls are made, is kept in `ledger` (a fleet's workers: the one driving the run
    /// and those running its steps). [`Runtime`] meters the run's whole budget against
    /// the ledger's total ([`AgentBuilder::budget_ledger`]), so calls made at the same
    /// time by several processes cannot together spend the budget more than once; the
    /// ledger must hold the run's usage so far (seeded from its journal, `used`). The
    /// default implementation ignores the ledger: it is
    /// [`continuing`](Self::continuing), what was left at this moment.
    ///
    /// # Errors
    /// As [`agent`](Self::agent).
    fn continuing_with_ledger(
        &self,
        spec: &RunSpec,
        used: UsageTotals,
        ledger: Arc<dyn BudgetLedger>,
    ) -> Result<AgentBuilder, RuntimeError> {
        let _ = ledger;
        self.continuing(spec, used)
    }
}

/// Why a spec cannot be turned into an agent here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A value of the spec is out of range.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The model cannot be made (unknown provider, missing key, unknown model file).
    #[error("the model `{model}` cannot be used here: {source}")]
    Model {
        /// The model spec.
        model: String,
        /// Why.
        #[source]
        source: LlmError,
    },
    /// The strategy is not registered here.
    #[error(transparent)]
    Strategy(#[from] UnknownStrategy),
    /// A dollar budget needs the model's price, and none is known.
    #[error(
        "a budget in dollars needs the price of {0}, which is not known: set it (prices per million input and output tokens)"
    )]
    UnknownPrice(String),
}

impl RuntimeError {
    /// The provider error behind this one, for its hint.
    pub fn llm(&self) -> Option<&LlmError> {
        match self {
            RuntimeError::Model { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// What a process brings to every run it serves: the provider and strategy registries, keys,
/// prices and the provider timeout, from which it builds the agent of any [`RunSpec`].
#[derive(Clone)]
pub struct Runtime {
    providers: ProviderRegistry,
    strategies: StrategyRegistry,
    config: ProviderConfig,
    prices: BTreeMap<String, Price>,
    provider_timeout: Duration,
    retry: RetryPolicy,
    /// Providers that run in this process (an embedded model): built off the async
    /// threads, and not bounded by the provider timeout.
    in_process: Vec<String>,
    /// The step cap of runs on a provider when their spec sets none.
    default_max_steps: BTreeMap<String, usize>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("providers", &self.providers)
            .field("provider_timeout", &self.provider_timeout)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// A runtime over these providers, with the built-in strategies, keys from
    /// `config`, and the defaults.
    pub fn new(providers: ProviderRegistry, config: ProviderConfig) -> Self {
        Self {
            providers,
            strategies: StrategyRegistry::builtin(),
            config,
            prices: BTreeMap::new(),
            provider_timeout: DEFAULT_PROVIDER_TIMEOUT,
            retry: RetryPolicy::default(),
            in_process: Vec::new(),
            default_max_steps: BTreeMap::new(),
        }
    }

    /// The strategies spec names resolve through (register your own here, and they are
    /// reachable from every door).
    pub fn with_strategies(mut self, strategies: StrategyRegistry) -> Self {
        self.strategies = strategies;
        self
    }

    /// Prices per model spec, over the list prices of well-known hosted models.
    pub fn with_prices(mut self, prices: BTreeMap<String, Price>) -> Self {
        self.prices = prices;
        self
    }

    /// How long one call to a remote model may take (default 5 minutes).
    pub fn with_provider_timeout(mut self, timeout: Duration) -> Self {
        self.provider_timeout = timeout;
        self
    }

    /// How model calls are retried (default [`RetryPolicy::default`]).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Marks `prefix` as a provider that runs in this process: built off the async
    /// threads (it may load a model file), never cut by the provider timeout, and with
    /// `max_steps` as the step cap of runs whose spec sets none.
    pub fn with_in_process(mut self, prefix: &str, max_steps: Option<usize>) -> Self {
        self.in_process.push(prefix.to_owned());
        if let Some(n) = max_steps {
            self.default_max_steps.insert(prefix.to_owned(), n);
        }
        self
    }

    /// The provider registry.
    pub fn providers(&self) -> &ProviderRegistry {
        &self.providers
    }

    /// The strategy registry.
    pub fn strategies(&self) -> &StrategyRegistry {
        &self.strategies
    }

    /// The price of the spec's model: configured, else the list price when the model is
    /// reached on its provider's own API (another endpoint is someone's own server, of
    /// unknown cost).
    pub fn price(&self, spec: &RunSpec) -> Option<Price> {
        model_price(&spec.model, spec.base_url.as_deref(), &self.prices)
    }

    /// The model of `spec` alone, bounded by the provider timeout (remote models) but
    /// without the retry layer, meter or span the agent adds.
    ///
    /// # Errors
    /// [`RuntimeError::Model`].
    pub fn provider(&self, spec: &RunSpec) -> Result<Arc<dyn Provider>, RuntimeError> {
        self.build_model(&spec.model, spec.base_url.as_deref(), spec.no_keys)
    }

    /// The step cap a run of `spec` plans with (`None`: the planner's default).
    pub fn max_steps(&self, spec: &RunSpec) -> Option<usize> {
        spec.limits.max_steps.or_else(|| {
            let model = ModelSpec::parse(&spec.model).ok()?;
            self.default_max_steps.get(model.provider()).copied()
        })
    }

    /// The provider of `model`, at `base_url` if given, with this runtime's keys unless
    /// `no_keys` (see [`RunSpec::no_keys`]).
    /// This runtime with every model replaced by a stand-in for replaying a recorded run
    /// ([`ReplayModel`](plan_exec::replay::ReplayModel), with the capabilities the
    /// recording says the run's model had): no model is built, loaded or called, and no
    /// key is needed.
    pub fn for_replay(&self, replayer: &Arc<plan_exec::replay::Replayer>) -> Self {
        let mut providers = ProviderRegistry::empty();
        let prefixes: Vec<String> = self
            .providers
            .prefixes()
            .map(|(p, _)| p.to_owned())
            .collect();
        for prefix in prefixes {
            let replayer = replayer.clone();
            providers.register_optional_model(
                &prefix,
                "a recorded model (replay)",
                move |spec: &ModelSpec,
                      _: &ProviderConfig|
                      -> Result<Arc<dyn Provider>, LlmError> {
                    Ok(Arc::new(plan_exec::replay::ReplayModel::new(
                        spec.to_string(),
                        replayer.clone(),
                    )))
                },
            );
        }
        Self {
            providers,
            in_process: Vec::new(),
            ..self.clone()
        }
    }

    fn build_model(
        &self,
        model: &str,
        base_url: Option<&str>,
        no_keys: bool,
    ) -> Result<Arc<dyn Provider>, RuntimeError> {
        let error = |source| RuntimeError::Model {
            model: model.to_owned(),
            source,
        };
        let parsed = ModelSpec::parse(model).map_err(error)?;
        self.providers.check(&parsed).map_err(error)?;
        let mut config = self.config.clone();
        if no_keys {
            config = config.without_keys();
        }
        if let Some(url) = base_url {
            config = config.with_base_url(url.to_owned());
        }
        if self.in_process.iter().any(|p| p == parsed.provider()) {
            return block_in_place(|| self.providers.build(&parsed, &config)).map_err(error);
        }
        let remote = self.providers.build(&parsed, &config).map_err(error)?;
        Ok(Arc::new(remote.with_timeout(self.provider_timeout)))
    }

    /// The meter of one run's budget, when it has one.
    fn meter(&self, spec: &RunSpec) -> Result<Option<UsageMeter>, RuntimeError> {
        let mut meter = None;
        if let Some(tokens) = spec.budget.tokens {
            meter = Some(UsageMeter::new().with_budget(tokens));
        }
        if let Some(usd) = spec.budget.usd {
            let price = self
                .price(spec)
                .ok_or_else(|| RuntimeError::UnknownPrice(spec.model.clone()))?;
            meter = Some(meter.unwrap_or_default().with_spend_limit(usd, price));
        }
        Ok(meter)
    }
}

impl AgentFactory for Runtime {
    fn model_price(&self, spec: &RunSpec) -> Option<Price> {
        self.price(spec)
    }

    fn continuing(&self, spec: &RunSpec, used: UsageTotals) -> Result<AgentBuilder, RuntimeError> {
        spec.validate()?;
        let price = self.price(spec);
        self.build_agent(&spec.clone().with_budget_used(used, price))
    }

    fn agent(&self, spec: &RunSpec) -> Result<AgentBuilder, RuntimeError> {
        spec.validate()?;
        self.build_agent(spec)
    }

    fn strategy_names(&self) -> Vec<String> {
        self.strategies
            .names()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    fn continuing_with_ledger(
        &self,
        spec: &RunSpec,
        used: UsageTotals,
        ledger: Arc<dyn BudgetLedger>,
    ) -> Result<AgentBuilder, RuntimeError> {
        // The ledger holds what the run used (`used` included): the whole budget is
        // checked against it.
        let _ = used;
        spec.validate()?;
        Ok(self.build_agent(spec)?.budget_ledger(ledger))
    }
}

impl Runtime {
    /// The agent of a checked spec.
    fn build_agent(&self, spec: &RunSpec) -> Result<AgentBuilder, RuntimeError> {
        let strategy = self.strategies.get(&spec.strategy)?;
        let meter = self.meter(spec)?;
        let provider = self.build_model(&spec.model, spec.base_url.as_deref(), spec.no_keys)?;
        let provider: Arc<dyn Provider> = match &meter {
            Some(meter) => Arc::new(provider.with_usage_meter(meter)),
            None => provider,
        };
        // Agent profiles' models get the layers the agent's own model gets: timeout,
        // the run's meter, retry, span.
        let resolver = {
            let runtime = self.clone();
            let meter = meter.clone();
            let no_keys = spec.no_keys;
            move |model: &str| -> Result<Arc<dyn Provider>, LlmError> {
                let provider = runtime
                    .build_model(model, None, no_keys)
                    .map_err(|e| match e {
                        RuntimeError::Model { source, .. } => source,
                        other => LlmError::Config(other.to_string()),
                    })?;
                let provider: Arc<dyn Provider> = match &meter {
                    Some(meter) => Arc::new(provider.with_usage_meter(meter)),
                    None => provider,
                };
                Ok(Arc::new(
                    provider.with_retry(runtime.retry.clone()).with_tracing(),
                ))
            }
        };
        let l = &spec.limits;
        // A step attempt may take as long as its model call with all its retries (the
        // retry layer's bound), unless the spec sets its own limit.
        let policy = match l.step_timeout_secs {
            Some(secs) => StepPolicy::default().with_timeout(Duration::from_secs(secs)),
            None => {
                StepPolicy::default().with_model_call_timeout(self.provider_timeout, &self.retry)
            }
        };
        let mut builder = Agent::builder()
            .provider(provider)
            .provider_retry(self.retry.clone())
            .run_options(RunOptions::default().with_policy(policy))
            .strategy(strategy)
            .registry(self.strategies.clone())
            .concurrency(l.concurrency)
            .max_replans(l.max_replans)
            .max_depth(l.max_depth as usize)
            .reflection_rounds(l.reflection_rounds)
            .approve_replans(spec.approve == Approval::Replans)
            .model_spec(spec.model.clone())
            .sandbox(spec.sandbox.lazy())
            .model_resolver(resolver)
            .spec(spec.clone());
        if let Some(meter) = meter {
            builder = builder.usage_meter(meter);
        }
        // The runs' forecasts and what they took are priced as their budgets are.
        if let Some(price) = self.price(spec) {
            builder = builder.price(price);
        }
        if let Some(n) = self.max_steps(spec) {
            builder = builder.max_steps(n);
        }
        if let Some(url) = &spec.base_url {
            builder = builder.base_url(url.clone());
        }
        Ok(builder)
    }
}

/// The price of `model`: in `prices`, else the list price when the model is reached on
/// its provider's own API (another endpoint is someone's own server, of unknown cost).
pub fn model_price(
    model: &str,
    base_url: Option<&str>,
    prices: &BTreeMap<String, Price>,
) -> Option<Price> {
    if let Some(price) = prices.get(model) {
        return Some(*price);
    }
    let spec: ModelSpec = model.parse().ok()?;
    let own_api = match (spec.provider(), base_url) {
        (_, None) => true,
        ("openai", Some(url)) => url.trim_end_matches('/') == plan_llm::OPENAI_BASE_URL,
        ("anthropic", Some(url)) => {
            url.trim_end_matches('/') == plan_llm::ANTHROPIC_BASE_URL.trim_end_matches('/')
        }
        _ => false,
    };
    own_api.then(|| plan_llm::known_price(&spec)).flatten()
}

/// Runs `f` off the async worker threads when on a multi-threaded runtime (building an
/// in-process model reads and maps its file).
fn block_in_place<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
