//! [`AgentTeam`]: turns an [`AgentCatalogue`] into routes of plan-exec's [`Router`].

use std::sync::Arc;

use plan_exec::executor::StepExecutor;
use plan_exec::router::Router;
use plan_llm::{LlmError, Provider};
use plan_tools::{ToolLoopConfig, ToolSet, ToolStepExecutor};

use super::{AgentCatalogue, AgentError, AgentProfile};

/// Makes the model of a profile that names one (`openai:gpt-4o-mini`); the CLI passes its
/// provider-spec parser. Implemented for closures.
pub trait ModelResolver: Send + Sync {
    /// The provider for `spec`.
    ///
    /// # Errors
    /// Whatever stops the model from being made (unknown provider, missing key).
    fn resolve(&self, spec: &str) -> Result<Arc<dyn Provider>, LlmError>;
}

impl<F> ModelResolver for F
where
    F: Fn(&str) -> Result<Arc<dyn Provider>, LlmError> + Send + Sync,
{
    fn resolve(&self, spec: &str) -> Result<Arc<dyn Provider>, LlmError> {
        self(spec)
    }
}

/// Specialised agents ready to run: each profile becomes a [`ToolStepExecutor`] with its
/// system prompt, its model (or the run's) and its tools, routed by agent name and by the
/// kinds it handles. A `verify` step routed to a profile is asked for its verdict and
/// judged by it as on every route: `FAIL` fails the step, so its fallback runs or the plan
/// is revised.
///
/// ```
/// use std::sync::Arc;
/// use plan_core::{Step, StepKind};
/// use plan_exec::executor::executor_fn;
/// use plan_exec::router::Router;
/// use plan_exec::context::StepContext;
/// use plan_tools::ToolSet;
/// use plan_strategies::{AgentCatalogue, AgentProfile, AgentTeam};
/// # use plan_llm::{Provider, Request, Response, LlmError, Usage};
/// # struct Echo;
/// # #[async_trait::async_trait]
/// # impl Provider for Echo {
/// #     fn name(&self) -> &str { "echo" }
/// #     async fn complete(&self, _: &Request) -> Result<Response, LlmError> {
/// #         Ok(Response::text("ok", Usage::default()))
/// #     }
/// # }
///
/// let catalogue = AgentCatalogue::new()
///     .with(AgentProfile::new("analyst", "Compares findings").with_kinds([StepKind::Analyze]))?;
/// let team = AgentTeam::new(catalogue, Arc::new(Echo));
/// let router = team.routes(
///     Router::default().with_default(executor_fn(|_: StepContext| async { Ok("general".into()) })),
/// )?;
/// assert!(router.executor_for(&Step::new("a", "x").with_kind(StepKind::Analyze)).is_some());
/// # Ok::<(), plan_strategies::AgentError>(())
/// ```
#[derive(Clone)]
pub struct AgentTeam {
    catalogue: AgentCatalogue,
    default_provider: Arc<dyn Provider>,
    tools: ToolSet,
    resolver: Option<Arc<dyn ModelResolver>>,
    loop_config: ToolLoopConfig,
}

impl std::fmt::Debug for AgentTeam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentTeam")
            .field("agents", &self.catalogue.names())
            .field("default_provider", &self.default_provider.name())
            .field("tools", &self.tools)
            .finish_non_exhaustive()
    }
}

impl AgentTeam {
    /// A team of the catalogue's agents; profiles without a model use `default_provider`.
    pub fn new(catalogue: AgentCatalogue, default_provider: Arc<dyn Provider>) -> Self {
        Self {
            catalogue,
            default_provider,
            tools: ToolSet::new(),
            resolver: None,
            loop_config: ToolLoopConfig::default(),
        }
    }

    /// The tools profiles may name.
    pub fn with_tools(mut self, tools: ToolSet) -> Self {
        self.tools = tools;
        self
    }

    /// How profiles' model specs become providers.
    pub fn with_model_resolver(mut self, resolver: impl ModelResolver + 'static) -> Self {
        self.resolver = Some(Arc::new(resolver));
        self
    }

    /// The tool loop settings of every agent.
    pub fn with_loop_config(mut self, config: ToolLoopConfig) -> Self {
        self.loop_config = config;
        self
    }

    /// The catalogue.
    pub fn catalogue(&self) -> &AgentCatalogue {
        &self.catalogue
    }

    /// The executor of one profile.
    ///
    /// # Errors
    /// [`AgentError::UnknownTools`] or [`AgentError::Model`].
    pub fn executor(&self, profile: &AgentProfile) -> Result<ToolStepExecutor, AgentError> {
        let tools = self.tools.subset(&profile.tools).map_err(|_| {
            let missing = profile
                .tools
                .iter()
                .filter(|t| !self.tools.names().contains(t))
                .cloned()
                .collect();
            AgentError::UnknownTools {
                agent: profile.name.clone(),
                tools: missing,
                available: self.tools.names().join(", "),
            }
        })?;
        let provider = match (&profile.model, &self.resolver) {
            (None, _) => Arc::clone(&self.default_provider),
            (Some(spec), Some(resolver)) => {
                resolver.resolve(spec).map_err(|e| AgentError::Model {
                    agent: profile.name.clone(),
                    message: e.to_string(),
                })?
            }
            (Some(spec), None) => {
                return Err(AgentError::Model {
                    agent: profile.name.clone(),
                    message: format!(
                        "it names the model `{spec}` but no model resolver is configured; \
                         give the team one or remove the profile's `model`"
                    ),
                });
            }
        };
        Ok(ToolStepExecutor::new(provider, tools)
            .with_config(self.loop_config.clone())
            .with_system_prompt(profile.system_prompt.clone()))
    }

    /// Adds a route for each agent (by name) and for each kind an agent handles (the first
    /// profile listing it) to `router`, keeping its other routes and default.
    ///
    /// # Errors
    /// As [`executor`](Self::executor), for the first profile that cannot be built.
    pub fn routes(&self, mut router: Router) -> Result<Router, AgentError> {
        let mut routed_kinds = Vec::new();
        for profile in self.catalogue.profiles() {
            let executor: Arc<dyn StepExecutor> = Arc::new(self.executor(profile)?);
            router = router.route_agent(profile.name.clone(), Arc::clone(&executor));
            for kind in &profile.kinds {
                if !routed_kinds.contains(kind) {
                    routed_kinds.push(*kind);
                    router = router.route_kind(*kind, Arc::clone(&executor));
                }
            }
        }
        Ok(router)
    }
}
