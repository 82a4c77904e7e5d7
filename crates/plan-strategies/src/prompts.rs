//! The prompt templates (files under `prompts/`) and the JSON schemas of structured replies.

use std::sync::OnceLock;

use minijinja::Environment;
use serde::Serialize;

use crate::error::StrategyError;

/// The JSON schema of a plan reply (the plan JSON contract), sent as the response format.
pub const PLAN_SCHEMA: &str = include_str!("../prompts/plan_schema.json");
/// The JSON schema of a critique verdict.
pub(crate) const CRITIQUE_SCHEMA: &str = include_str!("../prompts/critique_schema.json");
/// The JSON schema of a decomposition reply.
pub(crate) const DECOMPOSE_SCHEMA: &str = include_str!("../prompts/decompose_schema.json");

const TEMPLATES: &[(&str, &str)] = &[
    ("plan_system", include_str!("../prompts/plan_system.j2")),
    ("plan_user", include_str!("../prompts/plan_user.j2")),
    ("plan_fix", include_str!("../prompts/plan_fix.j2")),
    (
        "decompose_system",
        include_str!("../prompts/decompose_system.j2"),
    ),
    (
        "decompose_user",
        include_str!("../prompts/decompose_user.j2"),
    ),
    (
        "critique_system",
        include_str!("../prompts/critique_system.j2"),
    ),
    ("critique_user", include_str!("../prompts/critique_user.j2")),
    (
        "synthesize_system",
        include_str!("../prompts/synthesize_system.j2"),
    ),
    (
        "synthesize_user",
        include_str!("../prompts/synthesize_user.j2"),
    ),
];

fn env() -> &'static Result<Environment<'static>, String> {
    static ENV: OnceLock<Result<Environment<'static>, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .map_err(|e| format!("template syntax: {e}"))?;
        env.set_syntax(syntax);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .map_err(|e| format!("{name}: {e}"))?;
        }
        Ok(env)
    })
}

/// Renders a template by name with `ctx`.
pub(crate) fn render(name: &str, ctx: impl Serialize) -> Result<String, StrategyError> {
    let err = |message: String| StrategyError::Template {
        template: name.to_owned(),
        message,
    };
    let env = env().as_ref().map_err(|e| err(e.clone()))?;
    let template = env.get_template(name).map_err(|e| err(e.to_string()))?;
    let text = template
        .render(minijinja::value::Serde(ctx))
        .map_err(|e| err(e.to_string()))?;
    Ok(text.trim_end().to_owned())
}

/// A schema as a JSON value (the constants are checked by tests to be valid JSON).
pub(crate) fn schema_value(schema: &str) -> serde_json::Value {
    serde_json::from_str(schema).unwrap_or(serde_json::Value::Null)
}

/// A schema compacted onto one line for the system prompt.
pub(crate) fn schema_compact(schema: &str) -> String {
    serde_json::to_string(&schema_value(schema)).unwrap_or_else(|_| schema.to_owned())
}

