//! Each adapter against a local HTTP server replaying our own wire recordings.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use plan_llm::testing::{
    ConformanceKit, FakeResponse, FakeServer, Split, awkward_cuts, run_conformance, to_cr, to_crlf,
};
use plan_llm::{
    Chunk, FinishReason, LlmError, Message, Provider, Request, ResponseFormat, ToolCall,
    ToolChoice, ToolSpec, Usage, collect_stream,
};
use serde_json::{Value, json};

use super::support::{CANARY_KEY, anthropic, ollama, openai, openai_compatible, recording};

const TEXT: &str = "Hello, wörld — ✓";

type Make = fn(&str) -> Arc<dyn Provider>;
type Check = fn(&LlmError) -> bool;

fn ask() -> Request {
    Request::new(vec![
        Message::system("be brief"),
        Message::user("say hello"),
    ])
}

fn openai_error(_status: u16, message: &str) -> String {
    json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}})
        .to_string()
}

fn anthropic_error(status: u16, message: &str) -> String {
    let kind = match status {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        400 => "invalid_request_error",
        _ => "api_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_1"})
        .to_string()
}

fn ollama_error(_status: u16, message: &str) -> String {
    json!({"error": message}).to_string()
}

/// Streams `body` with every split we care about and checks the collected response.
async fn stream_all_splits(
    make: Make,
    fake: FakeResponse,
    check: impl Fn(Result<plan_llm::Response, LlmError>),
) {
    let server = FakeServer::start().await;
    let provider = make(&server.url());
    let body = fake.body().to_vec();
    let mut splits = vec![
        Split::Whole,
        Split::Every(1),
        Split::At(awkward_cuts(&body)),
    ];
    splits.extend((0..8).map(|seed| Split::Random { seed, max: 23 }));
    for split in splits {
        server.push(fake.clone().with_split(split));
        let result = match provider.stream(&ask()).await {
            Ok(stream) => collect_stream(provider.name(), stream).await,
            Err(e) => Err(e),
        };
        check(result);
    }
}

#[tokio::test]
async fn openai_passes_the_conformance_suite() {
    let kit = ConformanceKit::new(
        ask(),
        FakeResponse::json(200, recording("openai/text.json")),
        TEXT,
        openai_error,
    )
    .with_stream_reply(FakeResponse::sse(recording("openai/text.sse")))
    .with_api_key(CANARY_KEY);
    run_conformance(openai, &kit).await.assert_passed();
    run_conformance(openai_compatible, &kit)
        .await
        .assert_passed();
}

#[tokio::test]
async fn anthropic_passes_the_conformance_suite() {
    let kit = ConformanceKit::new(
        ask(),
        FakeResponse::json(200, recording("anthropic/text.json")),
        TEXT,
        anthropic_error,
    )
    .with_stream_reply(FakeResponse::sse(recording("anthropic/text.sse")))
    .with_api_key(CANARY_KEY);
    run_conformance(anthropic, &kit).await.assert_passed();
}

#[tokio::test]
async fn ollama_passes_the_conformance_suite() {
    let kit = ConformanceKit::new(
        ask(),
        FakeResponse::json(200, recording("ollama/text.json")),
        TEXT,
        ollama_error,
    )
    .with_stream_reply(FakeResponse::ndjson(recording("ollama/text.ndjson")))
    .skipping("403");
    let report = run_conformance(ollama, &kit).await;
    report.assert_passed();
    assert_eq!(report.skipped, ["403 is an auth error"]);
    assert!(report.passed.len() > 20, "{:?}", report.passed);
}

#[tokio::test]
async fn sse_line_endings_lf_crlf_and_cr_all_work() {
    for (make, path, usage) in [
        (
            openai as fn(&str) -> Arc<dyn Provider>,
            "openai/text.sse",
            Usage::new(12, 5),
        ),
        (anthropic, "anthropic/text.sse", Usage::new(30, 5)),
    ] {
        let body = recording(path);
        for variant in [body.clone(), to_crlf(&body), to_cr(&body)] {
            stream_all_splits(make, FakeResponse::sse(variant), |r| {
                let r = r.unwrap_or_else(|e| panic!("{path}: {e}"));
                assert_eq!(r.content, TEXT, "{path}");
                assert_eq!(r.usage, usage, "{path}");
                assert_eq!(r.finish_reason, FinishReason::Stop);
            })
            .await;
        }
    }
}

