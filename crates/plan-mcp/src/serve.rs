//! [`PlanServer`]: plan as an MCP server. Three tools — `plan` (a plan for a goal), `run`
//! (start a run, wait a while for its report) and `show` (a run's report) — served over
//! stdio by [`serve_stdio`]. Runs are recorded in the run store and keep going in the
//! background when the caller stops waiting; progress goes out as MCP progress
//! notifications.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use plan_core::{Event, EventKind, RunId};
use plan_exec::{CancelToken, RunReport, RunStore};
use plan_strategies::{AgentBuilder, AgentFactory, RunSpec, Runs, RunsError};
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
/// `strategy` and `max_steps` in place, through the caller's [`AgentFactory`] (the
/// CLI's [`Runtime`](plan_strategies::Runtime)): every run gets its own budget, and the
/// spec is recorded with it.
///
/// ```no_run
/// # async fn demo(store: plan_exec::SqliteStore) {
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

/// Arguments of `plan`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanArgs {
    goal: String,
    #[serde(default)]
    strategy: Option<String>,
    #[serde(default)]
    max_steps: Option<usize>,
}

/// Arguments of `run`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunArgs {
    goal: String,
    #[serde(default)]
    strategy: Option<String>,
    #[serde(default)]
    max_steps: Option<usize>,
    #[serde(default)]
    wait_secs: Option<u64>,
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
        let object =
            |properties: Value, required: &[&str]| -> Arc<serde_json::Map<String, Value>> {
                let schema = json!({
                    "type": "object",
                    "properties": properties,
                    "required": required,
                    "additionalProperties": false,
                });
                Arc::new(schema.as_object().cloned().unwrap_or_default())
            };
        let goal = json!({"type": "string", "description": "What to achieve, in plain words"});
        let strategy = json!({
            "type": "string",
            "enum": strategies,
            "description": "How plans are made and revised (default: the server's, auto for `plan mcp`: answered in one call when no plan is needed)"
        });
        let max_steps =
            json!({"type": "integer", "minimum": 1, "description": "Most steps the plan may have"});
        vec![
            ToolDef::new(
                "plan",
                "Make a plan of steps with dependencies for a goal, without running it; returns the plan JSON",
                object(
                    json!({"goal": goal, "strategy": strategy, "max_steps": max_steps}),
                    &["goal"],
                ),
            ),
            ToolDef::new(
                "run",
                "Plan a goal and run the plan; returns the run id, and the report (with the answer) when the run finishes within wait_secs. Longer runs continue in the background: get their report with show",
                object(
                    json!({
                        "goal": goal,
                        "strategy": strategy,
                        "max_steps": max_steps,
                        "wait_secs": {
                            "type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECS,
                            "description": "Seconds to wait for the report (default 60)"
                        }
                    }),
                    &["goal"],
                ),
            ),
            ToolDef::new(
                "show",
                "The report of a run: its status, plan, steps with their outputs, answer and usage",
                object(
                    json!({"run_id": {"type": "string", "description": "The id run returned"}}),
                    &["run_id"],
                ),
            ),
        ]
    }

    fn agent(
        &self,
        strategy: Option<&str>,
        max_steps: Option<usize>,
    ) -> Result<AgentBuilder, CallError> {
        let mut spec = self.inner.defaults.clone();
        if let Some(name) = strategy {
            spec.strategy = name.to_owned();
        }
        if let Some(n) = max_steps {
            spec.limits.max_steps = Some(n);
        }
        let builder = self.inner.runtime.agent(&spec)?;
        // A token per run, cancelled with the server's on shutdown.
        Ok(builder.cancel_token(self.inner.cancel.child()))
    }

    async fn plan(&self, args: PlanArgs) -> Result<CallToolResult, CallError> {
        let agent = self
            .agent(args.strategy.as_deref(), args.max_steps)?
            .build()?;
        let outcome = agent.plan_only(args.goal).await?;
        let value = serde_json::to_value(&outcome.plan)?;
        let mut result =
            CallToolResult::success(vec![ContentBlock::text(outcome.plan.to_json_pretty())]);
        result.structured_content = Some(value);
        Ok(result)
    }

    async fn run(
        &self,
        args: RunArgs,
        progress: Option<(ProgressToken, Peer<RoleServer>)>,
    ) -> Result<CallToolResult, CallError> {
        let wait = args.wait_secs.unwrap_or(DEFAULT_WAIT_SECS);
        if wait > MAX_WAIT_SECS {
            return Err(CallError(format!(
                "wait_secs is at most {MAX_WAIT_SECS}; start the run with less and get its report with show"
            )));
        }
        let mut handle = self
            .agent(args.strategy.as_deref(), args.max_steps)?
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
        let args = Value::Object(request.arguments.unwrap_or_default());
        let parse = |e: serde_json::Error| {
            CallError(format!("invalid arguments for `{}`: {e}", request.name))
        };
        match request.name.as_ref() {
            "plan" => {
                self.plan(serde_json::from_value(args).map_err(parse)?)
                    .await
            }
            "run" => {
                self.run(serde_json::from_value(args).map_err(parse)?, progress)
                    .await
            }
            "show" => {
                self.show(serde_json::from_value(args).map_err(parse)?)
                    .await
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
    events: Option<plan_exec::EventReceiver>,
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
    use plan_exec::RunSession;
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
        let store = plan_exec::SqliteStore::open(dir.path().join("runs.sqlite")).unwrap();
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
}
