//! Tools a model can call, and search: the typed [`Tool`] trait, its object-safe form
//! [`DynTool`], the [`ToolSet`] that validates arguments against each tool's JSON schema
//! before calling, the tool loop ([`ToolLoop`]) and the step executor that runs a step
//! through it ([`ToolStepExecutor`]).
//!
//! By module:
//! - [`builtin`]: the built-in tools (files under a root, document search, programs in
//!   the sandbox);
//! - [`search`]: the [`SearchBackend`](search::SearchBackend) trait and its backends, a
//!   local full-text index over a folder (feature `local-index`, tantivy) and Brave web
//!   search (feature `web-search`);
//! - [`replay`]: the stand-in tools a replayed run offers in place of the ones it
//!   recorded.
//!
//! Every tool call goes through plan-exec's call recording (`plan_exec::replay`), so a
//! run's tool calls are journaled and a replay serves them without running a tool.
//!
//! ```
//! use plan_tools::{Tool, ToolContext, ToolError, ToolOutput, ToolSet};
//! use schemars::JsonSchema;
//! use serde::Deserialize;
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct AddArgs {
//!     a: i64,
//!     b: i64,
//! }
//!
//! struct Add;
//!
//! impl Tool for Add {
//!     type Args = AddArgs;
//!     fn name(&self) -> &str {
//!         "add"
//!     }
//!     fn description(&self) -> &str {
//!         "Adds two integers"
//!     }
//!     async fn call(&self, args: AddArgs, _ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
//!         Ok(ToolOutput::Text((args.a + args.b).to_string()))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ToolError> {
//! let tools = ToolSet::new().with(Add);
//! let out = tools
//!     .call("add", serde_json::json!({"a": 2, "b": 3}), &ToolContext::default())
//!     .await?;
//! assert_eq!(out.to_text(), "5");
//! // Arguments are checked against the schema before the tool runs.
//! assert!(tools.call("add", serde_json::json!({"a": "two"}), &ToolContext::default()).await.is_err());
//! # Ok(()) }
//! ```
//!
//! # Features
//! - `web-search` (default): `search::BraveSearch`, web search over Brave's API.
//! - `local-index`: `search::LocalIndex`, a full-text index (tantivy) over a folder of
//!   documents, refreshed as files change.
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod builtin;
pub mod replay;
pub mod search;
mod set;
mod step;
mod tool_loop;

pub use set::{DynTool, Tool, ToolContext, ToolError, ToolOutput, ToolSet, tool_schema};
pub use step::ToolStepExecutor;
pub use tool_loop::{
    ToolCallMode, ToolCallRecord, ToolLoop, ToolLoopConfig, ToolLoopError, ToolLoopOutcome,
    ToolObserver,
};
