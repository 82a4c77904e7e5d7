//! [`GroundedRun`]: a run that answers a question from what a search finds, wired onto an
//! agent the same way wherever it is started (`plan run --research DIR`, `--search brave`,
//! or a Rust program).

use std::sync::Arc;

use plan_tools::search::SearchBackend;

use super::{Grounded, GroundingConfig, ResearchAgent, ResearchError, Retrieval};
use crate::builder::AgentBuilder;

/// A question's research, ready to wire onto an agent: the passages retrieved for the
/// question before anything is planned, the research agent that retrieved them (its
/// ledger holds the sources), its search backend and what the planner is told.
/// [`wire`](Self::wire) gives the agent the research routes and agents and grounds its
/// strategy ([`Grounded`]): it abstains when nothing relevant was found, `auto` answers a
/// question the passages cover in one call, and every answer ends with its verified
/// sources.
///
/// Over a folder of documents, get one from
/// [`ResearchSetup::ground`](super::ResearchSetup::ground); over another backend (web
/// search), from [`retrieve`](Self::retrieve).
pub struct GroundedRun {
    backend: Arc<dyn SearchBackend>,
    agent: ResearchAgent,
    retrieval: Retrieval,
    guidance: String,
}

impl std::fmt::Debug for GroundedRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroundedRun")
            .field("backend", &self.backend.name())
            .field("retrieval", &self.retrieval.query)
            .finish_non_exhaustive()
    }
}

impl GroundedRun {
    /// Retrieves passages for `question` with `agent` (searching `backend`, which the
    /// agent was made over) before anything is planned; `about` is what the planner is
    /// told about the collection, the passages' brief follows it.
    ///
    /// # Errors
    /// [`ResearchError::Search`] when the search fails.
    pub async fn retrieve(
        agent: ResearchAgent,
        backend: Arc<dyn SearchBackend>,
        about: &str,
        question: &str,
    ) -> Result<Self, ResearchError> {
        let retrieval = agent
            .retrieve(question, &GroundingConfig::default())
            .await?;
        let guidance = format!("{about}\n\n{}", retrieval.brief());
        Ok(Self {
            backend,
            agent,
            retrieval,
            guidance,
        })
    }

    /// The search backend (for a `search_docs` tool over the same documents).
    pub fn backend(&self) -> Arc<dyn SearchBackend> {
        self.backend.clone()
    }

    /// The passages retrieved for the question.
    pub fn retrieval(&self) -> &Retrieval {
        &self.retrieval
    }

    /// `builder` with the research agents as routes and planner agents (with
    /// `all_steps`, plain action steps too: a run with no tools works from the
    /// documents), the planner told about the collection and the passages, and its
    /// strategy grounded in the retrieval.
    pub fn wire(self, builder: AgentBuilder, all_steps: bool) -> AgentBuilder {
        let routes = self.agent.clone();
        let (agent, retrieval) = (self.agent, self.retrieval);
        builder
            .routes(move |router| {
                if all_steps {
                    routes.routes_all_steps(router)
                } else {
                    routes.routes(router)
                }
            })
            .planner_guidance(self.guidance)
            .agents(super::research_catalogue())
            .wrap_strategy(move |inner| Arc::new(Grounded::new(inner, agent, retrieval)))
    }
}
