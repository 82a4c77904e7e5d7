//! The prompts of the research steps.

use plan_core::{Step, StepId};

use super::Source;

pub(super) const ANALYZE_SYSTEM: &str = "You are a careful research analyst. Work only from \
the search results and findings you are given; do not use outside knowledge. State each \
relevant fact briefly and put the citation tag of its source right after it, exactly as \
given (for example [find#2]). If the results do not answer the task, say so plainly.";

pub(super) const SYNTHESIZE_SYSTEM: &str = "You write the final research report. Answer the \
goal using only the findings you are given. Cite every fact with the tag of its source in \
square brackets, exactly as given (for example [find#2]); never invent a tag. Do not add a \
list of sources: it is appended for you. If the findings do not answer the goal, say what \
is missing.";

fn task(goal: &str, step: &Step) -> String {
    let mut text = format!("Goal: {goal}\n\nYour task: {}\n", step.description);
    if let Some(expected) = &step.expected_output {
        text.push_str(&format!("Expected output: {expected}\n"));
    }
    text
}

/// An analyze step's prompt: the retrieved passages first (shared by every step of the
/// run, so a cached prompt prefix covers them), then the goal and the task, then the
/// dependency outputs.
pub(super) fn analyze_user(passages: &str, goal: &str, step: &Step, outputs: &str) -> String {
    format!("{passages}{}\n{outputs}", task(goal, step))
}

/// A synthesize step's prompt: as [`analyze_user`], then the sources cited in the
/// dependency outputs.
pub(super) fn synthesize_user(
    passages: &str,
    goal: &str,
    step: &Step,
    outputs: &str,
    sources: &[Source],
) -> String {
    let mut text = analyze_user(passages, goal, step, outputs);
    if !sources.is_empty() {
        text.push_str("Sources you may cite:\n");
        for s in sources {
            text.push_str(&format!(
                "[{}] {} — {}: {}\n",
                s.tag,
                s.hit.location(),
                s.hit.title,
                s.hit.snippet
            ));
        }
    }
    text
}

pub(super) const ANSWER_SYSTEM: &str = "You answer a question from the passages given, \
never from outside knowledge. Reply with one or two sentences that state the answer, each \
fact followed by the tag of its passage in square brackets, exactly as given (for example \
[doc#1]). Do not list the sources: they are appended for you. If the passages do not \
answer the question, say so.";

/// The grounded answer's prompt: the passages retrieved for the question, the findings of
/// the steps (each cut to `cap` characters), then the question (and its parts, when it has
/// several).
pub(super) fn answer_user(
    question: &str,
    parts: &[&str],
    passages: &[Source],
    findings: &[(StepId, String)],
    cap: usize,
) -> String {
    let mut text = String::from("Passages:\n");
    for s in passages {
        text.push_str(&super::grounding::passage_line(s));
    }
    if !findings.is_empty() {
        text.push_str("\nFindings of the research steps:\n");
        for (id, output) in findings {
            text.push_str(&format!(
                "## {id}\n{}\n",
                crate::prompts::bounded(output, cap)
            ));
        }
    }
    if parts.len() > 1 {
        text.push_str(&format!("\nQuestion: {question}\nIt asks:\n"));
        for (i, part) in parts.iter().enumerate() {
            text.push_str(&format!("{}. {part}?\n", i + 1));
        }
        text.push_str("Answer every part, one sentence each:");
    } else {
        text.push_str(&format!(
            "\nQuestion: {question}\nAnswer in one or two sentences:"
        ));
    }
    text
}
