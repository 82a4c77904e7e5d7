//! The tool loop: ask the model, run the tools it calls, feed the results back, until it
//! answers or the iteration bound is reached.

use std::sync::Arc;
use std::time::{Duration, Instant};

use plan_llm::{
    LlmError, Message, Provider, Purpose, Request, Response, ToolCall, ToolChoice, Usage,
};
use serde::{Deserialize, Serialize};

use crate::{ToolContext, ToolSet};

/// How the model calls tools.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ToolCallMode {
    /// Native tool calling when the provider has it, JSON actions otherwise.
    #[default]
    Auto,
    /// The provider's native tool calling.
    Native,
    /// The model replies with a JSON object naming a tool and its arguments (for providers
    /// without native tool calling).
    JsonActions,
}

/// Settings of a [`ToolLoop`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ToolLoopConfig {
    /// How tools are called.
    pub mode: ToolCallMode,
    /// Most rounds of tool calls; after the last one the model must answer without tools.
    pub max_iterations: u32,
    /// Tool results longer than this (in characters) are cut, with a visible marker.
    pub max_result_chars: usize,
    /// Sampling temperature for the model calls; `None` leaves the provider's default.
    pub temperature: Option<f32>,
}

impl Default for ToolLoopConfig {
    fn default() -> Self {
        Self {
            mode: ToolCallMode::Auto,
            max_iterations: 8,
            max_result_chars: 8_000,
            temperature: None,
        }
    }
}

impl ToolLoopConfig {
    /// Sets the mode.
    pub fn with_mode(mut self, mode: ToolCallMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the most rounds of tool calls.
    pub fn with_max_iterations(mut self, n: u32) -> Self {
        self.max_iterations = n;
        self
    }

    /// Sets the cap on one tool result's length.
    pub fn with_max_result_chars(mut self, n: usize) -> Self {
        self.max_result_chars = n;
        self
    }
}

/// One tool call the loop made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ToolCallRecord {
    /// The tool's name, as the model gave it.
    pub tool: String,
    /// The arguments, as the model gave them.
    pub arguments: serde_json::Value,
    /// Whether the call succeeded.
    pub ok: bool,
    /// What the model was shown (the result, or the error).
    pub output: String,
    /// How long the call took.
    #[serde(with = "duration_ms")]
    pub duration: Duration,
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// How a tool loop ended.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ToolLoopOutcome {
    /// The model's final answer.
    pub answer: String,
    /// Every tool call, in order.
    pub calls: Vec<ToolCallRecord>,
    /// Tokens used by all model calls.
    pub usage: Usage,
    /// How many times the model was called.
    pub model_calls: u32,
}

/// Why a tool loop failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolLoopError {
    /// A model call failed.
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// A tool could not be reached ([`ToolError::Unavailable`](crate::ToolError::Unavailable)).
    #[error("{source}")]
    ToolUnavailable {
        /// The error, naming the tool and what serves it.
        source: crate::ToolError,
        /// Whether trying again may work.
        retryable: bool,
    },
    /// The model kept calling tools after the last allowed round.
    #[error(
        "the model was still calling tools after {limit} rounds ({calls} calls); raise the iteration limit or make the step smaller"
    )]
    IterationLimit {
        /// The bound.
        limit: u32,
        /// Tool calls made.
        calls: usize,
    },
}

/// Hooks called as the loop goes, e.g. to emit events. Every method has a no-op default.
pub trait ToolObserver: Send + Sync {
    /// A tool call finished.
    fn tool_called(&self, record: &ToolCallRecord) {
        let _ = record;
    }

    /// A model call finished.
    fn model_called(&self, usage: &Usage, duration: Duration) {
        let _ = (usage, duration);
    }
}

impl ToolObserver for () {}

