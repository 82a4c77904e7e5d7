//! The Anthropic Messages adapter.

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::LlmError;
use crate::http::{self, Decoder, ErrorInfo, SseEvent};
use crate::provider::{Capabilities, ChunkStream, Provider, collect_stream};
use crate::secret::ApiKey;
use crate::types::{
    Chunk, FinishReason, Request, Response, ResponseFormat, Role, ToolChoice, Usage,
};

/// The default endpoint.
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
const API_VERSION: &str = "2023-06-01";
/// `max_tokens` is required by the API; this is used when the request sets none.
pub const ANTHROPIC_DEFAULT_MAX_TOKENS: u32 = 4096;

/// A model behind Anthropic's Messages API.
///
/// `ResponseFormat::JsonSchema` with an object schema is asked for natively as a forced
/// tool call whose input is the reply; the tool's input comes back as the reply text, so
/// callers see JSON text as with every other provider. `JsonObject` (and non-object
/// schemas) become instructions in the system prompt.
///
/// ```
/// use plan_llm::{Anthropic, ApiKey, Provider};
/// let claude = Anthropic::new("claude-sonnet-4-5", ApiKey::new("sk-ant-..."));
/// assert_eq!(claude.name(), "anthropic:claude-sonnet-4-5");
/// ```
#[derive(Clone, Debug)]
pub struct Anthropic {
    name: String,
    model: String,
    base_url: String,
    key: ApiKey,
    client: reqwest::Client,
}

impl Anthropic {
    /// A model on Anthropic's API.
    pub fn new(model: impl Into<String>, key: ApiKey) -> Self {
        let model = model.into();
        Self {
            name: format!("anthropic:{model}"),
            model,
            base_url: ANTHROPIC_BASE_URL.to_owned(),
            key,
            client: http::client(),
        }
    }

    /// Talks to this base URL (without `/v1`).
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }

    /// Reports this name (the default is `anthropic:<model>`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    async fn send(&self, body: &Value) -> Result<reqwest::Response, LlmError> {
        let response = self
            .client
            .post(http::join(&self.base_url, "v1/messages"))
            .header("x-api-key", self.key.expose_secret())
            .header("anthropic-version", API_VERSION)
            .json(body)
            .send()
            .await
            .map_err(|e| http::transport(&self.name, e, Some(&self.key)))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(http::read_error(&self.name, response, Some(&self.key), parse_error).await)
        }
    }
}

#[async_trait]
impl Provider for Anthropic {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
            .with_streaming(true)
            .with_tools(true)
            .with_json_schema(true)
    }

    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        let (body, structured) = wire_request(&self.model, request, false);
        let response = self.send(&body).await?;
        let text = response
            .text()
            .await
            .map_err(|e| http::transport(&self.name, e, Some(&self.key)))?;
        if let Some(info) = parse_error(&text) {
            return Err(http::stream_error(&self.name, info, Some(&self.key)));
        }
        let wire: WireMessage =
            serde_json::from_str(&text).map_err(|e| LlmError::InvalidResponse {
                provider: self.name.clone(),
                message: format!("the reply is not a message: {e}"),
            })?;
        let mut chunks = Vec::new();
        let mut calls = 0;
        for block in wire.content {
            match block {
                WireBlock::Text { text } => chunks.push(Chunk::Text(text)),
                WireBlock::ToolUse { id, name, input } => {
                    if structured.as_deref() == Some(name.as_str()) {
                        chunks.push(Chunk::Text(input.to_string()));
                    } else {
                        chunks.push(Chunk::ToolCall {
                            index: calls,
                            id: Some(id),
                            name: Some(name),
                            arguments: input.to_string(),
                        });
                        calls += 1;
                    }
                }
                WireBlock::Other => {}
            }
        }
        let mut finish = stop_reason(wire.stop_reason.as_deref());
        if finish == FinishReason::ToolCalls && calls == 0 {
            finish = FinishReason::Stop;
        }
        if finish == FinishReason::Refusal {
            chunks.push(Chunk::Refusal(refusal_text(wire.stop_details.as_ref())));
        }
        chunks.push(Chunk::Usage(wire.usage.into()));
        chunks.push(Chunk::Finish(finish));
        collect_stream(
            &self.name,
            Box::pin(futures::stream::iter(chunks.into_iter().map(Ok))),
        )
        .await
    }

    async fn stream(&self, request: &Request) -> Result<ChunkStream, LlmError> {
        let (body, structured) = wire_request(&self.model, request, true);
        let response = self.send(&body).await?;
        let events = http::sse_events(&self.name, response, Some(self.key.clone()));
        let decoder = StreamDecoder {
            provider: self.name.clone(),
            key: self.key.clone(),
            structured,
            blocks: BTreeMap::new(),
            calls: 0,
            usage: Usage::default(),
            finish: None,
            refusal: None,
        };
        Ok(http::decode(events.boxed(), decoder))
    }
}

