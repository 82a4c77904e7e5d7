//! MCP for plan: tools from MCP servers, and plan itself as an MCP server.
//!
//! - **Client.** [`McpServerConfig`] says how to reach a server: a command line run as a
//!   child process (stdio), or a streamable-HTTP URL. [`McpTools::connect`] starts every
//!   server, completes the handshake and lists their tools, each an [`McpTool`]: an
//!   ordinary [`DynTool`](plan_tools::DynTool) named `<server>__<tool>` where names clash,
//!   whose arguments a [`ToolSet`](plan_tools::ToolSet) validates against the server's
//!   schema. Starting a server is bounded by its start-up timeout, each call by its call
//!   timeout; a failure names the server and the tool. Child processes lead their own
//!   process group and are reaped on [`McpTools::shutdown`] or drop, grandchildren (what
//!   `npx` starts) included; on Linux the group also dies when this process is killed
//!   (even with `SIGKILL`). A stdio server does not inherit this process's environment:
//!   it gets [`PASSED_ENV`] (no API keys) and what its configuration names or sets.
//! - **Server.** [`PlanServer`] offers `plan`, `run` and `show` to any MCP client;
//!   [`serve_stdio`] serves it on stdin and stdout (`plan mcp`).
//! - **Toolbox.** [`Toolbox`] assembles a run's tools: built-ins, MCP tools and the tools
//!   agent profiles name, with a listing of where each comes from (`plan tools`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), plan_mcp::McpError> {
//! use plan_tools::{ToolContext, ToolSet};
//! use plan_mcp::{McpServerConfig, McpTools};
//!
//! let server = McpServerConfig::parse("npx -y @modelcontextprotocol/server-everything@2026.8.31")?;
//! let mcp = McpTools::connect(vec![server], &["read_file"]).await?;
//! let mut tools = ToolSet::new();
//! mcp.add_to(&mut tools);
//! let out = tools
//!     .call("echo", serde_json::json!({"message": "hi"}), &ToolContext::default())
//!     .await;
//! println!("{:?}", out.map(|o| o.to_text()));
//! mcp.shutdown().await;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod child;
mod client;
mod error;
mod serve;
mod spec;
mod tool;
mod toolbox;
mod tools;

#[cfg(feature = "test-support")]
pub mod testing;

pub use client::McpServer;
pub use error::McpError;
pub use serve::{DEFAULT_WAIT_SECS, MAX_WAIT_SECS, PlanServer, serve_stdio};
pub use spec::{
    DEFAULT_START_TIMEOUT, DEFAULT_TIMEOUT, McpServerConfig, McpTransport, PASSED_ENV, sanitize,
};
pub use tool::{McpTool, to_output};
pub use toolbox::{BUILTIN_TOOLS, ToolInfo, ToolSource, Toolbox, ToolboxConfig, ToolboxError};
pub use tools::McpTools;
