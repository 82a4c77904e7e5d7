//! `plan tools`, and the tools of `plan run` and `plan exec`: built-ins chosen with
//! `--tools`, MCP servers from `--mcp` and `[[mcp]]` tables, agent profiles from
//! `--agents`, all assembled by plan-mcp's `Toolbox`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use plan_mcp::{McpServerConfig, Toolbox, ToolboxConfig, ToolboxError};
use plan_strategies::{AgentBuilder, AgentCatalogue};
use plan_tools::search::SearchBackend;

use crate::cli::{ToolArgs, ToolsArgs};
use crate::config::{Overrides, Settings};
use crate::exit::Usage;

/// `plan tools`.
pub async fn tools(args: ToolsArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_process(&Overrides::default())?;
    let mut config = ToolboxConfig::new(working_dir()?)
        .with_sandbox(Arc::new(settings.sandbox.choice().lazy()))
        .with_mcp(servers(&settings, &args.mcp)?);
    if let Some(path) = &args.agents {
        config = config.with_agents(load_agents(path)?);
    }
    let toolbox = Toolbox::open(config).await.map_err(toolbox_error)?;
    let listing = toolbox.listing().to_vec();
    toolbox.shutdown().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&listing)?);
        return Ok(ExitCode::SUCCESS);
    }
    let width = listing.iter().map(|t| t.name.len()).max().unwrap_or(0);
    let source_width = listing
        .iter()
        .map(|t| t.source.to_string().len())
        .max()
        .unwrap_or(0);
    for tool in &listing {
        let first_line = tool.description.lines().next().unwrap_or("").trim();
        println!(
            "{:width$}  {:source_width$}  {first_line}",
            tool.name,
            tool.source.to_string()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What a run's tool flags set up: the toolbox (its MCP servers started) and the agent
/// profiles. Shut it down when the run is over.
pub struct RunTools {
    toolbox: Toolbox,
    agents: Option<AgentCatalogue>,
}

impl RunTools {
    /// The tools and agents for a run, or `None` when no tool flag and no `[[mcp]]`
    /// table asks for any (the run then makes one model call per step, as before).
    pub async fn open(
        settings: &Settings,
        args: &ToolArgs,
        search: Option<Arc<dyn SearchBackend>>,
    ) -> anyhow::Result<Option<RunTools>> {
        if !args.any() && settings.mcp.is_empty() {
            return Ok(None);
        }
        let mut config = ToolboxConfig::new(working_dir()?)
            .with_builtins(args.tools.iter().map(|t| t.trim().to_owned()))
            .with_sandbox(Arc::new(settings.sandbox.choice().lazy()))
            .with_mcp(servers(settings, &args.mcp)?);
        if let Some(search) = search {
            config = config.with_search(search);
        }
        let agents = args.agents.as_deref().map(load_agents).transpose()?;
        if let Some(agents) = &agents {
            config = config.with_agents(agents.clone());
        }
        let toolbox = Toolbox::open(config).await.map_err(toolbox_error)?;
        Ok(Some(RunTools { toolbox, agents }))
    }

    /// Gives the tools (and agent profiles, whose models the runtime's resolver makes
    /// with the agent's layers) to the agent.
    pub fn wire(&self, mut builder: AgentBuilder) -> AgentBuilder {
        builder = builder.tools(self.toolbox.tools().clone());
        if let Some(agents) = &self.agents {
            builder = builder.agent_profiles(agents.clone());
        }
        builder
    }

    /// Ends the MCP servers.
    pub async fn shutdown(self) {
        self.toolbox.shutdown().await;
    }
}

fn working_dir() -> anyhow::Result<std::path::PathBuf> {
    std::env::current_dir().map_err(|e| anyhow::anyhow!("cannot read the working directory: {e}"))
}

/// The `[[mcp]]` servers of plan.toml, then those of `--mcp`.
fn servers(settings: &Settings, specs: &[String]) -> anyhow::Result<Vec<McpServerConfig>> {
    let mut servers = settings.mcp.clone();
    for spec in specs {
        servers.push(McpServerConfig::parse(spec).map_err(|e| Usage::new(format!("--mcp: {e}")))?);
    }
    Ok(servers)
}

fn load_agents(path: &Path) -> anyhow::Result<AgentCatalogue> {
    AgentCatalogue::load(path).map_err(|e| Usage::new(format!("--agents: {e}")).into())
}

/// Toolbox problems are the user's setup: usage errors, with the flag to change.
fn toolbox_error(e: ToolboxError) -> anyhow::Error {
    let hint = match &e {
        ToolboxError::UnknownBuiltin { .. } => "\n  hint: fix --tools",
        ToolboxError::NoSearchBackend => {
            "\n  hint: pass --search brave (with BRAVE_API_KEY) or --search local:DIR"
        }
        ToolboxError::Mcp(_) => "\n  hint: check the --mcp spec or the [[mcp]] table in plan.toml",
        ToolboxError::Agents(_) => {
            "\n  hint: fix the profiles of --agents, or add the tool with --tools or --mcp"
        }
        _ => "",
    };
    Usage::new(format!("{e}{hint}")).into()
}
