//! What [`FakeOpenAi`](super::FakeOpenAi) answers, and how an answer is written in
//! OpenAI's wire format: a chat completion, a stream of `chat.completion.chunk` events
//! ending with `data: [DONE]`, or an error body.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::FakeRequest;

/// A function that decides a reply from the request.
pub type Responder = Arc<dyn Fn(&FakeRequest) -> FakeReply + Send + Sync>;

/// What the fake server answers.
#[derive(Clone)]
#[non_exhaustive]
pub enum FakeReply {
    /// A completion with this text.
    Text(String),
    /// A completion that calls these tools (`finish_reason: "tool_calls"`).
    ToolCalls(Vec<FakeToolCall>),
    /// An HTTP error with an OpenAI-shaped body: `{"error": {"message", "type", "code"}}`.
    Error {
        /// The HTTP status.
        status: u16,
        /// The error's message.
        message: String,
        /// Sent as `retry-after` (whole seconds, rounded up) and `retry-after-ms`.
        retry_after: Option<Duration>,
    },
    /// The reply a function of the request decides.
    With(Responder),
    /// A chat completion body sent as it is, with status 200: a recorded reply replayed
    /// (its finish reason and usage included). A streamed request gets a 400.
    Raw(Value),
}

impl FakeReply {
    /// A completion with this text.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text(text.into())
    }

    /// A completion that calls one tool with these arguments.
    pub fn tool_call(name: impl Into<String>, arguments: Value) -> Self {
        Self::ToolCalls(vec![FakeToolCall::new(name, arguments)])
    }

    /// An HTTP error with this status and message.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self::Error {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A 429 that asks the client to wait `retry_after`.
    pub fn rate_limited(retry_after: Duration) -> Self {
        Self::Error {
            status: 429,
            message: "rate limit reached for requests".to_owned(),
            retry_after: Some(retry_after),
        }
    }

    /// The reply `f` decides for each request.
    pub fn with(f: impl Fn(&FakeRequest) -> FakeReply + Send + Sync + 'static) -> Self {
        Self::With(Arc::new(f))
    }

    /// Follows [`FakeReply::With`] until a concrete reply.
    pub(super) fn resolve(mut self, request: &FakeRequest) -> Self {
        while let Self::With(f) = self {
            self = f(request);
        }
        self
    }
}

impl std::fmt::Debug for FakeReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(t) => f.debug_tuple("Text").field(t).finish(),
            Self::ToolCalls(calls) => f.debug_tuple("ToolCalls").field(calls).finish(),
            Self::Error {
                status,
                message,
                retry_after,
            } => f
                .debug_struct("Error")
                .field("status", status)
                .field("message", message)
                .field("retry_after", retry_after)
                .finish(),
            Self::With(_) => f.write_str("With(..)"),
            Self::Raw(body) => f.debug_tuple("Raw").field(body).finish(),
        }
    }
}

/// One tool call of a [`FakeReply::ToolCalls`]; its id is `call_N`, N counting from 1.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FakeToolCall {
    /// The tool's name.
    pub name: String,
    /// The arguments (sent as a JSON string, as OpenAI does).
    pub arguments: Value,
}

impl FakeToolCall {
    /// A call of `name` with `arguments`.
    pub fn new(name: impl Into<String>, arguments: Value) -> Self {
        Self {
            name: name.into(),
            arguments,
        }
    }
}

/// Characters per streamed piece of text or arguments, so clients see several deltas.
const PIECE: usize = 16;

/// About one token per four characters, and at least one.
fn tokens(chars: usize) -> u64 {
    chars as u64 / 4 + 1
}

