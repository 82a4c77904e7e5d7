//! A planner of your own: implement `plan_strategies::Planner` and the agent plans without
//! a model. This one is rule-based: a goal written as "first X, then Y, then Z" becomes a
//! chain of steps; "X and Y" inside a part become parallel steps that the next part waits
//! for. The model still runs the steps and writes the answer.
//!
//!     cargo run -p plan-examples --example custom_planner

use async_trait::async_trait;
use plan_core::{Plan, Step, StepId};
use plan_llm::{Purpose, Reply, Role, ScriptedModel};
use plan_strategies::{Agent, PlanContext, PlanRequest, Planned, Planner, StrategyError};

/// Plans by splitting the goal on "then" (sequence) and "and" (parallel).
struct RulePlanner;

impl RulePlanner {
    fn plan_for(goal: &str) -> Result<Plan, StrategyError> {
        let mut steps: Vec<Step> = Vec::new();
        let mut previous: Vec<StepId> = Vec::new();
        let goal_text = goal
            .trim()
            .trim_start_matches("first ")
            .trim_end_matches('.');
        for (i, part) in goal_text.split(", then ").enumerate() {
            let mut current = Vec::new();
            for (j, action) in part.split(" and ").enumerate() {
                let action = action.trim();
                if action.is_empty() {
                    continue;
                }
                let id = StepId::new(format!("s{}{}", i + 1, (b'a' + j as u8) as char));
                steps.push(Step::new(id.clone(), capitalise(action)).depends_on(previous.clone()));
                current.push(id);
            }
            previous = current;
        }
        if steps.len() < 2 {
            return Err(StrategyError::Config(format!(
                "the rule planner found fewer than two steps in `{goal}`: write the goal as \
                 \"first X, then Y\" or use the LLM planner"
            )));
        }
        Ok(Plan::new(goal, steps))
    }
}

#[async_trait]
impl Planner for RulePlanner {
    async fn plan(&self, request: &PlanRequest) -> Result<Planned, StrategyError> {
        match &request.context {
            // Fresh plans, and improvements (the rules cannot do better than the rules).
            PlanContext::Fresh | PlanContext::Improve { .. } => {
                Ok(Planned::new(Self::plan_for(&request.goal)?))
            }
            _ => Err(StrategyError::Config(
                "the rule planner cannot replan: use a strategy without replanning".to_owned(),
            )),
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The model only runs steps and writes the answer: it is never asked for a plan.
    let model = ScriptedModel::new()
        .when_purpose(
            Purpose::Synthesize,
            Reply::text("Flask for small apps, Django for big ones."),
        )
        .respond_with(|request| {
            let asked = request
                .messages
                .iter()
                .rev()
                .find(|m| m.role == Role::User)
                .map(|m| m.content.lines().next().unwrap_or_default().to_owned())
                .unwrap_or_default();
            Reply::text(format!("done: {asked}"))
        });
    let agent = Agent::builder()
        .provider(model.clone())
        .planner(RulePlanner)
        .build()?;

    let goal = "first list Django's features and list Flask's features, then compare them, then recommend one";
    let report = agent.run(goal).await?;

    let plan = report
        .plan
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the run has no plan"))?;
    for step in &plan.steps {
        let deps: Vec<&str> = step.dependencies.iter().map(|d| d.as_str()).collect();
        println!("{:<4} {:<32} after {:?}", step.id, step.description, deps);
    }
    println!("\n{}", report.answer.as_deref().unwrap_or("(no answer)"));

    anyhow::ensure!(report.is_success(), "the run failed: {:?}", report.failure);
    let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
    anyhow::ensure!(
        ids == ["s1a", "s1b", "s2a", "s3a"],
        "unexpected plan {ids:?}"
    );
    anyhow::ensure!(
        plan.steps[2].dependencies == [StepId::new("s1a"), StepId::new("s1b")],
        "`compare` must wait for both feature lists"
    );
    // Four step calls and one answer call: no planning call.
    let planning_calls = model
        .requests()
        .iter()
        .filter(|r| {
            r.messages
                .iter()
                .any(|m| m.content.contains("You are a planner"))
        })
        .count();
    anyhow::ensure!(planning_calls == 0, "the model was asked to plan");
    anyhow::ensure!(
        model.call_count() == 5,
        "expected 5 model calls, saw {}",
        model.call_count()
    );
    anyhow::ensure!(
        agent.run("do everything").await.is_err(),
        "a goal the rules cannot split must be refused"
    );
    Ok(())
}