#[tokio::test]
async fn openai_joins_multi_line_data() {
    stream_all_splits(
        openai,
        FakeResponse::sse(recording("openai/multiline-data.sse")),
        |r| {
            assert_eq!(r.unwrap().content, TEXT);
        },
    )
    .await;
}

#[tokio::test]
async fn openai_parallel_tool_calls_are_joined_by_index() {
    stream_all_splits(
        openai,
        FakeResponse::sse(recording("openai/tools-parallel.sse")),
        |r| {
            let r = r.unwrap();
            assert_eq!(r.finish_reason, FinishReason::ToolCalls);
            assert_eq!(
                r.tool_calls,
                vec![
                    ToolCall::new("call_a", "get_weather", json!({"city": "Zürich"})),
                    ToolCall::new("call_b", "get_time", json!({"tz": "CET"})),
                    ToolCall::new("call_c", "ping", json!({})),
                ]
            );
            assert_eq!(r.usage, Usage::new(40, 20));
        },
    )
    .await;

    let server = FakeServer::start().await;
    server.push(FakeResponse::json(200, recording("openai/tools.json")));
    let r = openai(&server.url()).complete(&ask()).await.unwrap();
    assert_eq!(
        r.tool_calls[0],
        ToolCall::new("call_a", "get_weather", json!({"city": "Zürich"}))
    );
    assert_eq!(
        r.tool_calls[1].arguments,
        json!({}),
        "empty arguments mean {{}}"
    );
}

