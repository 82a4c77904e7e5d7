//! Specialised agents: profiles loaded from TOML, a plan naming an unknown agent rejected
//! before it runs, and a plan whose steps are routed by agent name and by kind, each on its
//! agent's system prompt, model and tools.
//!
//! The models are scripted so the example runs offline; `with_model_resolver` is where a
//! real application turns a profile's `model = "provider:model"` into a provider.
//!
//!     cargo run -p plan-examples --example agents_routing

use std::sync::Arc;

use plan_core::{EventKind, Plan, Step, StepKind};
use plan_exec::events::EventLog;
use plan_exec::llm::LlmStepExecutor;
use plan_exec::router::Router;
use plan_exec::runner::Runner;
use plan_llm::{LlmError, Provider, Reply, ScriptedModel};
use plan_strategies::{AgentCatalogue, AgentTeam};
use plan_tools::{Tool, ToolContext, ToolError, ToolOutput, ToolSet};
use schemars::JsonSchema;
use serde::Deserialize;

const PROFILES: &str = r#"
[[agent]]
name = "calculator"
description = "Does arithmetic with the add tool"
system_prompt = "You compute exactly, using tools."
tools = ["add"]
kinds = ["analyze"]

[[agent]]
name = "writer"
description = "Writes the final text"
system_prompt = "You write one clear sentence."
model = "scripted:writer"
kinds = ["synthesize"]
"#;

/// Arguments of `add`.
#[derive(Deserialize, JsonSchema)]
struct AddArgs {
    /// First addend.
    a: i64,
    /// Second addend.
    b: i64,
}

struct Add;

impl Tool for Add {
    type Args = AddArgs;
    fn name(&self) -> &str {
        "add"
    }
    fn description(&self) -> &str {
        "Adds two integers"
    }
    async fn call(&self, args: AddArgs, _ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        Ok(ToolOutput::Text((args.a + args.b).to_string()))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let catalogue = AgentCatalogue::from_toml_str(PROFILES)?;
    println!("planner brief:\n{}", catalogue.planner_brief());

    // A plan naming an agent that does not exist never runs.
    let bad = Plan::new("g", vec![Step::new("x", "Write a poem").with_agent("poet")]);
    if let Err(e) = catalogue.check_plan(&bad) {
        println!("rejected: {e}\n");
    }

    let default_model = ScriptedModel::new()
        .reply(Reply::tool_call(
            "add",
            serde_json::json!({"a": 19, "b": 23}),
        ))
        .reply(Reply::text("19 + 23 = 42"));
    let writer_model = ScriptedModel::new()
        .named("writer")
        .reply(Reply::text("The answer to everything is 42."));
    let team = AgentTeam::new(catalogue.clone(), Arc::new(default_model.clone()))
        .with_tools(ToolSet::new().with(Add))
        .with_model_resolver(move |spec: &str| -> Result<Arc<dyn Provider>, LlmError> {
            match spec {
                "scripted:writer" => Ok(Arc::new(writer_model.clone())),
                other => Err(LlmError::Config(format!("unknown model {other}"))),
            }
        });
    let router =
        team.routes(Router::default().with_default(LlmStepExecutor::new(default_model)))?;

    let plan = Plan::new(
        "What is 19 + 23?",
        vec![
            Step::new("sum", "Add 19 and 23").with_kind(StepKind::Analyze),
            Step::new("say", "State the result")
                .with_agent("writer")
                .depends_on(["sum"]),
        ],
    );
    catalogue.check_plan(&plan)?;
    let events = Arc::new(EventLog::new());
    let report = Runner::sequential(router)
        .with_event_sink(events.clone())
        .run(plan)
        .await?;
    for step in &report.steps {
        println!("{}: {}", step.id, step.output.as_deref().unwrap_or("-"));
    }
    for kind in events.kinds() {
        if let EventKind::ToolCall { step, tool, ok, .. } = kind {
            println!("tool_call: step {step} called {tool} (ok: {ok})");
        }
    }
    Ok(())
}
