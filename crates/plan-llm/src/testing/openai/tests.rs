use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use super::{FakeOpenAi, FakeReply, FakeToolCall};
use crate::{
    Chunk, FinishReason, LlmError, Message, OpenAi, Provider, Request, ToolSpec, collect_stream,
};

fn model(server: &FakeOpenAi) -> OpenAi {
    OpenAi::new("fake-model", None).with_base_url(server.base_url())
}

fn ask(text: &str) -> Request {
    Request::new(vec![Message::system("You are terse."), Message::user(text)])
}

async fn complete(server: &FakeOpenAi, text: &str) -> String {
    model(server).complete(&ask(text)).await.unwrap().content
}

async fn post(server: &FakeOpenAi, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{}{path}", server.addr()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn rules_apply_in_order_with_on_first_ahead_and_ok_by_default() {
    let server = FakeOpenAi::start().await;
    assert_eq!(complete(&server, "anything").await, "ok");
    server
        .on("apple", FakeReply::text("first apple rule"))
        .on(
            "apple pie",
            FakeReply::text("never: an earlier rule matches"),
        )
        .on("pie", FakeReply::text("pie rule"));
    assert_eq!(complete(&server, "apple pie").await, "first apple rule");
    assert_eq!(complete(&server, "cherry pie").await, "pie rule");
    server.on_first("cherry", FakeReply::text("cherry first"));
    assert_eq!(complete(&server, "cherry pie").await, "cherry first");
    // Rules see every message, the system prompt included.
    server.on("terse", FakeReply::text("system matched"));
    assert_eq!(complete(&server, "banana").await, "system matched");
}

