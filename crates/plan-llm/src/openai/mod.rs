//! The OpenAI chat-completions adapter, for OpenAI and OpenAI-compatible servers.

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::LlmError;
use crate::http::{self, Decoder, ErrorInfo, SseEvent};
use crate::provider::{Capabilities, ChunkStream, Provider, collect_stream};
use crate::secret::ApiKey;
use crate::structured::{StructuredMode, request_for};
use crate::types::{
    Chunk, FinishReason, Message, Request, Response, ResponseFormat, Role, ToolChoice, Usage,
};

mod context;
mod endpoint;
mod flavour;
mod strict;

use endpoint::Level;
pub use flavour::Flavour;

/// The default endpoint.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// A model behind OpenAI's chat-completions API or a compatible server.
///
/// ```
/// use plan_llm::{ApiKey, Flavour, OpenAi, Provider};
/// let gpt = OpenAi::new("gpt-4o-mini", Some(ApiKey::new("sk-...")));
/// assert_eq!(gpt.name(), "openai:gpt-4o-mini");
/// let local = OpenAi::new("qwen2.5", None)
///     .with_base_url("http://localhost:8080/v1")
///     .with_flavour(Flavour::compatible());
/// # let _ = local;
/// ```
#[derive(Clone, Debug)]
pub struct OpenAi {
    name: String,
    model: String,
    base_url: String,
    key: Option<ApiKey>,
    flavour: Flavour,
    client: reqwest::Client,
}

impl OpenAi {
    /// A model on OpenAI's API (`key` may be `None` for servers that need none).
    pub fn new(model: impl Into<String>, key: Option<ApiKey>) -> Self {
        let model = model.into();
        Self {
            name: format!("openai:{model}"),
            model,
            base_url: OPENAI_BASE_URL.to_owned(),
            key,
            flavour: Flavour::openai(),
            client: http::client(),
        }
    }

