//! The prompts of the research steps.

use plan_core::Step;

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

pub(super) fn analyze_user(goal: &str, step: &Step, context: &str) -> String {
    format!("{}\n{context}", task(goal, step))
}

pub(super) fn synthesize_user(
    goal: &str,
    step: &Step,
    context: &str,
    sources: &[Source],
) -> String {
    let mut text = format!("{}\n{context}", task(goal, step));
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
