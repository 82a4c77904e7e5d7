//! The plan data model, its dependency graph and scheduling, with no I/O.
//!
//! `plan-core` is the part of the `plan` framework every other crate stands on. It knows
//! nothing about models, async runtimes, files or the network:
//!
//! - [`Plan`] and [`Step`]: a goal and the steps that reach it, in the plan JSON form
//!   ([`Plan::from_json`]). [`repair`] fixes the usual faults of model-written plans.
//! - [`PlanGraph`]: a validated plan (every problem reported at once, see [`PlanErrors`])
//!   and graph queries: [`topological_order`](PlanGraph::topological_order),
//!   [`ready`](PlanGraph::ready), [`levels`](PlanGraph::levels),
//!   [`critical_path_weighted`](PlanGraph::critical_path_weighted),
//!   [`descendants`](PlanGraph::descendants).
//! - [`Scheduler`]: the incremental ready-set tracker runners drive, also while a plan is
//!   still streaming in.
//! - [`RunState`]: where each step of a run stands, with only legal transitions.
//! - [`Event`]: what a run reports.
//! - [`GoalTree`]: a goal broken into sub-goals, flattened into a plan by
//!   [`GoalTree::flatten`].
//! - Rendering: [`render_text`], [`render_mermaid`], [`render_dot`], [`render_goal_tree`].
//!
//! Validate, schedule and render:
//!
//! ```
//! use plan_core::{Plan, PlanGraph, RunState, Scheduler, render_text};
//!
//! let plan = Plan::from_json(r#"{"goal": "Compare web frameworks", "steps": [
//!     {"id": "search", "description": "Find the most used frameworks", "dependencies": []},
//!     {"id": "bench", "description": "Find benchmarks", "dependencies": ["search"]},
//!     {"id": "docs", "description": "Rate their docs", "dependencies": ["search"]},
//!     {"id": "compare", "description": "Compare them", "dependencies": ["bench", "docs"]}
//! ]}"#)?;
//! let graph = PlanGraph::new(plan)?;
//! assert_eq!(graph.levels(), vec![vec![0], vec![1, 2], vec![3]]);
//!
//! // Run it as a runner would, recording each step in the run state.
//! let mut scheduler = Scheduler::from_graph(&graph);
//! let mut state = RunState::new(graph.plan());
//! while !scheduler.is_finished() {
//!     for i in scheduler.take_ready() {
//!         let id = &graph.step(i).id;
//!         state.start(id)?;
//!         state.complete(id, format!("output of {id}"))?; // a real runner runs the step here
//!         scheduler.complete(i);
//!     }
//! }
//! assert_eq!(state.output("compare"), Some("output of compare"));
//!
//! assert_eq!(render_text(&graph, Some(&state)), "\
//! Goal: Compare web frameworks
//! └─ [x] search: Find the most used frameworks
//!    ├─ [x] bench: Find benchmarks
//!    └─ [x] docs: Rate their docs
//!       └─ [x] compare: Compare them (after bench)
//! ");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The crate has no optional features.
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod diff;
mod event;
mod graph;
mod index;
mod model;
mod render;
mod repair;
mod rerun;
mod scheduler;
mod state;
mod tree;

pub use diff::{
    PlanDiff, PlanVersion, StepChange, StepField, VersionOrigin, WordChange, WordOp, word_diff,
};
pub use event::{CallKind, Event, EventKind, RecordedCall, RunId, RunStatus, Timestamp};
pub use graph::{CriticalPath, Limits, PlanErrors, PlanGraph, PlanProblem};
pub use model::{CodeLang, ParsePlanError, Plan, Step, StepBody, StepId, StepKind};
pub use render::{render_dot, render_goal_tree, render_mermaid, render_text, status_mark};
pub use repair::{RepairChange, RepairReport, repair};
pub use rerun::{downstream_of, step_keys};
pub use scheduler::{ScheduleState, Scheduler, SchedulerCounts};
pub use state::{RunState, StepState, StepStatus, TransitionError};
pub use tree::{FlatPlan, GoalNode, GoalTree, PATH_SEPARATOR};
