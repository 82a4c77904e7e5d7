//! [`PlanServer`]: plan as an MCP server. Three tools — `plan` (a plan for a goal), `run`
//! (start a run, wait a while for its report) and `show` (a run's report) — served over
//! stdio by [`serve_stdio`]. Runs are recorded in the run store and keep going in the
//! background when the caller stops waiting; progress goes out as MCP progress
//! notifications.
//!
//! The `run` and `plan` tools take the run settings of every door
//! ([`RunSettings`]: their schema is generated from it, and the arguments are checked by
//! the same [`RunSettings::apply`]), with two exceptions:
//! - no tool takes `base_url`: a tool's caller is often a model, and an endpoint it
//!   names would be sent the server's key; the endpoint is the server's;
//! - `plan` runs nothing, so it takes only what shapes or bounds planning: `strategy`,
//!   `model`, `max_steps`, `max_depth`, `reflection_rounds`, `budget_tokens` and
//!   `budget_usd` (not `max_replans`, `concurrency`, `step_timeout_secs` or `approve`).
//!
//! A `run` with `approve` stops for approval as `plan run --approve` does; a person
//! answers it with `plan approve` or `plan reject`, or the HTTP API.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use plan_core::{Event, EventKind, RunId};
use plan_exec::context::CancelToken;
use plan_exec::report::RunReport;
use plan_exec::store::RunStore;
use plan_strategies::{AgentBuilder, AgentFactory, RunSettings, RunSpec, Runs, RunsError};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeResult, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ProgressToken, ServerCapabilities, Tool as ToolDef,
};
use rmcp::service::{Peer, RequestContext, RoleServer};
use rmcp::{ErrorData, ServerHandler, ServiceExt as _};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The longest `wait_secs` a `run` call may ask for.
pub const MAX_WAIT_SECS: u64 = 3600;

/// The `wait_secs` of a `run` call that gives none.
pub const DEFAULT_WAIT_SECS: u64 = 60;

/// plan as an MCP server: `plan`, `run` and `show` over a model and a run store.
///
/// Each call's run is made from the server's default [`RunSpec`] with the call's
/// settings ([`RunSettings`]) in place, through the caller's [`AgentFactory`] (the
/// CLI's [`Runtime`](plan_strategies::Runtime)): every run gets its own budget, and the
/// spec is recorded with it.
///
/// ```no_run
/// # async fn demo(store: plan_sqlite::SqliteStore) {
/// use std::sync::Arc;
/// use plan_llm::{ProviderConfig, ProviderRegistry};
/// use plan_mcp::{PlanServer, serve_stdio};
/// use plan_strategies::{RunSpec, Runtime};
///
/// let runtime = Runtime::new(ProviderRegistry::builtin(), ProviderConfig::from_env());
/// let defaults = RunSpec::new("openai:gpt-4o-mini", "auto");
/// let server = PlanServer::new(Arc::new(runtime), defaults, Arc::new(store));
/// serve_stdio(server).await.unwrap();
/// # }
/// ```
#[derive(Clone)]
pub struct PlanServer {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Arc<dyn AgentFactory>,
    defaults: RunSpec,
    store: Arc<dyn RunStore>,
    cancel: CancelToken,
    /// The runs started here, each awaited by a task of its own, for
    /// [`shutdown`](PlanServer::shutdown) to wait for.
    runs: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for PlanServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanServer").finish_non_exhaustive()
    }
}

/// Settings no tool takes: a tool's caller is often a model, and an endpoint it names
/// would be sent the server's key.
const WITHHELD: &[&str] = &["base_url"];

/// Settings that only matter once a plan runs: the `plan` tool does not take them.
const RUN_ONLY: &[&str] = &["max_replans", "concurrency", "step_timeout_secs", "approve"];

/// The tools that start from a goal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GoalTool {
    /// `plan`: a plan, not run.
    Plan,
    /// `run`: a run.
    Run,
}

