//! The public traits from outside their crates: the example's in-memory run store passes
//! the store conformance suite, and the key types and futures are `Send`/`Sync` (in the
//! manner of tokio's `tests/async_send_sync.rs`: a type that loses `Send` or `Sync` stops
//! this file compiling).

use std::sync::Arc;

use plan_core::{Plan, RunId};
use plan_exec::conformance::check_store;
use plan_exec::executor::StepExecutor;
use plan_exec::runner::Runner;
use plan_exec::session::{RunSession, SessionBuilder};
use plan_exec::store::RunStore;
use plan_llm::{Reply, ScriptedModel};
use plan_strategies::{
    Agent, PlanStart, Planner, Strategy, StrategyContext, StrategyKind, StrategyRegistry,
};

#[path = "../examples/custom_store.rs"]
#[allow(dead_code)]
mod custom_store;

#[tokio::test]
async fn the_example_memory_store_passes_the_store_conformance_suite() {
    let report = check_store(Arc::new(custom_store::MemoryStore::default())).await;
    report.assert_passed();
    assert_eq!(report.passed.len(), 14, "{:?}", report.passed);
}

fn is_send<T: Send>(_: &T) {}
fn is_sync<T: Sync>(_: &T) {}
fn is_send_sync<T: Send + Sync>() {}

#[test]
fn key_types_are_send_and_sync() {
    is_send_sync::<Agent>();
    is_send_sync::<RunSession>();
    is_send_sync::<SessionBuilder>();
    is_send_sync::<Runner>();
    is_send_sync::<StrategyRegistry>();
    is_send_sync::<StrategyContext>();
    is_send_sync::<StrategyKind>();
    is_send_sync::<plan_exec::report::RunReport>();
    is_send_sync::<Arc<dyn Strategy>>();
    is_send_sync::<Arc<dyn Planner>>();
    is_send_sync::<Arc<dyn RunStore>>();
    is_send_sync::<Arc<dyn StepExecutor>>();
    is_send_sync::<Arc<dyn plan_sandbox::Sandbox>>();
    is_send_sync::<Arc<dyn plan_exec::events::EventSink>>();
    is_send_sync::<custom_store::MemoryStore>();
}

/// Checked by the compiler only: the futures of the public async API are `Send`, so
/// they can be spawned on a multi-threaded runtime.
#[allow(dead_code, clippy::too_many_arguments)]
fn futures_are_send(
    agent: &Agent,
    strategy: &dyn Strategy,
    cx: &StrategyContext,
    session: &RunSession,
    runner: &Runner,
    store: &dyn RunStore,
    run: &RunId,
    plan: Plan,
) {
    is_send(&agent.run("goal"));
    is_send(&agent.resume(run));
    is_send(&agent.execute(plan.clone()));
    is_send(&agent.plan_only("goal"));
    is_send(&strategy.execute(cx, session, PlanStart::new(plan.clone())));
    is_send(&strategy.run(cx, session, "goal"));
    is_send(&strategy.plan(cx, "goal"));
    is_send(&runner.run(plan));
    is_send(&runner.resume(run));
    is_send(&session.finish(plan_core::RunStatus::Succeeded, None, None));
    is_send(&store.load_run(run));
    is_send(&check_store(Arc::new(custom_store::MemoryStore::default())));
}

#[tokio::test]
async fn a_real_agent_run_future_is_send_and_runs_on_a_spawned_task() {
    let model = ScriptedModel::new()
        .when_system_contains(
            "You are a planner",
            Reply::text(r#"{"goal": "g", "steps": [{"id": "a", "description": "Say hi"}]}"#),
        )
        .otherwise(Reply::text("hi"));
    let agent = Agent::builder().provider(model).build().unwrap();
    is_sync(&agent);
    is_send(&agent.run("Say hi"));
    // Spawned: only a `Send` future compiles here.
    let report = tokio::spawn(async move { agent.run("Say hi").await })
        .await
        .unwrap()
        .unwrap();
    assert!(report.is_success());
}