#[tokio::test]
async fn a_responder_sees_the_keyed_request() {
    let server = FakeOpenAi::start().await;
    server
        .key_by(|r| {
            r.last_user()
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .otherwise(FakeReply::with(|r| {
            FakeReply::text(format!("{} via {}", r.key, r.model))
        }));
    assert_eq!(
        complete(&server, "alpha beta").await,
        "alpha via fake-model"
    );
    let seen = server.requests();
    assert_eq!(seen[0].key, "alpha");
    assert_eq!(
        seen[0].messages,
        vec![
            ("system".to_owned(), "You are terse.".to_owned()),
            ("user".to_owned(), "alpha beta".to_owned())
        ]
    );
    assert_eq!(seen[0].body["model"], "fake-model");
}

#[tokio::test]
async fn counts_by_needle_and_key_and_reset_forgets_requests_only() {
    let server = FakeOpenAi::start().await;
    server
        .key_by(|r| r.last_user().chars().take(1).collect())
        .on("x", FakeReply::text("rule"));
    for text in ["a1", "a2 x", "b1"] {
        complete(&server, text).await;
    }
    assert_eq!(server.total_requests(), 3);
    assert_eq!(server.count_for("a"), 2);
    assert_eq!(server.count_for("b"), 1);
    assert_eq!(server.count_for("c"), 0);
    assert_eq!(server.count("x"), 1);
    assert_eq!(server.count("terse"), 3);
    server.reset();
    assert_eq!(server.total_requests(), 0);
    assert_eq!(server.max_in_flight(), 0);
    assert_eq!(
        complete(&server, "x").await,
        "rule",
        "rules survive a reset"
    );
    assert_eq!(server.count_for("x"), 1, "the key survives a reset");
}

#[tokio::test]
async fn max_in_flight_counts_concurrent_calls_held_by_the_latency() {
    let server = FakeOpenAi::start().await;
    server.latency(Duration::from_millis(200));
    let m = model(&server);
    let started = std::time::Instant::now();
    let calls = futures::future::join_all((0..4).map(|i| {
        let m = m.clone();
        async move { m.complete(&ask(&format!("call {i}"))).await }
    }))
    .await;
    assert!(calls.iter().all(Result::is_ok));
    assert_eq!(server.max_in_flight(), 4);
    assert!(started.elapsed() >= Duration::from_millis(200));
    server.reset();
    for i in 0..2 {
        m.complete(&ask(&format!("one at a time {i}")))
            .await
            .unwrap();
    }
    assert_eq!(server.max_in_flight(), 1);
}

#[tokio::test]
async fn errors_have_openai_shape_and_map_to_typed_errors() {
    let server = FakeOpenAi::start().await;
    server
        .on("bad", FakeReply::error(400, "the request is wrong"))
        .on("busy", FakeReply::rate_limited(Duration::from_millis(1500)))
        .on("down", FakeReply::error(503, "the server had an error"));
    let raw = post(
        &server,
        "/v1/chat/completions",
        json!({"model": "m", "messages": [{"role": "user", "content": "bad"}]}),
    )
    .await;
    assert_eq!(raw.status(), 400);
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body["error"]["message"], "the request is wrong");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let raw = post(
        &server,
        "/v1/chat/completions",
        json!({"model": "m", "messages": [{"role": "user", "content": "busy"}]}),
    )
    .await;
    assert_eq!(raw.status(), 429);
    assert_eq!(raw.headers()["retry-after"], "2");
    assert_eq!(raw.headers()["retry-after-ms"], "1500");

    let m = model(&server);
    match m.complete(&ask("bad")).await {
        Err(e @ LlmError::BadRequest { status: 400, .. }) => {
            assert!(e.to_string().contains("the request is wrong"), "{e}");
            assert!(!e.is_retryable());
        }
        other => panic!("expected a bad request, got {other:?}"),
    }
    match m.complete(&ask("busy")).await {
        Err(e @ LlmError::RateLimited { .. }) => {
            assert_eq!(e.retry_after(), Some(Duration::from_millis(1500)));
        }
        other => panic!("expected a rate limit, got {other:?}"),
    }
    let e = m.stream(&ask("down")).await.err().unwrap();
    assert!(
        matches!(
            e,
            LlmError::Server {
                status: Some(503),
                ..
            }
        ) && e.is_retryable(),
        "{e:?}"
    );
}

#[tokio::test]
async fn streamed_text_is_framed_as_openai_and_reads_back_whole() {
    let server = FakeOpenAi::start().await;
    let text = "Streamed in several pieces: ünïcödé, émoji 🦀, and more than sixteen characters.";
    server.otherwise(FakeReply::text(text));
    let raw = post(
        &server,
        "/chat/completions",
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(raw.headers()["content-type"], "text/event-stream");
    let body = raw.text().await.unwrap();
    let events: Vec<&str> = body.split_terminator("\n\n").collect();
    assert!(events.iter().all(|e| e.starts_with("data: ")), "{body}");
    assert_eq!(events.last(), Some(&"data: [DONE]"));
    assert!(events.len() > 5, "the text comes in several deltas: {body}");

    let m = model(&server);
    let mut stream = m.stream(&ask("hi")).await.unwrap();
    let mut texts = Vec::new();
    let mut usage = None;
    while let Some(chunk) = stream.next().await {
        match chunk.unwrap() {
            Chunk::Text(t) => texts.push(t),
            Chunk::Usage(u) => usage = Some(u),
            _ => {}
        }
    }
    assert!(texts.len() > 1);
    assert_eq!(texts.concat(), text);
    let usage = usage.expect("the stream carries usage");
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);
    assert!(server.requests()[1].stream);
}

#[tokio::test]
async fn tool_calls_read_back_complete_and_streamed() {
    let server = FakeOpenAi::start().await;
    server.otherwise(FakeReply::with(|r| match r.tool_result() {
        Some(result) => FakeReply::text(format!("the tool said {result}")),
        None if r.tools() == ["read_file"] => FakeReply::ToolCalls(vec![
            FakeToolCall::new("read_file", json!({"path": "a long/path/to/notes.txt"})),
            FakeToolCall::new("read_file", json!({"path": "b.txt"})),
        ]),
        None => FakeReply::text("no tools offered"),
    }));
    let tools = vec![ToolSpec::new(
        "read_file",
        "Reads a file",
        json!({"type": "object", "properties": {"path": {"type": "string"}}}),
    )];
    let request = ask("read them").with_tools(tools);
    let m = model(&server);
    let whole = m.complete(&request).await.unwrap();
    let streamed = collect_stream("fake", m.stream(&request).await.unwrap())
        .await
        .unwrap();
    for reply in [&whole, &streamed] {
        assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
        let calls: Vec<(&str, &str, &Value)> = reply
            .tool_calls
            .iter()
            .map(|c| (c.id.as_str(), c.name.as_str(), &c.arguments))
            .collect();
        assert_eq!(
            calls,
            vec![
                (
                    "call_1",
                    "read_file",
                    &json!({"path": "a long/path/to/notes.txt"})
                ),
                ("call_2", "read_file", &json!({"path": "b.txt"})),
            ]
        );
    }
    let mut messages = request.messages.clone();
    messages.push(Message::assistant_tool_calls("", whole.tool_calls.clone()));
    messages.push(Message::tool_result("call_1", "read_file", "hello"));
    let answer = m.complete(&Request::new(messages)).await.unwrap();
    assert_eq!(answer.content, "the tool said hello");
    assert_eq!(complete(&server, "plain").await, "no tools offered");
}

#[tokio::test]
async fn models_are_listed_and_unknown_routes_get_an_openai_404() {
    let server = FakeOpenAi::start().await;
    server.models(["a", "b"]);
    let list: Value = reqwest::get(format!("{}/models", server.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    let missing = post(&server, "/v1/embeddings", json!({})).await;
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert!(body["error"]["message"].is_string());
}

#[test]
fn a_detached_server_serves_other_runtimes_and_stops_with_its_last_handle() {
    let server = FakeOpenAi::start_detached();
    server.on("ping", FakeReply::text("pong"));
    let clone = server.clone();
    for _ in 0..2 {
        // Each runtime ends here; the server outlives them.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert_eq!(runtime.block_on(complete(&server, "ping")), "pong");
    }
    let addr = server.addr();
    drop(server);
    assert_eq!(clone.total_requests(), 2, "a clone is the same server");
    drop(clone);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(addr).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "still listening after the last handle was dropped"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
