//! Forecast accuracy (`cargo bench -p plan-strategies --bench forecast`): each of plan-exec's
//! reference workloads is planned and run by the DAG strategy against plan-llm's fake
//! OpenAI server (100 ms per call, real HTTP) with a SQLite run store, three times; the
//! forecast of a fourth run, mined from those three, is then set against what the fourth
//! run took. The target is a wall-time forecast within ±25% of the actual.
//!
//! Prints, per workload: the forecast range and its midpoint, the actual, and the error.

use std::time::Duration;

use plan_exec::forecast::{Forecast, History};
use plan_exec::llm::LlmStepExecutor;
use plan_exec::store::RunStore;
use plan_exec::testing::workloads::reference;
use plan_exec::testing::{answer_by_step, default_reply};
use plan_llm::testing::{FakeOpenAi, FakeReply};
use plan_llm::{Flavour, OpenAi};
use plan_sqlite::SqliteStore;
use plan_strategies::{Agent, PlannerConfig, StrategyKind};

const LATENCY: Duration = Duration::from_millis(100);
const MODEL: &str = "openai:fake-model";
const CONCURRENCY: usize = 16;

fn openai(server: &FakeOpenAi) -> OpenAi {
    OpenAi::new("fake-model", None)
        .with_base_url(server.base_url())
        .with_flavour(Flavour::compatible().with_detect(false))
}

fn agent(server: &FakeOpenAi, store: &SqliteStore) -> Agent {
    Agent::builder()
        .strategy(StrategyKind::Dag)
        .provider(openai(server))
        .executor(LlmStepExecutor::new(openai(server)))
        .concurrency(CONCURRENCY)
        .planner_config(PlannerConfig::default().with_step_bounds(3, 30))
        .model_spec(MODEL)
        .store(store.clone())
        .build()
        .expect("agent")
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "forecast after 3 runs vs the 4th run, fake model at {} ms per call, concurrency {CONCURRENCY}",
        LATENCY.as_millis()
    );
    println!(
        "{:<20} {:>15} {:>9} {:>9} {:>7}",
        "workload", "forecast (ms)", "mid", "actual", "error"
    );
    let mut worst: f64 = 0.0;
    for (i, workload) in reference().into_iter().enumerate() {
        let store = SqliteStore::open(dir.path().join(format!("runs-{i}.sqlite"))).expect("store");
        let server = FakeOpenAi::start().await;
        let json = serde_json::to_string(&workload.plan).expect("plan json");
        answer_by_step(&server)
            .latency(LATENCY)
            .otherwise(FakeReply::with(move |r| {
                let text = r.text();
                if text.contains("You are a planner") {
                    FakeReply::text(json.clone())
                } else if text.contains("final answer") {
                    FakeReply::text("the answer")
                } else {
                    FakeReply::text(default_reply(&r.key))
                }
            }));
        let agent = agent(&server, &store);
        for _ in 0..3 {
            agent
                .run(workload.plan.goal.clone())
                .await
                .expect("a prior run");
        }
        let history = History::mine(&store as &dyn RunStore, MODEL)
            .await
            .expect("history");
        let forecast = Forecast::of(&workload.plan, &history, CONCURRENCY, None);
        let report = agent
            .run(workload.plan.goal.clone())
            .await
            .expect("the measured run");
        let [low, high] = forecast.wall_ms;
        let mid = (low + high) as f64 / 2.0;
        let actual = report.duration_ms as f64;
        let error = (mid - actual) / actual * 100.0;
        worst = worst.max(error.abs());
        println!(
            "{:<20} {:>7}-{:<7} {:>9.0} {:>9.0} {:>+6.1}%",
            workload.name, low, high, mid, actual, error
        );
    }
    println!("worst wall-time error: {worst:.1}% (target: within ±25%)");
}
