//! An OpenAI-compatible chat completions server on loopback, for driving `plan` end to end.
//!
//! Replies are chosen by rules: the first rule whose needle occurs in the request's messages
//! answers; requests are recorded so tests can count what the model was asked.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// A reply rule.
#[derive(Clone)]
pub struct Rule {
    /// Text the request's messages must contain.
    pub needle: String,
    /// The reply content.
    pub reply: Reply,
}

/// What a rule answers.
#[derive(Clone)]
pub enum Reply {
    /// This text.
    Text(String),
    /// An HTTP error status with an OpenAI error body.
    Error(u16),
    /// The text of a function of the request's messages.
    With(Arc<dyn Fn(&str) -> String + Send + Sync>),
}

#[derive(Default)]
struct Inner {
    rules: Vec<Rule>,
    fallback: Option<Reply>,
    latency: Duration,
    requests: Vec<Value>,
}

/// A running fake server; stops when the test process ends.
#[derive(Clone)]
pub struct FakeOpenAi {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl FakeOpenAi {
    /// Starts a server on a free loopback port, in a background thread of its own.
    pub fn start() -> FakeOpenAi {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let state = inner.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let app = Router::new()
                    .route("/v1/chat/completions", post(chat))
                    .route("/chat/completions", post(chat))
                    .with_state(state);
                axum::serve(listener, app).await.unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        FakeOpenAi { addr, inner }
    }

    /// The base URL to pass as `--base-url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Adds a rule: requests containing `needle` get `reply`.
    pub fn on(&self, needle: &str, reply: Reply) -> &Self {
        self.inner.lock().unwrap().rules.push(Rule {
            needle: needle.to_owned(),
            reply,
        });
        self
    }

    /// Adds a rule that is checked before every earlier one.
    pub fn on_first(&self, needle: &str, reply: Reply) -> &Self {
        self.inner.lock().unwrap().rules.insert(
            0,
            Rule {
                needle: needle.to_owned(),
                reply,
            },
        );
        self
    }

    /// The reply when no rule matches (default: the text "ok").
    pub fn otherwise(&self, reply: Reply) -> &Self {
        self.inner.lock().unwrap().fallback = Some(reply);
        self
    }

    /// Delay before every reply.
    pub fn latency(&self, latency: Duration) -> &Self {
        self.inner.lock().unwrap().latency = latency;
        self
    }

    /// Every request body received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// How many requests contained `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| messages_text(r).contains(needle))
            .count()
    }
}

/// All message contents of a request, joined.
pub fn messages_text(request: &Value) -> String {
    let mut text = String::new();
    if let Some(messages) = request["messages"].as_array() {
        for m in messages {
            match &m["content"] {
                Value::String(s) => text.push_str(s),
                Value::Array(parts) => {
                    for p in parts {
                        if let Some(s) = p["text"].as_str() {
                            text.push_str(s);
                        }
                    }
                }
                _ => {}
            }
            text.push('\n');
        }
    }
    text
}

async fn chat(
    State(state): State<Arc<Mutex<Inner>>>,
    _headers: HeaderMap,
    body: String,
) -> Response {
    let request: Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(_) => return (StatusCode::BAD_REQUEST, "bad json").into_response(),
    };
    let text = messages_text(&request);
    let (reply, latency) = {
        let mut inner = state.lock().unwrap();
        inner.requests.push(request.clone());
        let reply = inner
            .rules
            .iter()
            .find(|r| text.contains(&r.needle))
            .map(|r| r.reply.clone())
            .or_else(|| inner.fallback.clone())
            .unwrap_or_else(|| Reply::Text("ok".to_owned()));
        (reply, inner.latency)
    };
    tokio::time::sleep(latency).await;
    let content = match reply {
        Reply::Text(t) => t,
        Reply::With(f) => f(&text),
        Reply::Error(status) => {
            let body = json!({"error": {"message": "fake failure", "type": "server_error"}});
            return (
                StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/json")],
                body.to_string(),
            )
                .into_response();
        }
    };
    let prompt_tokens = (text.len() / 4) as u64 + 1;
    let completion_tokens = (content.len() / 4) as u64 + 1;
    if request["stream"].as_bool() == Some(true) {
        let mut sse = String::new();
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                   "model": "fake", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        sse.push_str(&format!(
            "data: {}\n\n",
            chunk(json!({"role": "assistant", "content": ""}), Value::Null)
        ));
        // Several pieces, split on char boundaries, so streamed parsing is exercised.
        let chars: Vec<char> = content.chars().collect();
        for piece in chars.chunks(16) {
            let piece: String = piece.iter().collect();
            sse.push_str(&format!(
                "data: {}\n\n",
                chunk(json!({"content": piece}), Value::Null)
            ));
        }
        sse.push_str(&format!("data: {}\n\n", chunk(json!({}), json!("stop"))));
        sse.push_str(&format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                   "model": "fake", "choices": [],
                   "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                             "total_tokens": prompt_tokens + completion_tokens}})
        ));
        sse.push_str("data: [DONE]\n\n");
        return ([("content-type", "text/event-stream")], sse).into_response();
    }
    let body = json!({
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens}
    });
    ([("content-type", "application/json")], body.to_string()).into_response()
}