/// Arguments of `plan` and `run`: the goal, the call's settings, and (`run`) how long to
/// wait.
#[derive(Debug)]
struct GoalArgs {
    goal: String,
    settings: RunSettings,
    wait_secs: Option<u64>,
}

impl GoalTool {
    fn name(self) -> &'static str {
        match self {
            GoalTool::Plan => "plan",
            GoalTool::Run => "run",
        }
    }

    /// Whether this tool takes the setting `field`.
    fn takes(self, field: &str) -> bool {
        RunSettings::FIELDS.contains(&field)
            && !WITHHELD.contains(&field)
            && (self == GoalTool::Run || !RUN_ONLY.contains(&field))
    }

    /// Every argument the tool takes, in the schema's order.
    fn arguments(self) -> Vec<&'static str> {
        let mut names = vec!["goal"];
        names.extend(
            RunSettings::FIELDS
                .iter()
                .copied()
                .filter(|f| self.takes(f)),
        );
        if self == GoalTool::Run {
            names.push("wait_secs");
        }
        names
    }

    /// The tool's arguments, each checked and named when wrong.
    fn parse(self, mut args: serde_json::Map<String, Value>) -> Result<GoalArgs, CallError> {
        let tool = self.name();
        let bad = |message: String| CallError(format!("invalid arguments for `{tool}`: {message}"));
        let goal = match args.remove("goal") {
            Some(Value::String(goal)) => goal,
            None | Some(Value::Null) => {
                return Err(bad("goal is missing: say what to achieve".to_owned()));
            }
            Some(other) => return Err(bad(format!("goal = {other}: must be a string"))),
        };
        let wait_secs = match (self, args.remove("wait_secs")) {
            (_, None | Some(Value::Null)) => None,
            (GoalTool::Run, Some(v)) => Some(v.as_u64().ok_or_else(|| {
                bad(format!(
                    "wait_secs = {v}: must be a whole number of seconds"
                ))
            })?),
            (GoalTool::Plan, Some(_)) => {
                return Err(bad(
                    "wait_secs is an argument of `run`: plan returns the plan at once".to_owned(),
                ));
            }
        };
        if let Some(field) = args.keys().find(|k| !self.takes(k)) {
            let why = if WITHHELD.contains(&field.as_str()) {
                "the endpoint is the server's (set it where plan mcp starts, with --base-url or plan.toml); "
            } else if RUN_ONLY.contains(&field.as_str()) {
                "it only matters when the plan runs (use `run`); "
            } else {
                ""
            };
            return Err(bad(format!(
                "`{field}` is not an argument of `{tool}`: {why}the arguments are {}",
                self.arguments().join(", ")
            )));
        }
        let settings = RunSettings::from_map(args).map_err(|e| bad(e.to_string()))?;
        Ok(GoalArgs {
            goal,
            settings,
            wait_secs,
        })
    }

    /// The JSON schema of the tool's arguments, the settings' from [`RunSettings`].
    fn schema(self, strategies: &[String]) -> serde_json::Map<String, Value> {
        let mut settings = RunSettings::schema_properties(strategies);
        let mut properties = serde_json::Map::new();
        properties.insert(
            "goal".to_owned(),
            json!({"type": "string", "description": "What to achieve, in plain words"}),
        );
        for name in self.arguments() {
            if let Some(property) = settings.remove(name) {
                properties.insert(name.to_owned(), property);
            }
        }
        if self == GoalTool::Run {
            properties.insert(
                "wait_secs".to_owned(),
                json!({
                    "type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECS,
                    "description": "Seconds to wait for the report (default 60)"
                }),
            );
        }
        let schema = json!({
            "type": "object",
            "properties": properties,
            "required": ["goal"],
            "additionalProperties": false,
        });
        schema.as_object().cloned().unwrap_or_default()
    }
}

/// Arguments of `show`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShowArgs {
    run_id: String,
}

/// A tool call's failure, shown to the caller as an error result.
struct CallError(String);