    /// Talks to this base URL (ending in `/v1` for most servers).
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }

    /// Uses this flavour of the API.
    pub fn with_flavour(mut self, flavour: Flavour) -> Self {
        self.flavour = flavour;
        self
    }

    /// Reports this name (the default is `openai:<model>`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The flavour in use: the configured one, or the one the server identified itself as
    /// when the configured flavour asks to [`detect`](Flavour::detect).
    async fn flavour(&self) -> Flavour {
        if !self.flavour.detect {
            return self.flavour;
        }
        if let Some(found) = endpoint::learned(&self.base_url).detected {
            return found.unwrap_or(self.flavour);
        }
        match self.identify().await {
            Ok(found) => {
                endpoint::detected(&self.base_url, found);
                found.unwrap_or(self.flavour)
            }
            // Not answered (busy, restarting, unreachable): this request goes out as the
            // configured flavour, and the next one asks again (a few times at most).
            Err(()) => {
                endpoint::unanswered(&self.base_url);
                self.flavour
            }
        }
    }

    /// Asks the server who it is (`GET /models`): `Ok(None)` when it answered without
    /// saying (or has no such endpoint), `Err(())` when it did not answer in time or
    /// answered with a server error, so that a busy server (llama-cpp-python answers
    /// between completions only) is asked again rather than taken for an unknown one.
    async fn identify(&self) -> Result<Option<Flavour>, ()> {
        let mut builder = self
            .client
            .get(http::join(&self.base_url, "models"))
            .timeout(std::time::Duration::from_secs(5));
        if let Some(key) = &self.key {
            builder = builder.bearer_auth(key.expose_secret());
        }
        let reply = match builder.send().await {
            Ok(reply) => reply,
            Err(e) => {
                let e = e.without_url();
                tracing::debug!(provider = %self.name, error = %e, "the server did not say who it is");
                return Err(());
            }
        };
        let status = reply.status();
        if status.is_server_error() || status.as_u16() == 429 {
            tracing::debug!(provider = %self.name, %status, "the server did not say who it is");
            return Err(());
        }
        let Ok(reply) = reply.error_for_status() else {
            return Ok(None);
        };
        let Ok(models) = reply.json::<Value>().await else {
            return Ok(None);
        };
        let found = Flavour::identify(&models);
        tracing::debug!(
            provider = %self.name,
            flavour = found.map_or("unknown", |f| f.name),
            "asked the server who it is"
        );
        let window = match context::from_models(&models) {
            Some(n) => Some(n),
            None if found.is_some_and(|f| f.name == Flavour::llama_cpp().name) => {
                self.props_context().await
            }
            None => None,
        };
        if let Some(n_ctx) = window {
            endpoint::context(&self.base_url, &self.name, n_ctx, "the server reported it");
        }
        Ok(found)
    }

    /// llama.cpp's context window from `GET /props` at the server's root (the base URL
    /// without its `/v1`); `None` when it does not say.
    async fn props_context(&self) -> Option<u32> {
        let root = self.base_url.trim_end_matches('/');
        let root = root.strip_suffix("/v1").unwrap_or(root);
        let mut builder = self
            .client
            .get(http::join(root, "props"))
            .timeout(std::time::Duration::from_secs(5));
        if let Some(key) = &self.key {
            builder = builder.bearer_auth(key.expose_secret());
        }
        let reply = builder.send().await.ok()?.error_for_status().ok()?;
        context::from_props(&reply.json::<Value>().await.ok()?)
    }

    /// The flavour as far as it is known without asking the server.
    fn known_flavour(&self) -> Flavour {
        match endpoint::learned(&self.base_url).detected {
            Some(Some(found)) if self.flavour.detect => found,
            _ => self.flavour,
        }
    }

    async fn post(&self, body: &Value) -> Result<reqwest::Response, LlmError> {
        let mut builder = self
            .client
            .post(http::join(&self.base_url, "chat/completions"))
            .json(body);
        if let Some(key) = &self.key {
            builder = builder.bearer_auth(key.expose_secret());
        }
        builder
            .send()
            .await
            .map_err(|e| http::transport(&self.name, e, self.key.as_ref()))
    }

    /// Sends the request, asking for its structured output in the strongest mode the server
    /// takes: a mode the server refuses (see [`endpoint::refuses_format`]) is replaced at
    /// once by the next one down (json_schema, json_object, instructions only), never
    /// retried, and remembered for the endpoint. The token cap is bounded by the server's
    /// context window when it is known (see [`context`]); an error naming the window
    /// teaches it, and the request is sent once more within it. Returns the response and
    /// the token cap sent.
    async fn send(
        &self,
        request: &Request,
        stream: bool,
    ) -> Result<(reqwest::Response, Option<u32>), LlmError> {
        let flavour = self.flavour().await;
        let asked = match &request.response_format {
            ResponseFormat::JsonSchema { .. } => Level::Schema,
            ResponseFormat::JsonObject => Level::Object,
            _ => Level::Text,
        };
        let mut level = asked.within(&flavour);
        if let Some(ceiling) = endpoint::learned(&self.base_url).ceiling {
            level = level.max(ceiling);
        }
        let mut refitted = false;
        loop {
            let mut body = self.body_at(request, asked, level, stream, flavour);
            let cap = self.fit_to_context(&mut body);
            let response = self.post(&body).await?;
            if response.status().is_success() {
                return Ok((response, cap));
            }
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let text = response
                .text()
                .await
                .map_err(|e| http::transport(&self.name, e, self.key.as_ref()))?;
            if level != Level::Text && endpoint::refuses_format(status, &text) {
                let next = level.below(&flavour);
                endpoint::refused(&self.base_url, &self.name, level, next);
                level = next;
                continue;
            }
            if let Some(n_ctx) = context::from_error(&text) {
                endpoint::context(&self.base_url, &self.name, n_ctx, "an error named it");
                let mut again = body.clone();
                if !refitted && self.fit_to_context(&mut again) < cap {
                    refitted = true;
                    continue;
                }
            }
            return Err(http::error_from_body(
                &self.name,
                status,
                &headers,
                &text,
                self.key.as_ref(),
                parse_error,
            ));
        }
    }

    /// Lowers the token cap of `body` to what the server's context window leaves after the
    /// prompt, when the window is known; returns the cap the body now carries.
    fn fit_to_context(&self, body: &mut Value) -> Option<u32> {
        let field = ["max_tokens", "max_completion_tokens"]
            .into_iter()
            .find(|f| body.get(*f).is_some())?;
        let asked = body.get(field).and_then(Value::as_u64)?;
        let asked = u32::try_from(asked).unwrap_or(u32::MAX);
        let Some(n_ctx) = endpoint::learned(&self.base_url).context else {
            return Some(asked);
        };
        let cap = context::bound(asked, n_ctx, context::prompt_estimate(body));
        if cap < asked {
            tracing::debug!(
                provider = %self.name,
                asked,
                cap,
                n_ctx,
                "the token cap is bounded by the server's context window"
            );
            body[field] = json!(cap);
        }
        Some(cap)
    }

    /// The wire body for `request` with its structured output asked for at `level`: below
    /// what was `asked`, the schema moves into the instructions (and, for servers that take
    /// it, beside `json_object`).
    fn body_at(
        &self,
        request: &Request,
        asked: Level,
        level: Level,
        stream: bool,
        flavour: Flavour,
    ) -> Value {
        if level == asked {
            return wire_request(&self.model, request, stream, flavour);
        }
        let ResponseFormat::JsonSchema { name, schema } = &request.response_format else {
            // JSON object mode refused: the caller's prompt already asks for JSON.
            let mut plain = request.clone();
            plain.response_format = ResponseFormat::Text;
            return wire_request(&self.model, &plain, stream, flavour);
        };
        let mode = match level {
            Level::Object => StructuredMode::JsonObject,
            _ => StructuredMode::Instructions,
        };
        let rewritten = request_for(request, mode, name, schema);
        let mut body = wire_request(&self.model, &rewritten, stream, flavour);
        if level == Level::Object && flavour.json_object_schema {
            body["response_format"]["schema"] = schema.clone();
        }
        body
    }
}