/// Runs a conversation in which the model may call tools.
///
/// With native tool calling the tools are sent as tool specifications and their results as
/// tool messages; in JSON-action mode the system prompt describes the tools and the model
/// replies `{"tool": ..., "arguments": ...}` or `{"answer": ...}`. Arguments are validated
/// against the tool's schema; errors go back to the model as the call's result, so it can
/// correct itself. After `max_iterations` rounds the model is asked to answer without
/// tools.
#[derive(Clone)]
pub struct ToolLoop {
    provider: Arc<dyn Provider>,
    tools: ToolSet,
    config: ToolLoopConfig,
    max_tokens: Option<u32>,
}

impl std::fmt::Debug for ToolLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolLoop")
            .field("provider", &self.provider.name())
            .field("tools", &self.tools)
            .field("config", &self.config)
            .finish()
    }
}

fn truncate(text: String, max: usize) -> String {
    let total = text.chars().count();
    if total <= max {
        return text;
    }
    let mut cut: String = text.chars().take(max).collect();
    cut.push_str(&format!(
        "\n…[truncated: {} of {total} characters shown]",
        max
    ));
    cut
}

/// What a JSON-action reply asks for.
#[derive(Debug, PartialEq)]
enum Action {
    Call {
        tool: String,
        arguments: serde_json::Value,
    },
    Answer(String),
}

/// Finds the JSON object in a reply (bare, or in a code fence, or amid prose).
fn find_json_object(text: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let trimmed = text.trim();
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(trimmed) {
        return Some(map);
    }
    let start = trimmed.find('{')?;
    let end = trimmed.rfind('}')?;
    if end <= start {
        return None;
    }
    match serde_json::from_str(&trimmed[start..=end]) {
        Ok(serde_json::Value::Object(map)) => Some(map),
        _ => None,
    }
}

fn parse_action(text: &str) -> Action {
    let Some(map) = find_json_object(text) else {
        return Action::Answer(text.trim().to_owned());
    };
    if let Some(tool) = map
        .get("tool")
        .or_else(|| map.get("action"))
        .and_then(|v| v.as_str())
        && tool != "answer"
        && tool != "final"
    {
        let arguments = map
            .get("arguments")
            .or_else(|| map.get("args"))
            .or_else(|| map.get("input"))
            .cloned()
            .unwrap_or_else(|| serde_json::json!({}));
        return Action::Call {
            tool: tool.to_owned(),
            arguments,
        };
    }
    match map.get("answer").or_else(|| map.get("final")) {
        Some(serde_json::Value::String(s)) => Action::Answer(s.clone()),
        Some(other) => Action::Answer(other.to_string()),
        None => Action::Answer(text.trim().to_owned()),
    }
}

fn json_actions_prompt(tools: &ToolSet) -> String {
    let mut prompt = String::from(
        "You can use tools. To call a tool, reply with only a JSON object of the form\n\
         {\"tool\": \"<tool name>\", \"arguments\": {<arguments>}}\n\
         and wait for its result. When you can answer, reply with only\n\
         {\"answer\": \"<your answer>\"}\n\nTools:\n",
    );
    for spec in tools.specs() {
        prompt.push_str(&format!(
            "- {}: {}\n  arguments (JSON schema): {}\n",
            spec.name, spec.description, spec.parameters
        ));
    }
    prompt
}

impl ToolLoop {
    /// A loop over `provider` with `tools` and default settings.
    pub fn new(provider: Arc<dyn Provider>, tools: ToolSet) -> Self {
        Self {
            provider,
            tools,
            config: ToolLoopConfig::default(),
            max_tokens: None,
        }
    }

    /// Caps the tokens of each model reply (`None`: the provider's default).
    pub fn with_max_tokens(mut self, max_tokens: Option<u32>) -> Self {
        self.max_tokens = max_tokens;
        self
    }

    /// Sets the settings.
    pub fn with_config(mut self, config: ToolLoopConfig) -> Self {
        self.config = config;
        self
    }

    /// The tools.
    pub fn tools(&self) -> &ToolSet {
        &self.tools
    }

