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
    /// A tool call failed: the server returned an error, crashed, or did not answer in
    /// time.
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