#[async_trait]
impl Provider for OpenAi {
    fn name(&self) -> &str {
        &self.name
    }

    /// A schema is enforced in schema mode, and by llama.cpp's servers beside JSON object
    /// mode ([`Flavour::json_object_schema`]): either way a request with a schema keeps it
    /// on the wire, so callers ask for schema mode every time and [`send`](Self::send)
    /// picks the form.
    ///
    /// Before the server has said who it is (a flavour that detects, not asked yet),
    /// schema mode is reported: whatever the server turns out to take, a request with a
    /// schema is sent in the best form it has (schema mode, the schema beside JSON object
    /// mode, or the schema in the instructions), while a request without one would lose
    /// the schema on a server that could have enforced it.
    fn capabilities(&self) -> Capabilities {
        let learned = endpoint::learned(&self.base_url);
        let flavour = self.known_flavour();
        let ceiling = learned.ceiling.unwrap_or(Level::Schema);
        let pending = self.flavour.detect && learned.detected.is_none();
        let object = flavour.json_object && ceiling <= Level::Object;
        let schema = ((flavour.json_schema || pending) && ceiling <= Level::Schema)
            || (object && flavour.json_object_schema);
        Capabilities::default()
            .with_streaming(true)
            .with_tools(true)
            .with_json_schema(schema)
            .with_json_object(object)
    }

    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        let (response, cap) = self.send(request, false).await?;
        let text = response
            .text()
            .await
            .map_err(|e| http::transport(&self.name, e, self.key.as_ref()))?;
        let invalid = |message: String| LlmError::InvalidResponse {
            provider: self.name.clone(),
            message,
        };
        if let Some(info) = parse_error(&text) {
            return Err(http::stream_error(&self.name, info, self.key.as_ref()));
        }
        let wire: WireCompletion = serde_json::from_str(&text)
            .map_err(|e| invalid(format!("the reply is not a chat completion: {e}")))?;
        let choice = wire
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| invalid("the reply has no choices".to_owned()))?;
        let mut chunks = Vec::new();
        if let Some(content) = choice.message.content.filter(|c| !c.is_empty()) {
            chunks.push(Chunk::Text(content));
        }
        if let Some(refusal) = choice.message.refusal.filter(|r| !r.is_empty()) {
            chunks.push(Chunk::Refusal(refusal));
        }
        for (index, call) in choice.message.tool_calls.into_iter().enumerate() {
            chunks.push(Chunk::ToolCall {
                index,
                id: call.id,
                name: call.function.name,
                arguments: call.function.arguments.unwrap_or_default(),
            });
        }
        let finish = finish_reason(choice.finish_reason.as_deref().unwrap_or("stop"));
        if let Some(usage) = wire.usage {
            if finish == FinishReason::Length
                && let Some(n_ctx) = cap.and_then(|cap| {
                    context::from_cut_reply(cap, usage.prompt_tokens, usage.completion_tokens)
                })
            {
                endpoint::context(
                    &self.base_url,
                    &self.name,
                    n_ctx,
                    "a reply was cut off short of its token cap",
                );
            }
            chunks.push(Chunk::Usage(usage.into()));
        }
        chunks.push(Chunk::Finish(finish));
        collect_stream(
            &self.name,
            Box::pin(futures::stream::iter(chunks.into_iter().map(Ok))),
        )
        .await
    }

    async fn stream(&self, request: &Request) -> Result<ChunkStream, LlmError> {
        let (response, _) = self.send(request, true).await?;
        let events = http::sse_events(&self.name, response, self.key.clone());
        let decoder = StreamDecoder {
            provider: self.name.clone(),
            key: self.key.clone(),
            finish: None,
            usage: None,
            calls: BTreeMap::new(),
        };
        Ok(http::decode(events.boxed(), decoder))
    }
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