#[tokio::test]
async fn refusals_are_errors_with_the_refusal_text() {
    let server = FakeServer::start().await;
    server.push(FakeResponse::json(200, recording("openai/refusal.json")));
    let err = openai(&server.url()).complete(&ask()).await.unwrap_err();
    assert!(
        matches!(err, LlmError::Refused { ref message, .. } if message == "I can't help with that."),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn truncated_streams_and_mid_stream_errors_fail() {
    let cases: Vec<(Make, FakeResponse, Check)> = vec![
        (
            openai,
            FakeResponse::sse(recording("openai/no-done.sse")),
            |e| matches!(e, LlmError::InvalidResponse { message, .. } if message.contains("truncated")),
        ),
        (
            openai,
            FakeResponse::sse(recording("openai/error-midstream.sse")),
            |e| matches!(e, LlmError::Server { .. }),
        ),
        (
            anthropic,
            FakeResponse::sse(recording("anthropic/no-stop.sse")),
            |e| matches!(e, LlmError::InvalidResponse { message, .. } if message.contains("truncated")),
        ),
        (
            anthropic,
            FakeResponse::sse(recording("anthropic/overloaded-midstream.sse")),
            |e| {
                matches!(
                    e,
                    LlmError::Server {
                        status: Some(529),
                        ..
                    }
                ) && e.is_retryable()
            },
        ),
        (
            ollama,
            FakeResponse::ndjson(recording("ollama/no-done.ndjson")),
            |e| matches!(e, LlmError::InvalidResponse { message, .. } if message.contains("truncated")),
        ),
        (
            ollama,
            FakeResponse::ndjson(recording("ollama/error-midstream.ndjson")),
            |e| {
                e.to_string()
                    .contains("an error was encountered while running the model")
            },
        ),
    ];
    for (make, fake, check) in cases {
        let server = FakeServer::start().await;
        let provider = make(&server.url());
        server.push(fake.with_split(Split::Every(5)));
        let mut stream = provider.stream(&ask()).await.unwrap();
        let mut text = String::new();
        let mut error = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(Chunk::Text(t)) => text.push_str(&t),
                Ok(_) => {}
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let error = error.unwrap_or_else(|| panic!("{}: the stream succeeded", provider.name()));
        assert!(check(&error), "{}: {error:?}", provider.name());
        assert!(
            text.starts_with("Hel"),
            "text before the error is delivered: {text:?}"
        );
        assert!(
            stream.next().await.is_none(),
            "the stream ends after an error"
        );
    }
}

#[tokio::test]
async fn anthropic_tool_use_ignores_thinking_and_joins_json_per_block() {
    stream_all_splits(
        anthropic,
        FakeResponse::sse(recording("anthropic/tools.sse")),
        |r| {
            let r = r.unwrap();
            assert_eq!(r.finish_reason, FinishReason::ToolCalls);
            assert_eq!(
                r.tool_calls,
                vec![
                    ToolCall::new("toolu_a", "get_weather", json!({"city": "Zürich"})),
                    ToolCall::new("toolu_b", "ping", json!({})),
                ]
            );
            assert_eq!(r.content, "");
            assert_eq!(r.usage, Usage::new(30, 30));
        },
    )
    .await;
}

#[tokio::test]
async fn http_errors_are_mapped_per_provider() {
    let server = FakeServer::start().await;
    let cases: Vec<(Make, &str, Check)> = vec![
        (
            openai,
            "openai/context-length.http",
            |e| matches!(e, LlmError::ContextLength { message, .. } if message.contains("req_ctx_1")),
        ),
        (openai, "openai/rate-limit-date.http", |e| {
            // A date in the past means "now".
            matches!(e, LlmError::RateLimited { .. }) && e.retry_after() == Some(Duration::ZERO)
        }),
        (
            anthropic,
            "anthropic/overloaded.http",
            |e| matches!(e, LlmError::Server { status: Some(529), message, .. } if message.contains("req_529")),
        ),
        (anthropic, "anthropic/prompt-too-long.http", |e| {
            matches!(e, LlmError::ContextLength { .. })
        }),
        (
            ollama,
            "ollama/model-not-found.http",
            |e| matches!(e, LlmError::BadRequest { status: 404, message, .. } if message.contains("try pulling it first")),
        ),
    ];
    for (make, path, check) in cases {
        server.push(FakeResponse::from_http(&recording(path)).unwrap());
        let err = make(&server.url()).complete(&ask()).await.unwrap_err();
        assert!(check(&err), "{path}: {err:?}");
    }
}

#[tokio::test]
async fn the_api_key_never_appears_in_errors() {
    let server = FakeServer::start().await;
    // A hostile server that echoes the key back everywhere it can.
    let echo = format!("invalid key {CANARY_KEY} (you sent {CANARY_KEY})");
    for make in [openai as Make, anthropic] {
        for status in [400, 401, 403, 404, 429, 500, 529] {
            server.push(FakeResponse::json(status, openai_error(status, &echo)));
            let err = make(&server.url()).complete(&ask()).await.unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(!text.contains(CANARY_KEY), "{status}: {text}");
            assert!(text.contains("[redacted]"), "{status}: {text}");
        }
        server.push(FakeResponse::sse(format!(
            "data: {}\n\n",
            openai_error(500, &echo)
        )));
        server.push(FakeResponse::sse(format!(
            "event: error\ndata: {}\n\n",
            anthropic_error(529, &echo)
        )));
        for _ in 0..2 {
            let err = match make(&server.url()).stream(&ask()).await {
                Ok(s) => collect_stream("x", s).await.unwrap_err(),
                Err(e) => e,
            };
            assert!(!format!("{err} {err:?}").contains(CANARY_KEY));
        }
        server.reset();
    }
    // Nor in a provider's Debug output.
    let debug = format!(
        "{:?}",
        plan_llm::OpenAi::new("m", Some(plan_llm::ApiKey::new(CANARY_KEY)))
    );
    assert!(!debug.contains(CANARY_KEY), "{debug}");
}

fn last_body(server: &FakeServer) -> Value {
    server.requests().last().unwrap().json().unwrap()
}

#[tokio::test]
async fn openai_requests_follow_the_wire_format_and_flavour() {
    let server = FakeServer::start().await;
    server.set_fallback(FakeResponse::sse(recording("openai/text.sse")));
    let tools = vec![ToolSpec::new(
        "get_weather",
        "weather",
        json!({"type": "object"}),
    )];
    let mut request = Request::new(vec![
        Message::system("sys"),
        Message::user("weather?"),
        Message::assistant_tool_calls(
            "",
            vec![ToolCall::new("c1", "get_weather", json!({"city": "Oslo"}))],
        ),
        Message::tool_result("c1", "get_weather", "sunny"),
    ])
    .with_max_tokens(100)
    .with_temperature(0.5)
    .with_tools(tools);
    request.tool_choice = ToolChoice::Tool("get_weather".into());
    request.stop = vec!["END".into()];

    let s = openai(&server.url()).stream(&request).await.unwrap();
    collect_stream("x", s).await.unwrap();
    let rec = server.requests().pop().unwrap();
    assert_eq!(rec.path, "/chat/completions");
    assert_eq!(
        rec.header("authorization"),
        Some(format!("Bearer {CANARY_KEY}").as_str())
    );
    let body = rec.json().unwrap();
    assert_eq!(body["stream"], json!(true));
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(body["max_completion_tokens"], json!(100));
    assert_eq!(body["messages"][2]["content"], Value::Null);
    assert_eq!(
        body["messages"][2]["tool_calls"][0]["function"]["arguments"],
        json!("{\"city\":\"Oslo\"}")
    );
    assert_eq!(
        body["messages"][3],
        json!({"role": "tool", "tool_call_id": "c1", "content": "sunny"})
    );
    assert_eq!(
        body["tool_choice"],
        json!({"type": "function", "function": {"name": "get_weather"}})
    );
    assert_eq!(body["stop"], json!(["END"]));

    let s = openai_compatible(&server.url())
        .stream(&request)
        .await
        .unwrap();
    collect_stream("x", s).await.unwrap();
    let body = last_body(&server);
    assert!(body.get("stream_options").is_none(), "{body}");
    assert_eq!(body["max_tokens"], json!(100));
    assert_eq!(body["messages"][2]["content"], json!(""));

    server.set_fallback(FakeResponse::json(200, recording("openai/text.json")));
    let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"], "additionalProperties": false});
    let r = ask().with_response_format(ResponseFormat::JsonSchema {
        name: "A".into(),
        schema: schema.clone(),
    });
    openai(&server.url()).complete(&r).await.unwrap();
    let body = last_body(&server);
    assert_eq!(body["stream"], json!(false));
    assert_eq!(
        body["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "A", "schema": schema, "strict": true}})
    );
}

#[tokio::test]
async fn anthropic_requests_follow_the_wire_format() {
    let server = FakeServer::start().await;
    server.push(FakeResponse::json(
        200,
        recording("anthropic/structured.json"),
    ));
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}}});
    let r = ask().with_response_format(ResponseFormat::JsonSchema {
        name: "Answer".into(),
        schema: schema.clone(),
    });
    let reply = anthropic(&server.url()).complete(&r).await.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&reply.content).unwrap(),
        json!({"city": "Oslo", "population": 700000})
    );
    assert!(
        reply.tool_calls.is_empty(),
        "the schema tool is the reply, not a call"
    );
    assert_eq!(reply.finish_reason, FinishReason::Stop);
    let rec = server.requests().pop().unwrap();
    assert_eq!(rec.path, "/v1/messages");
    assert_eq!(rec.header("x-api-key"), Some(CANARY_KEY));
    assert_eq!(rec.header("anthropic-version"), Some("2023-06-01"));
    let body = rec.json().unwrap();
    assert_eq!(body["system"], json!("be brief"));
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "say hello"}]}])
    );
    assert_eq!(body["max_tokens"], json!(4096));
    assert_eq!(
        body["tool_choice"],
        json!({"type": "tool", "name": "Answer"})
    );
    assert_eq!(body["tools"][0]["input_schema"], schema);
}

