//! The verdict of a `verify` step: `PASS` or `FAIL` with reasons, read from a structured
//! reply where the provider enforces a schema, else from the reply's first line.

use serde_json::json;

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
    fn a_reply_without_a_verdict_is_none() {
        assert_eq!(parse("The table looks fine to me."), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse(r#"{"verdict": "maybe"}"#), None);
        assert_eq!(parse("Passing grade"), None);
    }
}
