//! The tool loop with a scripted model: native tool calls and the JSON-action fallback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use plan_llm::{
    Capabilities, FinishReason, LlmError, Provider, Request, Response, Role, ToolCall, ToolChoice,
    Usage,
};
use plan_tools::{
    ToolCallMode, ToolCallRecord, ToolContext, ToolLoop, ToolLoopConfig, ToolLoopError,
    ToolObserver,
};
use serde_json::json;

use super::tools;

/// Replies in order; records requests.
#[derive(Clone)]
pub struct Script {
    native_tools: bool,
    replies: Arc<Mutex<Vec<Response>>>,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Script {
    pub fn new(native_tools: bool, mut replies: Vec<Response>) -> Self {
        replies.reverse();
        Self {
            native_tools,
            replies: Arc::new(Mutex::new(replies)),
            requests: Arc::default(),
        }
    }
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

#[async_trait]
impl Provider for Script {
    fn name(&self) -> &str {
        "script"
    }
    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::default();
        c.tools = self.native_tools;
        c
    }
    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        self.requests.lock().unwrap().push(request.clone());
        self.replies
            .lock()
            .unwrap()
            .pop()
            .ok_or_else(|| LlmError::Config("the script ran out of replies".into()))
    }
}

pub fn text(content: &str) -> Response {
    Response::text(content, Usage::new(7, 3))
}

pub fn calls(calls: Vec<ToolCall>) -> Response {
    let mut r = Response::text("", Usage::new(7, 3));
    r.tool_calls = calls;
    r.finish_reason = FinishReason::ToolCalls;
    r
}

#[derive(Default)]
struct Seen(Mutex<Vec<ToolCallRecord>>, Mutex<u32>);

impl ToolObserver for Seen {
    fn tool_called(&self, record: &ToolCallRecord) {
        self.0.lock().unwrap().push(record.clone());
    }
    fn model_called(&self, _usage: &Usage, _duration: Duration) {
        *self.1.lock().unwrap() += 1;
    }
}

fn messages() -> Vec<plan_llm::Message> {
    vec![
        plan_llm::Message::system("You add numbers."),
        plan_llm::Message::user("What is 2 + 40, and echo hi?"),
    ]
}

#[tokio::test]
async fn native_calls_run_and_results_go_back_as_tool_messages() {
    let model = Script::new(
        true,
        vec![
            calls(vec![
                ToolCall::new("c1", "add", json!({"a": 2, "b": 40})),
                ToolCall::new("c2", "echo", json!({"word": "hi"})),
            ]),
            calls(vec![ToolCall::new("c3", "add", json!({"a": "x"}))]),
            text("42, and hi"),
        ],
    );
    let seen = Seen::default();
    let outcome = ToolLoop::new(Arc::new(model.clone()), tools())
        .run(messages(), &ToolContext::for_step("s"), &seen)
        .await
        .unwrap();
    assert_eq!(outcome.answer, "42, and hi");
    assert_eq!(outcome.model_calls, 3);
    assert_eq!(outcome.usage, Usage::new(21, 9));
    let oks: Vec<(String, bool)> = outcome
        .calls
        .iter()
        .map(|c| (c.tool.clone(), c.ok))
        .collect();
    assert_eq!(
        oks,
        vec![
            ("add".into(), true),
            ("echo".into(), true),
            ("add".into(), false)
        ]
    );
    assert_eq!(
        seen.0.lock().unwrap().len(),
        3,
        "the observer saw every call"
    );
    assert_eq!(*seen.1.lock().unwrap(), 3);

    let requests = model.requests();
    assert_eq!(requests[0].tools.len(), 2, "tool specs are sent");
    let second = &requests[1].messages;
    assert_eq!(second[2].role, Role::Assistant);
    assert_eq!(second[2].tool_calls.len(), 2);
    assert_eq!(second[3].role, Role::Tool);
    assert_eq!(second[3].tool_call_id.as_deref(), Some("c1"));
    // Compare as JSON: key order depends on serde_json features other crates enable.
    let result: serde_json::Value = serde_json::from_str(&second[3].content).unwrap();
    assert_eq!(result, serde_json::json!({"step": "s", "sum": 42}));
    assert_eq!(second[4].content, "hi");
    // The invalid call's error went back to the model, naming the problem.
    let third = &requests[2].messages;
    let error = &third.last().unwrap().content;
    assert!(
        error.starts_with("error: invalid arguments for `add`"),
        "{error}"
    );
    assert!(error.contains("at /a"), "{error}");
}