#[tokio::test]
async fn ollama_requests_follow_the_wire_format() {
    let server = FakeServer::start().await;
    server.set_fallback(FakeResponse::json(200, recording("ollama/text.json")));
    let provider = ollama(&server.url());
    let history = Request::new(vec![
        Message::user("weather in Toronto?"),
        Message::assistant_tool_calls(
            "",
            vec![ToolCall::new(
                "x",
                "get_weather",
                json!({"city": "Toronto"}),
            )],
        ),
        Message::tool_result("x", "get_weather", "11 degrees celsius"),
    ])
    .with_max_tokens(50)
    .with_temperature(0.0)
    .with_response_format(ResponseFormat::JsonObject);
    provider.complete(&history).await.unwrap();
    let rec = server.requests().pop().unwrap();
    assert_eq!(rec.path, "/api/chat");
    let body = rec.json().unwrap();
    assert_eq!(
        body["stream"],
        json!(false),
        "streaming is Ollama's default: say no"
    );
    assert_eq!(body["format"], json!("json"));
    assert_eq!(
        body["options"],
        json!({"temperature": 0.0, "num_predict": 50})
    );
    assert_eq!(
        body["messages"][1]["tool_calls"][0]["function"]["arguments"],
        json!({"city": "Toronto"})
    );
    assert_eq!(
        body["messages"][2],
        json!({"role": "tool", "content": "11 degrees celsius", "tool_name": "get_weather"})
    );

    stream_all_splits(
        ollama,
        FakeResponse::ndjson(recording("ollama/tools.ndjson")),
        |r| {
            let r = r.unwrap();
            assert_eq!(r.finish_reason, FinishReason::ToolCalls);
            assert_eq!(r.tool_calls[0].name, "get_weather");
            assert_eq!(r.tool_calls[0].arguments, json!({"city": "Zürich"}));
            assert_eq!(r.tool_calls[1].arguments, json!({}));
            assert_ne!(r.tool_calls[0].id, r.tool_calls[1].id);
        },
    )
    .await;
    stream_all_splits(
        ollama,
        FakeResponse::ndjson(recording("ollama/length.ndjson")),
        |r| {
            let r = r.unwrap();
            assert_eq!(
                (r.content.as_str(), r.finish_reason),
                ("Once upon a", FinishReason::Length)
            );
        },
    )
    .await;
}

