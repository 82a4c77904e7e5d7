//! A strategy of your own: implement `plan_strategies::Strategy`. "Best of two" asks the
//! planner twice and runs the shorter plan, through `StrategyContext::drive` (which
//! records the plan, runs it in the run's session and reports the outcome).
//!
//! The strategy is registered in a `StrategyRegistry` so a stored run made with it can be
//! resumed: the first run fails at a step (its backend is down), and `Agent::resume`
//! finds the strategy by the name stored with the run and finishes it without redoing the
//! step that had completed. An agent without the registration refuses to resume it.
//!
//!     cargo run -p plan-examples --example custom_strategy

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use plan_exec::session::RunSession;
use plan_llm::{LlmError, Purpose, Reply, Request, Role, ScriptedModel};
use plan_sqlite::SqliteStore;
use plan_strategies::{
    Agent, Outcome, PlanOutcome, PlanRequest, PlanStart, Strategy, StrategyContext, StrategyError,
    StrategyRegistry,
};

/// Plans twice, keeps the plan with fewer steps.
struct BestOfTwo;

#[async_trait]
impl Strategy for BestOfTwo {
    fn name(&self) -> &str {
        "best_of_two"
    }

    async fn plan(&self, cx: &StrategyContext, goal: &str) -> Result<PlanOutcome, StrategyError> {
        let first = cx.planner().plan(&PlanRequest::new(goal)).await?;
        let second = cx.planner().plan(&PlanRequest::new(goal)).await?;
        let calls = first.calls.iter().chain(&second.calls).cloned().collect();
        let best = if second.plan.steps.len() < first.plan.steps.len() {
            second
        } else {
            first
        };
        let mut outcome = PlanOutcome::new(best.plan).with_calls(calls);
        outcome.repairs.extend(best.repair);
        Ok(outcome)
    }

    async fn execute(
        &self,
        cx: &StrategyContext,
        session: &RunSession,
        start: PlanStart,
    ) -> Result<Outcome, StrategyError> {
        // No replanning: a failed step fails the run (it can be resumed).
        cx.drive(session, start, false).await
    }
}

const LONG_PLAN: &str = r#"{"goal": "post", "steps": [
    {"id": "research", "description": "Research the topic", "dependencies": []},
    {"id": "outline", "description": "Outline the post", "dependencies": ["research"]},
    {"id": "draft", "description": "Draft the post", "dependencies": ["outline"]},
    {"id": "write", "description": "Polish the post", "dependencies": ["draft"]}
]}"#;

const SHORT_PLAN: &str = r#"{"goal": "post", "steps": [
    {"id": "outline", "description": "Outline the post", "dependencies": []},
    {"id": "write", "description": "Write the post from the outline", "dependencies": ["outline"]}
]}"#;

fn user_has(request: &Request, needle: &str) -> bool {
    request
        .messages
        .iter()
        .any(|m| m.role == Role::User && m.content.contains(needle))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let backend_down = Arc::new(AtomicBool::new(true));
    let plans_made = Arc::new(AtomicUsize::new(0));
    let model = {
        let (down, plans) = (backend_down.clone(), plans_made.clone());
        ScriptedModel::new().respond_with(move |request| {
            if request.purpose == Some(Purpose::Plan) {
                let n = plans.fetch_add(1, Ordering::SeqCst);
                Reply::text(if n == 0 { LONG_PLAN } else { SHORT_PLAN })
            } else if request.purpose == Some(Purpose::Synthesize) {
                Reply::text("Rust 2024 in five points: ...")
            } else if user_has(request, "Your step (`write`)") && down.load(Ordering::SeqCst) {
                Reply::error(LlmError::BadRequest {
                    provider: "scripted".into(),
                    status: 400,
                    message: "the writing backend is down".into(),
                })
            } else {
                Reply::text("done")
            }
        })
    };
    let step_calls = |model: &ScriptedModel, step: &str| {
        let needle = format!("Your step (`{step}`)");
        model
            .requests()
            .iter()
            .filter(|r| user_has(r, &needle))
            .count()
    };

    let store = SqliteStore::in_memory()?;
    let mut registry = StrategyRegistry::builtin();
    registry.register(BestOfTwo);
    let agent = Agent::builder()
        .provider(model.clone())
        .strategy(BestOfTwo)
        .registry(registry)
        .store(store.clone())
        .build()?;

    // 1. The shorter plan runs; `write` fails while its backend is down.
    let first = agent.run("Write a blog post about Rust 2024").await?;
    let plan = first
        .plan
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no plan"))?;
    println!(
        "run {}: {} with the {}-step plan, strategy {:?}",
        first.run_id,
        first.status,
        plan.steps.len(),
        first.strategy
    );
    anyhow::ensure!(
        plans_made.load(Ordering::SeqCst) == 2,
        "it should plan twice"
    );
    anyhow::ensure!(plan.steps.len() == 2, "the shorter plan should run");
    anyhow::ensure!(
        first.strategy.as_deref() == Some("best_of_two"),
        "strategy not recorded"
    );
    anyhow::ensure!(!first.is_success(), "`write` should have failed");

    // 2. An agent that does not know the strategy cannot resume the run.
    let stranger = Agent::builder()
        .provider(model.clone())
        .store(store.clone())
        .build()?;
    match stranger.resume(&first.run_id).await {
        Err(StrategyError::UnknownStrategy(e)) => println!("without the registry: {e}"),
        other => anyhow::bail!("resume without the registry should fail, got {other:?}"),
    }

    // 3. With the backend back, the registered strategy finishes the run.
    backend_down.store(false, Ordering::SeqCst);
    let resumed = agent.resume(&first.run_id).await?;
    println!("resumed: {} -> {:?}", resumed.status, resumed.answer);
    anyhow::ensure!(
        resumed.is_success(),
        "the resumed run failed: {:?}",
        resumed.failure
    );
    anyhow::ensure!(resumed.run_id == first.run_id, "resume made a new run");
    anyhow::ensure!(
        step_calls(&model, "outline") == 1,
        "`outline` was run again"
    );
    anyhow::ensure!(
        step_calls(&model, "write") == 2,
        "`write` should run once more"
    );
    anyhow::ensure!(
        plans_made.load(Ordering::SeqCst) == 2,
        "resume should not plan again"
    );
    Ok(())
}
