//! The Ollama `/api/chat` adapter.

use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::LlmError;
use crate::http::{self, Decoder, ErrorInfo};
use crate::provider::{Capabilities, ChunkStream, Provider, collect_stream};
use crate::types::{Chunk, FinishReason, Request, Response, ResponseFormat, Role, Usage};

/// The default endpoint.
pub const OLLAMA_BASE_URL: &str = "http://localhost:11434";

/// A model served by Ollama.
///
/// ```
/// use plan_llm::{Ollama, Provider};
/// let llama = Ollama::new("llama3.2").with_base_url("http://gpu-box:11434");
/// assert_eq!(llama.name(), "ollama:llama3.2");
/// ```
#[derive(Clone, Debug)]
pub struct Ollama {
    name: String,
    model: String,
    base_url: String,
    client: reqwest::Client,
}

impl Ollama {
    /// A model on the local Ollama server.
    pub fn new(model: impl Into<String>) -> Self {
        let model = model.into();
        Self {
            name: format!("ollama:{model}"),
            model,
            base_url: OLLAMA_BASE_URL.to_owned(),
            client: http::client(),
        }
    }

    /// Talks to this server; `OLLAMA_HOST`-style values (`host`, `host:port`, with or
    /// without a scheme) are accepted.
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = normalise_host(&base_url.into());
        self
    }

    /// Reports this name (the default is `ollama:<model>`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    async fn send(&self, request: &Request, stream: bool) -> Result<reqwest::Response, LlmError> {
        let body = wire_request(&self.model, request, stream);
        let response = self
            .client
            .post(http::join(&self.base_url, "api/chat"))
            .json(&body)
            .send()
            .await
            .map_err(|e| http::transport(&self.name, e, None))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(http::read_error(&self.name, response, None, parse_error).await)
        }
    }
}

/// Turns an `OLLAMA_HOST` value into a base URL the way Ollama reads it: without a
/// scheme, `http://` and port 11434 are assumed; with one, the scheme's default port.
pub(crate) fn normalise_host(host: &str) -> String {
    let host = host.trim().trim_end_matches('/');
    if host.is_empty() {
        return OLLAMA_BASE_URL.to_owned();
    }
    if host.contains("://") {
        return host.to_owned();
    }
    let (authority, path) = match host.split_once('/') {
        Some((a, p)) => (a, format!("/{p}")),
        None => (host, String::new()),
    };
    let has_port = match authority.rsplit_once(':') {
        Some((h, p)) => {
            !p.is_empty()
                && p.bytes().all(|c| c.is_ascii_digit())
                && (!h.contains(':') || h.ends_with(']'))
        }
        None => false,
    };
    let authority = if authority.is_empty() {
        "localhost".to_owned()
    } else {
        authority.to_owned()
    };
    if has_port {
        format!("http://{authority}{path}")
    } else {
        format!("http://{authority}:11434{path}")
    }
}

#[async_trait]
impl Provider for Ollama {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        let response = self.send(request, false).await?;
        let text = response
            .text()
            .await
            .map_err(|e| http::transport(&self.name, e, None))?;
        let mut decoder = StreamDecoder::new(&self.name);
        let mut chunks = Vec::new();
        if !decoder.feed(text.trim().to_owned(), &mut chunks)? {
            return Err(LlmError::InvalidResponse {
                provider: self.name.clone(),
                message: "the reply is not complete (`done` is not true)".to_owned(),
            });
        }
        collect_stream(
            &self.name,
            Box::pin(futures::stream::iter(chunks.into_iter().map(Ok))),
        )
        .await
    }

    async fn stream(&self, request: &Request) -> Result<ChunkStream, LlmError> {
        let response = self.send(request, true).await?;
        let lines = http::ndjson_lines(&self.name, response, None);
        Ok(http::decode(lines.boxed(), StreamDecoder::new(&self.name)))
    }
}

fn parse_error(body: &str) -> Option<ErrorInfo> {
    let value: Value = serde_json::from_str(body).ok()?;
    let message = match value.get("error")? {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        other => other.to_string(),
    };
    Some(ErrorInfo {
        kind: String::new(),
        message,
        request_id: None,
    })
}

