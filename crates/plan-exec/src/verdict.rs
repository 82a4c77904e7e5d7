//! The verdict of a `verify` step: `PASS` or `FAIL` with reasons, read from a structured
//! reply where the provider enforces a schema, else from the reply's first line.
//!
//! Every executor that can run a verify step reads its reply through [`step_output`], so a
//! `FAIL` fails the step whichever executor ran it (one model call, the tool loop, an
//! agent profile of a team).

use plan_core::{Step, StepKind};
use serde_json::json;

use crate::context::cap_output;
use crate::error::StepError;

/// The system prompt of a verify step (unless the executor has one of its own).
pub(crate) const VERIFY_SYSTEM: &str = "Check strictly only what you are asked, using the \
outputs shown: your verdict (PASS or FAIL) first, then the reasons.";

/// Added to a system prompt of the executor's own (an agent profile's) for a verify step,
/// whose reply is read as a verdict.
pub(crate) const VERDICT_REQUEST: &str = "This step is a check: reply with your verdict \
(PASS or FAIL) first, then the reasons.";

/// The system prompt for `step`: `custom` when given (with [`VERDICT_REQUEST`] added for a
/// verify step), else `default` ([`VERIFY_SYSTEM`] for a verify step).
pub(crate) fn system_prompt(step: &Step, custom: Option<&str>, default: &str) -> String {
    let verify = step.kind == StepKind::Verify;
    match custom {
        Some(custom) if verify => format!("{}\n\n{VERDICT_REQUEST}", custom.trim_end()),
        Some(custom) => custom.to_owned(),
        None if verify => VERIFY_SYSTEM.to_owned(),
        None => default.to_owned(),
    }
}

/// What a step's final reply makes of the step, for every executor alike: for any step
/// but a `verify` step, the reply is the output. For a verify step, the reply is read as a
/// verdict ([`parse`]):
///
/// - `PASS`: the reply is the output (a structured verdict shown as `PASS: reasons`);
/// - `FAIL`: a fatal step error with the reasons. A verdict is final for these inputs:
///   asking again until the model says PASS is not verification, so it is not retried;
///   the step's fallback runs, or the plan is revised;
/// - no verdict: a retryable error (the model may give one when asked again).
pub fn step_output(step: &Step, reply: String) -> Result<String, StepError> {
    if step.kind != StepKind::Verify {
        return Ok(reply);
    }
    match parse(&reply) {
        // A structured verdict is shown as text; a text verdict stays as written.
        Some(Verdict::Pass(reasons)) if reply.trim_start().starts_with('{') => {
            Ok(format!("PASS: {reasons}")
                .trim_end_matches([' ', ':'])
                .to_owned())
        }
        Some(Verdict::Pass(_)) => Ok(reply),
        Some(Verdict::Fail(reasons)) => Err(StepError::fatal(format!(
            "verification failed: {}",
            if reasons.is_empty() {
                "the check said FAIL without reasons"
            } else {
                reasons.as_str()
            }
        ))),
        None => Err(StepError::retryable(format!(
            "the verify step `{}` got no verdict (PASS or FAIL) from the model: {}",
            step.id,
            cap_output(reply.trim(), 200).0
        ))),
    }
}

/// A verify step's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The check passed; the reasons are the step's output.
    Pass(String),
    /// The check failed, with what is wrong.
    Fail(String),
}

/// The schema of a structured verdict.
pub(crate) fn schema() -> serde_json::Value {
    json!({
        "type": "object",
        "properties": {
            "verdict": {"type": "string", "enum": ["PASS", "FAIL"]},
            "reasons": {"type": "string"}
        },
        "required": ["verdict", "reasons"],
        "additionalProperties": false
    })
}

