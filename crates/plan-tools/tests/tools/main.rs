//! Tools through the public API: schema validation, the file tools' confinement, the
//! search tool, and the tool loop in native and JSON-action modes.

mod fs;
mod step;
mod tool_loop;

use plan_llm::ToolSpec;
use plan_tools::{DynTool, Tool, ToolContext, ToolError, ToolOutput, ToolSet};
use schemars::JsonSchema;
use serde::Deserialize;

/// Arguments of the test `add` tool.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddArgs {
    /// First addend.
    pub a: i64,
    /// Second addend.
    pub b: i64,
}

pub struct Add;

impl Tool for Add {
    type Args = AddArgs;
    fn name(&self) -> &str {
        "add"
    }
    fn description(&self) -> &str {
        "Adds two integers"
    }
    async fn call(&self, args: AddArgs, ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let step = ctx.step.as_ref().map(|s| s.to_string()).unwrap_or_default();
        Ok(ToolOutput::Json(
            serde_json::json!({"sum": args.a + args.b, "step": step}),
        ))
    }
}

/// A tool whose schema is written by hand.
struct Echo;

#[async_trait::async_trait]
impl DynTool for Echo {
    fn spec(&self) -> ToolSpec {
        ToolSpec::new(
            "echo",
            "Echoes a word",
            serde_json::json!({
                "type": "object",
                "properties": {"word": {"type": "string", "minLength": 2}},
                "required": ["word"]
            }),
        )
    }
    async fn call_json(
        &self,
        args: serde_json::Value,
        _ctx: &ToolContext,
    ) -> Result<ToolOutput, ToolError> {
        Ok(ToolOutput::Text(
            args["word"].as_str().unwrap_or_default().to_owned(),
        ))
    }
}

fn tools() -> ToolSet {
    ToolSet::new().with(Add).with_dyn(std::sync::Arc::new(Echo))
}

#[test]
fn schemas_come_from_the_argument_types() {
    let specs = tools().specs();
    assert_eq!(specs.len(), 2);
    let add = specs.iter().find(|s| s.name == "add").unwrap();
    assert_eq!(add.description, "Adds two integers");
    assert_eq!(add.parameters["type"], "object");
    assert_eq!(add.parameters["properties"]["a"]["type"], "integer");
    assert_eq!(
        add.parameters["properties"]["a"]["description"],
        "First addend."
    );
    assert_eq!(add.parameters["required"], serde_json::json!(["a", "b"]));
    assert!(add.parameters.get("$schema").is_none());
}

#[tokio::test]
async fn arguments_are_validated_before_the_call() {
    let tools = tools();
    let ctx = ToolContext::for_step("s1");
    let out = tools
        .call("add", serde_json::json!({"a": 2, "b": 40}), &ctx)
        .await
        .unwrap();
    assert_eq!(
        out,
        ToolOutput::Json(serde_json::json!({"sum": 42, "step": "s1"}))
    );

    let err = tools
        .call("add", serde_json::json!({"a": "two", "c": 1}), &ctx)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ToolError::InvalidArguments { .. }), "{err:?}");
    // Every problem is listed: the wrong type (with its path), the missing and the extra field.
    assert!(text.contains("at /a"), "{text}");
    assert!(text.contains("\"b\" is a required property"), "{text}");
    assert!(text.contains("c"), "{text}");

    let err = tools
        .call("echo", serde_json::json!({"word": "x"}), &ctx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("shorter than 2"), "{err}");
    assert_eq!(
        tools
            .call("echo", serde_json::json!({"word": "hi"}), &ctx)
            .await
            .unwrap()
            .to_text(),
        "hi"
    );

    let err = tools
        .call("mul", serde_json::json!({}), &ctx)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown tool `mul`; available tools: add, echo"
    );
}

#[test]
fn subsets_pick_tools_by_name() {
    let all = tools();
    assert_eq!(all.subset(&["echo"]).unwrap().names(), vec!["echo"]);
    let err = all.subset(&["echo", "nope"]).unwrap_err();
    assert!(matches!(err, ToolError::UnknownTool { .. }));
}

#[test]
fn key_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ToolSet>();
    assert_send_sync::<plan_tools::ToolLoop>();
    assert_send_sync::<plan_tools::builtin::FsRoot>();
    assert_send_sync::<ToolError>();
    assert_send_sync::<plan_tools::builtin::SearchDocsTool>();
}
