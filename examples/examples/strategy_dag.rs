//! The DAG strategy with streamed planning: steps start while the model is still writing
//! the plan, and independent steps run in parallel.
//!
//! The scripted model streams its plan slowly (as a real model would), so the events show
//! `step_started` for the first steps before `plan_created`.
//!
//!     cargo run -p plan-examples --example strategy_dag

use std::time::{Duration, Instant};

use plan_core::EventKind;
use plan_exec::events::sink_fn;
use plan_llm::{Purpose, Reply, ScriptedModel};
use plan_strategies::{Agent, StrategyKind};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let model = ScriptedModel::new()
        // 40 pieces, 25 ms apart: the plan takes about a second to arrive.
        .streaming(40, Duration::from_millis(25))
        .when_purpose(
            Purpose::Plan,
            Reply::text(
                r#"{"goal": "dashboard", "steps": [
                {"id": "schema", "description": "Design the database schema for users and orders", "dependencies": []},
                {"id": "auth_api", "description": "Specify the authentication API", "dependencies": ["schema"]},
                {"id": "orders_api", "description": "Specify the orders API", "dependencies": ["schema"]},
                {"id": "ui", "description": "Sketch the dashboard pages using both APIs", "dependencies": ["auth_api", "orders_api"]}
            ]}"#,
            ),
        )
        .when_purpose(Purpose::Synthesize, Reply::text("A dashboard design: schema, two APIs and the UI."))
        .otherwise(Reply::text("done").with_latency(Duration::from_millis(100)));

    let t0 = Instant::now();
    let agent = Agent::builder()
        .provider(model)
        .strategy(StrategyKind::Dag)
        .concurrency(4)
        .event_sink(sink_fn(move |event| {
            let at = t0.elapsed().as_millis();
            match &event.kind {
                EventKind::StepStarted { step, .. } => println!("{at:>5} ms  start     {step}"),
                EventKind::StepCompleted { step, .. } => println!("{at:>5} ms  done      {step}"),
                EventKind::PlanCreated { plan, .. } => {
                    println!("{at:>5} ms  plan complete ({} steps)", plan.steps.len())
                }
                _ => {}
            }
        }))
        .build()?;

    let report = agent.run("Design an admin dashboard").await?;
    println!("\n{} in {} ms", report.status, report.duration_ms);
    println!("{}", report.answer.unwrap_or_default());
    Ok(())
}
