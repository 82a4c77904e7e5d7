//! The smallest planning agent: plan a goal, run the steps (in parallel where the plan
//! allows), and print the answer.
//!
//! Runs offline with a scripted model. To use a real model, set `PLAN_MODEL`
//! (`openai:gpt-4o-mini`, `anthropic:claude-sonnet-4-5`, `ollama:llama3.2`) and its key:
//!
//!     cargo run -p plan-examples --example basic_agent
//!     PLAN_MODEL=ollama:llama3.2 cargo run -p plan-examples --example basic_agent

use std::sync::Arc;

use plan_llm::{
    ModelSpec, Provider, ProviderConfig, Purpose, Reply, ScriptedModel, build_provider,
};
use plan_strategies::Agent;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let goal = "Research the top 3 Python web frameworks and create a comparison table";
    let provider = model_from_env()?.unwrap_or_else(|| Arc::new(offline_model()));

    let agent = Agent::builder().provider(provider).build()?;
    let report = agent.run(goal).await?;

    println!(
        "plan ({} steps):",
        report
            .plan
            .as_ref()
            .expect("the run made a plan")
            .steps
            .len()
    );
    for step in &report.steps {
        println!("  {:<10} {}", step.status, step.id);
    }
    println!("\n{}", report.answer.as_deref().unwrap_or("(no answer)"));
    println!(
        "\n{} model calls, {} + {} tokens, {} ms",
        report.usage.llm_calls,
        report.usage.prompt_tokens,
        report.usage.completion_tokens,
        report.duration_ms
    );
    Ok(())
}

/// The model named by `PLAN_MODEL`, if it is set (and not `local`).
fn model_from_env() -> anyhow::Result<Option<Arc<dyn Provider>>> {
    match std::env::var("PLAN_MODEL") {
        Ok(spec) if spec != "local" => {
            let spec = ModelSpec::parse(&spec)?;
            Ok(Some(build_provider(&spec, &ProviderConfig::from_env())?))
        }
        _ => Ok(None),
    }
}

/// A scripted stand-in: it answers the planner with a plan, each step with a short
/// result, and the final call with the answer.
fn offline_model() -> ScriptedModel {
    ScriptedModel::new()
        .when_purpose(
            Purpose::Plan,
            Reply::text(
                r#"{"goal": "compare", "steps": [
                {"id": "search", "description": "List the three most used Python web frameworks", "dependencies": []},
                {"id": "facts", "description": "Collect speed, features and ecosystem facts for each", "dependencies": ["search"]},
                {"id": "table", "description": "Write a markdown comparison table from the facts", "dependencies": ["facts"]},
                {"id": "check", "description": "Check the table covers all three frameworks", "dependencies": ["table"], "kind": "verify"}
            ]}"#,
            ),
        )
        .when_purpose(
            Purpose::Synthesize,
            Reply::text(
                "| framework | speed | features | ecosystem |\n|---|---|---|---|\n| Django | ok | batteries included | huge |\n| Flask | ok | minimal | large |\n| FastAPI | fast | async, typed | growing |",
            ),
        )
        .when_purpose(Purpose::Verify, Reply::text("PASS: all three are covered"))
        .otherwise(Reply::text("Django, Flask and FastAPI; notes on each."))
}
