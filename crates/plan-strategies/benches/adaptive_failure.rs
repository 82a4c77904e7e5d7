//! Failure-handling benchmark (`cargo bench -p plan-strategies --bench adaptive_failure`):
//! the adaptive strategy on a 4-step plan whose step `b` always gets HTTP 500, against the
//! fake OpenAI-compatible server at 100 ms per call, over real HTTP with plan-llm's OpenAI
//! adapter and the agent's default retry policy (the one retry layer).
//!
//! The provider layer makes at most 4 attempts for `b` (with bounded backoff), the step is
//! not retried again on top, and the replan replaces `b`. Prints the wall time, the requests
//! `b` got and the requests of the whole run, averaged over a few runs.

use std::time::{Duration, Instant};

use plan_exec::testing::{answer_by_step, default_reply};
use plan_llm::testing::{FakeOpenAi, FakeReply, FakeRequest};
use plan_llm::{Flavour, OpenAi};
use plan_strategies::{Agent, StrategyKind};

const LATENCY: Duration = Duration::from_millis(100);
const RUNS: usize = 3;

const PLAN: &str = r#"{"goal": "Compare two things", "steps": [
    {"id": "a", "description": "Describe the first thing", "dependencies": []},
    {"id": "b", "description": "Describe the second thing", "dependencies": []},
    {"id": "c", "description": "Compare them", "dependencies": ["a", "b"]},
    {"id": "d", "description": "Summarise", "dependencies": ["c"]}]}"#;

const REPLAN: &str = r#"{"goal": "Compare two things", "steps": [
    {"id": "b2", "description": "Describe the second thing from memory", "dependencies": []},
    {"id": "c2", "description": "Compare them", "dependencies": ["a", "b2"]},
    {"id": "d2", "description": "Summarise", "dependencies": ["c2"]}]}"#;

fn respond(r: &FakeRequest) -> FakeReply {
    let text = r.text();
    if text.contains("Plan again from the current state") {
        FakeReply::Text(REPLAN.to_owned())
    } else if text.contains("You are a planner") {
        FakeReply::Text(PLAN.to_owned())
    } else if r.key == "b" {
        FakeReply::error(500, "the server had an error")
    } else if text.contains("final answer") {
        FakeReply::Text("the answer".to_owned())
    } else {
        FakeReply::Text(default_reply(&r.key))
    }
}

#[tokio::main]
async fn main() {
    let server = FakeOpenAi::start().await;
    answer_by_step(&server)
        .latency(LATENCY)
        .otherwise(FakeReply::with(respond));
    let mut walls = Vec::new();
    let mut b_requests = Vec::new();
    let mut totals = Vec::new();
    for _ in 0..RUNS {
        server.reset();
        let provider = OpenAi::new("fake-model", None)
            .with_base_url(server.base_url())
            .with_flavour(Flavour::compatible());
        let agent = Agent::builder()
            .provider(provider)
            .strategy(StrategyKind::Adaptive)
            .build()
            .expect("agent");
        let t = Instant::now();
        let report = agent.run("Compare two things").await.expect("run");
        walls.push(t.elapsed());
        assert!(report.is_success(), "{:?}", report.failure);
        assert_eq!(report.replans, 1);
        b_requests.push(server.count_for("b"));
        totals.push(server.total_requests());
    }
    let mean = walls.iter().sum::<Duration>() / RUNS as u32;
    let max = walls.iter().max().copied().unwrap_or_default();
    println!(
        "\nadaptive, 4-step plan, step `b` always HTTP 500, {} ms per call ({RUNS} runs):\n  \
         wall mean {:.2} s, max {:.2} s (target: under 15 s); requests for `b`: {:?} (target: at most 6); \
         requests per run: {:?}",
        LATENCY.as_millis(),
        mean.as_secs_f64(),
        max.as_secs_f64(),
        b_requests,
        totals
    );
}