    /// The mode this loop uses with its provider (resolving [`ToolCallMode::Auto`]).
    pub fn effective_mode(&self) -> ToolCallMode {
        match self.config.mode {
            ToolCallMode::Auto if self.provider.capabilities().tools => ToolCallMode::Native,
            ToolCallMode::Auto => ToolCallMode::JsonActions,
            other => other,
        }
    }

    async fn ask(
        &self,
        request: &Request,
        outcome: &mut ToolLoopOutcome,
        observer: &dyn ToolObserver,
    ) -> Result<Response, ToolLoopError> {
        let started = Instant::now();
        let response = plan_exec::runner::model_call(self.provider.complete(request)).await?;
        outcome.usage += response.usage;
        outcome.model_calls += 1;
        observer.model_called(&response.usage, started.elapsed());
        Ok(response)
    }

    async fn run_call(
        &self,
        call: &ToolCall,
        ctx: &ToolContext,
        observer: &dyn ToolObserver,
    ) -> (ToolCallRecord, Option<ToolLoopError>) {
        let (result, duration) = self
            .tools
            .call_timed(&call.name, call.arguments.clone(), ctx)
            .await;
        let mut unavailable = None;
        let (ok, output) = match result {
            Ok(out) => (true, truncate(out.to_text(), self.config.max_result_chars)),
            Err(e) => {
                let text = format!("error: {e}");
                if let crate::ToolError::Unavailable { retryable, .. } = &e {
                    unavailable = Some(ToolLoopError::ToolUnavailable {
                        retryable: *retryable,
                        source: e,
                    });
                }
                (false, text)
            }
        };
        let record = ToolCallRecord {
            tool: call.name.clone(),
            arguments: call.arguments.clone(),
            ok,
            output,
            duration,
        };
        observer.tool_called(&record);
        (record, unavailable)
    }

    /// Runs the conversation that starts with `messages` (typically a system and a user
    /// message) to the model's final answer.
    ///
    /// # Errors
    /// [`ToolLoopError::Llm`] when a model call fails; [`ToolLoopError::IterationLimit`]
    /// when the model still calls tools after being told to answer;
    /// [`ToolLoopError::ToolUnavailable`] when a tool cannot be reached.
    pub async fn run(
        &self,
        messages: Vec<Message>,
        ctx: &ToolContext,
        observer: &dyn ToolObserver,
    ) -> Result<ToolLoopOutcome, ToolLoopError> {
        match self.effective_mode() {
            ToolCallMode::JsonActions => self.run_json_actions(messages, ctx, observer).await,
            _ => self.run_native(messages, ctx, observer).await,
        }
    }

    async fn run_native(
        &self,
        messages: Vec<Message>,
        ctx: &ToolContext,
        observer: &dyn ToolObserver,
    ) -> Result<ToolLoopOutcome, ToolLoopError> {
        let mut outcome = ToolLoopOutcome {
            answer: String::new(),
            calls: Vec::new(),
            usage: Usage::default(),
            model_calls: 0,
        };
        let mut request = Request::new(messages)
            .with_tools(self.tools.specs())
            .with_purpose(Purpose::Tool);
        request.temperature = self.config.temperature;
        request.max_tokens = self.max_tokens;
        let limit = self.config.max_iterations;
        for round in 0..=limit {
            if round == limit {
                request.tool_choice = ToolChoice::None;
                request.messages.push(Message::user(format!(
                    "You have used all {limit} rounds of tool calls. Answer now from the \
                     results above, without calling tools."
                )));
            }
            let response = self.ask(&request, &mut outcome, observer).await?;
            if response.tool_calls.is_empty() {
                outcome.answer = response.content;
                return Ok(outcome);
            }
            if round == limit {
                break;
            }
            let calls = response.tool_calls.clone();
            request.messages.push(Message::assistant_tool_calls(
                response.content,
                response.tool_calls,
            ));
            let results = futures::future::join_all(
                calls.iter().map(|call| self.run_call(call, ctx, observer)),
            )
            .await;
            let mut records = Vec::with_capacity(results.len());
            for (record, unavailable) in results {
                if let Some(e) = unavailable {
                    return Err(e);
                }
                records.push(record);
            }
            for (call, record) in calls.iter().zip(records) {
                request.messages.push(Message::tool_result(
                    call.id.clone(),
                    call.name.clone(),
                    record.output.clone(),
                ));
                outcome.calls.push(record);
            }
        }
        Err(ToolLoopError::IterationLimit {
            limit,
            calls: outcome.calls.len(),
        })
    }

