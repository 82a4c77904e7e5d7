//! Layers: retry fault tests under paused time, timeout, concurrency limit, usage meter.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use plan_llm::testing::{FakeResponse, FakeServer};
use plan_llm::{
    ChunkStream, LlmError, Message, Provider, ProviderExt, Reply, Request, Response, RetryPolicy,
    ScriptedModel, Usage, UsageMeter, collect_stream,
};
use tokio::time::Instant;

use super::support::openai;

fn ask() -> Request {
    Request::new(vec![Message::user("hi")])
}

fn rate_limited(after: Option<Duration>) -> Reply {
    Reply::error(LlmError::RateLimited {
        provider: "scripted".into(),
        message: "slow down".into(),
        retry_after: after,
    })
}

fn server_error(status: u16) -> Reply {
    Reply::error(LlmError::Server {
        provider: "scripted".into(),
        status: Some(status),
        message: "unavailable".into(),
        retry_after: None,
    })
}

fn no_jitter() -> RetryPolicy {
    RetryPolicy::default()
        .with_jitter(false)
        .with_initial_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(60))
}

/// The times at which a scripted model was called, relative to the start.
#[derive(Clone)]
struct Clocked {
    inner: ScriptedModel,
    start: Instant,
    calls: Arc<std::sync::Mutex<Vec<Duration>>>,
}

impl Clocked {
    fn new(inner: ScriptedModel) -> Self {
        Self {
            inner,
            start: Instant::now(),
            calls: Arc::default(),
        }
    }
    fn times(&self) -> Vec<Duration> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl Provider for Clocked {
    fn name(&self) -> &str {
        "clocked"
    }
    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        self.calls.lock().unwrap().push(self.start.elapsed());
        self.inner.complete(request).await
    }
    async fn stream(&self, request: &Request) -> Result<ChunkStream, LlmError> {
        self.calls.lock().unwrap().push(self.start.elapsed());
        self.inner.stream(request).await
    }
}

