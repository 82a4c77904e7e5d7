//! The plan data model and its dependency graph, with no I/O.
//!
//! A [`Plan`] is a goal and [`Step`]s with dependencies; [`PlanGraph`] validates it (listing
//! every problem at once) and answers graph queries; [`RunState`] tracks where each step
//! stands; [`Event`] is what a run reports.
//!
//! ```
//! use plan_core::{Plan, PlanGraph};
//!
//! let plan = Plan::from_json(r#"{"goal": "Compare web frameworks", "steps": [
//!     {"id": "search", "description": "Find the most used frameworks", "dependencies": []},
//!     {"id": "compare", "description": "Compare them", "dependencies": ["search"]}
//! ]}"#)?;
//! let graph = PlanGraph::new(plan)?;
//! assert_eq!(graph.topological_order(), vec![0, 1]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod event;
mod graph;
mod model;
mod render;
mod repair;
mod scheduler;
mod state;
mod tree;

pub use event::{Event, EventKind, RunId, RunStatus, Timestamp};
pub use graph::{CriticalPath, Limits, PlanErrors, PlanGraph, PlanProblem};
pub use model::{CodeLang, ParsePlanError, Plan, Step, StepBody, StepId, StepKind};
pub use render::{render_dot, render_goal_tree, render_mermaid, render_text, status_mark};
pub use repair::{RepairChange, RepairReport, repair};
pub use scheduler::{ScheduleState, Scheduler, SchedulerCounts};
pub use state::{RunState, StepState, StepStatus, TransitionError};
pub use tree::{FlatPlan, GoalNode, GoalTree, PATH_SEPARATOR};
