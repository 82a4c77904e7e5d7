//! Whole-run benchmark (`cargo bench -p plan-strategies --bench planned_workloads`): plan-exec's
//! reference workloads *planned by the DAG strategy*. The plan comes from plan-llm's fake
//! OpenAI-compatible server (axum on loopback, 300 ms per call, over real HTTP with
//! plan-llm's OpenAI adapter), the steps run through the parallel runner and the LLM step
//! executor against the same server, and a synthesis call writes the answer.
//!
//! A whole run is ideal at (critical path + 2) x latency: one planning call, the steps on
//! the critical path, one synthesis call. Only streamed planning can beat that, by starting
//! the first steps while the plan is still being generated. Three set-ups per workload:
//!
//! - `plan-then-run`: the whole plan, then the run;
//! - `streamed, burst`: streamed planning against the fake server, which (like a server
//!   that buffers) sends the whole reply at once after its latency: no overlap is possible;
//! - `streamed, paced`: the planning and synthesis replies are generated at an even pace
//!   over the same 300 ms (the fake server, behind a wrapper that spreads the reply's text
//!   over the latency as a model generating tokens would), so steps overlap the planning.
//!
//! Prints a table of makespan, ideal, ratio and calls.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use plan_core::{Plan, Step};
use plan_exec::llm::LlmStepExecutor;
use plan_exec::policy::{RunOptions, StepPolicy};
use plan_exec::testing::workloads::{Workload, layered, reference};
use plan_exec::testing::{answer_by_step, default_reply};
use plan_llm::testing::{FakeOpenAi, FakeReply, FakeRequest};
use plan_llm::{
    Capabilities, Chunk, ChunkStream, FinishReason, Flavour, LlmError, OpenAi, Provider, Request,
    Response,
};
use plan_strategies::{Agent, PlannerConfig, PlanningMode, StrategyKind};

const LATENCY: Duration = Duration::from_millis(300);
const PIECES: u32 = 30;

/// A provider that generates its replies at an even pace: the inner provider answers
/// at once, and the reply's text is streamed in `PIECES` pieces over `LATENCY` (for
/// `complete`, the whole reply after `LATENCY`).
struct Paced<P> {
    inner: P,
}

#[async_trait]
impl<P: Provider> Provider for Paced<P> {
    fn name(&self) -> &str {
        "paced"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        let response = self.inner.complete(request).await?;
        tokio::time::sleep(LATENCY).await;
        Ok(response)
    }
    async fn stream(&self, request: &Request) -> Result<ChunkStream, LlmError> {
        let response = self.inner.complete(request).await?;
        let text: Vec<char> = response.content.chars().collect();
        let per = text.len().div_ceil(PIECES as usize).max(1);
        let pieces: Vec<String> = text.chunks(per).map(|c| c.iter().collect()).collect();
        let usage = response.usage;
        let delay = LATENCY / PIECES;
        let stream = futures::stream::iter(pieces)
            .then(move |piece| async move {
                tokio::time::sleep(delay).await;
                Ok(Chunk::Text(piece))
            })
            .chain(futures::stream::iter([
                Ok(Chunk::Usage(usage)),
                Ok(Chunk::Finish(FinishReason::Stop)),
            ]));
        Ok(Box::pin(stream))
    }
}

fn responder(plan: Plan) -> impl Fn(&FakeRequest) -> FakeReply + Send + Sync + 'static {
    let json = serde_json::to_string(&plan).unwrap_or_default();
    move |r| {
        let system = r
            .messages
            .iter()
            .find(|(role, _)| role == "system")
            .map(|(_, c)| c.as_str())
            .unwrap_or("");
        if system.contains("You are a planner") {
            FakeReply::Text(json.clone())
        } else if system.contains("final answer") {
            FakeReply::Text("the answer".into())
        } else {
            FakeReply::Text(default_reply(&r.key))
        }
    }
}

fn openai(server: &FakeOpenAi) -> OpenAi {
    OpenAi::new("fake-model", None)
        .with_base_url(server.base_url())
        .with_flavour(Flavour::compatible())
}

#[derive(Clone, Copy, PartialEq)]
enum Setup {
    PlanThenRun,
    Burst,
    Paced,
}