    async fn run_json_actions(
        &self,
        mut messages: Vec<Message>,
        ctx: &ToolContext,
        observer: &dyn ToolObserver,
    ) -> Result<ToolLoopOutcome, ToolLoopError> {
        let mut outcome = ToolLoopOutcome {
            answer: String::new(),
            calls: Vec::new(),
            usage: Usage::default(),
            model_calls: 0,
        };
        let protocol = json_actions_prompt(&self.tools);
        match messages
            .iter_mut()
            .find(|m| m.role == plan_llm::Role::System)
        {
            Some(system) => {
                system.content.push_str("\n\n");
                system.content.push_str(&protocol);
            }
            None => messages.insert(0, Message::system(protocol)),
        }
        let mut request = Request::new(messages).with_purpose(Purpose::Tool);
        request.temperature = self.config.temperature;
        request.max_tokens = self.max_tokens;
        let limit = self.config.max_iterations;
        for round in 0..=limit {
            if round == limit {
                request.messages.push(Message::user(format!(
                    "You have used all {limit} rounds of tool calls. Answer now from the \
                     results above: reply {{\"answer\": \"...\"}} without calling tools."
                )));
            }
            let response = self.ask(&request, &mut outcome, observer).await?;
            let (tool, arguments) = match parse_action(&response.content) {
                Action::Answer(answer) => {
                    outcome.answer = answer;
                    return Ok(outcome);
                }
                Action::Call { tool, arguments } => (tool, arguments),
            };
            if round == limit {
                break;
            }
            let call = ToolCall::new(format!("call_{}", outcome.calls.len()), tool, arguments);
            let (record, unavailable) = self.run_call(&call, ctx, observer).await;
            if let Some(e) = unavailable {
                return Err(e);
            }
            request
                .messages
                .push(Message::assistant(response.content.clone()));
            let label = if record.ok { "Result" } else { "Error" };
            request.messages.push(Message::user(format!(
                "{label} of tool `{}`:\n{}",
                record.tool, record.output
            )));
            outcome.calls.push(record);
        }
        Err(ToolLoopError::IterationLimit {
            limit,
            calls: outcome.calls.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_actions() {
        assert_eq!(
            parse_action(r#"{"tool": "read_file", "arguments": {"path": "a.md"}}"#),
            Action::Call {
                tool: "read_file".into(),
                arguments: serde_json::json!({"path": "a.md"})
            }
        );
        assert_eq!(
            parse_action("Sure.\n```json\n{\"answer\": \"42\"}\n```"),
            Action::Answer("42".into())
        );
        assert_eq!(
            parse_action("plain text answer"),
            Action::Answer("plain text answer".into())
        );
        assert_eq!(
            parse_action(r#"{"action": "search_docs", "args": {"query": "x"}}"#),
            Action::Call {
                tool: "search_docs".into(),
                arguments: serde_json::json!({"query": "x"})
            }
        );
    }

    #[test]
    fn truncation_is_visible() {
        let cut = truncate("abcdef".into(), 3);
        assert!(cut.starts_with("abc\n"));
        assert!(cut.contains("truncated: 3 of 6"));
        assert_eq!(truncate("abc".into(), 3), "abc");
    }
}