/// Cuts `text` to at most `cap` characters, with a visible marker saying how much was cut.
pub(crate) fn bounded(text: &str, cap: usize) -> String {
    let total = text.chars().count();
    if total <= cap {
        return text.to_owned();
    }
    let kept: String = text.chars().take(cap).collect();
    format!(
        "{kept}… [truncated: {} of {total} characters omitted]",
        total - cap
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_json() {
        for s in [PLAN_SCHEMA, CRITIQUE_SCHEMA, DECOMPOSE_SCHEMA] {
            assert!(serde_json::from_str::<serde_json::Value>(s).is_ok());
        }
    }

    #[test]
    fn bounded_marks_the_cut() {
        assert_eq!(bounded("abc", 3), "abc");
        assert_eq!(
            bounded("abcdef", 2),
            "ab… [truncated: 4 of 6 characters omitted]"
        );
    }

    mod snapshots {
        use plan_core::{Plan, Step};
        use plan_llm::ScriptedModel;

        use crate::calls::{SynthesisInput, synthesis_messages};
        use crate::planner::{
            AgentInfo, FailedStep, FinishedStep, LlmPlanner, PlanRequest, PlannerConfig,
            ReplanContext,
        };
        use crate::prompts::{CRITIQUE_SCHEMA, DECOMPOSE_SCHEMA, render, schema_compact};

        fn planner() -> LlmPlanner {
            LlmPlanner::new(ScriptedModel::new())
        }

        fn plan() -> Plan {
            Plan::new(
                "Compare Rust web frameworks",
                vec![
                    Step::new("search", "Find the most used Rust web frameworks"),
                    Step::new("compare", "Compare them on speed and ecosystem")
                        .depends_on(["search"]),
                ],
            )
        }

        #[test]
        fn plan_system_prompt() {
            insta::assert_snapshot!(planner().system_prompt().unwrap());
        }

        #[test]
        fn plan_system_prompt_with_agents_and_bounds() {
            let p =
                planner().with_config(PlannerConfig::default().with_step_bounds(2, 6).with_agents(
                    vec![
                        AgentInfo::new("researcher", "searches the document index"),
                        AgentInfo::new("coder", "writes and runs Python in a sandbox"),
                    ],
                ));
            insta::assert_snapshot!(p.system_prompt().unwrap());
        }

        #[test]
        fn plan_user_prompts() {
            let p = planner();
            let fresh = p
                .user_prompt(&PlanRequest::new("Compare Rust web frameworks"))
                .unwrap();
            let improve = p
                .user_prompt(&PlanRequest::improve(
                    plan(),
                    vec![
                        "nothing checks the comparison".into(),
                        "search is vague".into(),
                    ],
                ))
                .unwrap();
            let replan = p
                .user_prompt(&PlanRequest::replan(
                    "Compare Rust web frameworks",
                    ReplanContext {
                        finished: vec![FinishedStep {
                            step: plan().steps[0].clone(),
                            output: "axum, actix-web, rocket ".repeat(100),
                        }],
                        failed: FailedStep {
                            step: plan().steps[1].clone(),
                            error: "the model timed out after 30s".into(),
                        },
                        abandoned: vec!["write".into(), "check".into()],
                    },
                ))
                .unwrap();
            insta::assert_snapshot!(format!(
                "--- fresh\n{fresh}\n--- improve\n{improve}\n--- replan\n{replan}"
            ));
        }

        #[test]
        fn fix_prompt() {
            let text = render(
                "plan_fix",
                serde_json::json!({"problems": [
                    "step `b` depends on `ghost`, which is not a step of the plan: fix the id or add the step",
                    "dependency cycle a -> b -> a: each step waits for the next one, so none can start; remove one of these dependencies"
                ]}),
            )
            .unwrap();
            insta::assert_snapshot!(text);
        }

        #[test]
        fn critique_and_decompose_prompts() {
            let critique_system = render(
                "critique_system",
                serde_json::json!({"schema": schema_compact(CRITIQUE_SCHEMA)}),
            )
            .unwrap();
            let critique_user = render(
                "critique_user",
                serde_json::json!({"goal": plan().goal, "plan": plan().to_json_pretty()}),
            )
            .unwrap();
            let decompose_system = render(
                "decompose_system",
                serde_json::json!({"schema": schema_compact(DECOMPOSE_SCHEMA), "max_subgoals": 4}),
            )
            .unwrap();
            let decompose_user = render(
                "decompose_user",
                serde_json::json!({"goal": "Set up the backend", "ancestors": ["Build a blog platform", "Ship version 1"]}),
            )
            .unwrap();
            insta::assert_snapshot!(format!(
                "--- critique system\n{critique_system}\n--- critique user\n{critique_user}\n--- decompose system\n{decompose_system}\n--- decompose user\n{decompose_user}"
            ));
        }

        #[test]
        fn synthesis_prompt() {
            let steps = vec![
                SynthesisInput {
                    id: "search".into(),
                    description: "Find the frameworks".into(),
                    status: "completed".into(),
                    output: Some("axum, actix-web, rocket".into()),
                    error: None,
                },
                SynthesisInput {
                    id: "bench".into(),
                    description: "Find benchmarks".into(),
                    status: "failed".into(),
                    output: None,
                    error: Some("no sources found".into()),
                },
            ];
            let messages =
                synthesis_messages("Compare Rust web frameworks", &steps, Some("tree here"))
                    .unwrap();
            insta::assert_snapshot!(format!(
                "--- system\n{}\n--- user\n{}",
                messages[0].content, messages[1].content
            ));
        }
    }
}
