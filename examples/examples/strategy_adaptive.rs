//! Adaptive planning: when a step fails (after its retries and fallback), the agent replans
//! from the current state. Finished steps are kept and never run again; the new plan
//! replaces the rest.
//!
//!     cargo run -p plan-examples --example strategy_adaptive

use plan_core::EventKind;
use plan_exec::events::sink_fn;
use plan_exec::policy::{RunOptions, StepPolicy};
use plan_llm::{LlmError, Purpose, Reply, ScriptedModel};
use plan_strategies::{Agent, StrategyKind};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let model = ScriptedModel::new()
        // The replanning call (it is told which step failed): answer with a workaround.
        .when_purpose(
            Purpose::Replan,
            Reply::text(
                r#"{"steps": [
                {"id": "parse_by_hand", "description": "Parse the CSV rows by splitting on commas", "dependencies": ["fetch"]},
                {"id": "summary", "description": "Summarise the parsed rows", "dependencies": ["parse_by_hand"]}
            ]}"#,
            ),
        )
        .when_purpose(
            Purpose::Plan,
            Reply::text(
                r#"{"steps": [
                {"id": "fetch", "description": "Fetch the sales CSV", "dependencies": []},
                {"id": "parse", "description": "Parse the CSV with the strict parser", "dependencies": ["fetch"]},
                {"id": "summary", "description": "Summarise the parsed rows", "dependencies": ["parse"]}
            ]}"#,
            ),
        )
        // The strict parser always fails: a fatal error, so no retries.
        .when_user_contains(
            "strict parser",
            Reply::error(LlmError::BadRequest {
                provider: "scripted".into(),
                status: 422,
                message: "strict parser rejected line 3: unterminated quote".into(),
            }),
        )
        .when_purpose(Purpose::Synthesize, Reply::text("Sales rose 12% over the quarter."))
        .otherwise(Reply::text("date,amount\n2026-01-01,100\n2026-02-01,112"));

    let agent = Agent::builder()
        .provider(model)
        .strategy(StrategyKind::Adaptive)
        .max_replans(3)
        .run_options(RunOptions::default().with_policy(StepPolicy::default().with_retries(1)))
        .event_sink(sink_fn(|event| match &event.kind {
            EventKind::StepFailed { step, error, .. } => println!("failed    {step}: {error}"),
            EventKind::Replanned {
                revision,
                reason,
                kept,
                ..
            } => {
                let kept: Vec<&str> = kept.iter().map(|k| k.as_str()).collect();
                println!("replanned (revision {revision}) because {reason}; kept {kept:?}")
            }
            EventKind::StepCompleted { step, .. } => println!("completed {step}"),
            _ => {}
        }))
        .build()?;

    let report = agent.run("Summarise this quarter's sales").await?;
    println!("\n{} after {} replan(s)", report.status, report.replans);
    for step in &report.steps {
        let note = if step.reused {
            " (kept from before the replan)"
        } else {
            ""
        };
        println!("  {:<14} {}{note}", step.id, step.status);
    }
    println!(
        "\n{}",
        report
            .answer
            .unwrap_or_else(|| report.failure.unwrap_or_default())
    );
    Ok(())
}
