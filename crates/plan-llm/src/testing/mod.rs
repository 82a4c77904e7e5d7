//! Test utilities (feature `test-utils`):
//! - [`FakeOpenAi`]: the workspace's fake OpenAI-compatible chat completions server, which
//!   answers by rules on the messages or a function of the request (text, tool calls,
//!   errors, streamed or not), with latency, recorded requests and counts. For tests and
//!   benchmarks of anything that talks to a model over HTTP.
//! - [`FakeServer`]: a wire-level server that replays recordings byte for byte with reads
//!   split at chosen or random byte boundaries, and a conformance suite that runs standard
//!   checks against any [`Provider`] built for a base URL: for provider authors.
//!
//! ```no_run
//! use std::sync::Arc;
//! use plan_llm::testing::{ConformanceKit, FakeResponse, run_conformance};
//! use plan_llm::{Message, Ollama, Provider, Request};
//!
//! # async fn demo() {
//! let kit = ConformanceKit::new(
//!     Request::new(vec![Message::user("hi")]),
//!     FakeResponse::json(200, r#"{"message":{"role":"assistant","content":"Hello"},"done":true}"#),
//!     "Hello",
//!     |_status, message| format!(r#"{{"error":"{message}"}}"#),
//! );
//! let report = run_conformance(|url: &str| -> Arc<dyn Provider> {
//!     Arc::new(Ollama::new("m").with_base_url(url))
//! }, &kit).await;
//! report.assert_passed();
//! # }
//! ```
#![allow(clippy::panic)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use futures::StreamExt;

mod openai;

pub use openai::{FakeOpenAi, FakeReply, FakeRequest, FakeToolCall, Responder};

use crate::error::LlmError;
use crate::provider::{Provider, collect_stream};
use crate::types::{Chunk, Request};

/// How the fake server cuts a body into separate writes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Split {
    /// One write.
    Whole,
    /// Writes of `n` bytes.
    Every(usize),
    /// Writes of random length between 1 and `max` bytes, from a seed (reproducible).
    Random {
        /// The seed.
        seed: u64,
        /// The longest write.
        max: usize,
    },
    /// Cuts at these byte offsets.
    At(Vec<usize>),
}

impl Split {
    /// The pieces of `body`.
    pub fn pieces(&self, body: &[u8]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = match self {
            Split::Whole => Vec::new(),
            Split::Every(n) => (1..)
                .map(|i| i * (*n).max(1))
                .take_while(|&c| c < body.len())
                .collect(),
            Split::Random { seed, max } => {
                let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut at = 0usize;
                let mut cuts = Vec::new();
                loop {
                    // xorshift64*
                    state ^= state >> 12;
                    state ^= state << 25;
                    state ^= state >> 27;
                    let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
                    at += 1 + (r % (*max).max(1) as u64) as usize;
                    if at >= body.len() {
                        break cuts;
                    }
                    cuts.push(at);
                }
            }
            Split::At(at) => at.clone(),
        };
        cuts.retain(|&c| c > 0 && c < body.len());
        cuts.sort_unstable();
        cuts.dedup();
        let mut pieces = Vec::new();
        let mut start = 0;
        for c in cuts.into_iter().chain(std::iter::once(body.len())) {
            pieces.push(body[start..c].to_vec());
            start = c;
        }
        pieces
    }
}

/// One scripted HTTP response of the fake server.
#[derive(Clone, Debug)]
pub struct FakeResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    split: Split,
    delay: Duration,
    gap: Option<Duration>,
    reset_after: Option<usize>,
}

