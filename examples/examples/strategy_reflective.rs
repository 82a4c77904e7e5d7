//! Reflective planning: the model critiques its plan against the goal (a structured
//! verdict: approved, or a list of issues), the planner improves it, for up to N rounds;
//! then the plan runs.
//!
//!     cargo run -p plan-examples --example strategy_reflective

use plan_llm::{Purpose, Reply, ScriptedModel};
use plan_strategies::{Agent, ReportExt, StrategyKind};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let model = ScriptedModel::new()
        // The improvement request carries the review's issues.
        .when_purpose(
            Purpose::Improve,
            Reply::text(
                r#"{"steps": [
                {"id": "draft", "description": "Draft the release notes from the changelog", "dependencies": []},
                {"id": "check", "description": "Check every breaking change is called out", "dependencies": ["draft"], "kind": "verify"},
                {"id": "publish", "description": "Format the notes for the website", "dependencies": ["check"]}
            ]}"#,
            ),
        )
        .when_purpose(
            Purpose::Plan,
            Reply::text(
                r#"{"steps": [
                {"id": "draft", "description": "Draft the release notes from the changelog", "dependencies": []},
                {"id": "publish", "description": "Format the notes for the website", "dependencies": ["draft"]}
            ]}"#,
            ),
        )
        // First review: issues. Second review (the plan now has `check`): approved.
        .when(
            |r| {
                r.purpose == Some(Purpose::Critique)
                    && r.messages.iter().any(|m| m.content.contains("\"check\""))
            },
            Reply::text(r#"{"approved": true, "issues": []}"#),
        )
        .when_purpose(
            Purpose::Critique,
            Reply::text(r#"{"approved": false, "issues": ["nothing checks that breaking changes are called out before publishing"]}"#),
        )
        .when_purpose(Purpose::Synthesize, Reply::text("Release notes for 2.0, breaking changes first."))
        .otherwise(Reply::text("PASS: done"));

    let agent = Agent::builder()
        .provider(model)
        .strategy(StrategyKind::Reflective)
        .reflection_rounds(3)
        .build()?;
    let report = agent.run("Write the release notes for version 2.0").await?;

    for (round, critique) in report.critiques().iter().enumerate() {
        if critique.approved {
            println!("round {}: approved", round + 1);
        } else {
            println!(
                "round {}: {} issue(s): {:?}",
                round + 1,
                critique.issues.len(),
                critique.issues
            );
        }
    }
    let ids: Vec<&str> = report
        .plan
        .as_ref()
        .expect("the run made a plan")
        .steps
        .iter()
        .map(|s| s.id.as_str())
        .collect();
    println!("plan that ran: {ids:?}");
    println!("\n{}", report.answer.unwrap_or_default());
    Ok(())
}