#[tokio::test(start_paused = true)]
async fn retry_honours_the_server_delay_then_succeeds() {
    let model = Clocked::new(ScriptedModel::from_replies([
        rate_limited(Some(Duration::from_millis(3890))),
        rate_limited(Some(Duration::from_secs(7))),
        Reply::text("ok"),
    ]));
    let retrying = model.clone().with_retry(no_jitter());
    assert_eq!(retrying.complete(&ask()).await.unwrap().content, "ok");
    assert_eq!(
        model.times(),
        vec![
            Duration::ZERO,
            Duration::from_millis(3890),
            Duration::from_millis(10890)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn retry_backs_off_exponentially_without_a_server_delay() {
    let model = Clocked::new(ScriptedModel::from_replies([
        server_error(503),
        server_error(529),
        server_error(500),
        Reply::text("ok"),
    ]));
    let retrying = model.clone().with_retry(no_jitter());
    assert_eq!(retrying.complete(&ask()).await.unwrap().content, "ok");
    let secs: Vec<u64> = model.times().iter().map(Duration::as_secs).collect();
    assert_eq!(secs, vec![0, 1, 3, 7], "waits of 1, 2 and 4 seconds");
}

#[tokio::test(start_paused = true)]
async fn jitter_stays_within_bounds() {
    let model = Clocked::new(ScriptedModel::from_replies([
        server_error(503),
        Reply::text("ok"),
    ]));
    let policy = RetryPolicy::default().with_initial_delay(Duration::from_secs(1));
    model
        .clone()
        .with_retry(policy)
        .complete(&ask())
        .await
        .unwrap();
    let wait = model.times()[1];
    assert!(
        wait >= Duration::from_secs(1) && wait <= Duration::from_secs(2),
        "{wait:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_gives_up_after_max_attempts_with_the_last_error() {
    let model = Clocked::new(ScriptedModel::new().otherwise(server_error(503)));
    let retrying = model.clone().with_retry(no_jitter().with_max_attempts(3));
    let err = retrying.complete(&ask()).await.unwrap_err();
    assert!(matches!(
        err,
        LlmError::Server {
            status: Some(503),
            ..
        }
    ));
    assert_eq!(model.times().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_server_asking_too_long_is_not_retried() {
    let model = Clocked::new(ScriptedModel::from_replies([
        rate_limited(Some(Duration::from_secs(600))),
        Reply::text("never"),
    ]));
    let retrying = model
        .clone()
        .with_retry(no_jitter().with_max_retry_after(Duration::from_secs(120)));
    let err = retrying.complete(&ask()).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(600)));
    assert_eq!(model.times().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn non_retryable_errors_are_returned_at_once() {
    for error in [
        LlmError::Auth {
            provider: "p".into(),
            message: "bad key".into(),
        },
        LlmError::BadRequest {
            provider: "p".into(),
            status: 400,
            message: "bad".into(),
        },
        LlmError::ContextLength {
            provider: "p".into(),
            message: "long".into(),
        },
    ] {
        let model = Clocked::new(ScriptedModel::from_replies([
            Reply::error(error),
            Reply::text("no"),
        ]));
        assert!(
            model
                .clone()
                .with_retry(no_jitter())
                .complete(&ask())
                .await
                .is_err()
        );
        assert_eq!(model.times().len(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn transport_errors_and_timeouts_are_retried() {
    let model = Clocked::new(ScriptedModel::from_replies([
        Reply::error(LlmError::Transport {
            provider: "p".into(),
            message: "connection reset".into(),
        }),
        Reply::text("slow").with_latency(Duration::from_secs(30)),
        Reply::text("ok"),
    ]));
    let layered = model
        .clone()
        .with_timeout(Duration::from_secs(10))
        .with_retry(no_jitter());
    assert_eq!(layered.complete(&ask()).await.unwrap().content, "ok");
    let secs: Vec<u64> = model.times().iter().map(Duration::as_secs).collect();
    // reset at 0, retry at 1 which times out at 11, retry after 2 more at 13
    assert_eq!(secs, vec![0, 1, 13]);
}

#[tokio::test(start_paused = true)]
async fn stream_opening_is_retried() {
    let model = Clocked::new(
        ScriptedModel::from_replies([server_error(502), Reply::text("streamed")])
            .streaming(3, Duration::from_millis(10)),
    );
    let s = model
        .clone()
        .with_retry(no_jitter())
        .stream(&ask())
        .await
        .unwrap();
    assert_eq!(collect_stream("x", s).await.unwrap().content, "streamed");
    assert_eq!(model.times().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn timeouts_cover_whole_streams() {
    let model = ScriptedModel::new()
        .streaming(10, Duration::from_secs(1))
        .otherwise(Reply::text("0123456789"));
    let limited = model.with_timeout(Duration::from_millis(4500));
    let start = Instant::now();
    let mut s = limited.stream(&ask()).await.unwrap();
    let mut got = String::new();
    let err = loop {
        match s.next().await.unwrap() {
            Ok(plan_llm::Chunk::Text(t)) => got.push_str(&t),
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert!(matches!(err, LlmError::Timeout(d) if d == Duration::from_millis(4500)));
    assert_eq!(got, "01234");
    assert_eq!(start.elapsed(), Duration::from_millis(4500));
    assert!(s.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn the_concurrency_limit_queues_calls() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    struct Slow {
        running: Arc<AtomicUsize>,
        peak: Arc<AtomicUsize>,
    }
    #[async_trait]
    impl Provider for Slow {
        fn name(&self) -> &str {
            "slow"
        }
        async fn complete(&self, _: &Request) -> Result<Response, LlmError> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            Ok(Response::text("done", Usage::default()))
        }
    }
    let limited = Arc::new(
        Slow {
            running: running.clone(),
            peak: peak.clone(),
        }
        .with_concurrency_limit(2),
    );
    let start = Instant::now();
    let calls = (0..6).map(|_| {
        let p = limited.clone();
        tokio::spawn(async move { p.complete(&ask()).await })
    });
    for c in futures::future::join_all(calls).await {
        c.unwrap().unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    assert_eq!(start.elapsed().as_secs(), 3);
}

#[tokio::test]
async fn the_meter_sums_usage_and_enforces_the_budget() {
    let meter = UsageMeter::new().with_budget(250);
    let model = ScriptedModel::new()
        .streaming(2, Duration::ZERO)
        .otherwise(Reply::text("ok").with_usage(Usage::new(70, 30)));
    let metered = model.clone().with_usage_meter(&meter);
    metered.complete(&ask()).await.unwrap();
    let s = metered.stream(&ask()).await.unwrap();
    collect_stream("x", s).await.unwrap();
    let totals = meter.totals();
    assert_eq!(
        (
            totals.llm_calls,
            totals.prompt_tokens,
            totals.completion_tokens
        ),
        (2, 140, 60)
    );
    assert_eq!(meter.remaining(), Some(50));
    metered.complete(&ask()).await.unwrap();
    let err = metered.complete(&ask()).await.unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::BudgetExceeded {
                used: 300,
                budget: 250
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("raise the token budget"), "{err}");
    assert_eq!(err.hint(), Some(plan_llm::LlmHint::TokenBudget));
    assert_eq!(
        model.call_count(),
        3,
        "the refused call never reached the model"
    );
    // A second provider can share the meter.
    let other = ScriptedModel::new()
        .otherwise(Reply::text("x"))
        .with_usage_meter(&meter);
    assert!(other.complete(&ask()).await.is_err());
}

#[tokio::test]
async fn retry_works_over_http_with_real_headers() {
    // Real time, but the server asks for tiny delays.
    let server = FakeServer::start().await;
    server.push(
        FakeResponse::json(
            429,
            r#"{"error":{"message":"slow","type":"requests","param":null,"code":null}}"#,
        )
        .with_header("retry-after-ms", "20"),
    );
    server.push(
        FakeResponse::json(
            503,
            r#"{"error":{"message":"busy","type":"server_error","param":null,"code":null}}"#,
        )
        .with_header("retry-after", "0.02"),
    );
    server.push(FakeResponse::json(
        200,
        super::support::recording("openai/text.json"),
    ));
    let provider = openai(&server.url()).with_retry(RetryPolicy::default());
    let start = std::time::Instant::now();
    let reply = provider.complete(&ask()).await.unwrap();
    assert_eq!(reply.content, "Hello, wörld — ✓");
    assert_eq!(server.requests().len(), 3);
    assert!(start.elapsed() >= Duration::from_millis(40));

    // A reset connection, then success.
    server.reset();
    server.push(
        FakeResponse::json(200, super::support::recording("openai/text.json")).reset_after(10),
    );
    server.push(FakeResponse::json(
        200,
        super::support::recording("openai/text.json"),
    ));
    let provider = openai(&server.url())
        .with_retry(RetryPolicy::default().with_initial_delay(Duration::from_millis(5)));
    assert_eq!(
        provider.complete(&ask()).await.unwrap().content,
        "Hello, wörld — ✓"
    );
    assert_eq!(server.requests().len(), 2);

    // A slow server hits the timeout.
    server.reset();
    server.push(
        FakeResponse::json(200, super::support::recording("openai/text.json"))
            .with_delay(Duration::from_secs(5)),
    );
    let err = openai(&server.url())
        .with_timeout(Duration::from_millis(100))
        .complete(&ask())
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::Timeout(_)), "{err:?}");
}

#[tokio::test]
async fn an_error_event_before_any_output_is_retried() {
    let server = FakeServer::start().await;
    server.push(FakeResponse::sse(
        "event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n",
    ));
    server.push(FakeResponse::sse(super::support::recording(
        "anthropic/text.sse",
    )));
    let provider = super::support::anthropic(&server.url())
        .with_retry(RetryPolicy::default().with_initial_delay(Duration::from_millis(5)));
    let s = provider.stream(&ask()).await.unwrap();
    assert_eq!(
        collect_stream("x", s).await.unwrap().content,
        "Hello, wörld — ✓"
    );
    assert_eq!(server.requests().len(), 2);

    // After output has started, the error is passed on, not retried.
    server.reset();
    server.push(FakeResponse::sse(super::support::recording(
        "anthropic/overloaded-midstream.sse",
    )));
    let s = provider.stream(&ask()).await.unwrap();
    assert!(collect_stream("x", s).await.is_err());
    assert_eq!(server.requests().len(), 1);
}
