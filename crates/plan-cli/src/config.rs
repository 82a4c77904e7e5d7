//! Configuration: `plan.toml` files, the environment and flags, merged into [`Settings`].
//!
//! Precedence, highest first: flags; the environment (`PLAN_MODEL`, `PLAN_STORE`);
//! `plan.toml` in the working directory; `plan/plan.toml` in the user config directory;
//! built-in defaults. API keys are never read from a file, only from the environment (by
//! the provider construction in plan-llm).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use plan_llm::Price;
use plan_strategies::RunSpec;
use serde::Deserialize;

use crate::cli::{ExecutionArgs, ModelArgs, PlanningArgs, SandboxArg, Strategy};
use crate::exit::Usage;

/// The name of the configuration file.
pub const FILE_NAME: &str = "plan.toml";

/// The keys a `plan.toml` may set; all optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Model spec (`openai:gpt-4o-mini`, `local`).
    pub model: Option<String>,
    /// Provider endpoint.
    pub base_url: Option<String>,
    /// Default strategy.
    pub strategy: Option<Strategy>,
    /// Steps run at the same time at most.
    pub concurrency: Option<usize>,
    /// Where code steps run.
    pub sandbox: Option<SandboxArg>,
    /// Run store: a SQLite path (relative paths are relative to the file's directory) or a
    /// `postgres://` URL.
    pub store: Option<PathBuf>,
    /// Replans the adaptive strategy may make.
    pub max_replans: Option<u32>,
    /// Deepest level of the hierarchical strategy.
    pub max_depth: Option<u32>,
    /// Most steps a plan may have.
    pub max_steps: Option<usize>,
    /// Token budget of a run.
    pub budget_tokens: Option<u64>,
    /// Spending limit of a run, in US dollars.
    pub budget_usd: Option<f64>,
    /// How long `plan serve` and `plan worker` keep ended runs after their last activity
    /// (`30d`, `12h`, `90m`), pruning the store at start and then hourly; unset, runs are
    /// kept until `plan runs prune` deletes them.
    pub retention: Option<String>,
    /// Prices per model spec (`[prices."openai:gpt-4o-mini"]` with `input_per_mtok` and
    /// `output_per_mtok`), overriding the built-in list prices.
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
    /// MCP servers (`[[mcp]]` tables) whose tools runs may use.
    #[serde(default)]
    pub mcp: Vec<McpTable>,
}

/// One `[[mcp]]` table: an MCP server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpTable {
    /// The server's name (namespaces its tools on clashes); default: from the command or
    /// the URL's host.
    pub name: Option<String>,
    /// The command line that runs it (a string, or a list of words).
    pub command: Option<CommandLine>,
    /// Its streamable-HTTP URL.
    pub url: Option<String>,
    /// Environment variables set in its process (a stdio server inherits only the
    /// system's basics, never API keys).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of variables of plan's environment its process also gets.
    #[serde(default)]
    pub env_pass: Vec<String>,
    /// Seconds each tool call may take (default 60). Signed so that a negative value gets
    /// the same clear error as 0.
    pub timeout_secs: Option<i64>,
    /// Seconds starting the server may take: spawning it (or reaching its URL), the MCP
    /// handshake and the first listing of its tools (default 60).
    pub start_timeout_secs: Option<i64>,
    /// Only these of its tools.
    pub tools: Option<Vec<String>>,
}

/// A command line in plan.toml: one string, or its words.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum CommandLine {
    /// `"npx -y @modelcontextprotocol/server-everything"`.
    Line(String),
    /// `["npx", "-y", "@modelcontextprotocol/server-everything"]`.
    Words(Vec<String>),
}

