//! [`Router`]: picks an executor by a step's `agent` and `kind`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use plan_core::{Step, StepKind};

use crate::context::StepContext;
use crate::error::StepError;
use crate::executor::StepExecutor;

/// A table from a step's `agent` and/or `kind` to the executor that runs it, with a
/// default. It is itself a [`StepExecutor`], so a runner takes it like any other.
///
/// A step is routed to the first match of: the program route, if the step carries its
/// own `code`; its (agent, kind) pair; its agent; its kind; the default. A step that
/// matches nothing fails with a fatal error naming the step.
///
/// ```
/// use plan_exec::executor::executor_fn;
/// use plan_exec::router::Router;
/// use plan_exec::context::StepContext;
/// use plan_core::StepKind;
///
/// let router = Router::default()
///     .with_default(executor_fn(|_: StepContext| async { Ok("general".to_owned()) }))
///     .route_agent("analyst", executor_fn(|_: StepContext| async { Ok("analysis".to_owned()) }))
///     .route_kind(StepKind::Search, executor_fn(|_: StepContext| async { Ok("hits".to_owned()) }));
/// # let _ = router;
/// ```
#[derive(Clone, Default)]
pub struct Router {
    pairs: HashMap<(String, StepKind), Arc<dyn StepExecutor>>,
    agents: HashMap<String, Arc<dyn StepExecutor>>,
    kinds: HashMap<StepKind, Arc<dyn StepExecutor>>,
    programs: Option<Arc<dyn StepExecutor>>,
    default: Option<Arc<dyn StepExecutor>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("pairs", &self.pairs.keys().collect::<Vec<_>>())
            .field("agents", &self.agents.keys().collect::<Vec<_>>())
            .field("kinds", &self.kinds.keys().collect::<Vec<_>>())
            .field("programs", &self.programs.is_some())
            .field("default", &self.default.is_some())
            .finish()
    }
}

impl Router {
    /// Sets the executor for steps no route matches.
    pub fn with_default(mut self, executor: impl StepExecutor + 'static) -> Self {
        self.default = Some(Arc::new(executor));
        self
    }

    /// Routes steps whose `agent` is `agent`.
    pub fn route_agent(
        mut self,
        agent: impl Into<String>,
        executor: impl StepExecutor + 'static,
    ) -> Self {
        self.agents.insert(agent.into(), Arc::new(executor));
        self
    }

    /// Routes steps of a kind.
    pub fn route_kind(mut self, kind: StepKind, executor: impl StepExecutor + 'static) -> Self {
        self.kinds.insert(kind, Arc::new(executor));
        self
    }

    /// Routes steps that carry their own program (`code`), whatever their kind or agent
    /// (takes precedence over every other route): a plan file's deterministic checks.
    pub fn route_programs(mut self, executor: impl StepExecutor + 'static) -> Self {
        self.programs = Some(Arc::new(executor));
        self
    }

    /// Routes steps with this agent *and* this kind (takes precedence over both).
    pub fn route(
        mut self,
        agent: impl Into<String>,
        kind: StepKind,
        executor: impl StepExecutor + 'static,
    ) -> Self {
        self.pairs.insert((agent.into(), kind), Arc::new(executor));
        self
    }

    /// The executor a step would go to, if any.
    pub fn executor_for(&self, step: &Step) -> Option<&Arc<dyn StepExecutor>> {
        if step.code.is_some()
            && let Some(e) = &self.programs
        {
            return Some(e);
        }
        if let Some(agent) = &step.agent {
            if let Some(e) = self.pairs.get(&(agent.clone(), step.kind)) {
                return Some(e);
            }
            if let Some(e) = self.agents.get(agent) {
                return Some(e);
            }
        }
        self.kinds.get(&step.kind).or(self.default.as_ref())
    }
}

#[async_trait]
impl StepExecutor for Router {
    async fn execute(&self, ctx: &StepContext) -> Result<String, StepError> {
        let step = ctx.step();
        match self.executor_for(step) {
            Some(executor) => executor.execute(ctx).await,
            None => Err(StepError::fatal(format!(
                "no executor for step `{}` (kind `{}`, agent `{}`): add a route for it or a default to the router",
                step.id,
                step.kind,
                step.agent.as_deref().unwrap_or("none"),
            ))),
        }
    }
}
