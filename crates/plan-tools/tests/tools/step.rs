//! The tool-using step executor inside a real run: prompts, events, errors.

use std::sync::Arc;

use plan_core::{EventKind, Plan, Step, StepId, StepStatus};
use plan_exec::context::StepContext;
use plan_exec::events::EventLog;
use plan_exec::executor::StepExecutor;
use plan_exec::router::Router;
use plan_exec::runner::Runner;
use plan_llm::{Role, ToolCall};
use plan_tools::{ToolLoopConfig, ToolStepExecutor};
use serde_json::json;

use super::tool_loop::{Script, calls, text};
use super::tools;

#[tokio::test]
async fn a_run_emits_a_tool_call_event_per_call() {
    let model = Script::new(
        true,
        vec![
            calls(vec![
                ToolCall::new("c1", "add", json!({"a": 1, "b": 2})),
                ToolCall::new("c2", "add", json!({"a": "bad"})),
            ]),
            text("1 + 2 = 3"),
        ],
    );
    let executor = ToolStepExecutor::new(Arc::new(model.clone()), tools())
        .with_system_prompt("You are the calculator agent.");
    let log = Arc::new(EventLog::new());
    let plan = Plan::new(
        "Add numbers",
        vec![Step::new("sum", "Add 1 and 2 with the add tool")],
    );
    let report = Runner::sequential(Router::default().with_default(executor))
        .with_event_sink(log.clone())
        .run(plan)
        .await
        .unwrap();
    let step = &report.steps[0];
    assert_eq!(step.status, StepStatus::Completed);
    assert_eq!(step.output.as_deref(), Some("1 + 2 = 3"));

    let tool_events: Vec<(String, String, bool)> = log
        .kinds()
        .into_iter()
        .filter_map(|k| match k {
            EventKind::ToolCall { step, tool, ok, .. } => Some((step.to_string(), tool, ok)),
            _ => None,
        })
        .collect();
    assert_eq!(
        tool_events,
        vec![
            ("sum".to_owned(), "add".to_owned(), true),
            ("sum".to_owned(), "add".to_owned(), false)
        ]
    );
    let llm_calls = log
        .kinds()
        .into_iter()
        .filter(|k| matches!(k, EventKind::LlmCall { step: Some(s), .. } if s.as_str() == "sum"))
        .count();
    assert_eq!(llm_calls, 2);

    // The prompt follows the step context contract, with the agent's system prompt.
    let first = &model.requests()[0];
    assert_eq!(first.messages[0].role, Role::System);
    assert_eq!(first.messages[0].content, "You are the calculator agent.");
    assert!(first.messages[1].content.contains("Goal: Add numbers"));
    assert!(
        first.messages[1]
            .content
            .contains("Add 1 and 2 with the add tool")
    );
}

#[tokio::test]
async fn dependency_outputs_reach_the_prompt_and_bounds_fail_the_step() {
    let again = || calls(vec![ToolCall::new("c", "echo", json!({"word": "hi"}))]);
    let model = Script::new(true, vec![again(), again(), again()]);
    let executor = ToolStepExecutor::new(Arc::new(model.clone()), tools())
        .with_config(ToolLoopConfig::default().with_max_iterations(1));
    let dep = Step::new("facts", "Gather facts");
    let ctx = StepContext::new("g", Step::new("use", "Use the facts").depends_on(["facts"]))
        .with_dependency(&dep, "the sky is green");
    let err = executor.execute(&ctx).await.unwrap_err();
    assert!(!err.is_retryable(), "{err:?}");
    assert!(
        err.message.contains("still calling tools after 1 rounds"),
        "{err}"
    );
    let prompt = &model.requests()[0].messages[1].content;
    assert!(prompt.contains("the sky is green"), "{prompt}");
    assert_eq!(StepId::new("use"), ctx.step().id);
}

/// A tool whose server is gone (an MCP server that crashed or hangs).
struct Gone {
    retryable: bool,
}

#[async_trait::async_trait]
impl plan_tools::DynTool for Gone {
    fn spec(&self) -> plan_llm::ToolSpec {
        plan_llm::ToolSpec::new("remote", "A remote tool", json!({"type": "object"}))
    }
    async fn call_json(
        &self,
        _: serde_json::Value,
        _: &plan_tools::ToolContext,
    ) -> Result<plan_tools::ToolOutput, plan_tools::ToolError> {
        Err(plan_tools::ToolError::Unavailable {
            tool: "remote".into(),
            message: "MCP server `srv`, tool `remote`: the server stopped".into(),
            retryable: self.retryable,
        })
    }
}

#[tokio::test]
async fn an_unavailable_tool_fails_the_step_instead_of_going_back_to_the_model() {
    for retryable in [false, true] {
        let model = Script::new(
            true,
            vec![
                calls(vec![ToolCall::new("c", "remote", json!({}))]),
                text("the model should not be asked again"),
            ],
        );
        let tools = plan_tools::ToolSet::new().with_dyn(Arc::new(Gone { retryable }));
        let executor = ToolStepExecutor::new(Arc::new(model.clone()), tools);
        let ctx = StepContext::new("g", Step::new("use", "Use the remote tool"));
        let err = executor.execute(&ctx).await.unwrap_err();
        assert_eq!(err.is_retryable(), retryable, "{err:?}");
        assert!(
            err.message
                .contains("the tool `remote` is unavailable: MCP server `srv`, tool `remote`: the server stopped"),
            "{err}"
        );
        assert_eq!(
            model.requests().len(),
            1,
            "the loop stopped at the failed call"
        );
    }
}