impl McpTable {
    /// The server this table describes.
    ///
    /// # Errors
    /// A message saying what is wrong (no command or url, both, an empty command, a zero or
    /// negative timeout).
    pub fn to_config(&self) -> Result<plan_mcp::McpServerConfig, String> {
        use plan_mcp::McpServerConfig;
        let mut config = match (&self.command, &self.url) {
            (Some(_), Some(_)) => {
                return Err("give either `command` or `url`, not both".to_owned());
            }
            (None, None) => {
                return Err("give `command` (a command line) or `url` (http(s)://...)".to_owned());
            }
            (None, Some(url)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!(
                        "`url` must start with http:// or https://, not `{url}`"
                    ));
                }
                McpServerConfig::http(url.clone())
            }
            (Some(CommandLine::Line(line)), None) => {
                McpServerConfig::parse(line).map_err(|e| e.to_string())?
            }
            (Some(CommandLine::Words(words)), None) => match words.split_first() {
                Some((program, args)) if !program.trim().is_empty() => {
                    McpServerConfig::command(program.clone(), args.to_vec())
                }
                _ => return Err("`command` is empty".to_owned()),
            },
        };
        if let Some(name) = &self.name {
            config = config.with_name(name);
        }
        for (k, v) in &self.env {
            config = config.with_env(k.clone(), v.clone());
        }
        for name in &self.env_pass {
            config = config.with_env_pass(name.clone());
        }
        if let Some(timeout) = seconds("timeout_secs", self.timeout_secs)? {
            config = config.with_timeout(timeout);
        }
        if let Some(timeout) = seconds("start_timeout_secs", self.start_timeout_secs)? {
            config = config.with_start_timeout(timeout);
        }
        if let Some(tools) = &self.tools {
            config = config.with_tools(tools.clone());
        }
        Ok(config)
    }
}

/// The duration of a `[[mcp]]` timeout setting `key`; an error unless it is at least 1.
fn seconds(key: &str, value: Option<i64>) -> Result<Option<std::time::Duration>, String> {
    match value {
        None => Ok(None),
        Some(secs) => match u64::try_from(secs) {
            Ok(secs) if secs >= 1 => Ok(Some(std::time::Duration::from_secs(secs))),
            _ => Err(format!("`{key}` must be at least 1 (seconds), not {secs}")),
        },
    }
}

impl FileConfig {
    /// Parses one file's text; `path` is only used in error messages and to resolve
    /// relative paths.
    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Self> {
        let mut config: FileConfig = toml::from_str(text).map_err(|e| {
            let message = e.message().to_owned();
            let hint = if message.contains("api_key") || message.contains("key`") {
                "\n  API keys are not read from plan.toml: set OPENAI_API_KEY or ANTHROPIC_API_KEY in the environment"
            } else {
                ""
            };
            Usage::new(format!(
                "invalid configuration file {}: {}{hint}\n  allowed keys: model, base_url, strategy, concurrency, sandbox, store, max_replans, max_depth, max_steps, budget_tokens, budget_usd, retention, [prices.\"provider:model\"] (input_per_mtok, output_per_mtok), [[mcp]] (name, command, url, env, env_pass, timeout_secs, start_timeout_secs, tools)",
                path.display(),
                message.trim_end()
            ))
        })?;
        if let (Some(store), Some(dir)) = (&config.store, path.parent())
            && store.is_relative()
            && !store.to_str().is_some_and(plan_postgres::is_postgres_url)
        {
            config.store = Some(dir.join(store));
        }
        for (i, table) in config.mcp.iter().enumerate() {
            if let Err(message) = table.to_config() {
                return Err(Usage::new(format!(
                    "invalid configuration file {}: [[mcp]] table {}{}: {message}",
                    path.display(),
                    i + 1,
                    table
                        .name
                        .as_ref()
                        .map(|n| format!(" (`{n}`)"))
                        .unwrap_or_default()
                ))
                .into());
            }
        }
        if let Some(Err(why)) = config.retention.as_deref().map(plan_exec::store::parse_age) {
            return Err(Usage::new(format!(
                "invalid configuration file {}: retention: {why}",
                path.display()
            ))
            .into());
        }
        if let Err(e) = config.check_values() {
            return Err(Usage::new(format!(
                "invalid configuration file {}: {e}",
                path.display()
            ))
            .into());
        }
        Ok(config)
    }

