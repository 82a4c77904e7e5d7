//! A tool of your own: implement `plan_tools::Tool` (typed arguments whose JSON schema the
//! model sees) and hand it to a `ToolLoop`. The loop validates the model's arguments
//! against the schema, runs the tool, and feeds results — and errors — back to the model.
//!
//! The scripted model first calls the tool with a unit it does not know, reads the error,
//! calls it again correctly, and answers from the result.
//!
//!     cargo run -p plan-examples --example custom_tool

use std::sync::{Arc, Mutex};

use plan_llm::{Message, Reply, Role, ScriptedModel};
use plan_tools::{
    Tool, ToolCallRecord, ToolContext, ToolError, ToolLoop, ToolObserver, ToolOutput, ToolSet,
};
use schemars::JsonSchema;
use serde::Deserialize;

/// Arguments of `convert_length`.
#[derive(Deserialize, JsonSchema)]
struct ConvertArgs {
    /// The length to convert.
    value: f64,
    /// Its unit: `km`, `mi` or `m`.
    from: String,
    /// The unit wanted: `km`, `mi` or `m`.
    to: String,
}

/// Converts lengths between kilometres, miles and metres.
struct ConvertLength;

fn metres_per(unit: &str) -> Result<f64, ToolError> {
    match unit {
        "m" => Ok(1.0),
        "km" => Ok(1000.0),
        "mi" => Ok(1609.344),
        other => Err(ToolError::failed(
            "convert_length",
            format!("unknown unit `{other}`; use km, mi or m"),
        )),
    }
}

impl Tool for ConvertLength {
    type Args = ConvertArgs;

    fn name(&self) -> &str {
        "convert_length"
    }

    fn description(&self) -> &str {
        "Converts a length between units (km, mi, m)"
    }

    async fn call(&self, args: ConvertArgs, _ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let value = args.value * metres_per(&args.from)? / metres_per(&args.to)?;
        Ok(ToolOutput::Json(serde_json::json!({
            "value": (value * 100.0).round() / 100.0,
            "unit": args.to,
        })))
    }
}

/// Keeps every tool call.
#[derive(Default)]
struct Calls(Mutex<Vec<ToolCallRecord>>);

impl ToolObserver for Calls {
    fn tool_called(&self, record: &ToolCallRecord) {
        println!(
            "tool {} {} -> {}",
            record.tool,
            record.arguments,
            if record.ok { &record.output } else { "failed" }
        );
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(record.clone());
    }
}

/// The last tool result the model was sent.
fn last_tool_result(request: &plan_llm::Request) -> String {
    request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::Tool)
        .map(|m| m.content.clone())
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let model = ScriptedModel::new().respond_with(|request| {
        let result = last_tool_result(request);
        if result.is_empty() {
            // First round: a unit the tool does not know.
            Reply::tool_call(
                "convert_length",
                serde_json::json!({"value": 42.195, "from": "kilometres", "to": "mi"}),
            )
        } else if result.contains("unknown unit") {
            // It read the error; try again.
            Reply::tool_call(
                "convert_length",
                serde_json::json!({"value": 42.195, "from": "km", "to": "mi"}),
            )
        } else {
            let v: serde_json::Value = serde_json::from_str(&result).unwrap_or_default();
            Reply::text(format!("A marathon is {} miles.", v["value"]))
        }
    });
    let calls = Calls::default();
    let outcome = ToolLoop::new(Arc::new(model), ToolSet::new().with(ConvertLength))
        .run(
            vec![
                Message::system("Use the tools to convert units."),
                Message::user("How many miles is a marathon (42.195 km)?"),
            ],
            &ToolContext::default(),
            &calls,
        )
        .await?;
    println!(
        "\n{} (after {} model calls)",
        outcome.answer, outcome.model_calls
    );

    let calls = calls.0.lock().unwrap_or_else(|e| e.into_inner());
    anyhow::ensure!(
        outcome.answer == "A marathon is 26.22 miles.",
        "wrong answer"
    );
    anyhow::ensure!(outcome.model_calls == 3, "expected 3 model calls");
    anyhow::ensure!(
        calls.len() == 2 && !calls[0].ok && calls[1].ok,
        "expected a failed call then a good one"
    );
    Ok(())
}
