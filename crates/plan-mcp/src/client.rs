//! [`McpServer`]: one connected MCP server (a child process over stdio, or streamable
//! HTTP), its tools, calls bounded in time, and an explicit shutdown that reaps the child
//! and everything it started.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::ServiceExt as _;
use rmcp::model::{CallToolRequestParams, CallToolResult, Tool as RemoteTool};
use rmcp::service::{RoleClient, RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use tokio::io::AsyncBufReadExt as _;

use crate::McpError;
use crate::spec::{McpServerConfig, McpTransport};

/// How many of a server's last stderr lines are kept for error messages.
const STDERR_LINES: usize = 20;

type Service = RunningService<RoleClient, ()>;

/// The last lines a child process wrote to stderr.
#[derive(Clone, Default)]
struct StderrTail(Arc<Mutex<VecDeque<String>>>);

impl StderrTail {
    fn push(&self, line: String) {
        if let Ok(mut lines) = self.0.lock() {
            if lines.len() == STDERR_LINES {
                lines.pop_front();
            }
            lines.push_back(line);
        }
    }

    /// `"; its stderr ended with: ..."`, or nothing when it wrote nothing.
    fn suffix(&self) -> String {
        let lines = match self.0.lock() {
            Ok(lines) => lines.iter().cloned().collect::<Vec<_>>(),
            Err(_) => Vec::new(),
        };
        if lines.is_empty() {
            String::new()
        } else {
            format!("; its stderr ended with:\n    {}", lines.join("\n    "))
        }
    }
}

/// A connected MCP server.
///
/// [`connect`](Self::connect) starts it (or opens the HTTP session), completes the MCP
/// handshake and lists its tools within the server's start-up timeout;
/// [`call`](Self::call) calls a tool within the server's call timeout;
/// [`shutdown`](Self::shutdown) ends the session and reaps the child process (stdin
/// closed, then SIGTERM, then SIGKILL to its whole process group). Dropping a server that
/// was not shut down kills its process group at once.
pub struct McpServer {
    config: McpServerConfig,
    service: tokio::sync::Mutex<Option<Service>>,
    peer: rmcp::service::Peer<RoleClient>,
    tools: Vec<RemoteTool>,
    stderr: StderrTail,
    /// The child's process group (it leads its own), while it may still run.
    #[cfg(unix)]
    pgid: Mutex<Option<i32>>,
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServer")
            .field("name", &self.config.name)
            .field("server", &self.config.describe())
            .field("tools", &self.tools.len())
            .finish_non_exhaustive()
    }
}

