use std::time::Duration;

use futures::StreamExt;
use plan_llm::{
    Capabilities, Chunk, FinishReason, LlmError, Message, Provider, Purpose, Reply, Request,
    ScriptedModel, ToolCall, Usage, collect_stream,
};
use serde_json::json;

fn ask(text: &str) -> Request {
    Request::new(vec![Message::system("be terse"), Message::user(text)])
}

#[tokio::test]
async fn rules_win_over_the_queue_and_the_fallback_comes_last() {
    let model = ScriptedModel::new()
        .reply(Reply::text("one"))
        .reply(Reply::text("two"))
        .when_user_contains("plan", Reply::json(json!({"steps": 1})))
        .when(|r| r.messages.len() > 2, Reply::text("long"))
        .otherwise(Reply::text("rest"));
    assert_eq!(model.complete(&ask("hi")).await.unwrap().content, "one");
    assert_eq!(
        model.complete(&ask("a plan please")).await.unwrap().content,
        r#"{"steps":1}"#
    );
    let mut long = ask("x");
    long.messages.push(Message::assistant("y"));
    assert_eq!(model.complete(&long).await.unwrap().content, "long");
    assert_eq!(model.complete(&ask("hi")).await.unwrap().content, "two");
    assert_eq!(model.complete(&ask("hi")).await.unwrap().content, "rest");
    assert_eq!(model.call_count(), 5);
    assert_eq!(model.requests()[1].messages[1].content, "a plan please");
}

#[tokio::test]
async fn an_exhausted_script_names_the_call_and_what_to_do() {
    let model = ScriptedModel::new().reply(Reply::text("only"));
    model.complete(&ask("a")).await.unwrap();
    let err = model.complete(&ask("second question")).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("call #2"), "{text}");
    assert!(text.contains("second question"), "{text}");
    assert!(text.contains("queue more replies"), "{text}");
    assert_eq!(model.call_count(), 2, "failed calls are recorded too");
}

#[tokio::test]
async fn errors_tool_calls_and_usage_are_scripted() {
    let model = ScriptedModel::from_replies([
        Reply::error(LlmError::RateLimited {
            provider: "scripted".into(),
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(2)),
        }),
        Reply::tool_call("search", json!({"q": "rust"})),
        Reply::text("counted").with_usage(Usage::new(10, 5)),
    ]);
    let err = model.complete(&ask("a")).await.unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
    let call = model.complete(&ask("b")).await.unwrap();
    assert_eq!(call.finish_reason, FinishReason::ToolCalls);
    assert_eq!(
        call.tool_calls,
        vec![ToolCall::new("call_0", "search", json!({"q": "rust"}))]
    );
    assert!(
        call.usage.total() > 0,
        "usage is estimated when not scripted"
    );
    let text = model.complete(&ask("c")).await.unwrap();
    assert_eq!(text.usage, Usage::new(10, 5));
}

#[tokio::test]
async fn respond_with_sees_the_request() {
    let model = ScriptedModel::new().respond_with(|r| {
        Reply::text(format!(
            "echo: {}",
            r.messages.last().map(|m| m.content.as_str()).unwrap_or("")
        ))
    });
    assert_eq!(
        model.complete(&ask("ping")).await.unwrap().content,
        "echo: ping"
    );
}

#[tokio::test(start_paused = true)]
async fn latency_uses_tokio_time() {
    let model = ScriptedModel::new()
        .with_latency(Duration::from_secs(5))
        .reply(Reply::text("slow"))
        .reply(Reply::text("slower").with_latency(Duration::from_secs(30)));
    let start = tokio::time::Instant::now();
    model.complete(&ask("a")).await.unwrap();
    assert_eq!(start.elapsed().as_secs(), 5);
    model.complete(&ask("b")).await.unwrap();
    assert_eq!(start.elapsed().as_secs(), 35);
}

#[tokio::test(start_paused = true)]
async fn streaming_delivers_chunks_over_time() {
    let model = ScriptedModel::new()
        .streaming(4, Duration::from_millis(100))
        .reply(Reply::text("abcdefgh"));
    let start = tokio::time::Instant::now();
    let mut stream = model.stream(&ask("a")).await.unwrap();
    let mut arrivals = Vec::new();
    while let Some(chunk) = stream.next().await {
        if let Chunk::Text(t) = chunk.unwrap() {
            arrivals.push((t, start.elapsed().as_millis()));
        }
    }
    assert_eq!(
        arrivals,
        vec![
            ("ab".into(), 0),
            ("cd".into(), 100),
            ("ef".into(), 200),
            ("gh".into(), 300)
        ]
    );
}

#[tokio::test]
async fn a_streamed_reply_collects_to_the_same_response() {
    let model = ScriptedModel::new()
        .streaming(3, Duration::ZERO)
        .reply(Reply::tool_call("f", json!({"a": [1, 2, 3], "b": "ü"})))
        .reply(Reply::refusal("no"));
    let stream = model.stream(&ask("a")).await.unwrap();
    let response = collect_stream("scripted", stream).await.unwrap();
    assert_eq!(
        response.tool_calls[0].arguments,
        json!({"a": [1, 2, 3], "b": "ü"})
    );
    let refused = model.complete(&ask("b")).await.unwrap_err();
    assert!(
        matches!(refused, LlmError::Refused { ref message, .. } if message == "no"),
        "{refused}"
    );
}

#[tokio::test]
async fn clones_share_the_record_and_work_as_trait_objects() {
    let model = ScriptedModel::new()
        .named("fake:model")
        .with_capabilities(Capabilities::default().with_json_object(true))
        .otherwise(Reply::text("ok"));
    let shared: std::sync::Arc<dyn Provider> = std::sync::Arc::new(model.clone());
    shared.complete(&ask("a")).await.unwrap();
    assert_eq!(shared.name(), "fake:model");
    assert!(shared.capabilities().json_object && !shared.capabilities().json_schema);
    assert_eq!(model.call_count(), 1);
    model.push(Reply::text("late"));
    assert_eq!(shared.complete(&ask("b")).await.unwrap().content, "late");
}

#[tokio::test]
async fn replies_route_by_purpose_and_an_unmatched_call_names_its_purpose() {
    let model = ScriptedModel::new()
        .when_purpose(Purpose::Plan, Reply::text("the plan"))
        .respond_to_purpose(Purpose::Step, |r| {
            Reply::text(format!("did {}", r.messages[1].content))
        })
        .reply(Reply::text("queued"));
    let plan = ask("same words").with_purpose(Purpose::Plan);
    let step = ask("same words").with_purpose(Purpose::Step);
    assert_eq!(model.complete(&plan).await.unwrap().content, "the plan");
    assert_eq!(
        model.complete(&step).await.unwrap().content,
        "did same words"
    );
    assert_eq!(
        model.complete(&ask("same words")).await.unwrap().content,
        "queued"
    );
    let synth = ask("x").with_purpose(Purpose::Synthesize);
    let err = model.complete(&synth).await.unwrap_err().to_string();
    assert!(err.contains("purpose synthesize"), "{err}");
    assert_eq!(model.requests()[0].purpose, Some(Purpose::Plan));
}
