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
    (
        "synthesize_part_system",
        include_str!("../prompts/synthesize_part_system.j2"),
    ),
    (
        "synthesize_part_user",
        include_str!("../prompts/synthesize_part_user.j2"),
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

/// The plan schema for plans of at most `max_steps` steps: [`PLAN_SCHEMA`] with its
/// `steps.maxItems` set, so schema-constrained decoding stops after that many steps.
pub(crate) fn plan_schema(max_steps: usize) -> serde_json::Value {
    let mut schema = schema_value(PLAN_SCHEMA);
    if let Some(steps) = schema.pointer_mut("/properties/steps") {
        steps["maxItems"] = serde_json::Value::from(max_steps.max(1));
    }
    schema
}

/// Tokens the longest reply allowed by [`plan_schema`] for `max_steps` steps may take.
///
/// Every string in the schema has a `maxLength` and every array a `maxItems`, so a plan's
/// JSON has a bounded length: at most about 1,100 characters a step plus the goal. Model
/// tokens average three to four characters of English; the budget counts 2.5, so a reply
/// within the schema fits with room to spare.
pub(crate) fn plan_token_budget(max_steps: usize) -> u32 {
    const PER_STEP: usize = 440;
    const FRAME: usize = 128;
    // Hosted models cap a reply at 16k tokens or more; asking for more is refused.
    const MOST: usize = 16_000;
    u32::try_from((FRAME + PER_STEP * max_steps.max(1)).min(MOST)).unwrap_or(u32::MAX)
}

/// Tokens for a critique or decomposition reply (their schemas are bounded likewise).
pub(crate) const STRUCTURED_TOKEN_BUDGET: u32 = 1024;

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
    /// Every string of a schema has a `maxLength` (or an `enum`) and every array a
    /// `maxItems`, so schema-constrained decoding always ends within a bounded reply.
    fn assert_bounded(v: &serde_json::Value, at: &str) {
        match v["type"].as_str() {
            Some("string") => assert!(
                v.get("maxLength").is_some() || v.get("enum").is_some(),
                "unbounded string at {at}"
            ),
            Some("array") => {
                assert!(v.get("maxItems").is_some(), "unbounded array at {at}");
                assert_bounded(&v["items"], &format!("{at}[]"));
            }
            Some("object") => {
                for (k, p) in v["properties"].as_object().unwrap() {
                    assert_bounded(p, &format!("{at}.{k}"));
                }
            }
            _ => {}
        }
    }

    #[test]
    fn plan_schema_follows_max_steps_and_the_budget_covers_it() {
        let s = plan_schema(3);
        assert_eq!(s["properties"]["steps"]["maxItems"], 3);
        assert_bounded(&s, "");
        // The longest JSON the schema allows for 3 steps, at 2.5 characters a token.
        let longest = 200 + 3 * (32 + 240 + 5 * 35 + 10 + 32 + 160 + 160 + 120);
        assert!(plan_token_budget(3) as usize * 5 / 2 >= longest);
        assert!(plan_token_budget(10) < 8192, "within common output caps");
    }

    use super::*;

    #[test]
    fn schemas_are_json() {
        for s in [PLAN_SCHEMA, CRITIQUE_SCHEMA, DECOMPOSE_SCHEMA] {
            assert_bounded(&schema_value(s), "");
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

        use crate::calls::{SynthesisInput, part_messages, synthesis_messages};
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

        #[test]
        fn synthesis_part_prompt() {
            let steps = vec![SynthesisInput {
                id: "s01".into(),
                description: "Find the frameworks".into(),
                status: "completed".into(),
                output: Some("axum, actix-web, rocket".into()),
                error: None,
            }];
            let messages =
                part_messages("Compare Rust web frameworks", 2, 3, &steps, 4000).unwrap();
            insta::assert_snapshot!(format!(
                "--- system\n{}\n--- user\n{}",
                messages[0].content, messages[1].content
            ));
        }
    }
}