fn stop_reason(reason: Option<&str>) -> FinishReason {
    match reason {
        None | Some("end_turn") | Some("stop_sequence") => FinishReason::Stop,
        Some("max_tokens") | Some("model_context_window_exceeded") => FinishReason::Length,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("refusal") => FinishReason::Refusal,
        Some(other) => FinishReason::Other(other.to_owned()),
    }
}

fn refusal_text(details: Option<&Value>) -> String {
    details
        .and_then(|d| d.get("explanation"))
        .and_then(Value::as_str)
        .unwrap_or("the model declined to answer")
        .to_owned()
}

fn parse_error(body: &str) -> Option<ErrorInfo> {
    let value: Value = serde_json::from_str(body).ok()?;
    let error = value.get("error")?;
    Some(ErrorInfo {
        kind: error
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        message: error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        request_id: value
            .get("request_id")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// The request body, and the name of the tool standing in for a JSON schema, if any.
pub(crate) fn wire_request(model: &str, r: &Request, stream: bool) -> (Value, Option<String>) {
    let mut system: Vec<String> = r
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.clone())
        .collect();
    let mut tools: Vec<Value> = r
        .tools
        .iter()
        .map(
            |t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}),
        )
        .collect();
    let mut tool_choice = match &r.tool_choice {
        ToolChoice::None => json!({"type": "none"}),
        ToolChoice::Required => json!({"type": "any"}),
        ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
        _ => json!({"type": "auto"}),
    };
    let mut structured = None;
    match &r.response_format {
        ResponseFormat::Text => {}
        ResponseFormat::JsonSchema { name, schema }
            if schema.get("type") == Some(&json!("object")) =>
        {
            tools.push(json!({
                "name": name,
                "description": "Reply by calling this tool; its input is your answer.",
                "input_schema": schema,
            }));
            tool_choice = json!({"type": "tool", "name": name});
            structured = Some(name.clone());
        }
        ResponseFormat::JsonSchema { schema, .. } => system.push(format!(
            "Reply with only a JSON value valid against this JSON schema, no prose and no code fences:\n{schema}"
        )),
        ResponseFormat::JsonObject => system.push(
            "Reply with only a single JSON object, no prose and no code fences.".to_owned(),
        ),
    }

    // Consecutive messages of one role are merged: the API wants turns to alternate.
    let mut messages: Vec<(String, Vec<Value>)> = Vec::new();
    for m in r.messages.iter().filter(|m| m.role != Role::System) {
        let (role, blocks) = match m.role {
            Role::Assistant => {
                let mut blocks = Vec::new();
                if !m.content.is_empty() {
                    blocks.push(json!({"type": "text", "text": m.content}));
                }
                for c in &m.tool_calls {
                    blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}));
                }
                ("assistant", blocks)
            }
            Role::Tool => (
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": m.tool_call_id.clone().unwrap_or_default(),
                    "content": m.content,
                })],
            ),
            _ => ("user", vec![json!({"type": "text", "text": m.content})]),
        };
        match messages.last_mut() {
            Some((last, existing)) if last == role => existing.extend(blocks),
            _ => messages.push((role.to_owned(), blocks)),
        }
    }
    let messages: Vec<Value> = messages
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();

    let mut body = json!({
        "model": model,
        "max_tokens": r.max_tokens.unwrap_or(ANTHROPIC_DEFAULT_MAX_TOKENS),
        "messages": messages,
    });
    if let Some(obj) = body.as_object_mut() {
        if stream {
            obj.insert("stream".into(), json!(true));
        }
        if !system.is_empty() {
            obj.insert("system".into(), json!(system.join("\n\n")));
        }
        if let Some(t) = r.temperature {
            obj.insert("temperature".into(), json!(t));
        }
        if !r.stop.is_empty() {
            obj.insert("stop_sequences".into(), json!(r.stop));
        }
        if !tools.is_empty() {
            obj.insert("tools".into(), Value::Array(tools));
            obj.insert("tool_choice".into(), tool_choice);
        }
    }
    (body, structured)
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Vec<WireBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    stop_details: Option<Value>,
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        Usage::new(
            u.input_tokens.unwrap_or(0)
                + u.cache_creation_input_tokens.unwrap_or(0)
                + u.cache_read_input_tokens.unwrap_or(0),
            u.output_tokens.unwrap_or(0),
        )
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    MessageStart {
        message: WireStart,
    },
    ContentBlockStart {
        index: usize,
        content_block: WireStartBlock,
    },
    ContentBlockDelta {
        index: usize,
        delta: WireDelta,
    },
    ContentBlockStop {
        #[allow(dead_code)]
        index: usize,
    },
    MessageDelta {
        delta: WireMessageDelta,
        #[serde(default)]
        usage: Option<WireUsage>,
    },
    MessageStop,
    Ping,
    Error {
        error: Value,
    },
    #[serde(other)]
    Unknown,
}