fn parse_error(body: &str) -> Option<ErrorInfo> {
    #[derive(Deserialize)]
    struct Envelope {
        error: WireError,
    }
    #[derive(Deserialize)]
    struct WireError {
        #[serde(default)]
        message: Option<String>,
        #[serde(default, rename = "type")]
        kind: Option<String>,
        #[serde(default)]
        code: Option<Value>,
    }
    let env: Envelope = serde_json::from_str(body).ok()?;
    let code = match env.error.code {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    Some(ErrorInfo {
        // The code is more specific (`context_length_exceeded`, `rate_limit_exceeded`).
        kind: code.or(env.error.kind).unwrap_or_default(),
        message: env.error.message.unwrap_or_default(),
        request_id: None,
    })
}

// ---- wire types (private) ----

fn wire_message(m: &Message, flavour: Flavour) -> Value {
    match m.role {
        Role::System => json!({"role": "system", "content": m.content}),
        Role::User => json!({"role": "user", "content": m.content}),
        Role::Assistant if !m.tool_calls.is_empty() => {
            let content = if !m.content.is_empty() {
                Value::String(m.content.clone())
            } else if flavour.empty_content_with_tool_calls {
                Value::String(String::new())
            } else {
                Value::Null
            };
            let calls: Vec<Value> = m
                .tool_calls
                .iter()
                .map(|c| {
                    json!({
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments.to_string()},
                    })
                })
                .collect();
            json!({"role": "assistant", "content": content, "tool_calls": calls})
        }
        Role::Assistant => json!({"role": "assistant", "content": m.content}),
        Role::Tool => json!({
            "role": "tool",
            "tool_call_id": m.tool_call_id.clone().unwrap_or_default(),
            "content": m.content,
        }),
    }
}

pub(crate) fn wire_request(model: &str, r: &Request, stream: bool, flavour: Flavour) -> Value {
    let mut body = json!({
        "model": model,
        "messages": r.messages.iter().map(|m| wire_message(m, flavour)).collect::<Vec<_>>(),
        "stream": stream,
    });
    let obj = body.as_object_mut();
    let Some(obj) = obj else { return body };
    if let Some(t) = r.temperature {
        obj.insert("temperature".into(), json!(t));
    }
    if let Some(n) = r.max_tokens {
        let field = if flavour.max_completion_tokens {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        obj.insert(field.into(), json!(n));
    }
    if !r.stop.is_empty() {
        obj.insert("stop".into(), json!(r.stop));
    }
    match &r.response_format {
        ResponseFormat::Text => {}
        ResponseFormat::JsonObject => {
            obj.insert("response_format".into(), json!({"type": "json_object"}));
        }
        ResponseFormat::JsonSchema { name, schema } => {
            // OpenAI guarantees the shape only in strict mode, which takes its own dialect;
            // other servers get the schema as written, bounds and all.
            let (schema, strict) = match strict::strict_variant(schema) {
                Some(variant) if flavour.name == "openai" => (variant, true),
                _ => (schema.clone(), strict::strict_compatible(schema)),
            };
            obj.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {
                    "name": name,
                    "schema": schema,
                    "strict": strict,
                }}),
            );
        }
    }
    if !r.tools.is_empty() {
        let tools: Vec<Value> = r
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.parameters,
                }})
            })
            .collect();
        obj.insert("tools".into(), Value::Array(tools));
        let choice = match &r.tool_choice {
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
            _ => json!("auto"),
        };
        obj.insert("tool_choice".into(), choice);
    }
    if stream && flavour.streamed_usage {
        obj.insert("stream_options".into(), json!({"include_usage": true}));
    }
    body
}