#[tokio::test]
async fn the_purpose_never_goes_on_the_wire() {
    let cases: [(Make, FakeResponse, FakeResponse); 4] = [
        (
            openai,
            FakeResponse::json(200, recording("openai/text.json")),
            FakeResponse::sse(recording("openai/text.sse")),
        ),
        (
            openai_compatible,
            FakeResponse::json(200, recording("openai/text.json")),
            FakeResponse::sse(recording("openai/text.sse")),
        ),
        (
            anthropic,
            FakeResponse::json(200, recording("anthropic/text.json")),
            FakeResponse::sse(recording("anthropic/text.sse")),
        ),
        (
            ollama,
            FakeResponse::json(200, recording("ollama/text.json")),
            FakeResponse::ndjson(recording("ollama/text.ndjson")),
        ),
    ];
    for (make, reply, stream_reply) in cases {
        let server = FakeServer::start().await;
        let provider = make(&server.url());
        let with = ask().with_purpose(plan_llm::Purpose::Plan);
        for request in [ask(), with.clone()] {
            server.push(reply.clone());
            provider.complete(&request).await.unwrap();
            server.push(stream_reply.clone());
            let stream = provider.stream(&request).await.unwrap();
            collect_stream(provider.name(), stream).await.unwrap();
        }
        let bodies: Vec<Vec<u8>> = server.requests().into_iter().map(|r| r.body).collect();
        assert_eq!(bodies.len(), 4, "{}", provider.name());
        assert_eq!(bodies[0], bodies[2], "{}: complete", provider.name());
        assert_eq!(bodies[1], bodies[3], "{}: stream", provider.name());
        for body in &bodies {
            let text = String::from_utf8_lossy(body);
            assert!(!text.contains("purpose"), "{}: {text}", provider.name());
        }
    }
}