#[derive(Deserialize)]
struct WireStart {
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireStartBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct WireMessageDelta {
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    stop_details: Option<Value>,
}

enum Block {
    Text,
    /// A tool call with our index.
    Call(usize),
    /// The forced tool standing in for a JSON schema: its input is the reply text.
    Structured,
    Ignored,
}

struct StreamDecoder {
    provider: String,
    key: ApiKey,
    structured: Option<String>,
    blocks: BTreeMap<usize, Block>,
    calls: usize,
    usage: Usage,
    finish: Option<FinishReason>,
    refusal: Option<String>,
}

impl StreamDecoder {
    fn merge_usage(&mut self, u: WireUsage) {
        // Counts are cumulative: replace what is present, keep what is not.
        if u.input_tokens.is_some()
            || u.cache_creation_input_tokens.is_some()
            || u.cache_read_input_tokens.is_some()
        {
            self.usage.prompt_tokens = Usage::from(u).prompt_tokens;
        }
        if let Some(out) = u.output_tokens {
            self.usage.completion_tokens = out;
        }
    }
}

impl Decoder for StreamDecoder {
    type Item = SseEvent;

    fn feed(&mut self, event: SseEvent, out: &mut Vec<Chunk>) -> Result<bool, LlmError> {
        if event.data.trim().is_empty() {
            return Ok(false);
        }
        let parsed: WireEvent =
            serde_json::from_str(&event.data).map_err(|e| LlmError::InvalidResponse {
                provider: self.provider.clone(),
                message: format!("a `{}` event is not valid: {e}", event.event),
            })?;
        match parsed {
            WireEvent::MessageStart { message } => self.merge_usage(message.usage),
            WireEvent::ContentBlockStart {
                index,
                content_block,
            } => {
                let block = match content_block {
                    WireStartBlock::Text { text } => {
                        if !text.is_empty() {
                            out.push(Chunk::Text(text));
                        }
                        Block::Text
                    }
                    WireStartBlock::ToolUse { name, .. }
                        if self.structured.as_deref() == Some(name.as_str()) =>
                    {
                        Block::Structured
                    }
                    WireStartBlock::ToolUse { id, name } => {
                        let ours = self.calls;
                        self.calls += 1;
                        out.push(Chunk::ToolCall {
                            index: ours,
                            id: Some(id),
                            name: Some(name),
                            arguments: String::new(),
                        });
                        Block::Call(ours)
                    }
                    WireStartBlock::Other => Block::Ignored,
                };
                self.blocks.insert(index, block);
            }
            WireEvent::ContentBlockDelta { index, delta } => {
                match (self.blocks.get(&index), delta) {
                    (Some(Block::Text), WireDelta::TextDelta { text }) => {
                        out.push(Chunk::Text(text))
                    }
                    (Some(Block::Call(ours)), WireDelta::InputJsonDelta { partial_json })
                        if !partial_json.is_empty() =>
                    {
                        out.push(Chunk::ToolCall {
                            index: *ours,
                            id: None,
                            name: None,
                            arguments: partial_json,
                        });
                    }
                    (Some(Block::Structured), WireDelta::InputJsonDelta { partial_json })
                        if !partial_json.is_empty() =>
                    {
                        out.push(Chunk::Text(partial_json));
                    }
                    _ => {}
                }
            }
            WireEvent::ContentBlockStop { .. } | WireEvent::Ping | WireEvent::Unknown => {}
            WireEvent::MessageDelta { delta, usage } => {
                if let Some(u) = usage {
                    self.merge_usage(u);
                }
                if let Some(reason) = delta.stop_reason {
                    let mut finish = stop_reason(Some(&reason));
                    if finish == FinishReason::ToolCalls && self.calls == 0 {
                        finish = FinishReason::Stop;
                    }
                    if finish == FinishReason::Refusal {
                        self.refusal = Some(refusal_text(delta.stop_details.as_ref()));
                    }
                    self.finish = Some(finish);
                }
            }
            WireEvent::MessageStop => {
                if let Some(refusal) = self.refusal.take() {
                    out.push(Chunk::Refusal(refusal));
                }
                out.push(Chunk::Usage(self.usage));
                out.push(Chunk::Finish(self.finish.clone().unwrap_or_default()));
                return Ok(true);
            }
            WireEvent::Error { error } => {
                let info = ErrorInfo {
                    kind: error
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    message: error
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    request_id: None,
                };
                return Err(http::stream_error(&self.provider, info, Some(&self.key)));
            }
        }
        Ok(false)
    }