pub(crate) fn wire_request(model: &str, r: &Request, stream: bool) -> Value {
    let messages: Vec<Value> = r
        .messages
        .iter()
        .map(|m| match m.role {
            Role::System => json!({"role": "system", "content": m.content}),
            Role::Assistant if !m.tool_calls.is_empty() => json!({
                "role": "assistant",
                "content": m.content,
                "tool_calls": m.tool_calls.iter().map(|c| json!({
                    "function": {"name": c.name, "arguments": c.arguments}
                })).collect::<Vec<_>>(),
            }),
            Role::Assistant => json!({"role": "assistant", "content": m.content}),
            Role::Tool => json!({
                "role": "tool",
                "content": m.content,
                "tool_name": m.tool_name.clone().unwrap_or_default(),
            }),
            _ => json!({"role": "user", "content": m.content}),
        })
        .collect();
    // Streaming is the server's default, so `stream` is always sent.
    let mut body = json!({"model": model, "messages": messages, "stream": stream});
    let Some(obj) = body.as_object_mut() else {
        return body;
    };
    match &r.response_format {
        ResponseFormat::Text => {}
        ResponseFormat::JsonObject => {
            obj.insert("format".into(), json!("json"));
        }
        ResponseFormat::JsonSchema { schema, .. } => {
            obj.insert("format".into(), schema.clone());
        }
    }
    let mut options = serde_json::Map::new();
    if let Some(t) = r.temperature {
        options.insert("temperature".into(), json!(t));
    }
    if let Some(n) = r.max_tokens {
        options.insert("num_predict".into(), json!(n));
    }
    if !r.stop.is_empty() {
        options.insert("stop".into(), json!(r.stop));
    }
    if !options.is_empty() {
        obj.insert("options".into(), Value::Object(options));
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
    }
    body
}

#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    message: Option<WireMessage>,
    /// `/api/generate` puts the text here; accepted so either endpoint's lines decode.
    #[serde(default)]
    response: Option<String>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Deserialize)]
struct WireToolCall {
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

struct StreamDecoder {
    provider: String,
    calls: usize,
}

impl StreamDecoder {
    fn new(provider: &str) -> Self {
        Self {
            provider: provider.to_owned(),
            calls: 0,
        }
    }
}

impl Decoder for StreamDecoder {
    type Item = String;

    fn feed(&mut self, line: String, out: &mut Vec<Chunk>) -> Result<bool, LlmError> {
        if let Some(info) = parse_error(&line) {
            return Err(http::stream_error(&self.provider, info, None));
        }
        let chunk: WireChunk =
            serde_json::from_str(&line).map_err(|e| LlmError::InvalidResponse {
                provider: self.provider.clone(),
                message: format!("a reply line is not valid JSON: {e}"),
            })?;
        let text = chunk
            .message
            .as_ref()
            .and_then(|m| m.content.clone())
            .or(chunk.response);
        if let Some(text) = text.filter(|t| !t.is_empty()) {
            out.push(Chunk::Text(text));
        }
        if let Some(calls) = chunk.message.and_then(|m| m.tool_calls) {
            for call in calls {
                let index = self.calls;
                self.calls += 1;
                let arguments = match call.function.arguments {
                    Value::Null => "{}".to_owned(),
                    // Some models send the arguments as a JSON string.
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                out.push(Chunk::ToolCall {
                    index,
                    id: Some(format!("call_{index}")),
                    name: Some(call.function.name),
                    arguments,
                });
            }
        }
        if !chunk.done {
            return Ok(false);
        }
        out.push(Chunk::Usage(Usage::new(
            chunk.prompt_eval_count.unwrap_or(0),
            chunk.eval_count.unwrap_or(0),
        )));
        let finish = match chunk.done_reason.as_deref() {
            None | Some("stop") if self.calls > 0 => FinishReason::ToolCalls,
            None | Some("stop") => FinishReason::Stop,
            Some("length") => FinishReason::Length,
            Some(other) => FinishReason::Other(other.to_owned()),
        };
        out.push(Chunk::Finish(finish));
        Ok(true)
    }

    fn truncated(&self) -> LlmError {
        LlmError::InvalidResponse {
            provider: self.provider.clone(),
            message: "the stream ended without a `done: true` line (truncated)".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::replay::ndjson_all_cuts;

    #[test]
    fn streams_survive_every_cut() {
        let r = ndjson_all_cuts(
            include_bytes!("../tests/recordings/ollama/text.ndjson"),
            || StreamDecoder::new("p"),
        )
        .unwrap();
        assert_eq!(
            (r.content.as_str(), r.usage),
            ("Hello, wörld — ✓", Usage::new(12, 5))
        );
        let tools = ndjson_all_cuts(
            include_bytes!("../tests/recordings/ollama/tools.ndjson"),
            || StreamDecoder::new("p"),
        )
        .unwrap();
        assert_eq!(tools.tool_calls[0].arguments, json!({"city": "Zürich"}));
        assert_eq!(tools.finish_reason, FinishReason::ToolCalls);
        let cut = ndjson_all_cuts(
            include_bytes!("../tests/recordings/ollama/no-done.ndjson"),
            || StreamDecoder::new("p"),
        )
        .unwrap_err();
        assert!(cut.contains("truncated"), "{cut}");
    }

    #[test]
    fn ollama_host_values_become_base_urls() {
        assert_eq!(normalise_host("localhost"), "http://localhost:11434");
        assert_eq!(normalise_host("0.0.0.0:1234"), "http://0.0.0.0:1234");
        assert_eq!(
            normalise_host("https://ollama.example"),
            "https://ollama.example"
        );
        assert_eq!(normalise_host("[::1]:9000"), "http://[::1]:9000");
        assert_eq!(
            normalise_host("http://127.0.0.1:5000/"),
            "http://127.0.0.1:5000"
        );
        assert_eq!(normalise_host(""), "http://localhost:11434");
    }
}