impl<E: std::fmt::Display> From<E> for CallError {
    fn from(e: E) -> Self {
        CallError(e.to_string())
    }
}

impl PlanServer {
    /// A server making each run's agent with `runtime` from `defaults` (overridden by
    /// the call's arguments) and recording runs in `store`.
    pub fn new(
        runtime: Arc<dyn AgentFactory>,
        defaults: RunSpec,
        store: Arc<dyn RunStore>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                runtime,
                defaults,
                store,
                cancel: CancelToken::new(),
                runs: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The three tools, as `tools/list` returns them; the `strategy` argument takes the
    /// strategies the server's runtime knows (those a user registered included).
    pub fn tool_definitions(&self) -> Vec<ToolDef> {
        let strategies = self.inner.runtime.strategy_names();
        vec![
            ToolDef::new(
                "plan",
                "Make a plan of steps with dependencies for a goal, without running it; returns the plan JSON",
                Arc::new(GoalTool::Plan.schema(&strategies)),
            ),
            ToolDef::new(
                "run",
                "Plan a goal and run the plan; returns the run id, and the report (with the answer) when the run finishes within wait_secs. Longer runs continue in the background: get their report with show",
                Arc::new(GoalTool::Run.schema(&strategies)),
            ),
            ToolDef::new(
                "show",
                "The report of a run: its status, plan, steps with their outputs, answer and usage",
                Arc::new(
                    json!({
                        "type": "object",
                        "properties": {"run_id": {"type": "string", "description": "The id run returned"}},
                        "required": ["run_id"],
                        "additionalProperties": false,
                    })
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                ),
            ),
        ]
    }

    /// The agent of a call: the server's default spec with the call's settings, checked.
    fn agent(&self, tool: GoalTool, settings: &RunSettings) -> Result<AgentBuilder, CallError> {
        let spec = settings
            .apply(&self.inner.defaults)
            .map_err(|e| CallError(format!("invalid arguments for `{}`: {e}", tool.name())))?;
        let builder = self.inner.runtime.agent(&spec)?;
        // A token per run, cancelled with the server's on shutdown.
        Ok(builder.cancel_token(self.inner.cancel.child()))
    }

    async fn plan(&self, args: GoalArgs) -> Result<CallToolResult, CallError> {
        let agent = self.agent(GoalTool::Plan, &args.settings)?.build()?;
        let outcome = agent.plan_only(args.goal).await?;
        let value = serde_json::to_value(&outcome.plan)?;
        let mut result =
            CallToolResult::success(vec![ContentBlock::text(outcome.plan.to_json_pretty())]);
        result.structured_content = Some(value);
        Ok(result)
    }

    async fn run(
        &self,
        args: GoalArgs,
        progress: Option<(ProgressToken, Peer<RoleServer>)>,
    ) -> Result<CallToolResult, CallError> {
        let wait = args.wait_secs.unwrap_or(DEFAULT_WAIT_SECS);
        if wait > MAX_WAIT_SECS {
            return Err(CallError(format!(
                "wait_secs is at most {MAX_WAIT_SECS}; start the run with less and get its report with show"
            )));
        }
        let mut handle = self
            .agent(GoalTool::Run, &args.settings)?
            .store(self.inner.store.clone())
            .build()?
            .start(args.goal)
            .await?;
        let run_id = handle.id().clone();
        let forward = tokio::spawn(forward_progress(handle.events(), progress));
        // The run goes on when the caller stops waiting; shutdown waits for it.
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        self.track(tokio::spawn(async move {
            let _ = done_tx.send(handle.await);
        }));
        let finished = tokio::time::timeout(Duration::from_secs(wait), done_rx).await;
        let result = match finished {
            Ok(Ok(Ok(report))) => {
                let _ = forward.await;
                report_result(&report)
            }
            Ok(Ok(Err(e))) => {
                return Err(CallError(format!("run {run_id} failed: {e}")));
            }
            Ok(Err(_)) => return Err(CallError(format!("run {run_id} stopped unexpectedly"))),
            Err(_) => {
                forward.abort();
                let text = format!(
                    "run {run_id} is still running after {wait}s; it continues in the background: \
                     call show with run_id \"{run_id}\" for its report"
                );
                let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
                result.structured_content =
                    Some(json!({"run_id": run_id.to_string(), "status": "running"}));
                result
            }
        };
        Ok(result)
    }

    /// Keeps the task awaiting a run, for [`shutdown`](Self::shutdown).
    fn track(&self, handle: JoinHandle<()>) {
        if let Ok(mut runs) = self.inner.runs.lock() {
            runs.retain(|h| !h.is_finished());
            runs.push(handle);
        }
    }

    async fn show(&self, args: ShowArgs) -> Result<CallToolResult, CallError> {
        let id = RunId::new(args.run_id.trim().to_owned());
        let report = Runs::new(self.inner.store.clone())
            .report(&id)
            .await
            .map_err(|e| match e {
                RunsError::NotFound(_) => CallError(format!(
                    "no run `{id}` in the run store; use the run_id that run returned"
                )),
                e => CallError(format!("cannot read the run store: {e}")),
            })?;
        Ok(report_result(&report))
    }

    /// Cancels the runs still going (they are recorded as cancelled and can be resumed
    /// with `plan resume`) and waits for them to stop.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        let handles: Vec<JoinHandle<()>> = match self.inner.runs.lock() {
            Ok(mut runs) => runs.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for handle in handles {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
        }
    }

