//! Running plans: step executors, sequential and parallel runners, policies, the sandbox
//! and the durable run store.
//!
//! ```
//! use plan_core::{Plan, Step};
//! let plan = Plan::new("g", vec![Step::new("a", "do a")]);
//! assert_eq!(plan.steps.len(), 1);
//! ```
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

// Running plans (the `exec` area).
mod context;
mod error;
mod events;
mod executor;
mod llm;
mod policy;
mod report;
mod router;
mod runner;
mod store;
#[cfg(feature = "test-support")]
pub mod testing;

pub use context::{CancelToken, DependencyOutput, StepContext, cap_output};
pub use error::{ExecError, StepError, StepErrorKind, StoreError};
pub use events::{
    ChannelSink, EventLog, EventReceiver, EventSink, FnSink, NoopSink, event_channel, sink_fn,
};
pub use executor::{FnExecutor, StepExecutor, executor_fn};
pub use llm::LlmStepExecutor;
pub use policy::{Backoff, RunOptions, StepPolicy};
pub use report::{RunReport, RunUsage, StepOutcome, StepReport};
pub use router::Router;
pub use runner::{PlanRun, Runner};
pub use store::{
    PlanRevision, RunRecord, RunStore, RunSummary, SqliteStore, StepOutputRecord, StoredRun,
    new_run_id,
};

mod sandbox;

// The sandbox.
#[cfg(target_os = "linux")]
pub use sandbox::{BwrapConfig, BwrapSandbox, ProcessSandbox};
pub use sandbox::{
    Isolation, LimitHit, Limits, MissingFile, OutputFile, ParseSandboxChoiceError, Program,
    RunOutput, Sandbox, SandboxChoice, SandboxError,
};
