//! Running plans: step executors, sequential and parallel runners, policies, the run
//! session and the run store trait, reports and events.
//!
//! Items are exported by module:
//! - [`executor`]: a [`StepExecutor`](executor::StepExecutor) runs one step given its
//!   [`StepContext`](context::StepContext) ([`context`]: the goal, the step, the capped
//!   outputs of its direct dependencies, a cancel token, an event emitter, the attempt
//!   number). [`llm::LlmStepExecutor`] asks a model through any `plan_llm::Provider`;
//!   [`code_step::CodeStepExecutor`] has a model write a program and runs it in a
//!   `plan_sandbox::Sandbox`; [`executor::executor_fn`] makes one from a closure; a
//!   [`router::Router`] picks one by a step's `agent` and `kind`.
//! - [`runner`]: a [`Runner`](runner::Runner) (sequential, or parallel with a concurrency
//!   bound) runs a plan on the one scheduling core, `plan_core::Scheduler`: each step
//!   starts the moment its last dependency completes. [`policy`] sets timeouts, retries
//!   with backoff and fallbacks; failed steps skip their dependents. Plans may also
//!   arrive as a stream ([`Runner::run_stream`](runner::Runner::run_stream)).
//! - [`session`]: a [`RunSession`](session::RunSession) owns a run's lifecycle: it
//!   creates (or reopens) the run, records plan revisions, journals events (batched) and
//!   step outputs to a [`RunStore`](store::RunStore) ([`store`]; plan-sqlite and
//!   plan-postgres implement it), moves its status and finishes it. Nothing else writes
//!   to a store. Every state change is an `Event` sent to an [`EventSink`](events::EventSink)
//!   ([`events`]); the run's report ([`report`]) is built from its journal, so a live
//!   run, a finished one and one read back from the store report alike.
//! - [`Runner::resume`](runner::Runner::resume) (and any strategy, through
//!   [`SessionBuilder::reopen`](session::SessionBuilder::reopen)) continues a run after a
//!   crash or a cancellation without redoing completed steps.
//! - [`replay`] records every call a run makes outside itself and replays a run from the
//!   recording; [`forecast`] predicts a run's cost from past runs; [`trace`] carries
//!   OpenTelemetry context; [`error`] holds the error types.
//!
//! The sandbox backends (plan-sandbox), the tools and search (plan-tools) and the SQLite
//! store (plan-sqlite) are crates of their own, so a crate that needs the runner alone
//! compiles none of seccomp, tantivy or SQLite.
//!
//! ```
//! use plan_core::{Plan, Step};
//! use plan_exec::context::StepContext;
//! use plan_exec::events::EventLog;
//! use plan_exec::executor::executor_fn;
//! use plan_exec::runner::Runner;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), plan_exec::error::ExecError> {
//! let plan = Plan::new("Say hello politely", vec![
//!     Step::new("greet", "Say hello"),
//!     Step::new("polish", "Make it polite").depends_on(["greet"]),
//! ]);
//! // Any executor works; this one echoes what it sees.
//! let executor = executor_fn(|ctx: StepContext| async move {
//!     let input: Vec<&str> = ctx.dependencies().iter().map(|d| d.output.as_str()).collect();
//!     Ok(format!("{} {}", input.join(" "), ctx.step().description).trim().to_owned())
//! });
//! let events = EventLog::new();
//! let report = Runner::parallel(executor).with_event_sink(events.clone()).run(plan).await?;
//! assert!(report.is_success());
//! assert_eq!(report.output("polish"), Some("Say hello Make it polite"));
//! assert_eq!(events.kinds().last().map(|k| k.name()), Some("run_finished"));
//! # Ok(()) }
//! ```
//!
//! # Features
//! - `test-support`: [`testing`], which points plan-llm's fake OpenAI server
//!   (`plan_llm::testing::FakeOpenAi`, enabled with this feature) at plan-exec's step
//!   prompts, and the benchmarks' reference workloads; [`conformance::check_store`], the
//!   conformance suite for any run store.
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod code_step;
#[cfg(feature = "test-support")]
pub mod conformance;
pub mod context;
pub mod error;
pub mod events;
pub mod executor;
pub mod forecast;
pub mod llm;
pub mod policy;
pub mod replay;
pub mod report;
pub mod router;
pub mod runner;
pub mod session;
pub mod store;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod trace;
pub mod verdict;