    async fn dispatch(
        &self,
        request: CallToolRequestParams,
        progress: Option<(ProgressToken, Peer<RoleServer>)>,
    ) -> Result<CallToolResult, CallError> {
        let members = request.arguments.unwrap_or_default();
        match request.name.as_ref() {
            "plan" => self.plan(GoalTool::Plan.parse(members)?).await,
            "run" => self.run(GoalTool::Run.parse(members)?, progress).await,
            "show" => {
                let args = serde_json::from_value(Value::Object(members))
                    .map_err(|e| CallError(format!("invalid arguments for `show`: {e}")))?;
                self.show(args).await
            }
            other => Err(CallError(format!(
                "unknown tool `{other}`; the tools are plan, run and show"
            ))),
        }
    }
}

/// A report as a tool result: a summary line and the report JSON as text, the report as
/// structured content.
fn report_result(report: &RunReport) -> CallToolResult {
    let mut value = serde_json::to_value(report).unwrap_or(Value::Null);
    if let Some(obj) = value.as_object_mut() {
        // The journal is long and repeats the rest; the caller has show --json locally.
        obj.remove("events");
    }
    let summary = format!(
        "run {} {}{}",
        report.run_id,
        report.status.as_str(),
        report
            .answer
            .as_deref()
            .map(|a| format!(":\n{}", a.trim()))
            .unwrap_or_default()
    );
    let mut result = CallToolResult::success(vec![
        ContentBlock::text(summary),
        ContentBlock::text(serde_json::to_string_pretty(&value).unwrap_or_default()),
    ]);
    result.structured_content = Some(value);
    result
}

/// What one event says, for a progress message.
fn describe(event: &Event) -> Option<String> {
    Some(match &event.kind {
        EventKind::RunStarted { .. } => format!("run {} started", event.run),
        EventKind::PlanCreated { plan, .. } => format!("planned {} steps", plan.steps.len()),
        EventKind::StepStarted { step, .. } => format!("step `{step}` started"),
        EventKind::StepCompleted { step, .. } => format!("step `{step}` completed"),
        EventKind::StepFailed { step, error, .. } => format!("step `{step}` failed: {error}"),
        EventKind::Replanned { .. } => "replanned".to_owned(),
        EventKind::RunFinished { status, .. } => format!("run finished: {}", status.as_str()),
        _ => return None,
    })
}

