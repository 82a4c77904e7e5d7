//! Run a plan one step at a time with the sequential runner and the LLM step executor,
//! over a scripted model (swap in `plan_llm::OpenAi` or any provider for a real one).
//! Events are printed as JSON lines as they happen.

use plan_core::{Plan, Step};
use plan_exec::events::sink_fn;
use plan_exec::llm::LlmStepExecutor;
use plan_exec::runner::Runner;
use plan_llm::{Reply, Request, ScriptedModel, Usage};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The scripted model answers each step with a line naming it.
    let model = ScriptedModel::new().respond_with(|request: &Request| {
        let prompt = &request
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let step = prompt.split('`').nth(1).unwrap_or("?").to_owned();
        Reply::text(format!("(the model's answer to step {step})")).with_usage(Usage::new(120, 30))
    });

    let plan = Plan::new(
        "Write a short guide to Rust error handling",
        vec![
            Step::new("outline", "Outline the guide in five bullet points"),
            Step::new("draft", "Write the guide from the outline").depends_on(["outline"]),
            Step::new("polish", "Tighten the wording of the draft").depends_on(["draft"]),
        ],
    );

    let runner = Runner::sequential(LlmStepExecutor::new(model))
        .with_event_sink(sink_fn(|event| eprintln!("{}", event.to_json_line())));
    let report = runner.run(plan).await?;

    println!("run {} {}", report.run_id, report.status);
    for step in &report.steps {
        println!(
            "{:<8} {:<10} {}",
            step.id,
            step.status.as_str(),
            step.output.as_deref().unwrap_or("-")
        );
    }
    println!(
        "{} model calls, {} prompt tokens",
        report.usage.llm_calls, report.usage.prompt_tokens
    );
    Ok(())
}
