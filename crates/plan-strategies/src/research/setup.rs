//! The research agent as a step executor, and [`ResearchSetup`]: what `plan run --research
//! DIR` wires together.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use plan_core::{EventKind, StepKind};
use plan_exec::context::StepContext;
use plan_exec::error::StepError;
use plan_exec::executor::StepExecutor;
use plan_exec::router::Router;

use super::{ResearchAgent, ResearchError, ResearchInput, research_catalogue};

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The kind a research step runs as: its own, or for an `action` step routed to one of the
/// research agents by name, that agent's kind. Any other `action` step of a research run
/// works on the results as an analysis.
fn research_kind(step: &plan_core::Step) -> StepKind {
    match (step.kind, step.agent.as_deref()) {
        (StepKind::Action, Some("researcher")) => StepKind::Search,
        (StepKind::Action, Some("writer")) => StepKind::Synthesize,
        (StepKind::Action, _) => StepKind::Analyze,
        (kind, _) => kind,
    }
}

#[async_trait]
impl StepExecutor for ResearchAgent {
    async fn execute(&self, ctx: &StepContext) -> Result<String, StepError> {
        let mut step = ctx.step().clone();
        step.kind = research_kind(&step);
        let kind = step.kind;
        let input = ResearchInput::new(
            ctx.goal(),
            step,
            ctx.dependencies()
                .iter()
                .map(|d| (d.id.clone(), d.output.clone()))
                .collect(),
        );
        let started = Instant::now();
        let result = tokio::select! {
            r = self.run_step(&input) => r,
            () = ctx.cancel_token().cancelled() => return Err(StepError::cancelled()),
        };
        let step_id = ctx.step().id.clone();
        if kind == StepKind::Search {
            ctx.emit(EventKind::ToolCall {
                step: step_id.clone(),
                tool: format!("search:{}", self.backend.name()),
                ok: result.is_ok(),
                duration_ms: millis(started.elapsed()),
            });
        }
        let output = result.map_err(|e| match e {
            ResearchError::Llm(e) => StepError::from(e),
            e if e.is_retryable() => StepError::retryable(e.to_string()),
            e => StepError::fatal(e.to_string()),
        })?;
        if let Some(call) = &output.model_call {
            ctx.account_call(call);
        }
        Ok(output.text)
    }
}

impl ResearchAgent {
    /// Adds this agent to `router`: the `search`, `analyze` and `synthesize` kinds, and the
    /// agent names of [`research_catalogue`] (`researcher`, `analyst`, `writer`).
    pub fn routes(&self, router: Router) -> Router {
        let me = Arc::new(self.clone());
        let mut router = router;
        for kind in Self::kinds() {
            router = router.route_kind(kind, Arc::clone(&me));
        }
        for name in research_catalogue().names() {
            router = router.route_agent(name, Arc::clone(&me));
        }
        router
    }

    /// As [`routes`](Self::routes), and plain `action` steps too: they run as analyses of
    /// the passages and results, so that every step of the run works from the documents.
    /// `code` steps keep their executor. (Leave action steps to the default executor when
    /// they should call tools.)
    pub fn routes_all_steps(&self, router: Router) -> Router {
        self.routes(router)
            .route_kind(StepKind::Action, self.clone())
    }
}

/// Everything a run over a folder of documents needs (`plan run --strategy dag --research
/// DIR "question"`): the refreshed local index, the [`ResearchAgent`] over it, its routes and
/// what the planner must be told.
#[cfg(feature = "search-index")]
#[derive(Clone, Debug)]
pub struct ResearchSetup {
    index: plan_tools::search::LocalIndex,
    agent: ResearchAgent,
    refresh: plan_tools::search::RefreshStats,
}

#[cfg(feature = "search-index")]
impl ResearchSetup {
    /// Opens (or creates) the index of `config`'s folder, brings it up to date (only changed
    /// files are re-indexed when the index is kept in a folder) and builds the research
    /// agent over it with `provider`.
    ///
    /// ```
    /// # async fn demo(provider: std::sync::Arc<dyn plan_llm::Provider>) -> Result<(), plan_strategies::ResearchError> {
    /// use plan_exec::llm::LlmStepExecutor;
    /// use plan_tools::search::LocalIndexConfig;
    /// use plan_exec::router::Router;
    /// use plan_strategies::{ResearchConfig, ResearchSetup};
    ///
    /// let setup = ResearchSetup::open(
    ///     LocalIndexConfig::new("docs").with_cache_dir("/tmp/plan-index"),
    ///     provider.clone(),
    ///     ResearchConfig::default(),
    /// )
    /// .await?;
    /// let router = setup.routes(Router::default().with_default(LlmStepExecutor::new(provider)));
    /// // Give `router` to the Agent builder as its executor, and tell the planner about
    /// // `setup.planner_guidance()` and the agents of `research_catalogue()`.
    /// # let _ = router; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ResearchError::Search`] when the folder cannot be read or the index written.
    pub async fn open(
        config: plan_tools::search::LocalIndexConfig,
        provider: Arc<dyn plan_llm::Provider>,
        research: super::ResearchConfig,
    ) -> Result<Self, ResearchError> {
        let index =
            tokio::task::spawn_blocking(move || plan_tools::search::LocalIndex::open(config))
                .await
                .map_err(|e| {
                    ResearchError::Search(plan_tools::search::SearchError::Index(format!(
                        "the index task failed: {e}"
                    )))
                })??;
        let refresh = index.refresh_async().await?;
        let agent = ResearchAgent::new(Arc::new(index.clone()), provider).with_config(research);
        Ok(Self {
            index,
            agent,
            refresh,
        })
    }

    /// The index.
    pub fn index(&self) -> &plan_tools::search::LocalIndex {
        &self.index
    }

    /// What the refresh on opening did.
    pub fn refresh_stats(&self) -> plan_tools::search::RefreshStats {
        self.refresh
    }

    /// The research agent (its ledger holds the sources found in the run).
    pub fn agent(&self) -> &ResearchAgent {
        &self.agent
    }

    /// Adds the research routes to `router` (see [`ResearchAgent::routes`]).
    pub fn routes(&self, router: Router) -> Router {
        self.agent.routes(router)
    }

    /// Adds the research routes, plain action steps included, to `router` (see
    /// [`ResearchAgent::routes_all_steps`]).
    pub fn routes_all_steps(&self, router: Router) -> Router {
        self.agent.routes_all_steps(router)
    }

    /// Retrieves passages for `question` from the documents, ready to wire onto an
    /// agent ([`GroundedRun::wire`](super::GroundedRun::wire)); the planner is told
    /// [`planner_guidance`](Self::planner_guidance) and what the passages say.
    ///
    /// # Errors
    /// [`ResearchError::Search`] when the search fails.
    pub async fn ground(&self, question: &str) -> Result<super::GroundedRun, ResearchError> {
        super::GroundedRun::retrieve(
            self.agent.clone(),
            Arc::new(self.index.clone()),
            &self.planner_guidance(),
            question,
        )
        .await
    }

    /// What the planner must be told, with the document count.
    pub fn planner_guidance(&self) -> String {
        format!(
            "{} The collection has {} documents under {}.",
            super::RESEARCH_PLANNER_GUIDANCE,
            self.index.file_count(),
            self.index.root().display()
        )
    }
}