    fn truncated(&self) -> LlmError {
        LlmError::InvalidResponse {
            provider: self.provider.clone(),
            message: "the stream ended without `message_stop` (truncated)".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::replay::sse_all_cuts;
    use crate::types::{Message, ToolCall};

    fn decoder() -> StreamDecoder {
        StreamDecoder {
            provider: "p".into(),
            key: ApiKey::new("k"),
            structured: None,
            blocks: BTreeMap::new(),
            calls: 0,
            usage: Usage::default(),
            finish: None,
            refusal: None,
        }
    }

    #[test]
    fn streams_survive_every_cut() {
        let body = include_bytes!("../tests/recordings/anthropic/text.sse");
        let crlf = String::from_utf8(body.to_vec())
            .unwrap()
            .replace('\n', "\r\n");
        for variant in [body.to_vec(), crlf.into_bytes()] {
            let r = sse_all_cuts(&variant, decoder).unwrap();
            assert_eq!(r.content, "Hello, wörld — ✓");
            assert_eq!(
                r.usage,
                Usage::new(30, 5),
                "cumulative usage is replaced, not added"
            );
        }
        let tools = sse_all_cuts(
            include_bytes!("../tests/recordings/anthropic/tools.sse"),
            decoder,
        )
        .unwrap();
        assert_eq!(tools.tool_calls[0].arguments, json!({"city": "Zürich"}));
        assert_eq!(tools.tool_calls[1].arguments, json!({}));
        let cut = sse_all_cuts(
            include_bytes!("../tests/recordings/anthropic/no-stop.sse"),
            decoder,
        )
        .unwrap_err();
        assert!(cut.contains("truncated"), "{cut}");
    }

    #[test]
    fn system_goes_on_top_and_tool_results_join_the_user_turn() {
        let r = Request::new(vec![
            Message::system("be brief"),
            Message::user("weather?"),
            Message::assistant_tool_calls("", vec![ToolCall::new("t1", "w", json!({"c": "x"}))]),
            Message::tool_result("t1", "w", "sunny"),
            Message::user("thanks"),
        ]);
        let (body, structured) = wire_request("m", &r, false);
        assert_eq!(structured, None);
        assert_eq!(body["system"], json!("be brief"));
        assert_eq!(body["max_tokens"], json!(ANTHROPIC_DEFAULT_MAX_TOKENS));
        let msgs = body["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[1]["content"][0]["type"], json!("tool_use"));
        assert_eq!(msgs[2]["content"][0]["type"], json!("tool_result"));
        assert_eq!(msgs[2]["content"][1]["text"], json!("thanks"));
    }
}
