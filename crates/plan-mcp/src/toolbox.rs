//! [`Toolbox`]: every tool a run can use — the built-ins, the tools of MCP servers and the
//! tools agent profiles name — assembled once for a run (or for `plan tools`), listed
//! with where each comes from, and shut down after.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use plan_sandbox::Sandbox;
use plan_strategies::{AgentCatalogue, AgentError};
use plan_tools::builtin::{FsRoot, ListFilesTool, ReadFileTool, RunCodeTool, SearchDocsTool};
use plan_tools::search::{SearchBackend, SearchError, SearchHit, SearchQuery};
use plan_tools::{DynTool, ToolSet};
use serde::Serialize;

use crate::{McpError, McpServerConfig, McpTools};

/// The built-in tools, by name.
pub const BUILTIN_TOOLS: [&str; 4] = ["read_file", "list_files", "search_docs", "run_code"];

/// Where a tool comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ToolSource {
    /// A built-in tool.
    Builtin,
    /// A tool of this MCP server.
    Mcp(String),
    /// A tool this agent profile uses.
    Agent(String),
}

impl std::fmt::Display for ToolSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ToolSource::Builtin => f.write_str("builtin"),
            ToolSource::Mcp(server) => write!(f, "mcp:{server}"),
            ToolSource::Agent(profile) => write!(f, "agent:{profile}"),
        }
    }
}

impl Serialize for ToolSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One row of a tool listing (`plan tools --json` prints these).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ToolInfo {
    /// The name a model calls it by.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Where it comes from.
    pub source: ToolSource,
}

/// What can go wrong assembling a run's tools.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ToolboxError {
    /// A built-in tool name that does not exist.
    #[error("unknown built-in tool `{name}`; the built-in tools are: {}", BUILTIN_TOOLS.join(", "))]
    UnknownBuiltin {
        /// The name given.
        name: String,
    },
    /// `search_docs` was asked for without a search backend.
    #[error("the search_docs tool needs a search backend: choose one (brave, or a local folder)")]
    NoSearchBackend,
    /// The file tools' root folder cannot be used.
    #[error("the file tools cannot use {path}: {message}")]
    Root {
        /// The folder.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// An MCP server failed.
    #[error(transparent)]
    Mcp(#[from] McpError),
    /// An agent profile names a tool that is not available.
    #[error(transparent)]
    Agents(#[from] AgentError),
}

/// What a [`Toolbox`] is made of.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ToolboxConfig {
    /// The built-in tools every step may call (names from [`BUILTIN_TOOLS`]).
    pub builtins: Vec<String>,
    /// The folder `read_file` and `list_files` are confined to.
    pub root: PathBuf,
    /// Where `run_code` runs programs; without one `run_code` is not available.
    pub sandbox: Option<Arc<dyn Sandbox>>,
    /// What `search_docs` searches; without one `search_docs` is not available.
    pub search: Option<Arc<dyn SearchBackend>>,
    /// MCP servers; every tool of theirs (after each allow-list) is available.
    pub mcp: Vec<McpServerConfig>,
    /// Agent profiles; the tools they name must be available, and the built-ins among
    /// them are added to the run's tools.
    pub agents: Option<AgentCatalogue>,
}

impl std::fmt::Debug for ToolboxConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolboxConfig")
            .field("builtins", &self.builtins)
            .field("root", &self.root)
            .field("mcp", &self.mcp)
            .finish_non_exhaustive()
    }
}

impl ToolboxConfig {
    /// Built-ins `builtins`, file tools confined to `root`, nothing else.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            ..Self::default()
        }
    }

    /// Sets the built-in tools every step may call.
    pub fn with_builtins<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.builtins = names.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the sandbox of `run_code`.
    pub fn with_sandbox(mut self, sandbox: Arc<dyn Sandbox>) -> Self {
        self.sandbox = Some(sandbox);
        self
    }

    /// Sets the backend of `search_docs`.
    pub fn with_search(mut self, search: Arc<dyn SearchBackend>) -> Self {
        self.search = Some(search);
        self
    }

    /// Adds MCP servers.
    pub fn with_mcp(mut self, servers: impl IntoIterator<Item = McpServerConfig>) -> Self {
        self.mcp.extend(servers);
        self
    }

    /// Sets the agent profiles.
    pub fn with_agents(mut self, agents: AgentCatalogue) -> Self {
        self.agents = Some(agents);
        self
    }
}

/// A search backend for listings: `search_docs` is described, and says how to get a
/// backend if it is ever called.
struct NoBackend;

#[async_trait]
impl SearchBackend for NoBackend {
    fn name(&self) -> &str {
        "none"
    }
    async fn search(&self, _: &SearchQuery) -> Result<Vec<SearchHit>, SearchError> {
        Err(SearchError::Config(
            ToolboxError::NoSearchBackend.to_string(),
        ))
    }
}

