//! [`McpError`]: what goes wrong reaching an MCP server.

/// What can go wrong connecting to an MCP server or calling one of its tools. Every
/// message names the server (and the tool, for a call) and says what to check.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum McpError {
    /// A server spec or `[[mcp]]` table is malformed.
    #[error("invalid MCP server spec `{spec}`: {message}")]
    Spec {
        /// The spec as given.
        spec: String,
        /// What was wrong.
        message: String,
    },
    /// The server could not be started or reached, or did not complete the MCP handshake.
    #[error("MCP server `{server}` failed to start: {message}")]
    Start {
        /// The server's name.
        server: String,
        /// What happened (the spawn error, the handshake error, the server's last stderr
        /// lines), and what to check.
        message: String,
    },
    /// Listing the server's tools failed.
    #[error("MCP server `{server}` could not list its tools: {message}")]
    List {
        /// The server's name.
        server: String,
        /// What happened.
        message: String,
    },
    /// The server did not answer a call in time.
    #[error(
        "MCP server `{server}`, tool `{tool}`: no answer within {secs}s; the server may hang, or raise its timeout (`timeout_secs` in plan.toml)"
    )]
    Timeout {
        /// The server's name.
        server: String,
        /// The tool's name on the server.
        tool: String,
        /// The timeout.
        secs: u64,
    },
    /// The server stopped (exited, crashed or closed the connection) before answering.
    #[error("MCP server `{server}`, tool `{tool}`: the server stopped{detail}")]
    Stopped {
        /// The server's name.
        server: String,
        /// The tool's name on the server.
        tool: String,
        /// What it was and what it last wrote to stderr.
        detail: String,
    },
    /// A tool call failed: the server answered with an error.
    #[error("MCP server `{server}`, tool `{tool}`: {message}")]
    Call {
        /// The server's name.
        server: String,
        /// The tool's name on the server.
        tool: String,
        /// What happened.
        message: String,
    },
}