/// Sends the run's events as progress notifications (when the caller asked for them with
/// a progress token), numbered so progress always increases.
async fn forward_progress(
    events: Option<plan_exec::events::EventReceiver>,
    progress: Option<(ProgressToken, Peer<RoleServer>)>,
) {
    let Some(mut events) = events else { return };
    let mut sent = 0u32;
    let mut total: Option<f64> = None;
    while let Some(event) = events.recv().await {
        let Some((token, peer)) = &progress else {
            continue;
        };
        if let EventKind::Progress { total: t, .. } = &event.kind {
            total = Some(f64::from(u32::try_from(*t).unwrap_or(u32::MAX)));
        }
        let Some(message) = describe(&event) else {
            continue;
        };
        sent += 1;
        let mut param =
            ProgressNotificationParam::new(token.clone(), f64::from(sent)).with_message(message);
        if let Some(t) = total {
            param = param.with_total(t.max(f64::from(sent)));
        }
        let _ = peer.notify_progress(param).await;
    }
}

impl ServerHandler for PlanServer {
    fn get_info(&self) -> InitializeResult {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("plan", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "plan turns a goal into a plan of steps and runs it with an LLM agent. \
                 Use `plan` to see a plan, `run` to run a goal (long runs continue in the \
                 background), and `show` to get a run's report.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tool_definitions()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let progress = context
            .meta
            .get_progress_token()
            .map(|token| (token, context.peer.clone()));
        let result = match self.dispatch(request, progress).await {
            Ok(result) => result,
            Err(CallError(message)) => CallToolResult::error(vec![ContentBlock::text(message)]),
        };
        Ok(result.into())
    }
}

/// Serves `server` over this process's stdin and stdout until the client closes them,
/// then cancels the runs still going (recorded as cancelled; `plan resume` continues
/// them).
///
/// # Errors
/// When the MCP handshake fails.
pub async fn serve_stdio(server: PlanServer) -> Result<(), crate::McpError> {
    let running = server
        .clone()
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| crate::McpError::Start {
            server: "plan".to_owned(),
            message: format!("the MCP handshake on stdio failed: {e}"),
        })?;
    let _ = running.waiting().await;
    server.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use plan_exec::session::RunSession;
    use plan_llm::{ProviderConfig, ProviderRegistry};
    use plan_strategies::{
        Dag, Outcome, PlanOutcome, PlanStart, Runtime, Strategy, StrategyContext, StrategyError,
        StrategyRegistry,
    };

    /// A strategy a user registers: the DAG's under another name.
    struct Mine;

    #[async_trait]
    impl Strategy for Mine {
        fn name(&self) -> &str {
            "mine"
        }

        async fn plan(
            &self,
            cx: &StrategyContext,
            goal: &str,
        ) -> Result<PlanOutcome, StrategyError> {
            Dag.plan(cx, goal).await
        }

        async fn execute(
            &self,
            cx: &StrategyContext,
            session: &RunSession,
            start: PlanStart,
        ) -> Result<Outcome, StrategyError> {
            Dag.execute(cx, session, start).await
        }
    }

    #[test]
    fn the_strategy_argument_takes_the_strategies_the_runtime_knows() {
        let mut strategies = StrategyRegistry::builtin();
        strategies.register(Mine);
        let runtime = Runtime::new(ProviderRegistry::builtin(), ProviderConfig::default())
            .with_strategies(strategies);
        let dir = tempfile::tempdir().unwrap();
        let store = plan_sqlite::SqliteStore::open(dir.path().join("runs.sqlite")).unwrap();
        let server = PlanServer::new(
            Arc::new(runtime),
            RunSpec::new("openai:gpt-4o-mini", "auto"),
            Arc::new(store),
        );
        for tool in ["plan", "run"] {
            let def = server
                .tool_definitions()
                .into_iter()
                .find(|d| d.name == tool)
                .unwrap();
            let names = def.input_schema["properties"]["strategy"]["enum"].clone();
            let names: Vec<String> = serde_json::from_value(names).unwrap();
            assert!(names.iter().any(|n| n == "mine"), "{tool}: {names:?}");
            assert!(names.iter().any(|n| n == "dag"), "{tool}: {names:?}");
        }
    }

