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

mod error;
mod planner;
mod prompts;
mod repair;
mod stream;

pub use error::StrategyError;
pub use planner::{
    AgentInfo, FailedStep, FinishedStep, LlmCall, LlmPlanner, PlanContext, PlanRequest, Planned,
    Planner, PlannerConfig, RepairNote, ReplanContext, StepSink, StepSource, step_channel,
};
pub use prompts::PLAN_SCHEMA;
pub use stream::StepStreamParser;