    /// Checks the file's values as a run's spec would (a zero concurrency or step cap, a
    /// negative budget), naming the first that is out of range.
    fn check_values(&self) -> Result<(), plan_strategies::SpecError> {
        let mut spec = RunSpec::default();
        let l = &mut spec.limits;
        if let Some(n) = self.concurrency {
            l.concurrency = n;
        }
        if let Some(n) = self.max_depth {
            l.max_depth = n;
        }
        l.max_steps = self.max_steps;
        spec.budget.tokens = self.budget_tokens;
        spec.budget.usd = self.budget_usd;
        spec.validate()
    }

    /// Loads one file, `None` when it does not exist.
    pub fn load(path: &Path) -> anyhow::Result<Option<Self>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Usage::new(format!(
                "cannot read configuration file {}: {e}",
                path.display()
            ))
            .into()),
        }
    }

    /// Fills every key unset here from `lower`.
    pub fn or(self, lower: FileConfig) -> FileConfig {
        FileConfig {
            model: self.model.or(lower.model),
            base_url: self.base_url.or(lower.base_url),
            strategy: self.strategy.or(lower.strategy),
            concurrency: self.concurrency.or(lower.concurrency),
            sandbox: self.sandbox.or(lower.sandbox),
            store: self.store.or(lower.store),
            max_replans: self.max_replans.or(lower.max_replans),
            max_depth: self.max_depth.or(lower.max_depth),
            max_steps: self.max_steps.or(lower.max_steps),
            budget_tokens: self.budget_tokens.or(lower.budget_tokens),
            budget_usd: self.budget_usd.or(lower.budget_usd),
            retention: self.retention.or(lower.retention),
            prices: {
                let mut prices = lower.prices;
                prices.extend(self.prices);
                prices
            },
            mcp: merge_mcp(self.mcp, lower.mcp),
        }
    }
}

/// The servers of both files: this one's, then the lower one's not named here.
fn merge_mcp(mut upper: Vec<McpTable>, lower: Vec<McpTable>) -> Vec<McpTable> {
    let name = |t: &McpTable| t.to_config().map(|c| c.name).ok();
    let names: Vec<Option<String>> = upper.iter().map(name).collect();
    upper.extend(lower.into_iter().filter(|t| !names.contains(&name(t))));
    upper
}

/// Where configuration comes from; [`Sources::from_process`] reads the real ones.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The working directory's `plan.toml`.
    pub local_file: Option<PathBuf>,
    /// The user config directory's `plan/plan.toml`.
    pub user_file: Option<PathBuf>,
    /// `$PLAN_MODEL`.
    pub env_model: Option<String>,
    /// `$PLAN_STORE`.
    pub env_store: Option<PathBuf>,
    /// The user data directory (for the default store).
    pub data_dir: Option<PathBuf>,
}

impl Sources {
    /// The sources of this process: its working directory, environment and user dirs.
    pub fn from_process() -> Self {
        let non_empty = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Sources {
            local_file: std::env::current_dir().ok().map(|d| d.join(FILE_NAME)),
            user_file: dirs::config_dir().map(|d| d.join("plan").join(FILE_NAME)),
            env_model: non_empty("PLAN_MODEL"),
            env_store: non_empty("PLAN_STORE").map(PathBuf::from),
            data_dir: dirs::data_dir(),
        }
    }

    /// The merged file configuration: the local file over the user file.
    pub fn file_config(&self) -> anyhow::Result<FileConfig> {
        let mut merged = FileConfig::default();
        for path in [&self.local_file, &self.user_file].into_iter().flatten() {
            if let Some(config) = FileConfig::load(path)? {
                merged = merged.or(config);
            }
        }
        Ok(merged)
    }
}