async fn run_once(plan: &Plan, setup: Setup) -> (Duration, usize, u64, bool) {
    let steps_server = FakeOpenAi::start().await;
    answer_by_step(&steps_server)
        .latency(LATENCY)
        .otherwise(FakeReply::with(responder(plan.clone())));
    let instant_server = FakeOpenAi::start().await;
    answer_by_step(&instant_server).otherwise(FakeReply::with(responder(plan.clone())));
    let executor = LlmStepExecutor::new(openai(&steps_server));
    let options = RunOptions::default()
        .with_concurrency(16)
        .with_policy(StepPolicy::default());
    let config = PlannerConfig::default().with_step_bounds(3, 30);
    let builder = Agent::builder()
        .strategy(StrategyKind::Dag)
        .executor(executor)
        .run_options(options)
        .planner_config(config);
    let builder = match setup {
        Setup::PlanThenRun => builder
            .provider(openai(&steps_server))
            .planning_mode(PlanningMode::PlanThenRun),
        Setup::Burst => builder.provider(openai(&steps_server)),
        Setup::Paced => builder.provider(Paced {
            inner: openai(&instant_server),
        }),
    };
    let agent = builder.build().unwrap();
    // Warm the connection pools, as a long-running process would have them.
    let _ = agent
        .execute(Plan::new("warm", vec![Step::new("w", "warm up")]))
        .await;
    steps_server.reset();
    instant_server.reset();
    let t = Instant::now();
    let report = agent.run(plan.goal.clone()).await.unwrap();
    let took = t.elapsed();
    let calls = steps_server.total_requests() + instant_server.total_requests();
    (took, calls, report.usage.prompt_tokens, report.is_success())
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// A given plan of 2,000 steps (40 stages of 50, two dependencies each) run as `plan exec
/// --concurrency 64` runs it (the agent's DAG strategy, then a synthesis call, which reads
/// the final steps only) against the fake server at 50 ms per call.
async fn large_exec() {
    const LARGE_LATENCY: Duration = Duration::from_millis(50);
    let plan = layered(&[50; 40]);
    let server = FakeOpenAi::start().await;
    answer_by_step(&server).latency(LARGE_LATENCY);
    let agent = Agent::builder()
        .provider(openai(&server))
        .strategy(StrategyKind::Dag)
        .run_options(
            RunOptions::default()
                .with_concurrency(64)
                .with_policy(StepPolicy::default()),
        )
        .build()
        .unwrap();
    let t = Instant::now();
    let report = agent.execute(plan.clone()).await.unwrap();
    let took = t.elapsed();
    assert!(report.is_success(), "{:?}", report.failure);
    let once = plan
        .steps
        .iter()
        .filter(|s| server.count_for(s.id.as_str()) == 1)
        .count();
    let ideal = LARGE_LATENCY * (40 + 1);
    println!(
        "\n2,000 steps (40 stages x 50, 2 dependencies each), concurrency 64, 50 ms per call:\n  \
         wall {:.2} s, ideal (stages + 1) x latency {:.2} s, ratio {:.2}; steps requested exactly once: {once} of {}; \
         requests {}; peak RSS {:.0} MiB (bench process, fake server included)",
        took.as_secs_f64(),
        ideal.as_secs_f64(),
        took.as_secs_f64() / ideal.as_secs_f64(),
        plan.steps.len(),
        server.total_requests(),
        peak_rss_mib().unwrap_or(f64::NAN)
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "latency {} ms per call; ideal = (critical path + 2) x latency (plan, steps, synthesis)\n",
            LATENCY.as_millis()
        );
        println!(
            "{:<20} {:>5} {:>7} {:>17} {:>17} {:>17} {:>6} {:>14}",
            "workload", "steps", "ideal", "plan-then-run", "streamed, burst", "streamed, paced", "calls", "prompt tokens"
        );
        let mut all_tokens = 0;
        for Workload {
            name,
            plan,
            critical_path,
            ..
        } in reference()
        {
            let ideal = LATENCY * (critical_path + 2);
            let mut cells = Vec::new();
            let mut calls = 0;
            let mut tokens = 0;
            for setup in [Setup::PlanThenRun, Setup::Burst, Setup::Paced] {
                let (took, n, prompt_tokens, ok) = run_once(&plan, setup).await;
                assert!(ok, "{name}: the run failed");
                calls = n;
                if matches!(setup, Setup::PlanThenRun) {
                    tokens = prompt_tokens;
                }
                let ratio = took.as_secs_f64() / ideal.as_secs_f64();
                cells.push(format!("{:>6.0} ms {:>5.3}", took.as_secs_f64() * 1000.0, ratio));
            }
            all_tokens += tokens;
            println!(
                "{:<20} {:>5} {:>4} ms {:>17} {:>17} {:>17} {:>6} {:>14}",
                name,
                plan.steps.len(),
                ideal.as_millis(),
                cells[0],
                cells[1],
                cells[2],
                calls,
                tokens
            );
        }
        println!(
            "\nprompt tokens (chars/4, plan-then-run: planning, steps, synthesis) of all workloads: {all_tokens}"
        );
        large_exec().await;
    });
}
