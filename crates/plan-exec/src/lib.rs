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

mod sandbox;

// The sandbox.
#[cfg(target_os = "linux")]
pub use sandbox::{BwrapConfig, BwrapSandbox, ProcessSandbox};
pub use sandbox::{
    Isolation, LimitHit, Limits, MissingFile, OutputFile, ParseSandboxChoiceError, Program,
    RunOutput, Sandbox, SandboxChoice, SandboxError,
};