/// The settings a command runs with, after merging every source.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Model spec.
    pub model: String,
    /// Provider endpoint override.
    pub base_url: Option<String>,
    /// Strategy.
    pub strategy: Strategy,
    /// Concurrency bound.
    pub concurrency: usize,
    /// Sandbox choice.
    pub sandbox: SandboxArg,
    /// Run store.
    pub store: StoreSpec,
    /// Replans allowed.
    pub max_replans: u32,
    /// Hierarchical depth.
    pub max_depth: u32,
    /// Step cap, when set.
    pub max_steps: Option<usize>,
    /// Token budget, when set.
    pub budget_tokens: Option<u64>,
    /// Spending limit in dollars, when set.
    pub budget_usd: Option<f64>,
    /// How long `plan serve` and `plan worker` keep ended runs (`retention`), when set.
    pub retention: Option<std::time::Duration>,
    /// What the model's tokens cost: `[prices]` in plan.toml, else the list price of a
    /// well-known hosted model on its own API, else unknown.
    pub price: Option<Price>,
    /// MCP servers from the configuration files.
    pub mcp: Vec<plan_mcp::McpServerConfig>,
    /// Prices per model spec from the configuration files.
    pub prices: BTreeMap<String, Price>,
}

/// Where runs are stored: a SQLite file or a PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// A SQLite file (the default).
    Sqlite(PathBuf),
    /// A `postgres://` or `postgresql://` URL (it may hold a password: show it only
    /// through `Display`, which hides it).
    Postgres(String),
}

impl StoreSpec {
    /// A `--store` value or `PLAN_STORE`: a URL when it starts with `postgres://` or
    /// `postgresql://`, else a path.
    pub fn from_path(path: PathBuf) -> StoreSpec {
        match path.to_str() {
            Some(text) if plan_postgres::is_postgres_url(text) => {
                StoreSpec::Postgres(text.trim().to_owned())
            }
            _ => StoreSpec::Sqlite(path),
        }
    }
}

/// The path, or the URL without its password.
impl std::fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Sqlite(path) => write!(f, "{}", path.display()),
            StoreSpec::Postgres(url) => f.write_str(&plan_postgres::redact(url)),
        }
    }
}

/// Built-in defaults.
pub const DEFAULT_MODEL: &str = "local";
/// Built-in default concurrency.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Built-in default replans.
pub const DEFAULT_MAX_REPLANS: u32 = 3;
/// Built-in default depth.
pub const DEFAULT_MAX_DEPTH: u32 = 3;

/// Flags that bear on settings, collected from whichever command was given.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--model`, `--base-url`, `--budget-tokens`.
    pub model: ModelArgs,
    /// `--strategy`, `--max-depth`, `--max-steps`.
    pub planning: PlanningArgs,
    /// `--concurrency`, `--sandbox`, `--max-replans`, `--store`.
    pub execution: ExecutionArgs,
}

impl Overrides {
    /// Just a store flag.
    pub fn store(store: Option<PathBuf>) -> Self {
        let mut o = Overrides::default();
        o.execution.store = store;
        o
    }
}

