//! Prints how fast each adapter decodes a long streamed reply served by the local fake
//! server (HTTP, SSE/NDJSON parsing and chunk assembly), and what the layers cost.
//! Run: `cargo bench -p plan-llm --features test-utils --bench stream_decode`.

use std::time::{Duration, Instant};

use plan_llm::testing::{FakeResponse, FakeServer, Split};
use plan_llm::{
    Anthropic, ApiKey, Message, Ollama, OpenAi, Provider, ProviderExt, Reply, Request, RetryPolicy,
    ScriptedModel, UsageMeter, collect_stream,
};
use serde_json::json;

const DELTAS: usize = 5_000;

fn openai_body() -> Vec<u8> {
    let mut s = String::new();
    for i in 0..DELTAS {
        let c = json!({"choices": [{"index": 0, "delta": {"content": format!("tök{i} ")}, "finish_reason": null}]});
        s.push_str(&format!("data: {c}\n\n"));
    }
    s.push_str("data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
    s.into_bytes()
}

fn anthropic_body() -> Vec<u8> {
    let mut s = String::from(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":1}}}\n\n",
    );
    s.push_str("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    for i in 0..DELTAS {
        let d = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": format!("tök{i} ")}});
        s.push_str(&format!("event: content_block_delta\ndata: {d}\n\n"));
    }
    s.push_str("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":5000}}\n\n");
    s.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    s.into_bytes()
}

fn ollama_body() -> Vec<u8> {
    let mut s = String::new();
    for i in 0..DELTAS {
        s.push_str(&json!({"message": {"role": "assistant", "content": format!("tök{i} ")}, "done": false}).to_string());
        s.push('\n');
    }
    s.push_str("{\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\"}\n");
    s.into_bytes()
}

async fn measure(name: &str, provider: &dyn Provider, server: &FakeServer, fake: FakeResponse) {
    let runs = 5;
    let mut best = Duration::MAX;
    let bytes = fake.body().len();
    for _ in 0..runs {
        server.push(
            fake.clone()
                .with_split(Split::Random { seed: 7, max: 1500 })
                .with_gap(Duration::ZERO),
        );
        let start = Instant::now();
        let stream = provider
            .stream(&Request::new(vec![Message::user("x")]))
            .await
            .unwrap();
        let r = collect_stream(provider.name(), stream).await.unwrap();
        best = best.min(start.elapsed());
        assert!(r.content.ends_with(&format!("tök{} ", DELTAS - 1)));
    }
    println!(
        "{name:<10} {DELTAS} deltas, {:>7} bytes: best of {runs} {:>7.2} ms = {:>8.0} deltas/s, {:>6.1} MB/s",
        bytes,
        best.as_secs_f64() * 1e3,
        DELTAS as f64 / best.as_secs_f64(),
        bytes as f64 / best.as_secs_f64() / 1e6,
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let server = FakeServer::start().await;
    let url = server.url();
    let openai = OpenAi::new("m", Some(ApiKey::new("k"))).with_base_url(&url);
    let anthropic = Anthropic::new("m", ApiKey::new("k")).with_base_url(&url);
    let ollama = Ollama::new("m").with_base_url(&url);
    measure("openai", &openai, &server, FakeResponse::sse(openai_body())).await;
    measure(
        "anthropic",
        &anthropic,
        &server,
        FakeResponse::sse(anthropic_body()),
    )
    .await;
    measure(
        "ollama",
        &ollama,
        &server,
        FakeResponse::ndjson(ollama_body()),
    )
    .await;

    // Layer overhead on an instant scripted model.
    let bare = ScriptedModel::new().otherwise(Reply::text("ok"));
    let meter = UsageMeter::new();
    let layered = bare
        .clone()
        .with_concurrency_limit(8)
        .with_timeout(Duration::from_secs(5))
        .with_retry(RetryPolicy::default())
        .with_usage_meter(&meter);
    let request = Request::new(vec![Message::user("x")]);
    for (name, p) in [("bare", &bare as &dyn Provider), ("4 layers", &layered)] {
        let n = 20_000;
        let start = Instant::now();
        for _ in 0..n {
            p.complete(&request).await.unwrap();
        }
        let per = start.elapsed() / n;
        println!(
            "scripted {name:<9} {:>6.2} µs per call",
            per.as_secs_f64() * 1e6
        );
    }
}