/// A concrete reply (not [`FakeReply::With`]) written for `request`.
pub(super) fn render(reply: FakeReply, request: &FakeRequest, prompt_chars: usize) -> Response {
    let (text, calls) = match reply {
        FakeReply::Text(text) => (text, Vec::new()),
        FakeReply::ToolCalls(calls) => (String::new(), calls),
        FakeReply::Error {
            status,
            message,
            retry_after,
        } => return error_response(status, &message, retry_after),
        // `resolve` leaves none; answer like a server with a bug rather than panic.
        FakeReply::With(_) => {
            return error_response(500, "the responder returned no reply", None);
        }
        FakeReply::Raw(_) if request.stream => {
            return error_response(400, "a raw reply cannot be streamed", None);
        }
        FakeReply::Raw(body) => {
            return ([("content-type", "application/json")], body.to_string()).into_response();
        }
    };
    let completion_chars = text.len()
        + calls
            .iter()
            .map(|c| c.name.len() + c.arguments.to_string().len())
            .sum::<usize>();
    let usage = json!({
        "prompt_tokens": tokens(prompt_chars),
        "completion_tokens": tokens(completion_chars),
        "total_tokens": tokens(prompt_chars) + tokens(completion_chars),
    });
    let finish = if calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    if request.stream {
        let body = sse(&request.model, &text, &calls, finish, usage);
        return ([("content-type", "text/event-stream")], body).into_response();
    }
    let mut message = json!({"role": "assistant", "content": text});
    if !calls.is_empty() {
        message["content"] = Value::Null;
        message["tool_calls"] = calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({"id": call_id(i), "type": "function",
                       "function": {"name": c.name, "arguments": c.arguments.to_string()}})
            })
            .collect();
    }
    let body = json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": request.model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    });
    ([("content-type", "application/json")], body.to_string()).into_response()
}

fn call_id(index: usize) -> String {
    format!("call_{}", index + 1)
}

/// `s` in pieces of at most [`PIECE`] characters (none for an empty string).
fn pieces(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(PIECE).map(|p| p.iter().collect()).collect()
}

/// The body of a streamed reply, as OpenAI writes it: a first chunk with the role, the
/// text in several deltas, each tool call opened with its id and name and its arguments
/// in fragments, a chunk with the finish reason, a chunk with the usage and no choices
/// (what `stream_options.include_usage` asks for), then `data: [DONE]`.
fn sse(model: &str, text: &str, calls: &[FakeToolCall], finish: &str, usage: Value) -> String {
    let chunk = |choices: Value| {
        json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
               "model": model, "choices": choices})
    };
    let delta = |delta: Value, finish: Value| {
        chunk(json!([{"index": 0, "delta": delta, "finish_reason": finish}]))
    };
    let mut events = vec![delta(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for piece in pieces(text) {
        events.push(delta(json!({"content": piece}), Value::Null));
    }
    for (i, call) in calls.iter().enumerate() {
        events.push(delta(
            json!({"tool_calls": [{"index": i, "id": call_id(i), "type": "function",
                                   "function": {"name": call.name, "arguments": ""}}]}),
            Value::Null,
        ));
        for piece in pieces(&call.arguments.to_string()) {
            events.push(delta(
                json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}),
                Value::Null,
            ));
        }
    }
    events.push(delta(json!({}), json!(finish)));
    let mut last = chunk(json!([]));
    last["usage"] = usage;
    events.push(last);
    let mut body = String::new();
    for event in events {
        body.push_str(&format!("data: {event}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    body
}

/// OpenAI's `type` and `code` for an error status.
fn error_kind(status: u16) -> (&'static str, Value) {
    match status {
        401 | 403 => ("invalid_request_error", json!("invalid_api_key")),
        429 => ("requests", json!("rate_limit_exceeded")),
        400..=499 => ("invalid_request_error", Value::Null),
        _ => ("server_error", Value::Null),
    }
}

/// An OpenAI-shaped error response.
pub(super) fn error_response(
    status: u16,
    message: &str,
    retry_after: Option<Duration>,
) -> Response {
    let (kind, code) = error_kind(status);
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response();
    if let Some(after) = retry_after {
        let headers = response.headers_mut();
        let secs = after.as_millis().div_ceil(1000);
        for (name, value) in [
            ("retry-after", secs.to_string()),
            ("retry-after-ms", after.as_millis().to_string()),
        ] {
            if let Ok(value) = value.parse() {
                headers.insert(name, value);
            }
        }
    }
    response
}