impl McpServer {
    /// Starts (or reaches) the server, completes the handshake and lists its tools, all
    /// within the server's start-up timeout ([`McpServerConfig::start_timeout`]).
    ///
    /// # Errors
    /// [`McpError::Spec`] when a timeout is zero; [`McpError::Start`] when the program
    /// cannot be spawned, exits, the URL cannot be reached, or the handshake fails or
    /// times out; [`McpError::List`] when listing its tools fails or times out.
    pub async fn connect(config: McpServerConfig) -> Result<Self, McpError> {
        config.check_timeouts()?;
        let stderr = StderrTail::default();
        let start_err = |message: String| McpError::Start {
            server: config.name.clone(),
            message,
        };
        let start_timeout = config.start_timeout;
        // One budget for the whole start: spawn, handshake and the first listing.
        let deadline = tokio::time::Instant::now() + start_timeout;
        #[cfg(unix)]
        let mut pgid = None;
        let handshake = match &config.transport {
            McpTransport::Command { program, args } => {
                let (transport, child_stderr) = crate::child::spawn(program, args, &config)
                    .map_err(|e| {
                        start_err(format!(
                            "cannot run `{}`: {e}; check that the program is installed and on PATH",
                            config.describe()
                        ))
                    })?;
                #[cfg(unix)]
                {
                    pgid = transport.id().and_then(|p| i32::try_from(p).ok());
                }
                if let Some(child_stderr) = child_stderr {
                    let tail = stderr.clone();
                    let name = config.name.clone();
                    tokio::spawn(async move {
                        let mut lines = tokio::io::BufReader::new(child_stderr).lines();
                        while let Ok(Some(line)) = lines.next_line().await {
                            tracing::debug!(server = %name, "{line}");
                            tail.push(line);
                        }
                    });
                }
                tokio::time::timeout_at(deadline, ().serve(transport)).await
            }
            McpTransport::Http { url } => {
                install_crypto_provider();
                let transport = StreamableHttpClientTransport::from_uri(url.as_str());
                tokio::time::timeout_at(deadline, ().serve(transport)).await
            }
        };
        let guard = PgidGuard(
            #[cfg(unix)]
            pgid,
        );
        let service = match handshake {
            Ok(Ok(service)) => service,
            Ok(Err(e)) => {
                // Give a dying child a moment to write why.
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Err(start_err(format!(
                    "the MCP handshake with `{}` failed: {e}{}",
                    config.describe(),
                    stderr.suffix()
                )));
            }
            Err(_) => {
                return Err(start_err(format!(
                    "`{}` did not complete the MCP handshake within {}: raise \
                     `start_timeout_secs` (in its [[mcp]] table of plan.toml) if it is slow to \
                     start, or check that it is an MCP server{}",
                    config.describe(),
                    secs(start_timeout),
                    stderr.suffix()
                )));
            }
        };
        let peer = service.peer().clone();
        let listed = tokio::time::timeout_at(deadline, peer.list_all_tools()).await;
        let mut tools = match listed {
            Ok(Ok(tools)) => tools,
            Ok(Err(e)) => {
                return Err(McpError::List {
                    server: config.name.clone(),
                    message: format!("{e}{}", stderr.suffix()),
                });
            }
            Err(_) => {
                return Err(McpError::List {
                    server: config.name.clone(),
                    message: format!(
                        "it did not start and list its tools within {}: raise \
                         `start_timeout_secs` (in its [[mcp]] table of plan.toml){}",
                        secs(start_timeout),
                        stderr.suffix()
                    ),
                });
            }
        };
        if let Some(allowed) = &config.tools {
            let missing: Vec<&String> = allowed
                .iter()
                .filter(|a| !tools.iter().any(|t| t.name == a.as_str()))
                .collect();
            if !missing.is_empty() {
                let have: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
                return Err(McpError::List {
                    server: config.name.clone(),
                    message: format!(
                        "the allow-list names tools it does not have: {}; it has: {}",
                        missing
                            .iter()
                            .map(|s| format!("`{s}`"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        have.join(", ")
                    ),
                });
            }
            tools.retain(|t| allowed.iter().any(|a| t.name == a.as_str()));
        }
        let server = McpServer {
            config,
            service: tokio::sync::Mutex::new(Some(service)),
            peer,
            tools,
            stderr,
            #[cfg(unix)]
            pgid: Mutex::new(guard.take()),
        };
        #[cfg(not(unix))]
        drop(guard);
        Ok(server)
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Its configuration.
    pub fn config(&self) -> &McpServerConfig {
        &self.config
    }

    /// The child's process id (it also leads its own process group), while it runs; `None`
    /// for an HTTP server or after [`shutdown`](Self::shutdown).
    pub fn process_id(&self) -> Option<u32> {
        #[cfg(unix)]
        {
            self.pgid
                .lock()
                .ok()
                .and_then(|p| *p)
                .and_then(|p| u32::try_from(p).ok())
        }
        #[cfg(not(unix))]
        {
            None
        }
    }

    /// The tools it offers (after the allow-list), as the server describes them.
    pub fn tools(&self) -> &[RemoteTool] {
        &self.tools
    }

    /// Calls `tool` (its name on the server) with `arguments`, within the server's call
    /// timeout ([`McpServerConfig::timeout`]).
    ///
    /// # Errors
    /// [`McpError::Timeout`] when the server does not answer in time, [`McpError::Stopped`]
    /// when it has stopped, [`McpError::Call`] when it answers with a protocol error. A result the server marks as an error is returned as
    /// `Ok` with `is_error` set; [`McpTool`](crate::McpTool) turns it into a tool error.
    pub async fn call(
        &self,
        tool: &str,
        arguments: serde_json::Map<String, serde_json::Value>,
    ) -> Result<CallToolResult, McpError> {
        let err = |message: String| McpError::Call {
            server: self.config.name.clone(),
            tool: tool.to_owned(),
            message,
        };
        let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
        let timeout = self.config.timeout;
        match tokio::time::timeout(timeout, self.peer.call_tool(params)).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(ServiceError::McpError(e))) => Err(err(format!(
                "the server returned an error: {} (code {})",
                e.message, e.code.0
            ))),
            Ok(Err(ServiceError::TransportClosed | ServiceError::TransportSend(_))) => {
                Err(McpError::Stopped {
                    server: self.config.name.clone(),
                    tool: tool.to_owned(),
                    detail: format!(
                        " (it exited or closed the connection); check `{}`{}",
                        self.config.describe(),
                        self.stderr.suffix()
                    ),
                })
            }
            Ok(Err(e)) => Err(err(e.to_string())),
            Err(_) => Err(McpError::Timeout {
                server: self.config.name.clone(),
                tool: tool.to_owned(),
                secs: timeout.as_secs(),
            }),
        }
    }

    /// Ends the session: closes the child's stdin and waits for it to exit, then sends
    /// SIGTERM and finally SIGKILL to its process group; closes the HTTP session. Safe to
    /// call more than once.
    pub async fn shutdown(&self) {
        let service = self.service.lock().await.take();
        if let Some(mut service) = service {
            // rmcp closes the transport: stdin, wait, SIGTERM, kill (the group).
            let grace = self.config.timeout.min(Duration::from_secs(10));
            let _ = service.close_with_timeout(grace).await;
        }
        #[cfg(unix)]
        {
            let pgid = self.pgid.lock().ok().and_then(|mut p| p.take());
            if let Some(pgid) = pgid {
                // Anything the server started and left behind goes too.
                kill_group(pgid);
            }
        }
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pgid) = self.pgid.get_mut().ok().and_then(Option::take) {
            kill_group(pgid);
        }
    }
}

/// A timeout for messages: `60s`, `1.5s`, `500ms`.
fn secs(timeout: Duration) -> String {
    if timeout.subsec_nanos() == 0 {
        format!("{}s", timeout.as_secs())
    } else {
        format!("{timeout:?}")
    }
}

/// Kills a child's process group if the connection fails before the server is built.
struct PgidGuard(#[cfg(unix)] Option<i32>);

impl PgidGuard {
    #[cfg(unix)]
    fn take(mut self) -> Option<i32> {
        self.0.take()
    }
}

impl Drop for PgidGuard {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pgid) = self.0.take() {
            kill_group(pgid);
        }
    }
}

#[cfg(unix)]
fn kill_group(pgid: i32) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    if pgid > 1 {
        // ESRCH (already gone) is the usual case after a clean shutdown.
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// reqwest 0.13 here is built without a crypto provider: use ring, the one the rest of the
/// tree uses, unless the process already chose one.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