/// Reads a verdict from a reply: a JSON object `{"verdict", "reasons"}`, or text whose
/// first word is `PASS` or `FAIL` (any case, markdown emphasis allowed). `None` when the
/// reply holds no verdict.
pub(crate) fn parse(reply: &str) -> Option<Verdict> {
    let trimmed = reply.trim();
    if let Some(start) = trimmed.find('{')
        && let Some(end) = trimmed.rfind('}')
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&trimmed[start..=end])
        && let Some(word) = v.get("verdict").and_then(|w| w.as_str())
    {
        let reasons = v
            .get("reasons")
            .map(|r| match r {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default();
        return verdict(word, reasons);
    }
    let first = trimmed.lines().find(|l| !l.trim().is_empty())?;
    let word: String = first
        .trim_start_matches(|c: char| !c.is_alphanumeric())
        .chars()
        .take_while(|c| c.is_alphabetic())
        .collect();
    let rest = first
        .trim_start_matches(|c: char| !c.is_alphanumeric())
        .get(word.len()..)
        .unwrap_or("")
        .trim_start_matches(|c: char| !c.is_alphanumeric())
        .to_owned();
    let more: Vec<&str> = trimmed
        .lines()
        .skip_while(|l| *l != first)
        .skip(1)
        .collect();
    let reasons = [rest.trim(), more.join("\n").trim()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    verdict(&word, reasons)
}

fn verdict(word: &str, reasons: String) -> Option<Verdict> {
    match word.trim().to_ascii_uppercase().as_str() {
        "PASS" | "PASSED" => Some(Verdict::Pass(reasons)),
        "FAIL" | "FAILED" => Some(Verdict::Fail(reasons)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_and_first_line_verdicts_are_read() {
        assert_eq!(
            parse(r#"{"verdict": "FAIL", "reasons": "the table has two rows, not three"}"#),
            Some(Verdict::Fail("the table has two rows, not three".into()))
        );
        assert_eq!(
            parse("```json\n{\"verdict\":\"PASS\",\"reasons\":\"ok\"}\n```"),
            Some(Verdict::Pass("ok".into()))
        );
        assert_eq!(
            parse("FAIL: the count is 24, not 25\nThe list misses one item."),
            Some(Verdict::Fail(
                "the count is 24, not 25\nThe list misses one item.".into()
            ))
        );
        assert_eq!(
            parse("**Pass** - all three are covered"),
            Some(Verdict::Pass("all three are covered".into()))
        );
        assert_eq!(parse("\n  fail\n"), Some(Verdict::Fail(String::new())));
    }

    #[test]
    fn step_output_reads_the_verdict_of_verify_steps_only() {
        let check = Step::new("check", "Check it").with_kind(StepKind::Verify);
        let action = Step::new("do", "Do it");
        assert_eq!(
            step_output(&action, "FAIL: not a check".into()).as_deref(),
            Ok("FAIL: not a check")
        );
        assert_eq!(
            step_output(&check, "PASS - all there".into()).as_deref(),
            Ok("PASS - all there")
        );
        assert_eq!(
            step_output(&check, r#"{"verdict": "PASS", "reasons": "ok"}"#.into()).as_deref(),
            Ok("PASS: ok")
        );
        let failed = step_output(&check, "FAIL: two rows, not three".into()).unwrap_err();
        assert_eq!(failed.kind, crate::error::StepErrorKind::Fatal);
        assert_eq!(failed.message, "verification failed: two rows, not three");
        let none = step_output(&check, "Looks fine.".into()).unwrap_err();
        assert!(none.is_retryable(), "{none:?}");
        assert!(none.message.contains("`check` got no verdict"), "{none:?}");
    }

    #[test]
    fn a_custom_system_prompt_still_asks_a_check_for_its_verdict() {
        let check = Step::new("check", "Check it").with_kind(StepKind::Verify);
        let action = Step::new("do", "Do it");
        assert_eq!(
            system_prompt(&action, Some("You are QA."), "dflt"),
            "You are QA."
        );
        assert_eq!(
            system_prompt(&check, Some("You are QA."), "dflt"),
            format!("You are QA.\n\n{VERDICT_REQUEST}")
        );
        assert_eq!(system_prompt(&check, None, "dflt"), VERIFY_SYSTEM);
        assert_eq!(system_prompt(&action, None, "dflt"), "dflt");
    }

    #[test]
    fn a_reply_without_a_verdict_is_none() {
        assert_eq!(parse("The table looks fine to me."), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse(r#"{"verdict": "maybe"}"#), None);
        assert_eq!(parse("Passing grade"), None);
    }
}
