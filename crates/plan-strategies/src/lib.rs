//! Making and revising plans: the planner, the linear, DAG, hierarchical, adaptive and
//! reflective strategies, and the [`Agent`] facade.
//!
//! An [`Agent`] turns a goal into a plan with a [`Planner`] (by default the [`LlmPlanner`]:
//! a schema-shaped reply, validated, re-prompted with the exact problems, then repaired),
//! runs it with plan-exec's parallel runner according to its [`Strategy`], and writes the
//! answer with one final model call. Each run lives in a `plan_exec::session::RunSession`, and its
//! [`RunReport`] is built from the run's journal.
//!
//! [`Strategy`] is a trait: the six built-in strategies ([`Auto`], which answers directly
//! when a goal needs no plan, [`Linear`], [`Dag`], [`Hierarchical`], [`Adaptive`],
//! [`Reflective`]; [`StrategyKind`] names them) are
//! implementations, and a [`StrategyRegistry`] resolves names to strategies, yours
//! included. With a streaming provider the DAG strategy feeds each
//! step to the runner as soon as the model has written it ([`StepStreamParser`]).
//!
//! ```
//! use plan_llm::{Purpose, Reply, ScriptedModel};
//! use plan_strategies::{Agent, PlanningMode, StrategyKind};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let model = ScriptedModel::new()
//!     .when_purpose(Purpose::Plan, Reply::text(r#"{"goal": "g", "steps": [
//!         {"id": "a", "description": "Say hello", "dependencies": []},
//!         {"id": "b", "description": "Say goodbye", "dependencies": ["a"]}]}"#))
//!     .when_purpose(Purpose::Synthesize, Reply::text("hello and goodbye"))
//!     .otherwise(Reply::text("done"));
//! let agent = Agent::builder()
//!     .provider(model)
//!     .strategy(StrategyKind::Dag)
//!     .build()?;
//! let report = agent.run("Greet, then say goodbye").await?;
//! assert!(report.is_success());
//! assert_eq!(report.answer.as_deref(), Some("hello and goodbye"));
//! # Ok::<(), plan_strategies::StrategyError>(())
//! # }).unwrap();
//! ```
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod agent;
mod answer;
mod builder;
mod calls;
mod cancellable;
mod error;
mod forecast;
mod hierarchy;
mod options;
mod planner;
mod prompts;
mod repair;
pub mod replay;
mod report;
mod rerun;
mod runs;
mod runtime;
mod spec;
mod strategy;
mod stream;
mod traced;

pub use agent::{Agent, RunHandle};
pub use builder::AgentBuilder;
pub use calls::Critique;
pub use error::StrategyError;
pub use options::{AnswerSource, PlanningMode, StrategyOptions};
pub use plan_exec::report::RunReport;
pub use planner::{
    AgentInfo, FailedStep, FinishedStep, LlmPlanner, PlanContext, PlanRequest, Planned, Planner,
    PlannerConfig, RepairNote, ReplanContext, StepSink, StepSource, step_channel,
};
pub use prompts::PLAN_SCHEMA;
pub use report::{GoalResult, ReportExt};
pub use rerun::Rerun;
pub use runs::{
    CancelRequests, Cancelling, Continuable, Continuation, DEFAULT_REJECTION, Runs, RunsError,
    Tracked, WaitFor,
};
pub use runtime::{AgentFactory, DEFAULT_PROVIDER_TIMEOUT, Runtime, RuntimeError, model_price};
pub use spec::{
    Approval, Budget, RUN_SPEC_VERSION, RunLimits, RunNeeds, RunSettings, RunSpec, SpecChanges,
    SpecError, SpecOverride,
};
pub use strategy::{
    Adaptive, Auto, Dag, DirectAnswer, Hierarchical, Linear, Outcome, PlanOutcome, PlanStart,
    Planning, Reflective, Strategy, StrategyContext, StrategyKind, StrategyRegistry,
    UnknownStrategy,
};
pub use stream::StepStreamParser;
// --- agents and research (research) ---
mod agents;
mod research;

pub use agents::{AgentCatalogue, AgentError, AgentProfile, AgentTeam, ModelResolver};
#[cfg(feature = "search-index")]
pub use research::ResearchSetup;
pub use research::{
    Grounded, GroundedAnswer, GroundedRun, GroundingConfig, PartRetrieval, QuestionPart,
    RESEARCH_PLANNER_GUIDANCE, RETRIEVAL_TAG, ResearchAgent, ResearchConfig, ResearchError,
    ResearchInput, ResearchOutput, Retrieval, Source, SourceLedger, citation_tags,
    default_research_plan, query_for_step, question_parts, question_query, research_catalogue,
};
// --- end agents and research ---