#[tokio::test]
async fn the_iteration_bound_forces_an_answer() {
    let again = || calls(vec![ToolCall::new("c", "echo", json!({"word": "hi"}))]);
    let model = Script::new(true, vec![again(), again(), text("done")]);
    let config = ToolLoopConfig::default().with_max_iterations(2);
    let outcome = ToolLoop::new(Arc::new(model.clone()), tools())
        .with_config(config.clone())
        .run(messages(), &ToolContext::default(), &())
        .await
        .unwrap();
    assert_eq!(outcome.answer, "done");
    assert_eq!(outcome.calls.len(), 2);
    let last = model.requests().pop().unwrap();
    assert_eq!(last.tool_choice, ToolChoice::None);
    assert!(
        last.messages
            .last()
            .unwrap()
            .content
            .contains("used all 2 rounds")
    );

    // A model that keeps calling tools after that is an error, not an endless loop.
    let model = Script::new(true, vec![again(), again(), again()]);
    let err = ToolLoop::new(Arc::new(model), tools())
        .with_config(config)
        .run(messages(), &ToolContext::default(), &())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ToolLoopError::IterationLimit { limit: 2, calls: 2 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("raise the iteration limit"));
}

#[tokio::test]
async fn providers_without_tools_use_json_actions() {
    let model = Script::new(
        false,
        vec![
            text(r#"{"tool": "add", "arguments": {"a": 1, "b": 2}}"#),
            text("Let me check.\n```json\n{\"tool\": \"nope\", \"arguments\": {}}\n```"),
            text(r#"{"answer": "3"}"#),
        ],
    );
    let seen = Seen::default();
    let lp = ToolLoop::new(Arc::new(model.clone()), tools());
    assert_eq!(lp.effective_mode(), ToolCallMode::JsonActions);
    let outcome = lp
        .run(messages(), &ToolContext::default(), &seen)
        .await
        .unwrap();
    assert_eq!(outcome.answer, "3");
    assert_eq!(outcome.calls.len(), 2);
    assert!(outcome.calls[0].ok && !outcome.calls[1].ok);

    let requests = model.requests();
    assert!(requests[0].tools.is_empty(), "no native tool specs");
    let system = &requests[0].messages[0].content;
    assert!(system.starts_with("You add numbers."));
    assert!(system.contains("- add: Adds two integers"), "{system}");
    assert!(system.contains(r#"{"answer": "<your answer>"}"#));
    let fed_back = &requests[1].messages.last().unwrap().content;
    assert!(fed_back.starts_with("Result of tool `add`:"), "{fed_back}");
    assert!(fed_back.contains(r#""sum":3"#));
    let error = &requests[2].messages.last().unwrap().content;
    assert!(
        error.contains("unknown tool `nope`; available tools: add, echo"),
        "{error}"
    );
}

#[tokio::test]
async fn json_action_mode_can_be_forced_and_plain_text_is_an_answer() {
    let model = Script::new(true, vec![text("No tools needed: 4.")]);
    let outcome = ToolLoop::new(Arc::new(model.clone()), tools())
        .with_config(ToolLoopConfig::default().with_mode(ToolCallMode::JsonActions))
        .run(messages(), &ToolContext::default(), &())
        .await
        .unwrap();
    assert_eq!(outcome.answer, "No tools needed: 4.");
    assert!(model.requests()[0].tools.is_empty());
}

#[tokio::test]
async fn long_results_are_cut_visibly() {
    let model = Script::new(
        true,
        vec![
            calls(vec![ToolCall::new(
                "c",
                "echo",
                json!({"word": "x".repeat(100)}),
            )]),
            text("ok"),
        ],
    );
    let outcome = ToolLoop::new(Arc::new(model), tools())
        .with_config(ToolLoopConfig::default().with_max_result_chars(10))
        .run(messages(), &ToolContext::default(), &())
        .await
        .unwrap();
    assert!(
        outcome.calls[0]
            .output
            .contains("[truncated: 10 of 100 characters shown]")
    );
}
