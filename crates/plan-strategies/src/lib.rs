//! Making and revising plans: the planner, the linear, DAG, hierarchical, adaptive and
//! reflective strategies, and the `Agent` facade.
//!
//! ```
//! use plan_core::Plan;
//! let plan = Plan::from_json(r#"{"goal": "g", "steps": [{"id": "a", "description": "a"}]}"#).unwrap();
//! assert_eq!(plan.goal, "g");
//! ```
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

// --- agents and research (research) ---
mod agents;
mod research;

pub use agents::{AgentCatalogue, AgentError, AgentProfile, AgentTeam, ModelResolver};
#[cfg(feature = "search-index")]
pub use research::ResearchSetup;
pub use research::{
    ModelCall, RESEARCH_PLANNER_GUIDANCE, ResearchAgent, ResearchConfig, ResearchError,
    ResearchInput, ResearchOutput, Source, SourceLedger, citation_tags, default_research_plan,
    query_for_step, research_catalogue,
};
// --- end agents and research ---