#[derive(Deserialize)]
struct WireCompletion {
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    tool_calls: Vec<WireToolCall>,
}

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: WireFunction,
}

#[derive(Deserialize, Default)]
struct WireFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        Usage::new(u.prompt_tokens, u.completion_tokens)
    }
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
struct WireChunk {
    #[serde(default, deserialize_with = "null_as_empty")]
    choices: Vec<WireChunkChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChunkChoice {
    #[serde(default)]
    delta: Option<WireDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    tool_calls: Vec<WireToolCall>,
}

struct StreamDecoder {
    provider: String,
    key: Option<ApiKey>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    /// Wire index → (our index, id seen, name seen).
    calls: BTreeMap<usize, (usize, bool, bool)>,
}

impl Decoder for StreamDecoder {
    type Item = SseEvent;

    fn feed(&mut self, event: SseEvent, out: &mut Vec<Chunk>) -> Result<bool, LlmError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            if let Some(usage) = self.usage {
                out.push(Chunk::Usage(usage));
            }
            out.push(Chunk::Finish(self.finish.clone().unwrap_or_default()));
            return Ok(true);
        }
        if data.is_empty() {
            return Ok(false);
        }
        if let Some(info) = parse_error(data) {
            return Err(http::stream_error(&self.provider, info, self.key.as_ref()));
        }
        let chunk: WireChunk =
            serde_json::from_str(data).map_err(|e| LlmError::InvalidResponse {
                provider: self.provider.clone(),
                message: format!("a stream chunk is not valid JSON: {e}"),
            })?;
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage.into());
        }
        // Only the first choice is used; we never ask for more.
        if let Some(choice) = chunk.choices.into_iter().next() {
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                    out.push(Chunk::Text(text));
                }
                if let Some(refusal) = delta.refusal.filter(|t| !t.is_empty()) {
                    out.push(Chunk::Refusal(refusal));
                }
                for (position, call) in delta.tool_calls.into_iter().enumerate() {
                    let wire_index = call.index.unwrap_or(position);
                    let next = self.calls.len();
                    let slot = self.calls.entry(wire_index).or_insert((next, false, false));
                    // Some servers repeat id and name in every fragment: pass them once.
                    let id = call.id.filter(|_| !std::mem::replace(&mut slot.1, true));
                    let name = call
                        .function
                        .name
                        .filter(|_| !std::mem::replace(&mut slot.2, true));
                    let arguments = call.function.arguments.unwrap_or_default();
                    if id.is_some() || name.is_some() || !arguments.is_empty() {
                        out.push(Chunk::ToolCall {
                            index: slot.0,
                            id,
                            name,
                            arguments,
                        });
                    }
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.finish = Some(finish_reason(&reason));
            }
        }
        Ok(false)
    }

    fn truncated(&self) -> LlmError {
        LlmError::InvalidResponse {
            provider: self.provider.clone(),
            message: "the stream ended without `data: [DONE]` (truncated)".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::replay::sse_all_cuts;

    fn decoder() -> StreamDecoder {
        StreamDecoder {
            provider: "p".into(),
            key: None,
            finish: None,
            usage: None,
            calls: BTreeMap::new(),
        }
    }

    fn crlf(body: &[u8]) -> Vec<u8> {
        String::from_utf8(body.to_vec())
            .unwrap()
            .replace('\n', "\r\n")
            .into_bytes()
    }

    fn cr(body: &[u8]) -> Vec<u8> {
        String::from_utf8(body.to_vec())
            .unwrap()
            .replace('\n', "\r")
            .into_bytes()
    }

    #[test]
    fn text_stream_survives_every_cut_and_line_ending() {
        let body = include_bytes!("../../tests/recordings/openai/text.sse");
        let mut bom = vec![0xEF, 0xBB, 0xBF];
        bom.extend_from_slice(body);
        for variant in [body.to_vec(), crlf(body), cr(body), bom] {
            let r = sse_all_cuts(&variant, decoder).unwrap();
            assert_eq!(r.content, "Hello, wörld — ✓");
            assert_eq!(r.usage, Usage::new(12, 5));
            assert_eq!(r.finish_reason, FinishReason::Stop);
        }
    }

    #[test]
    fn unicode_line_separators_are_not_line_breaks() {
        let body = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\u{2028}b\u{2029}c\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        let r = sse_all_cuts(body.as_bytes(), decoder).unwrap();
        assert_eq!(r.content, "a\u{2028}b\u{2029}c");
    }

    #[test]
    fn comments_and_unknown_fields_are_ignored_and_bare_data_is_empty() {
        let body = ": hello\n\nid: 1\nretry: 10\nfoo: bar\ndata:\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        let r = sse_all_cuts(body.as_bytes(), decoder).unwrap();
        assert_eq!(r.content, "x");
    }

    #[test]
    fn tool_calls_multi_line_data_and_truncation() {
        let tools = sse_all_cuts(
            include_bytes!("../../tests/recordings/openai/tools-parallel.sse"),
            decoder,
        )
        .unwrap();
        let names: Vec<&str> = tools.tool_calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["get_weather", "get_time", "ping"]);
        assert_eq!(tools.tool_calls[1].arguments, json!({"tz": "CET"}));
        let multi = sse_all_cuts(
            include_bytes!("../../tests/recordings/openai/multiline-data.sse"),
            decoder,
        )
        .unwrap();
        assert_eq!(multi.content, "Hello, wörld — ✓");
        let cut = sse_all_cuts(
            include_bytes!("../../tests/recordings/openai/no-done.sse"),
            decoder,
        )
        .unwrap_err();
        assert!(cut.contains("truncated"), "{cut}");
    }

    /// llama-cpp-python constrains JSON object mode to a schema given beside it: callers
    /// must keep asking with the schema (schema mode), or a re-prompt goes out without it.
    #[test]
    fn a_server_that_takes_the_schema_beside_json_object_counts_as_schema_mode() {
        let url = "http://127.0.0.1:1/caps-test/v1";
        let python = OpenAi::new("m", None)
            .with_base_url(url)
            .with_flavour(Flavour::llama_cpp_python());
        assert!(python.capabilities().json_schema);
        let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        let asked = Request::new(vec![Message::user("hi")]).with_response_format(
            ResponseFormat::JsonSchema {
                name: "plan".into(),
                schema: schema.clone(),
            },
        );
        let body = python.body_at(
            &asked,
            Level::Schema,
            Level::Schema.within(&Flavour::llama_cpp_python()),
            false,
            Flavour::llama_cpp_python(),
        );
        assert_eq!(
            body["response_format"],
            json!({"type": "json_object", "schema": schema})
        );
        // A server without that takes no schema: JSON object mode only.
        let plain = OpenAi::new("m", None)
            .with_base_url("http://127.0.0.1:1/caps-test-plain/v1")
            .with_flavour(Flavour::compatible().with_detect(false));
        assert!(!plain.capabilities().json_schema && plain.capabilities().json_object);
    }

    #[test]
    fn a_known_context_window_bounds_the_token_cap() {
        let url = "http://127.0.0.1:1/fit-test/v1";
        let model = OpenAi::new("m", None)
            .with_base_url(url)
            .with_flavour(Flavour::llama_cpp_python());
        let request = Request::new(vec![Message::user("x".repeat(300))]).with_max_tokens(13_328);
        let mut body = wire_request("m", &request, false, Flavour::llama_cpp_python());
        assert_eq!(
            model.fit_to_context(&mut body),
            Some(13_328),
            "nothing known yet"
        );
        endpoint::context(url, "p", 2048, "test");
        let cap = model.fit_to_context(&mut body).unwrap();
        assert_eq!(cap, 2048 - (100 + 8 + 16));
        assert_eq!(body["max_tokens"], json!(cap));
    }

    #[test]
    fn tool_call_messages_follow_the_flavour() {
        let m = Message::assistant_tool_calls(
            "",
            vec![crate::types::ToolCall::new("c1", "f", json!({"x": 1}))],
        );
        assert_eq!(wire_message(&m, Flavour::openai())["content"], Value::Null);
        assert_eq!(
            wire_message(&m, Flavour::compatible())["content"],
            json!("")
        );
        assert_eq!(
            wire_message(&m, Flavour::openai())["tool_calls"][0]["function"]["arguments"],
            json!("{\"x\":1}")
        );
    }
}
