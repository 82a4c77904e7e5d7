//! Test support (feature `test-support`): [`FakeOpenAi`], a fake OpenAI-compatible chat
//! completions server on loopback with a fixed latency per call, which counts requests per
//! step and the most requests in flight at once. For tests and benchmarks of runners,
//! strategies and adapters that talk real HTTP. [`workloads`]: the benchmarks' reference
//! plans.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use plan_exec::testing::{FakeOpenAi, FakeOpenAiConfig};
//!
//! let server = FakeOpenAi::start(FakeOpenAiConfig::default().with_latency(Duration::from_millis(300))).await?;
//! // Point an OpenAI-compatible provider at `server.base_url()` ("http://127.0.0.1:PORT/v1").
//! assert_eq!(server.total_requests(), 0);
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub mod workloads;

/// A request the fake server received.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FakeRequest {
    /// The step the request is for (see [`step_key`]), or `""`.
    pub key: String,
    /// The model named in the request.
    pub model: String,
    /// The messages' text, in order, as (role, content).
    pub messages: Vec<(String, String)>,
    /// Whether a streamed reply was asked for.
    pub stream: bool,
    /// The whole JSON body.
    pub body: Value,
    /// When it arrived, since the server started.
    pub arrived: Duration,
}

impl FakeRequest {
    /// The text of the last user message.
    pub fn last_user(&self) -> &str {
        self.messages
            .iter()
            .rev()
            .find(|(r, _)| r == "user")
            .map_or("", |(_, c)| c.as_str())
    }
}

/// What the fake server answers.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum FakeReply {
    /// A normal completion with this text.
    Text(String),
    /// An HTTP error with this status and message (OpenAI error shape).
    Error(u16, String),
}

type Responder = Arc<dyn Fn(&FakeRequest) -> FakeReply + Send + Sync>;

/// How the fake server behaves.
#[derive(Clone)]
#[non_exhaustive]
pub struct FakeOpenAiConfig {
    /// How long each call takes before the reply is sent.
    pub latency: Duration,
    responder: Responder,
}

impl std::fmt::Debug for FakeOpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeOpenAiConfig")
            .field("latency", &self.latency)
            .finish_non_exhaustive()
    }
}

impl Default for FakeOpenAiConfig {
    /// No latency; replies `result of step <key>`.
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            responder: Arc::new(|r: &FakeRequest| FakeReply::Text(default_reply(&r.key))),
        }
    }
}

impl FakeOpenAiConfig {
    /// Sets the latency of every call.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Decides each reply with a function of the request.
    pub fn with_responder(
        mut self,
        f: impl Fn(&FakeRequest) -> FakeReply + Send + Sync + 'static,
    ) -> Self {
        self.responder = Arc::new(f);
        self
    }
}

/// The default reply for a step: `result of step <key>`.
pub fn default_reply(key: &str) -> String {
    format!("result of step {key}")
}

/// The step a prompt is for: the id in ``Your step (`ID`)`` or ``(step `ID`)`` (the LLM
/// step executor's prompt), else the first backquoted word, else `""`.
pub fn step_key(prompt: &str) -> String {
    for marker in ["Your step (`", "(step `"] {
        if let Some(at) = prompt.find(marker) {
            let rest = &prompt[at + marker.len()..];
            if let Some(end) = rest.find('`') {
                return rest[..end].to_owned();
            }
        }
    }
    let mut parts = prompt.split('`');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(key), Some(_)) => key.to_owned(),
        _ => String::new(),
    }
}

struct Shared {
    config: FakeOpenAiConfig,
    started: Instant,
    requests: Mutex<Vec<FakeRequest>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// A running fake OpenAI-compatible server; stops when dropped.
pub struct FakeOpenAi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for FakeOpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeOpenAi")
            .field("addr", &self.addr)
            .finish()
    }
}

impl FakeOpenAi {
    /// Starts a server on a free loopback port.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(config: FakeOpenAiConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            started: Instant::now(),
            requests: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/chat/completions", post(chat))
            .with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            shared,
            stop: Some(stop),
        })
    }

    /// The base URL to give an OpenAI-compatible client: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<FakeRequest> {
        self.shared
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Requests so far.
    pub fn total_requests(&self) -> usize {
        self.shared.requests.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Requests so far for the step `key`.
    pub fn count_for(&self, key: &str) -> usize {
        self.shared
            .requests
            .lock()
            .map(|r| r.iter().filter(|q| q.key == key).count())
            .unwrap_or(0)
    }

    /// The most requests that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Forgets the requests so far and the in-flight maximum.
    pub fn reset(&self) {
        if let Ok(mut r) = self.shared.requests.lock() {
            r.clear();
        }
        self.shared.max_in_flight.store(0, Ordering::SeqCst);
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

fn tokens(chars: usize) -> u64 {
    chars.div_ceil(4) as u64
}

async fn chat(State(shared): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    let messages: Vec<(String, String)> = body
        .get("messages")
        .and_then(Value::as_array)
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    (
                        m.get("role")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                        m.get("content").map(text_of).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut request = FakeRequest {
        key: String::new(),
        model: body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        messages,
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        body: body.clone(),
        arrived: shared.started.elapsed(),
    };
    request.key = step_key(request.last_user());
    if let Ok(mut r) = shared.requests.lock() {
        r.push(request.clone());
    }
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let reply = (shared.config.responder)(&request);
    tokio::time::sleep(shared.config.latency).await;
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);

    let prompt_chars: usize = request.messages.iter().map(|(_, c)| c.len()).sum();
    match reply {
        FakeReply::Error(status, message) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = json!({"error": {"message": message, "type": "fake_error", "code": null}});
            (status, Json(body)).into_response()
        }
        FakeReply::Text(text) => {
            let usage = json!({
                "prompt_tokens": tokens(prompt_chars),
                "completion_tokens": tokens(text.len()),
                "total_tokens": tokens(prompt_chars) + tokens(text.len()),
            });
            if request.stream {
                let chunk = |delta: Value, finish: Value| {
                    json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                           "model": request.model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
                };
                let mut sse = String::new();
                for part in [
                    chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                    chunk(json!({"content": text}), Value::Null),
                    chunk(json!({}), json!("stop")),
                ] {
                    sse.push_str(&format!("data: {part}\n\n"));
                }
                let last = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                                  "model": request.model, "choices": [], "usage": usage});
                sse.push_str(&format!("data: {last}\n\ndata: [DONE]\n\n"));
                ([("content-type", "text/event-stream")], sse).into_response()
            } else {
                Json(json!({
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": 0,
                    "model": request.model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}],
                    "usage": usage,
                }))
                .into_response()
            }
        }
    }
}