    fn args(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn the_tools_take_the_run_settings_by_the_schema_of_the_type() {
        let strategies = vec!["auto".to_owned(), "dag".to_owned()];
        let every = RunSettings::schema_properties(&strategies);
        let run = GoalTool::Run.schema(&strategies);
        let plan = GoalTool::Plan.schema(&strategies);
        for (name, property) in &every {
            let in_run = run["properties"].get(name);
            if name == "base_url" {
                assert!(in_run.is_none(), "no tool takes base_url");
            } else {
                assert_eq!(in_run, Some(property), "run: {name}");
            }
        }
        let planned: std::collections::BTreeSet<&str> = plan["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let expected: std::collections::BTreeSet<&str> = [
            "goal",
            "strategy",
            "model",
            "max_steps",
            "max_depth",
            "reflection_rounds",
            "budget_tokens",
            "budget_usd",
        ]
        .into();
        assert_eq!(planned, expected);
        assert!(run["properties"]["wait_secs"].is_object());
        assert!(plan["properties"].get("wait_secs").is_none());
    }

    #[test]
    fn arguments_are_checked_and_named() {
        let ok = GoalTool::Run
            .parse(args(
                json!({"goal": "g", "budget_tokens": 50, "approve": "replans", "wait_secs": 5}),
            ))
            .unwrap_or_else(|CallError(e)| panic!("{e}"));
        assert_eq!(ok.settings.budget_tokens, Some(50));
        assert_eq!(ok.wait_secs, Some(5));
        let refused = |tool: GoalTool, v: Value| match tool.parse(args(v)) {
            Ok(_) => panic!("accepted"),
            Err(CallError(e)) => e,
        };
        let e = refused(GoalTool::Plan, json!({"goal": "g", "concurrency": 2}));
        assert!(
            e.starts_with(
                "invalid arguments for `plan`: `concurrency` is not an argument of `plan`"
            ),
            "{e}"
        );
        let e = refused(
            GoalTool::Run,
            json!({"goal": "g", "base_url": "http://127.0.0.1:1"}),
        );
        assert!(e.contains("`base_url` is not an argument of `run`"), "{e}");
        let e = refused(GoalTool::Run, json!({"goal": "g", "max_replans": -1}));
        assert!(e.contains("max_replans = -1"), "{e}");
        let e = refused(GoalTool::Run, json!({"goal": "g", "max_step": 3}));
        assert!(
            e.contains("`max_step` is not an argument of `run`: the arguments are goal, strategy"),
            "{e}"
        );
        let e = refused(GoalTool::Run, json!({"max_steps": 3}));
        assert!(e.contains("goal is missing"), "{e}");
        let e = refused(GoalTool::Plan, json!({"goal": "g", "wait_secs": 3}));
        assert!(e.contains("wait_secs is an argument of `run`"), "{e}");
    }

    #[tokio::test]
    async fn nonsense_settings_are_a_tool_error_naming_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let store = plan_sqlite::SqliteStore::open(dir.path().join("runs.sqlite")).unwrap();
        let runtime = Runtime::new(ProviderRegistry::builtin(), ProviderConfig::default());
        let server = PlanServer::new(
            Arc::new(runtime),
            RunSpec::new("openai:gpt-4o-mini", "auto"),
            Arc::new(store),
        );
        for (tool, settings) in [
            (GoalTool::Run, json!({"concurrency": 0})),
            (GoalTool::Plan, json!({"budget_usd": -1})),
        ] {
            let settings = RunSettings::from_json(settings).unwrap();
            let Err(CallError(e)) = server.agent(tool, &settings) else {
                panic!("{tool:?} accepted {settings:?}");
            };
            let named = if tool == GoalTool::Run {
                "invalid arguments for `run`: concurrency = 0: must be at least 1"
            } else {
                "invalid arguments for `plan`: budget_usd = -1"
            };
            assert!(e.starts_with(named), "{e}");
        }
    }
}
