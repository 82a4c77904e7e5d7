//! [`FakeOpenAi`]: a fake OpenAI-compatible chat completions server on loopback that
//! answers by meaning rather than by recording. Replies are chosen by rules on the
//! messages' text or by a function of the request; requests are recorded, counted by
//! needle and by a key of the caller's choosing, and the most requests in flight at once
//! is kept. The workspace's one fake OpenAI server: runner and strategy benchmarks,
//! crash tests and the CLI's end-to-end tests all use it.
//!
//! ```no_run
//! use std::time::Duration;
//! use plan_llm::testing::{FakeOpenAi, FakeReply};
//! use plan_llm::{Message, OpenAi, Provider, Request};
//!
//! # async fn demo() -> Result<(), plan_llm::LlmError> {
//! let server = FakeOpenAi::start().await;
//! server
//!     .on("You are a planner", FakeReply::text(r#"{"goal": "g", "steps": []}"#))
//!     .on("Flaky", FakeReply::error(503, "the server had an error"))
//!     .otherwise(FakeReply::with(|r| FakeReply::text(format!("echo: {}", r.last_user()))))
//!     .latency(Duration::from_millis(50));
//! let model = OpenAi::new("fake-model", None).with_base_url(server.base_url());
//! let reply = model.complete(&Request::new(vec![Message::user("hello")])).await?;
//! assert_eq!(reply.content, "echo: hello");
//! assert_eq!(server.count("hello"), 1);
//! # Ok(()) }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::oneshot;

mod reply;
#[cfg(test)]
mod tests;

pub use reply::{FakeReply, FakeToolCall, Responder};

/// A request the fake server received.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FakeRequest {
    /// The request's key (see [`FakeOpenAi::key_by`]), or `""`.
    pub key: String,
    /// The model named in the request.
    pub model: String,
    /// The messages in order, as (role, text); the text of content parts is joined.
    pub messages: Vec<(String, String)>,
    /// Whether a streamed reply was asked for.
    pub stream: bool,
    /// The whole JSON body.
    pub body: Value,
    /// When it arrived, since the server started.
    pub arrived: Duration,
    /// The `Authorization` header, if one was sent (`Bearer KEY`).
    pub authorization: Option<String>,
}