impl Settings {
    /// Merges flags over the environment over files over defaults.
    pub fn resolve(sources: &Sources, flags: &Overrides) -> anyhow::Result<Settings> {
        let file = sources.file_config()?;
        let store = flags
            .execution
            .store
            .clone()
            .or_else(|| sources.env_store.clone())
            .or(file.store)
            .or_else(|| {
                sources
                    .data_dir
                    .as_ref()
                    .map(|d| d.join("plan").join("runs.sqlite"))
            })
            .map(StoreSpec::from_path)
            .ok_or_else(|| {
                Usage::new(
                    "no place for the run store: pass --store PATH (or a postgres:// URL) or set PLAN_STORE".to_owned(),
                )
            })?;
        let concurrency = flags
            .execution
            .concurrency
            .or(file.concurrency)
            .unwrap_or(DEFAULT_CONCURRENCY);
        let model = flags
            .model
            .model
            .clone()
            .or_else(|| sources.env_model.clone())
            .or(file.model)
            .unwrap_or_else(|| DEFAULT_MODEL.to_owned());
        let base_url = flags.model.base_url.clone().or(file.base_url);
        let price = plan_strategies::model_price(&model, base_url.as_deref(), &file.prices);
        let settings = Settings {
            model,
            base_url,
            strategy: flags
                .planning
                .strategy
                .or(file.strategy)
                .unwrap_or(Strategy::Auto),
            concurrency,
            sandbox: flags
                .execution
                .sandbox
                .or(file.sandbox)
                .unwrap_or(SandboxArg::Auto),
            store,
            max_replans: flags
                .execution
                .max_replans
                .or(file.max_replans)
                .unwrap_or(DEFAULT_MAX_REPLANS),
            max_depth: flags
                .planning
                .max_depth
                .or(file.max_depth)
                .unwrap_or(DEFAULT_MAX_DEPTH),
            max_steps: flags.planning.max_steps.or(file.max_steps),
            budget_tokens: flags.model.budget_tokens.or(file.budget_tokens),
            budget_usd: flags.model.budget_usd.or(file.budget_usd),
            // Checked when the file was read.
            retention: file
                .retention
                .as_deref()
                .and_then(|r| plan_exec::store::parse_age(r).ok()),
            price,
            mcp: file.mcp.iter().filter_map(|t| t.to_config().ok()).collect(),
            prices: file.prices,
        };
        // Nonsense from any source (flags, the environment, plan.toml) stops here.
        settings
            .spec()
            .validate()
            .map_err(|e| Usage::new(format!("invalid setting {e}")))?;
        Ok(settings)
    }

    /// The spec of a run with these settings (its needs, approval and overrides are
    /// the command's to add).
    pub fn spec(&self) -> RunSpec {
        let mut spec = RunSpec::new(self.model.clone(), self.strategy.name());
        spec.base_url.clone_from(&self.base_url);
        spec.sandbox = self.sandbox.choice();
        spec.budget.tokens = self.budget_tokens;
        spec.budget.usd = self.budget_usd;
        let l = &mut spec.limits;
        l.concurrency = self.concurrency;
        l.max_replans = self.max_replans;
        l.max_depth = self.max_depth;
        l.max_steps = self.max_steps;
        spec
    }

    /// Settings from this process's sources.
    pub fn from_process(flags: &Overrides) -> anyhow::Result<Settings> {
        Self::resolve(&Sources::from_process(), flags)
    }
}