/// The tools of a run: the chosen built-ins, those agent profiles name, and every MCP
/// tool; plus the listing of everything that could be used.
///
/// ```no_run
/// # async fn demo() -> Result<(), plan_mcp::ToolboxError> {
/// use plan_mcp::{McpServerConfig, Toolbox, ToolboxConfig};
///
/// let config = ToolboxConfig::new(".")
///     .with_builtins(["read_file"])
///     .with_mcp([McpServerConfig::parse("npx -y @modelcontextprotocol/server-everything@2026.8.31")?]);
/// let toolbox = Toolbox::open(config).await?;
/// for tool in toolbox.listing() {
///     println!("{} ({})", tool.name, tool.source);
/// }
/// // Give toolbox.tools() to AgentBuilder::tools, run, then:
/// toolbox.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Toolbox {
    tools: ToolSet,
    listing: Vec<ToolInfo>,
    mcp: McpTools,
}

impl Toolbox {
    /// Builds the built-ins, connects to the MCP servers and checks the agent profiles'
    /// tools.
    ///
    /// # Errors
    /// [`ToolboxError::UnknownBuiltin`], [`ToolboxError::NoSearchBackend`] or
    /// [`ToolboxError::Root`] for the built-ins; [`ToolboxError::Mcp`] when a server fails
    /// to start; [`ToolboxError::Agents`] when a profile names a missing tool (the
    /// servers are shut down first).
    pub async fn open(config: ToolboxConfig) -> Result<Self, ToolboxError> {
        for name in &config.builtins {
            if !BUILTIN_TOOLS.contains(&name.as_str()) {
                return Err(ToolboxError::UnknownBuiltin { name: name.clone() });
            }
        }
        if config.builtins.iter().any(|b| b == "search_docs") && config.search.is_none() {
            return Err(ToolboxError::NoSearchBackend);
        }
        let all = builtins(&config)?;
        let mcp = McpTools::connect(config.mcp.clone(), &BUILTIN_TOOLS).await?;
        let mut everything = all.clone();
        mcp.add_to(&mut everything);

        let mut listing: Vec<ToolInfo> = all
            .specs()
            .into_iter()
            .map(|s| ToolInfo {
                name: s.name,
                description: s.description,
                source: ToolSource::Builtin,
            })
            .collect();
        listing.extend(mcp.tools().iter().map(|t| ToolInfo {
            name: t.name().to_owned(),
            description: t.description(),
            source: ToolSource::Mcp(t.server().to_owned()),
        }));

        let mut wanted: Vec<String> = config.builtins.clone();
        if let Some(agents) = &config.agents {
            if let Err(e) = agents.check_tools(&everything.names()) {
                mcp.shutdown().await;
                return Err(e.into());
            }
            let specs = everything.specs();
            for profile in agents.profiles() {
                for tool in &profile.tools {
                    if BUILTIN_TOOLS.contains(&tool.as_str()) && !wanted.contains(tool) {
                        wanted.push(tool.clone());
                    }
                    let description = specs
                        .iter()
                        .find(|s| &s.name == tool)
                        .map(|s| s.description.clone())
                        .unwrap_or_default();
                    listing.push(ToolInfo {
                        name: tool.clone(),
                        description,
                        source: ToolSource::Agent(profile.name.clone()),
                    });
                }
            }
        }
        if wanted.iter().any(|b| b == "search_docs") && config.search.is_none() {
            mcp.shutdown().await;
            return Err(ToolboxError::NoSearchBackend);
        }
        let mut tools = all
            .subset(&wanted)
            .map_err(|_| ToolboxError::UnknownBuiltin {
                name: wanted.join(","),
            })?;
        mcp.add_to(&mut tools);
        Ok(Self {
            tools,
            listing,
            mcp,
        })
    }

    /// The tools steps may call: the chosen built-ins, the built-ins agent profiles name,
    /// and every MCP tool. Give it to `AgentBuilder::tools`.
    pub fn tools(&self) -> &ToolSet {
        &self.tools
    }

    /// Every tool a run could use, built-ins first, then MCP tools by server, then the
    /// tools of each agent profile.
    pub fn listing(&self) -> &[ToolInfo] {
        &self.listing
    }

    /// The connected MCP servers.
    pub fn mcp(&self) -> &McpTools {
        &self.mcp
    }

    /// Ends every MCP server (see [`McpTools::shutdown`]).
    pub async fn shutdown(&self) {
        self.mcp.shutdown().await;
    }
}

/// Every built-in tool, ready to call (`search_docs` and `run_code` answer with an error
/// naming what is missing when they have no backend or sandbox).
fn builtins(config: &ToolboxConfig) -> Result<ToolSet, ToolboxError> {
    let root = FsRoot::new(&config.root).map_err(|e| ToolboxError::Root {
        path: config.root.display().to_string(),
        message: e.to_string(),
    })?;
    let search: Arc<dyn SearchBackend> =
        config.search.clone().unwrap_or_else(|| Arc::new(NoBackend));
    let sandbox: Arc<dyn Sandbox> = config
        .sandbox
        .clone()
        .unwrap_or_else(|| Arc::new(plan_sandbox::SandboxChoice::None.lazy()));
    let tools: [Arc<dyn DynTool>; 4] = [
        Arc::new(ReadFileTool::new(root.clone())),
        Arc::new(ListFilesTool::new(root)),
        Arc::new(SearchDocsTool::new(search)),
        Arc::new(RunCodeTool::new(sandbox)),
    ];
    let mut set = ToolSet::new();
    for tool in tools {
        set.insert(tool);
    }
    Ok(set)
}
