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
    ("decompose_system", include_str!("../prompts/decompose_system.j2")),
    ("decompose_user", include_str!("../prompts/decompose_user.j2")),
    ("critique_system", include_str!("../prompts/critique_system.j2")),
    ("critique_user", include_str!("../prompts/critique_user.j2")),
    ("synthesize_system", include_str!("../prompts/synthesize_system.j2")),
    ("synthesize_user", include_str!("../prompts/synthesize_user.j2")),
];

fn env() -> &'static Result<Environment<'static>, String> {
    static ENV: OnceLock<Result<Environment<'static>, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
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
    let text = template.render(ctx).map_err(|e| err(e.to_string()))?;
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
    format!("{kept}… [truncated: {} of {total} characters omitted]", total - cap)
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
}
