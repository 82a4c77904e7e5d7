//! [`McpTools`]: the connected servers of a run, their tools named without clashes, and
//! their shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use plan_tools::{DynTool, ToolSet};

use crate::McpError;
use crate::client::McpServer;
use crate::spec::{McpServerConfig, sanitize};
use crate::tool::McpTool;

/// The MCP servers of a run, connected, and their tools.
///
/// A tool keeps its own (sanitised) name unless another server's tool or a name already
/// taken (a built-in) has it; then every tool of that name is `<server>__<tool>`.
/// [`shutdown`](Self::shutdown) ends every server; call it when the run is over (dropping
/// the set kills the servers' process groups too).
#[derive(Debug, Default, Clone)]
pub struct McpTools {
    servers: Vec<Arc<McpServer>>,
    tools: Vec<McpTool>,
}

impl McpTools {
    /// Connects to every server at once and names their tools, avoiding `reserved` names
    /// (the built-in tools of the run).
    ///
    /// # Errors
    /// The first server that fails to start or list its tools; the servers already
    /// started are shut down.
    pub async fn connect<S: AsRef<str>>(
        configs: Vec<McpServerConfig>,
        reserved: &[S],
    ) -> Result<Self, McpError> {
        let configs = unique_names(configs);
        let results = futures::future::join_all(configs.into_iter().map(McpServer::connect)).await;
        let mut servers = Vec::new();
        let mut first_error = None;
        for result in results {
            match result {
                Ok(server) => servers.push(Arc::new(server)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            for server in &servers {
                server.shutdown().await;
            }
            return Err(e);
        }
        let tools = name_tools(&servers, reserved);
        Ok(Self { servers, tools })
    }

    /// The connected servers.
    pub fn servers(&self) -> &[Arc<McpServer>] {
        &self.servers
    }

    /// Every tool, in server order.
    pub fn tools(&self) -> &[McpTool] {
        &self.tools
    }

    /// Whether there are no servers.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Adds every tool to `set`.
    pub fn add_to(&self, set: &mut ToolSet) {
        for tool in &self.tools {
            set.insert(Arc::new(tool.clone()) as Arc<dyn DynTool>);
        }
    }

    /// Ends every server (see [`McpServer::shutdown`]).
    pub async fn shutdown(&self) {
        futures::future::join_all(self.servers.iter().map(|s| s.shutdown())).await;
    }
}

/// Servers of the same name get `-2`, `-3`, ... so their tools stay apart.
fn unique_names(configs: Vec<McpServerConfig>) -> Vec<McpServerConfig> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    configs
        .into_iter()
        .map(|config| {
            let count = seen.entry(config.name.clone()).or_insert(0);
            *count += 1;
            if *count == 1 {
                config
            } else {
                let name = format!("{}-{count}", config.name);
                config.with_name(name)
            }
        })
        .collect()
}

fn name_tools<S: AsRef<str>>(servers: &[Arc<McpServer>], reserved: &[S]) -> Vec<McpTool> {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for server in servers {
        for tool in server.tools() {
            *count.entry(sanitize(&tool.name)).or_insert(0) += 1;
        }
    }
    let reserved: BTreeSet<&str> = reserved.iter().map(AsRef::as_ref).collect();
    let mut tools = Vec::new();
    for server in servers {
        for remote in server.tools() {
            let plain = sanitize(&remote.name);
            let clash =
                count.get(&plain).copied().unwrap_or(0) > 1 || reserved.contains(plain.as_str());
            let name = if clash {
                format!("{}__{plain}", server.name())
            } else {
                plain
            };
            tools.push(McpTool::new(Arc::clone(server), remote.clone(), name));
        }
    }
    tools
}