/// Reads a path given on the command line, with `-` for standard input.
pub fn read_input(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read standard input")?;
        return Ok(text);
    }
    std::fs::read_to_string(path).map_err(|e| {
        Usage::new(format!(
            "cannot read {}: {e}: check the path",
            path.display()
        ))
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn precedence_flags_env_local_user_default() {
        let dir = tempfile::tempdir().unwrap();
        let user = write(
            dir.path(),
            "user/plan.toml",
            "model = \"ollama:user\"\nconcurrency = 2\nmax_replans = 5\nstore = \"runs.db\"\n",
        );
        let local = write(
            dir.path(),
            "cwd/plan.toml",
            "model = \"ollama:local\"\nconcurrency = 7\n",
        );
        let mut sources = Sources {
            local_file: Some(local),
            user_file: Some(user),
            env_model: None,
            env_store: None,
            data_dir: Some(dir.path().join("data")),
        };
        let none = Overrides::default();
        let s = Settings::resolve(&sources, &none).unwrap();
        assert_eq!(s.model, "ollama:local");
        assert_eq!(s.concurrency, 7);
        assert_eq!(s.max_replans, 5);
        assert_eq!(s.store, StoreSpec::Sqlite(dir.path().join("user/runs.db")));
        assert_eq!(s.strategy, Strategy::Auto);
        assert_eq!(s.max_depth, DEFAULT_MAX_DEPTH);

        sources.env_model = Some("openai:env".into());
        sources.env_store = Some("/tmp/env.db".into());
        let s = Settings::resolve(&sources, &none).unwrap();
        assert_eq!(s.model, "openai:env");
        assert_eq!(s.store, StoreSpec::Sqlite("/tmp/env.db".into()));

        let mut flags = Overrides::default();
        flags.model.model = Some("anthropic:flag".into());
        flags.execution.concurrency = Some(1);
        flags.execution.store = Some("/tmp/flag.db".into());
        let s = Settings::resolve(&sources, &flags).unwrap();
        assert_eq!(s.model, "anthropic:flag");
        assert_eq!(s.concurrency, 1);
        assert_eq!(s.store, StoreSpec::Sqlite("/tmp/flag.db".into()));
    }

    #[test]
    fn defaults_without_files() {
        let sources = Sources {
            data_dir: Some("/data".into()),
            local_file: Some("/nonexistent/plan.toml".into()),
            ..Sources::default()
        };
        let s = Settings::resolve(&sources, &Overrides::default()).unwrap();
        assert_eq!(s.model, "local");
        assert_eq!(s.concurrency, DEFAULT_CONCURRENCY);
        assert_eq!(s.sandbox, SandboxArg::Auto);
        assert_eq!(s.store, StoreSpec::Sqlite("/data/plan/runs.sqlite".into()));
    }

    #[test]
    fn a_postgres_url_selects_the_postgres_store_from_any_source() {
        let dir = tempfile::tempdir().unwrap();
        let url = "postgres://plan:pw@db.example.com:5432/plan";
        // In a file: not resolved against the file's directory.
        let file = write(dir.path(), "cwd/plan.toml", &format!("store = \"{url}\"\n"));
        let mut sources = Sources {
            local_file: Some(file),
            data_dir: Some(dir.path().join("data")),
            ..Sources::default()
        };
        let s = Settings::resolve(&sources, &Overrides::default()).unwrap();
        assert_eq!(s.store, StoreSpec::Postgres(url.into()));
        assert_eq!(
            s.store.to_string(),
            "postgres://plan:***@db.example.com:5432/plan"
        );
        sources.env_store = Some("postgresql://u@h/db".into());
        let s = Settings::resolve(&sources, &Overrides::default()).unwrap();
        assert_eq!(s.store, StoreSpec::Postgres("postgresql://u@h/db".into()));
        let s = Settings::resolve(&sources, &Overrides::store(Some("runs.db".into()))).unwrap();
        assert_eq!(s.store, StoreSpec::Sqlite("runs.db".into()));
    }

    #[test]
    fn unknown_keys_and_api_keys_are_rejected() {
        let err = FileConfig::parse("modle = \"x\"", Path::new("plan.toml")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("plan.toml"), "{text}");
        assert!(text.contains("modle"), "{text}");
        assert!(text.contains("allowed keys"), "{text}");
        assert!(err.downcast_ref::<Usage>().is_some());

        let err = FileConfig::parse("api_key = \"sk-secret\"", Path::new("plan.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("OPENAI_API_KEY"), "{err}");
        assert!(!err.contains("sk-secret"), "{err}");
    }

    #[test]
    fn mcp_tables_become_servers() {
        let dir = tempfile::tempdir().unwrap();
        let local = write(
            dir.path(),
            "cwd/plan.toml",
            r#"
            [[mcp]]
            name = "fs"
            command = ["npx", "-y", "@modelcontextprotocol/server-filesystem", "/tmp"]
            env = { DEBUG = "1" }
            timeout_secs = 5
            start_timeout_secs = 120
            tools = ["read_text_file"]

            [[mcp]]
            url = "http://127.0.0.1:8931/mcp"
            "#,
        );
        let user = write(
            dir.path(),
            "user/plan.toml",
            "[[mcp]]\nname = \"fs\"\ncommand = \"other\"\n\n[[mcp]]\ncommand = \"uvx mcp-server-fetch\"\n",
        );
        let sources = Sources {
            local_file: Some(local),
            user_file: Some(user),
            data_dir: Some(dir.path().into()),
            ..Sources::default()
        };
        let s = Settings::resolve(&sources, &Overrides::default()).unwrap();
        let names: Vec<&str> = s.mcp.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["fs", "127_0_0_1_8931", "mcp-server-fetch"]);
        let fs = &s.mcp[0];
        assert_eq!(fs.env.get("DEBUG").map(String::as_str), Some("1"));
        assert_eq!(fs.timeout, std::time::Duration::from_secs(5));
        assert_eq!(fs.start_timeout, std::time::Duration::from_secs(120));
        // Unset: the defaults, a generous one for start-up.
        let fetch = &s.mcp[2];
        assert_eq!(fetch.timeout, plan_mcp::DEFAULT_TIMEOUT);
        assert_eq!(fetch.start_timeout, plan_mcp::DEFAULT_START_TIMEOUT);
        assert_eq!(
            fs.tools.as_deref(),
            Some(&["read_text_file".to_owned()][..])
        );
        assert_eq!(
            fs.transport,
            plan_mcp::McpTransport::Command {
                program: "npx".into(),
                args: vec![
                    "-y".into(),
                    "@modelcontextprotocol/server-filesystem".into(),
                    "/tmp".into()
                ]
            }
        );
    }

    #[test]
    fn bad_mcp_tables_say_what_is_wrong() {
        let cases = [
            ("[[mcp]]\nname = \"x\"\n", "give `command`"),
            ("[[mcp]]\ncommand = \"a\"\nurl = \"http://h\"\n", "not both"),
            ("[[mcp]]\nurl = \"ftp://h\"\n", "must start with http"),
            (
                "[[mcp]]\ncommand = \"a\"\ntimeout_secs = 0\n",
                "`timeout_secs` must be at least 1 (seconds), not 0",
            ),
            (
                "[[mcp]]\ncommand = \"a\"\ntimeout_secs = -5\n",
                "`timeout_secs` must be at least 1 (seconds), not -5",
            ),
            (
                "[[mcp]]\ncommand = \"a\"\nstart_timeout_secs = 0\n",
                "`start_timeout_secs` must be at least 1 (seconds), not 0",
            ),
            (
                "[[mcp]]\ncommand = \"a\"\nstart_timeout_secs = -1\n",
                "[[mcp]] table 1: `start_timeout_secs` must be at least 1 (seconds), not -1",
            ),
            (
                "[[mcp]]\ncommand = \"a\"\nstart_timeout_secs = \"60\"\n",
                "invalid type: string \"60\", expected i64",
            ),
            (
                "[[mcp]]\ncommand = \"a\"\nargs = [\"b\"]\n",
                "unknown field `args`",
            ),
        ];
        for (text, expected) in cases {
            let err = FileConfig::parse(text, Path::new("plan.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(FileConfig::parse("strategy = \"sideways\"", Path::new("p")).is_err());
        assert!(FileConfig::parse("concurrency = 0", Path::new("p")).is_err());
        assert!(FileConfig::parse("concurrency = \"four\"", Path::new("p")).is_err());
        for (text, named) in [
            ("max_steps = 0", "max_steps = 0"),
            ("budget_usd = -5", "budget_usd = -5"),
            ("budget_tokens = 0", "budget_tokens = 0"),
            ("max_depth = 0", "max_depth = 0"),
        ] {
            let e = FileConfig::parse(text, Path::new("p"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(named), "{text}: {e}");
        }
    }

    #[test]
    fn retention_is_an_age_and_nonsense_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let local = write(dir.path(), "plan.toml", "retention = \"30d\"\n");
        let sources = Sources {
            local_file: Some(local),
            data_dir: Some(dir.path().join("data")),
            ..Sources::default()
        };
        let settings = Settings::resolve(&sources, &Overrides::default()).unwrap();
        assert_eq!(
            settings.retention,
            Some(std::time::Duration::from_secs(30 * 86_400))
        );
        for bad in ["thirty days", "30", "0d", "-1d"] {
            let e =
                FileConfig::parse(&format!("retention = \"{bad}\""), Path::new("p")).unwrap_err();
            let text = e.to_string();
            assert!(
                e.downcast_ref::<Usage>().is_some(),
                "{bad}: not a usage error"
            );
            assert!(
                text.contains("retention") && text.contains(bad),
                "{bad}: {text}"
            );
        }
        assert!(FileConfig::parse("retention = 30", Path::new("p")).is_err());
    }
}
