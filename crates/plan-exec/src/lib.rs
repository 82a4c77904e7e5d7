//! Running plans: step executors, sequential and parallel runners, policies, the sandbox
//! and the durable run store.
//!
//! - A [`StepExecutor`] runs one step given its [`StepContext`] (the goal, the step, the
//!   capped outputs of its direct dependencies, a [`CancelToken`], an event emitter, the
//!   attempt number). [`LlmStepExecutor`] asks a model through any `plan_llm::Provider`;
//!   [`executor_fn`] makes one from a closure; a [`Router`] picks one by a step's `agent`
//!   and `kind`.
//! - A [`Runner`] (sequential, or parallel with a concurrency bound) runs a plan on the
//!   one scheduling core, `plan_core::Scheduler`: each step starts the moment its last
//!   dependency completes. [`StepPolicy`] sets timeouts, retries with [`Backoff`] and
//!   fallbacks; failed steps skip their dependents. Plans may also arrive as a stream
//!   ([`Runner::run_stream`]).
//! - A [`RunSession`] owns a run's lifecycle: it creates (or reopens) the run, records
//!   plan revisions, journals events (batched) and step outputs to a [`RunStore`]
//!   ([`SqliteStore`]), moves its status and finishes it. Nothing else writes to a store.
//!   Every state change is an `Event` sent to an [`EventSink`]; the run's report,
//!   [`RunReport`], is built from its journal ([`RunReport::from_stored`]), so a live run,
//!   a finished one and one read back from the store report alike.
//! - [`Runner::resume`] (and any strategy, through [`SessionBuilder::reopen`]) continues a
//!   run after a crash or a cancellation without redoing completed steps.
//!
//! ```
//! use plan_core::{Plan, Step};
//! use plan_exec::{executor_fn, EventLog, Runner, StepContext};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), plan_exec::ExecError> {
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
//! Default: `sqlite`, `sandbox`, `tools`. With `default-features = false` you get the
//! runner, the session, the `RunStore` trait, the `Sandbox` trait and the LLM step
//! executor, and compile none of SQLite, seccomp, nix, JSON-schema validation or tantivy.
//! - `sqlite`: `SqliteStore`, the run store in one SQLite file (bundled SQLite).
//! - `sandbox`: the Linux sandbox backends (`BwrapSandbox` with its seccomp filter,
//!   `ProcessSandbox`); without it, a [`SandboxChoice`] other than `none` says this build
//!   has no backend.
//! - `tools`: tools and search (`Tool`, `ToolSet` with JSON-schema validation, the tool
//!   loop, built-in tools, `SearchBackend`, Brave search).
//! - `search-index`: the local full-text index (`LocalIndex`, tantivy); implies `tools`.
//! - `test-support`: `testing`, which points plan-llm's fake OpenAI server
//!   (`plan_llm::testing::FakeOpenAi`, enabled with this feature) at plan-exec's step
//!   prompts, and the benchmarks' reference workloads; `conformance::check_store`, the
//!   conformance suite for any [`RunStore`].
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

// Running plans (the `exec` area).
#[cfg(feature = "test-support")]
pub mod conformance;
mod context;
mod error;
mod events;
mod executor;
pub mod forecast;
mod llm;
mod policy;
pub mod replay;
mod report;
mod router;
mod runner;
mod session;
mod store;
#[cfg(feature = "test-support")]
pub mod testing;
mod trace;
pub use trace::{TRACEPARENT, continue_trace, new_traceparent, traceparent};
mod verdict;

pub use context::{CancelToken, DependencyOutput, StepContext, cap_output, llm_call_event};
pub use error::{ExecError, Hint, MAX_RETRY_AFTER, StepError, StepErrorKind, StoreError};
pub use events::{
    ChannelSink, EventLog, EventReceiver, EventSink, FnSink, NoopSink, event_channel, sink_fn,
};
pub use executor::{FnExecutor, StepExecutor, executor_fn};
pub use llm::LlmStepExecutor;
pub use policy::{Backoff, RunOptions, StepPolicy};
pub use report::{Execution, Replan, RunReport, RunUsage};
pub use router::Router;
pub use runner::{PlanRun, Runner};
pub use session::{ResumePoint, RunSession, SessionBuilder};
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use store::{
    JournalEntry, PlanRevision, Prune, Pruned, PrunedRun, Retention, RunEnd, RunRecord, RunStore,
    RunSummary, StepOutputRecord, StoredRun, follow, follow_with, format_age, keep_pruning,
    new_run_id, parse_age,
};

mod code_step;
mod sandbox;

// The sandbox and code steps.
pub use code_step::{
    CodeStepExecutor, OUTPUT_MARKER, OutputCheck, declared_outputs, extract_program,
};
#[cfg(all(target_os = "linux", feature = "sandbox"))]
pub use sandbox::{BwrapConfig, BwrapSandbox, ProcessSandbox};
pub use sandbox::{
    Isolation, LazySandbox, LimitHit, Limits, MissingFile, OutputFile, ParseSandboxChoiceError,
    Program, RunOutput, Sandbox, SandboxChoice, SandboxError,
};

// --- tools and search (research) ---
#[cfg(feature = "tools")]
mod search;
#[cfg(feature = "tools")]
mod tools;

#[cfg(feature = "tools")]
pub use search::{
    BraveSearch, BraveSearchConfig, SearchBackend, SearchError, SearchHit, SearchQuery,
};
#[cfg(feature = "search-index")]
pub use search::{LocalIndex, LocalIndexConfig, RefreshStats};
#[cfg(feature = "tools")]
pub use tools::{
    CodeLanguage, DynTool, FsRoot, ListFilesArgs, ListFilesTool, ReadFileArgs, ReadFileTool,
    RunCodeArgs, RunCodeTool, SearchDocsArgs, SearchDocsTool, Tool, ToolCallMode, ToolCallRecord,
    ToolContext, ToolError, ToolLoop, ToolLoopConfig, ToolLoopError, ToolLoopOutcome, ToolObserver,
    ToolOutput, ToolSet, ToolStepExecutor, tool_schema,
};
// --- end tools and search ---