impl FakeRequest {
    fn from_body(body: Value, arrived: Duration) -> Self {
        let messages = body
            .get("messages")
            .and_then(Value::as_array)
            .map(|ms| {
                ms.iter()
                    .map(|m| {
                        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
                        (
                            role.to_owned(),
                            m.get("content").map(text_of).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            key: String::new(),
            model: body
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            messages,
            stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
            body,
            arrived,
            authorization: None,
        }
    }

    /// Every message's text, each followed by a newline: what rules and
    /// [`FakeOpenAi::count`] search.
    pub fn text(&self) -> String {
        let mut text = String::new();
        for (_, content) in &self.messages {
            text.push_str(content);
            text.push('\n');
        }
        text
    }

    /// The text of the last user message, or `""`.
    pub fn last_user(&self) -> &str {
        self.messages
            .iter()
            .rev()
            .find(|(r, _)| r == "user")
            .map_or("", |(_, c)| c.as_str())
    }

    /// The text of the first tool result message, if the conversation has one.
    pub fn tool_result(&self) -> Option<&str> {
        self.messages
            .iter()
            .find(|(r, _)| r == "tool")
            .map(|(_, c)| c.as_str())
    }

    /// The names of the tools offered to the model, in order.
    pub fn tools(&self) -> Vec<&str> {
        self.body
            .get("tools")
            .and_then(Value::as_array)
            .map(|tools| {
                tools
                    .iter()
                    .filter_map(|t| t.pointer("/function/name").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

type KeyFn = Arc<dyn Fn(&FakeRequest) -> String + Send + Sync>;

struct Rule {
    needle: String,
    reply: FakeReply,
}

struct Config {
    rules: Vec<Rule>,
    fallback: FakeReply,
    latency: Duration,
    key: Option<KeyFn>,
    models: Vec<String>,
    models_body: Option<Value>,
    /// `GET /models` requests still to answer with 503 (a busy server).
    models_unavailable: usize,
    /// `GET /models` requests received.
    models_asked: usize,
}

struct Shared {
    started: Instant,
    config: Mutex<Config>,
    requests: Mutex<Vec<FakeRequest>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Shared {
    fn config(&self) -> MutexGuard<'_, Config> {
        self.config.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn requests(&self) -> MutexGuard<'_, Vec<FakeRequest>> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running fake OpenAI-compatible server on a free loopback port.
///
/// Routes: `POST /v1/chat/completions` and `POST /chat/completions` (complete or, with
/// `stream: true`, server-sent events in OpenAI's format), `GET /v1/models` and
/// `GET /models`. Each reply carries usage (about a token per four characters). A request
/// is answered by the first rule whose needle occurs in its messages' text
/// ([`FakeRequest::text`]), else by [`otherwise`](Self::otherwise) (default: the text
/// `ok`), after the [`latency`](Self::latency).
///
/// Handles are cheap clones of one server; it stops when the last one is dropped.
#[derive(Clone)]
pub struct FakeOpenAi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Dropping the last clone ends the server's graceful-shutdown wait.
    _stop: Arc<oneshot::Sender<()>>,
}

impl std::fmt::Debug for FakeOpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeOpenAi")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeOpenAi {
    /// Starts a server on a free loopback port, on the current tokio runtime.
    ///
    /// # Panics
    /// When no local port can be bound (a test environment problem).
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("cannot bind a local port for the fake server: {e}"));
        let (server, serve) = Self::serve(listener);
        tokio::spawn(serve);
        server
    }

    /// Starts a server on a thread of its own with its own runtime, for synchronous tests
    /// and for a server that must outlive the runtimes of the code under test.
    ///
    /// # Panics
    /// When no runtime can be built or no local port bound.
    pub fn start_detached() -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("fake-openai".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                        Ok(listener) => {
                            let (server, serve) = Self::serve(listener);
                            let _ = tx.send(Ok(server));
                            serve.await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
            });
        if let Err(e) = spawned {
            panic!("cannot start the fake server's thread: {e}");
        }
        match rx.recv() {
            Ok(Ok(server)) => server,
            Ok(Err(e)) => panic!("cannot start the fake server: {e}"),
            Err(_) => panic!("the fake server's thread ended before it started"),
        }
    }

    /// The server's handle and the future that serves `listener` until every handle is
    /// dropped.
    fn serve(
        listener: tokio::net::TcpListener,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("the fake server has no local address: {e}"));
        let shared = Arc::new(Shared {
            started: Instant::now(),
            config: Mutex::new(Config {
                rules: Vec::new(),
                fallback: FakeReply::text("ok"),
                latency: Duration::ZERO,
                key: None,
                models: vec!["fake-model".to_owned()],
                models_body: None,
                models_unavailable: 0,
                models_asked: 0,
            }),
            requests: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .route("/models", get(models))
            .fallback(|| async { reply::error_response(404, "no such route", None) })
            .with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let serve = async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        };
        let server = Self {
            addr,
            shared,
            _stop: Arc::new(stop),
        };
        (server, serve)
    }

    /// The base URL to give an OpenAI-compatible client: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds a rule, checked after the earlier ones: requests whose text contains `needle`
    /// get `reply`.
    pub fn on(&self, needle: &str, reply: FakeReply) -> &Self {
        self.shared.config().rules.push(Rule {
            needle: needle.to_owned(),
            reply,
        });
        self
    }

    /// Adds a rule checked before every earlier one.
    pub fn on_first(&self, needle: &str, reply: FakeReply) -> &Self {
        self.shared.config().rules.insert(
            0,
            Rule {
                needle: needle.to_owned(),
                reply,
            },
        );
        self
    }

    /// The reply when no rule matches (default: the text `ok`). With
    /// [`FakeReply::with`], a function of the request decides every such reply.
    pub fn otherwise(&self, reply: FakeReply) -> &Self {
        self.shared.config().fallback = reply;
        self
    }

    /// How long each call takes before its reply is sent (default: none).
    pub fn latency(&self, latency: Duration) -> &Self {
        self.shared.config().latency = latency;
        self
    }

    /// Keys each request by `f` on arrival (stored in [`FakeRequest::key`], counted by
    /// [`count_for`](Self::count_for)); e.g. the step a prompt is for.
    pub fn key_by(&self, f: impl Fn(&FakeRequest) -> String + Send + Sync + 'static) -> &Self {
        self.shared.config().key = Some(Arc::new(f));
        self
    }

    /// The model ids `GET /v1/models` lists (default: `fake-model`).
    pub fn models<S: Into<String>>(&self, ids: impl IntoIterator<Item = S>) -> &Self {
        self.shared.config().models = ids.into_iter().map(Into::into).collect();
        self
    }

    /// Answers the next `n` `GET /v1/models` with 503, as a server too busy to say who it
    /// is (llama-cpp-python answers it between completions only).
    pub fn models_unavailable(&self, n: usize) -> &Self {
        self.shared.config().models_unavailable = n;
        self
    }

    /// How many `GET /v1/models` requests the server received.
    pub fn models_asked(&self) -> usize {
        self.shared.config().models_asked
    }

    /// Answers `GET /v1/models` with this body as it is (a server's own shape), instead of
    /// the list of [`models`](Self::models).
    pub fn models_body(&self, body: Value) -> &Self {
        self.shared.config().models_body = Some(body);
        self
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<FakeRequest> {
        self.shared.requests().clone()
    }

    /// Requests so far.
    pub fn total_requests(&self) -> usize {
        self.shared.requests().len()
    }

    /// Requests so far whose text contains `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.shared
            .requests()
            .iter()
            .filter(|r| r.text().contains(needle))
            .count()
    }

    /// Requests so far whose key is `key`.
    pub fn count_for(&self, key: &str) -> usize {
        self.shared
            .requests()
            .iter()
            .filter(|r| r.key == key)
            .count()
    }

    /// The most requests that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Forgets the requests so far and the in-flight maximum; rules, replies, latency and
    /// key stay.
    pub fn reset(&self) {
        self.shared.requests().clear();
        self.shared.max_in_flight.store(0, Ordering::SeqCst);
    }
}

/// Counts a request in flight until dropped (also when the client goes away mid-call).
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn chat(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return reply::error_response(400, &format!("the body is not JSON: {e}"), None);
        }
    };
    let mut request = FakeRequest::from_body(body, shared.started.elapsed());
    request.authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = request.text();
    let (key, rule, latency) = {
        let config = shared.config();
        let rule = config
            .rules
            .iter()
            .find(|r| text.contains(&r.needle))
            .map_or_else(|| config.fallback.clone(), |r| r.reply.clone());
        (config.key.clone(), rule, config.latency)
    };
    if let Some(key) = key {
        request.key = key(&request);
    }
    shared.requests().push(request.clone());
    let in_flight = InFlight::enter(&shared);
    let reply = rule.resolve(&request);
    tokio::time::sleep(latency).await;
    drop(in_flight);
    reply::render(reply, &request, text.len())
}

async fn models(State(shared): State<Arc<Shared>>) -> Response {
    use axum::response::IntoResponse as _;
    {
        let mut config = shared.config();
        config.models_asked += 1;
        if config.models_unavailable > 0 {
            config.models_unavailable -= 1;
            return (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "the server is busy",
            )
                .into_response();
        }
    }
    if let Some(body) = shared.config().models_body.clone() {
        return Json(body).into_response();
    }
    let data: Vec<Value> = shared
        .config()
        .models
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "fake"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}