impl FakeResponse {
    /// A response with this status, headers and body.
    pub fn new(status: u16, headers: Vec<(String, String)>, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers,
            body: body.into(),
            split: Split::Whole,
            delay: Duration::ZERO,
            gap: None,
            reset_after: None,
        }
    }

    /// A JSON body.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self::new(
            status,
            vec![("content-type".into(), "application/json".into())],
            body,
        )
    }

    /// An SSE body (`text/event-stream`).
    pub fn sse(body: impl Into<Vec<u8>>) -> Self {
        Self::new(
            200,
            vec![("content-type".into(), "text/event-stream".into())],
            body,
        )
    }

    /// An NDJSON body (`application/x-ndjson`).
    pub fn ndjson(body: impl Into<Vec<u8>>) -> Self {
        Self::new(
            200,
            vec![("content-type".into(), "application/x-ndjson".into())],
            body,
        )
    }

    /// Parses a raw HTTP/1.1 response recording (status line, headers, blank line, body).
    ///
    /// # Errors
    /// A message naming what is malformed.
    pub fn from_http(raw: &[u8]) -> Result<Self, String> {
        let (head, body) = split_head(raw).ok_or("no blank line between headers and body")?;
        let head =
            String::from_utf8(head.to_vec()).map_err(|e| format!("headers are not UTF-8: {e}"))?;
        let mut lines = head.lines();
        let status_line = lines.next().ok_or("no status line")?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line `{status_line}`"))?;
        let headers = lines
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                l.split_once(':')
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .ok_or_else(|| format!("bad header line `{l}`"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(status, headers, body.to_vec()))
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Cuts the body into writes this way.
    pub fn with_split(mut self, split: Split) -> Self {
        self.split = split;
        self
    }

    /// Waits this long before answering (to exercise timeouts).
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Waits this long between writes. The default is 1 ms, so the client sees separate
    /// reads, or none when the split makes more than 300 writes (to keep tests fast).
    pub fn with_gap(mut self, gap: Duration) -> Self {
        self.gap = Some(gap);
        self
    }

    /// Sends only the first `n` bytes of the body, then breaks the connection.
    pub fn reset_after(mut self, n: usize) -> Self {
        self.reset_after = Some(n);
        self
    }

    /// Ends the body cleanly after the first `n` bytes (a truncated reply).
    pub fn truncated_at(mut self, n: usize) -> Self {
        self.body.truncate(n);
        self
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

fn split_head(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some((&raw[..i], &raw[i + 4..]));
    }
    let i = raw.windows(2).position(|w| w == b"\n\n")?;
    Some((&raw[..i], &raw[i + 2..]))
}

/// A request the fake server received.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// The method.
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct ServerState {
    queue: VecDeque<FakeResponse>,
    fallback: Option<FakeResponse>,
    requests: Vec<RecordedRequest>,
}

/// A local HTTP server (axum) that answers every request with the next scripted
/// [`FakeResponse`] and records what it received. Stops when dropped.
pub struct FakeServer {
    addr: SocketAddr,
    state: Arc<Mutex<ServerState>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FakeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    /// Starts a server on a free local port.
    ///
    /// # Panics
    /// When no local port can be bound (a test environment problem).
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(ServerState::default()));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("cannot bind a local port for the fake server: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("the fake server has no local address: {e}"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues a response.
    pub fn push(&self, response: FakeResponse) {
        self.lock().queue.push_back(response);
    }

    /// Answers with this response once the queue is empty.
    pub fn set_fallback(&self, response: FakeResponse) {
        self.lock().fallback = Some(response);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Forgets recorded requests and queued responses.
    pub fn reset(&self) {
        let mut s = self.lock();
        s.queue.clear();
        s.requests.clear();
        s.fallback = None;
    }

    fn lock(&self) -> MutexGuard<'_, ServerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn handle(
    State(state): State<Arc<Mutex<ServerState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let next = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.requests.push(RecordedRequest {
            method: method.to_string(),
            path: uri.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
            body: body.to_vec(),
        });
        s.queue.pop_front().or_else(|| s.fallback.clone())
    };
    let Some(fake) = next else {
        let mut r = axum::response::Response::new(Body::from(
            r#"{"error":{"message":"the fake server has no scripted response left","type":"test"}}"#,
        ));
        *r.status_mut() = StatusCode::IM_A_TEAPOT;
        return r;
    };
    if !fake.delay.is_zero() {
        tokio::time::sleep(fake.delay).await;
    }
    let mut body_bytes = fake.body.clone();
    let reset = fake.reset_after.map(|n| {
        body_bytes.truncate(n);
    });
    let pieces = fake.split.pieces(&body_bytes);
    let gap = fake.gap.unwrap_or(if pieces.len() > 300 {
        Duration::ZERO
    } else {
        Duration::from_millis(1)
    });
    let stream = futures::stream::iter(pieces.into_iter().enumerate())
        .then(move |(i, piece)| async move {
            if i > 0 && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            Ok::<Bytes, std::io::Error>(Bytes::from(piece))
        })
        .chain(futures::stream::iter(reset.map(|()| {
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "reset by the fake server",
            ))
        })));
    let mut response = axum::response::Response::new(Body::from_stream(stream));
    *response.status_mut() =
        StatusCode::from_u16(fake.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in &fake.headers {
        let lower = k.to_ascii_lowercase();
        if ["content-length", "transfer-encoding", "connection"].contains(&lower.as_str()) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(lower.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// A byte offset inside each multi-byte UTF-8 character and between each CR and LF of
/// `body`: the awkward places to cut a read.
pub fn awkward_cuts(body: &[u8]) -> Vec<usize> {
    let mut cuts = Vec::new();
    for (i, w) in body.windows(2).enumerate() {
        let inside_char = w[1] & 0b1100_0000 == 0b1000_0000;
        let inside_crlf = w == b"\r\n";
        if inside_char || inside_crlf {
            cuts.push(i + 1);
        }
    }
    cuts
}

/// Rewrites `\n` line endings as `\r\n` (for SSE bodies, whose JSON has no raw newlines).
pub fn to_crlf(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() * 2);
    for (i, &b) in body.iter().enumerate() {
        if b == b'\n' && (i == 0 || body[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// Rewrites `\n` and `\r\n` line endings as a bare `\r`.
pub fn to_cr(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i] == b'\r' && body.get(i + 1) == Some(&b'\n') {
            out.push(b'\r');
            i += 2;
        } else if body[i] == b'\n' {
            out.push(b'\r');
            i += 1;
        } else {
            out.push(body[i]);
            i += 1;
        }
    }
    out
}

/// Builds a wire-format error body from a status and a message.
pub type ErrorBody = Box<dyn Fn(u16, &str) -> String + Send + Sync>;

/// What the conformance suite needs to know about a wire format: a request, a successful
/// reply recording and the text it means, an optional streamed reply recording, and how
/// the format writes an error body.
#[non_exhaustive]
pub struct ConformanceKit {
    /// The request sent in every check.
    pub request: Request,
    /// A complete (non-streaming) successful reply.
    pub reply: FakeResponse,
    /// The text `reply` (and `stream_reply`) carries.
    pub expected_text: String,
    /// A streamed successful reply carrying the same text; `None` skips stream checks.
    pub stream_reply: Option<FakeResponse>,
    /// Builds an error body for a status and message.
    pub error_body: ErrorBody,
    /// The key the provider under test was built with, to check it never shows in errors.
    pub api_key: Option<String>,
    /// Checks not to count (by name prefix), for wire formats without a feature.
    pub skip: Vec<String>,
}

impl ConformanceKit {
    /// A kit with the required parts.
    pub fn new(
        request: Request,
        reply: FakeResponse,
        expected_text: impl Into<String>,
        error_body: impl Fn(u16, &str) -> String + Send + Sync + 'static,
    ) -> Self {
        Self {
            request,
            reply,
            expected_text: expected_text.into(),
            stream_reply: None,
            error_body: Box::new(error_body),
            api_key: None,
            skip: Vec::new(),
        }
    }

    /// Adds a streamed reply.
    pub fn with_stream_reply(mut self, reply: FakeResponse) -> Self {
        self.stream_reply = Some(reply);
        self
    }

    /// Skips the checks whose names start with `prefix` (e.g. `"429 with retry-after-ms"`
    /// for a service that never sends that header); they are listed as skipped.
    pub fn skipping(mut self, prefix: impl Into<String>) -> Self {
        self.skip.push(prefix.into());
        self
    }

    /// Names the key the provider was built with.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }
}

/// The outcome of [`run_conformance`].
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ConformanceReport {
    /// Checks that passed.
    pub passed: Vec<String>,
    /// Checks that failed, with why.
    pub failed: Vec<(String, String)>,
    /// Checks skipped as the kit asked.
    pub skipped: Vec<String>,
    skip: Vec<String>,
}

impl ConformanceReport {
    fn record(&mut self, name: &str, result: Result<(), String>) {
        if self.skip.iter().any(|p| name.starts_with(p.as_str())) {
            self.skipped.push(name.to_owned());
            return;
        }
        match result {
            Ok(()) => self.passed.push(name.to_owned()),
            Err(why) => self.failed.push((name.to_owned(), why)),
        }
    }

    /// Panics listing every failed check.
    ///
    /// # Panics
    /// When any check failed.
    pub fn assert_passed(&self) {
        if !self.failed.is_empty() {
            let list: Vec<String> = self
                .failed
                .iter()
                .map(|(n, w)| format!("  {n}: {w}"))
                .collect();
            panic!(
                "{} of {} conformance checks failed:\n{}",
                self.failed.len(),
                self.failed.len() + self.passed.len(),
                list.join("\n")
            );
        }
    }
}

fn expect(cond: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(why()) }
}

fn no_key(key: Option<&str>, error: &LlmError) -> Result<(), String> {
    match key {
        Some(k) if format!("{error} {error:?}").contains(k) => {
            Err("the API key appears in the error text".to_owned())
        }
        _ => Ok(()),
    }
}

/// Runs the standard checks against providers built by `make` for the fake server's base
/// URL: replies read whole and split at random and awkward byte boundaries, streamed and
/// complete replies agreeing, truncated and reset streams failing, HTTP errors mapped
/// (401/403 auth, 429 with `retry-after` and `retry-after-ms`, 500/503/529 retryable,
/// 400 not, `x-should-retry: false`), transport failures, exactly one request per call,
/// and no API key in any error.
pub async fn run_conformance<F>(make: F, kit: &ConformanceKit) -> ConformanceReport
where
    F: Fn(&str) -> Arc<dyn Provider>,
{
    let server = FakeServer::start().await;
    let provider = make(&server.url());
    let mut report = ConformanceReport {
        skip: kit.skip.clone(),
        ..ConformanceReport::default()
    };
    let key = kit.api_key.as_deref();

    // Complete replies, whole and split.
    let splits = [
        Split::Whole,
        Split::Every(1),
        Split::Random { seed: 1, max: 7 },
        Split::Random { seed: 2, max: 64 },
        Split::At(awkward_cuts(kit.reply.body())),
    ];
    for split in &splits {
        server.reset();
        server.push(kit.reply.clone().with_split(split.clone()));
        let name = format!("complete reply, split {split:?}");
        let result = match provider.complete(&kit.request).await {
            Ok(r) => expect(r.content == kit.expected_text, || {
                format!("expected {:?}, got {:?}", kit.expected_text, r.content)
            })
            .and_then(|()| {
                expect(server.requests().len() == 1, || {
                    format!(
                        "expected 1 request, the server saw {}",
                        server.requests().len()
                    )
                })
            }),
            Err(e) => Err(format!("failed: {e}")),
        };
        report.record(&name, result);
    }

    // Streamed replies.
    if let Some(stream_reply) = &kit.stream_reply {
        let body = stream_reply.body().to_vec();
        let mut stream_splits = vec![
            Split::Whole,
            Split::Every(1),
            Split::At(awkward_cuts(&body)),
        ];
        stream_splits.extend((0..6).map(|seed| Split::Random { seed, max: 40 }));
        for split in stream_splits {
            server.reset();
            server.push(stream_reply.clone().with_split(split.clone()));
            let name = format!("streamed reply, split {split:?}");
            let result = async {
                let stream = provider
                    .stream(&kit.request)
                    .await
                    .map_err(|e| format!("failed to open: {e}"))?;
                let response = collect_stream(provider.name(), stream)
                    .await
                    .map_err(|e| format!("failed: {e}"))?;
                expect(response.content == kit.expected_text, || {
                    format!(
                        "expected {:?}, got {:?}",
                        kit.expected_text, response.content
                    )
                })
            }
            .await;
            report.record(&name, result);
        }

        // Text arrives before the stream ends.
        server.reset();
        server.push(stream_reply.clone().with_split(Split::Every(8)));
        let result = async {
            let mut stream = provider
                .stream(&kit.request)
                .await
                .map_err(|e| e.to_string())?;
            let mut texts = 0;
            while let Some(chunk) = stream.next().await {
                if let Chunk::Text(_) = chunk.map_err(|e| e.to_string())? {
                    texts += 1;
                }
            }
            expect(texts >= 1, || "no text chunk was streamed".to_owned())
        }
        .await;
        report.record("streamed reply yields text chunks", result);

        // Truncated and reset streams fail rather than succeed silently.
        for (label, fake) in [
            (
                "truncated stream",
                stream_reply.clone().truncated_at(body.len() / 2),
            ),
            (
                "reset stream",
                stream_reply.clone().reset_after(body.len() / 2),
            ),
        ] {
            server.reset();
            server.push(fake);
            let result = match provider.stream(&kit.request).await {
                Err(e) => no_key(key, &e),
                Ok(stream) => match collect_stream(provider.name(), stream).await {
                    Ok(r) => Err(format!("succeeded with {:?}", r.content)),
                    Err(e) => no_key(key, &e),
                },
            };
            report.record(label, result);
        }
    }

    // HTTP errors.
    type Check = fn(&LlmError) -> bool;
    type Case = (&'static str, u16, Vec<(&'static str, &'static str)>, Check);
    let cases: Vec<Case> = vec![
        ("401 is an auth error", 401, vec![], |e| {
            matches!(e, LlmError::Auth { .. })
        }),
        ("403 is an auth error", 403, vec![], |e| {
            matches!(e, LlmError::Auth { .. })
        }),
        (
            "429 with retry-after seconds",
            429,
            vec![("retry-after", "7")],
            |e| {
                matches!(e, LlmError::RateLimited { .. })
                    && e.retry_after() == Some(Duration::from_secs(7))
            },
        ),
        (
            "429 with retry-after-ms",
            429,
            vec![("retry-after-ms", "1500"), ("retry-after", "2")],
            |e| e.is_retryable() && e.retry_after() == Some(Duration::from_millis(1500)),
        ),
        ("429 without headers is retryable", 429, vec![], |e| {
            e.is_retryable() && e.retry_after().is_none()
        }),
        ("500 is a retryable server error", 500, vec![], |e| {
            matches!(
                e,
                LlmError::Server {
                    status: Some(500),
                    ..
                }
            ) && e.is_retryable()
        }),
        ("503 is a retryable server error", 503, vec![], |e| {
            e.is_retryable()
        }),
        ("529 is a retryable overload", 529, vec![], |e| {
            matches!(
                e,
                LlmError::Server {
                    status: Some(529),
                    ..
                }
            )
        }),
        ("400 is not retryable", 400, vec![], |e| !e.is_retryable()),
        (
            "x-should-retry: false wins",
            503,
            vec![("x-should-retry", "false")],
            |e| !e.is_retryable(),
        ),
    ];
    for (name, status, headers, check) in cases {
        server.reset();
        let mut body = (kit.error_body)(status, "something went wrong");
        if let Some(k) = key {
            body = (kit.error_body)(status, &format!("bad key {k} given"));
        }
        let mut fake = FakeResponse::json(status, body);
        for (k, v) in headers {
            fake = fake.with_header(k, v);
        }
        server.push(fake);
        let result = match provider.complete(&kit.request).await {
            Ok(r) => Err(format!("succeeded with {:?}", r.content)),
            Err(e) => expect(check(&e), || format!("got {e:?}"))
                .and_then(|()| no_key(key, &e))
                .and_then(|()| {
                    expect(server.requests().len() == 1, || {
                        format!(
                            "expected 1 request, the server saw {}",
                            server.requests().len()
                        )
                    })
                }),
        };
        report.record(name, result);
    }

    // Streams report HTTP errors too.
    if kit.stream_reply.is_some() {
        server.reset();
        server.push(FakeResponse::json(500, (kit.error_body)(500, "boom")));
        let result = match provider.stream(&kit.request).await {
            Err(e) => expect(e.is_retryable(), || format!("got {e:?}")),
            Ok(stream) => match collect_stream(provider.name(), stream).await {
                Ok(_) => Err("succeeded".to_owned()),
                Err(e) => expect(e.is_retryable(), || format!("got {e:?}")),
            },
        };
        report.record("a 500 on a stream is a retryable error", result);
    }

    // A body that is not the wire format.
    server.reset();
    server.push(FakeResponse::json(200, "<html>gateway</html>"));
    let result = match provider.complete(&kit.request).await {
        Ok(r) => Err(format!("succeeded with {:?}", r.content)),
        Err(e) => expect(matches!(e, LlmError::InvalidResponse { .. }), || {
            format!("got {e:?}")
        }),
    };
    report.record("a garbage body is an invalid response", result);

    // Concurrent calls.
    server.reset();
    server.set_fallback(kit.reply.clone());
    let calls = futures::future::join_all((0..8).map(|_| provider.complete(&kit.request))).await;
    let ok = calls
        .iter()
        .filter(|r| matches!(r, Ok(r) if r.content == kit.expected_text))
        .count();
    report.record(
        "8 concurrent calls",
        expect(ok == 8, || format!("{ok} of 8 succeeded")),
    );

    // Nothing listening.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0");
        listener.ok().and_then(|l| l.local_addr().ok())
    };
    if let Some(addr) = closed {
        let provider = make(&format!("http://{addr}"));
        let result = match provider.complete(&kit.request).await {
            Ok(_) => Err("succeeded with no server".to_owned()),
            Err(e) => expect(
                matches!(e, LlmError::Transport { .. }) && e.is_retryable(),
                || format!("got {e:?}"),
            )
            .and_then(|()| no_key(key, &e)),
        };
        report.record("no server is a retryable transport error", result);
    }
    report
}
