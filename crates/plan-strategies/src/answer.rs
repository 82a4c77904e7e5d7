//! Writing a run's answer from what its strategy did, and ending the run.

use std::collections::HashSet;

use plan_core::{RunStatus, StepId, StepKind, StepStatus};
use plan_exec::report::RunReport;
use plan_exec::session::RunSession;
use plan_llm::CallRecord;

use crate::calls::{SynthesisInput, summarise_part, synthesize};
use crate::error::StrategyError;
use crate::forecast::Ending;
use crate::hierarchy::render_tree;
use crate::options::{AnswerSource, StrategyOptions};
use crate::prompts::bounded;
use crate::report::GoalResult;
use crate::strategy::{Outcome, StrategyContext};

/// Writes the answer of a succeeded outcome and finishes the run in its session; an error
/// from the strategy ends the run as failed and is returned, unless the run was cancelled
/// (its report says `cancelled` then). The end is recorded as `ending` says (with the
/// run's forecast and what it took).
pub(crate) async fn finish(
    cx: &StrategyContext,
    session: &RunSession,
    outcome: Result<Outcome, StrategyError>,
    ending: Ending<'_>,
) -> Result<RunReport, StrategyError> {
    let cancelled = cx.runner().cancel_token().is_cancelled();
    // A run waiting for approval (of a replan) is not over: nothing is written.
    if let Ok(ex) = &outcome
        && ex.status == RunStatus::AwaitingApproval
    {
        session.flush().await?;
        return Ok(session.report());
    }
    let mut ex = match outcome {
        Ok(ex) => ex,
        // Cancelled while the strategy waited on the model (planning): a cancelled run,
        // as when its steps were stopped, and one that can be resumed.
        Err(_) if cancelled => {
            let why = "the run was cancelled: it can be resumed where it stopped";
            return Ok(end(
                session,
                ending,
                RunStatus::Cancelled,
                None,
                Some(why.to_owned()),
            )
            .await?);
        }
        Err(e) => {
            let _ = end(
                session,
                ending,
                RunStatus::Failed,
                None,
                Some(e.to_string()),
            )
            .await;
            return Err(e);
        }
    };
    if cancelled && ex.status != RunStatus::Succeeded {
        ex.status = RunStatus::Cancelled;
        ex.failure.get_or_insert_with(|| {
            "the run was cancelled: it can be resumed where it stopped".to_owned()
        });
    }
    let options = cx.options();
    // A strategy that answered itself (a direct route) needs no synthesis.
    let mut answer = ex.answer.take();
    if answer.is_none()
        && ex.status == RunStatus::Succeeded
        && options.answer == AnswerSource::SynthesizeStep
    {
        answer = final_synthesize_output(&ex);
    }
    if answer.is_none() && ex.status == RunStatus::Succeeded && options.synthesize {
        let tree: Option<GoalResult> = session
            .snapshot()
            .extras
            .get("tree")
            .and_then(|v| serde_json::from_value(v.clone()).ok());
        let mut calls = Vec::new();
        let written = write_answer(
            cx,
            &session.record().goal,
            synthesis_reading(&ex, options),
            tree.as_ref().map(render_tree).as_deref(),
            &mut calls,
        )
        .await;
        cx.record_calls(session, &calls);
        match written {
            Ok(written) => {
                // Whatever the synthesis could not read is said in the report's warnings
                // and in the answer's notes: a run never does less than it says silently.
                let warnings: Vec<String> = written
                    .cuts
                    .iter()
                    .map(|c| format!("synthesis: {c}"))
                    .collect();
                cx.record_adjustments(session, &warnings);
                answer = Some(written.with_notes());
            }
            // Cancelled while the answer was written: resuming writes it.
            Err(_) if cx.runner().cancel_token().is_cancelled() => {
                ex.status = RunStatus::Cancelled;
                ex.failure = Some(
                    "the run was cancelled while its answer was written: resume it to write the answer"
                        .to_owned(),
                );
            }
            Err(e) => {
                ex.status = RunStatus::Failed;
                ex.failure = Some(format!(
                    "every step completed but the answer could not be written: {e}"
                ));
            }
        }
    }
    Ok(end(session, ending, ex.status, answer, ex.failure).await?)
}

/// Ends the run in `session` with `status`, `answer` and `failure`, recorded as `ending`
/// says.
async fn end(
    session: &RunSession,
    ending: Ending<'_>,
    status: RunStatus,
    answer: Option<String>,
    failure: Option<String>,
) -> Result<RunReport, plan_exec::error::ExecError> {
    ending.before(session).await;
    let mut report = session.finish(status, answer, failure).await?;
    ending.after(session, &mut report).await;
    Ok(report)
}

/// What the synthesis reads: the steps whose results it summarises, and how many other
/// steps it leaves out because those steps carry their results.
struct Reading {
    /// Every step of a plan within the cap, else every final step (no other step depends
    /// on it), in plan order, each output capped.
    steps: Vec<SynthesisInput>,
    /// The steps not read: those other steps depend on, when the plan is over the cap.
    carried: usize,
}

/// What the synthesis reads: every step of a plan within
/// [`synthesis_step_cap`](StrategyOptions::synthesis_step_cap), else every final step (no
/// other step depends on them; they carry the rest). Each output is capped too.
fn synthesis_reading(ex: &Outcome, options: &StrategyOptions) -> Reading {
    let cap = options.synthesis_output_cap;
    let step_cap = options.synthesis_step_cap.max(1);
    let depended: HashSet<&StepId> = ex
        .plan
        .steps
        .iter()
        .flat_map(|s| s.dependencies.iter())
        .collect();
    let chosen: Vec<&plan_core::Step> = if ex.plan.steps.len() <= step_cap {
        ex.plan.steps.iter().collect()
    } else {
        ex.plan
            .steps
            .iter()
            .filter(|s| !depended.contains(&s.id))
            .collect()
    };
    let carried = ex.plan.steps.len() - chosen.len();
    let steps = chosen
        .into_iter()
        .map(|s| {
            let r = ex.steps.iter().find(|r| r.id == s.id);
            SynthesisInput {
                id: s.id.to_string(),
                description: s.description.clone(),
                status: r
                    .map_or(StepStatus::Pending, |r| r.status)
                    .name()
                    .to_owned(),
                output: r.and_then(|r| r.output.as_deref()).map(|o| bounded(o, cap)),
                error: r.and_then(|r| r.error.clone()),
            }
        })
        .collect();
    Reading { steps, carried }
}

/// The answer, and what the synthesis had to cut on the way, in words.
struct Written {
    answer: String,
    cuts: Vec<String>,
}

impl Written {
    /// The answer with a note for each cut.
    fn with_notes(self) -> String {
        if self.cuts.is_empty() {
            return self.answer;
        }
        let notes: Vec<String> = self.cuts.iter().map(|c| format!("Note: {c}.")).collect();
        format!("{}\n\n{}", self.answer, notes.join("\n"))
    }
}

/// A result the synthesis reads: a step's, or the summary of a part of the steps that
/// stands for them in the next round.
struct Readable {
    input: SynthesisInput,
    /// The ids of the plan's steps it covers.
    covers: Vec<String>,
}

/// Writes the answer from `reading` in bounded rounds, no call reading more than
/// [`synthesis_step_cap`](StrategyOptions::synthesis_step_cap) results: while there are
/// more, they are split into as few parts as fit the cap, of even sizes, each summarised by
/// one call (purpose `synthesize`, concurrently), and the summaries are read in their
/// place. The answer is written from what is left: every final step reaches it. Only a cap
/// below 2 cannot be met by summaries; then the earliest results are left out, and said so
/// in the cuts, as is a summary cut to its share of the prompt.
async fn write_answer(
    cx: &StrategyContext,
    goal: &str,
    reading: Reading,
    tree: Option<&str>,
    calls: &mut Vec<CallRecord>,
) -> Result<Written, StrategyError> {
    let options = cx.options();
    let cap = options.synthesis_step_cap.max(1);
    let mut cuts = Vec::new();
    let mut level: Vec<Readable> = reading
        .steps
        .into_iter()
        .map(|input| Readable {
            covers: vec![input.id.clone()],
            input,
        })
        .collect();
    while level.len() > cap {
        if cap < 2 {
            let dropped: Vec<String> = level
                .drain(..level.len() - cap)
                .flat_map(|s| s.covers)
                .collect();
            cuts.push(format!(
                "the answer was written without the results of {} final steps ({}): the synthesis reads at most {cap} result a call, too few to summarise them in parts",
                dropped.len(),
                dropped.join(", ")
            ));
            break;
        }
        level = summarise_round(cx, goal, level, calls, &mut cuts).await?;
    }
    let mut steps: Vec<SynthesisInput> = level.into_iter().map(|s| s.input).collect();
    if reading.carried > 0 {
        steps.push(SynthesisInput {
            id: "(others)".to_owned(),
            description: format!(
                "{} earlier steps are not shown: their results are carried by the steps above",
                reading.carried
            ),
            status: "completed".to_owned(),
            output: None,
            error: None,
        });
    }
    let answer = synthesize(cx.provider().as_ref(), goal, &steps, tree, calls).await?;
    Ok(Written { answer, cuts })
}

/// One round: `level` split into the fewest parts of at most the cap (sizes differing by
/// one at most), each summarised by one call. A summary may take its share of what the
/// next call reads (the cap × the output cap, shared by the parts); a longer one is cut
/// with a visible marker, and said so in `cuts`.
async fn summarise_round(
    cx: &StrategyContext,
    goal: &str,
    level: Vec<Readable>,
    calls: &mut Vec<CallRecord>,
    cuts: &mut Vec<String>,
) -> Result<Vec<Readable>, StrategyError> {
    let options = cx.options();
    let cap = options.synthesis_step_cap.max(2);
    let parts = level.len().div_ceil(cap);
    let share = (options.synthesis_output_cap.saturating_mul(cap) / parts)
        .max(options.synthesis_output_cap);
    let mut groups: Vec<Vec<Readable>> = Vec::with_capacity(parts);
    let mut rest = level.into_iter();
    for part in 0..parts {
        let size = even_share(rest.len(), parts - part);
        groups.push(rest.by_ref().take(size).collect());
    }
    let provider = cx.provider();
    let written = futures::future::join_all(groups.iter().enumerate().map(|(i, group)| {
        let inputs: Vec<SynthesisInput> = group.iter().map(|s| s.input.clone()).collect();
        let provider = provider.clone();
        async move {
            let mut own = Vec::new();
            let text = summarise_part(
                provider.as_ref(),
                goal,
                (i + 1, parts),
                &inputs,
                share,
                &mut own,
            )
            .await;
            (text, own)
        }
    }))
    .await;
    // Every call made is recorded, also when another part failed.
    let mut texts = Vec::with_capacity(parts);
    for (text, own) in written {
        calls.extend(own);
        texts.push(text);
    }
    let mut next = Vec::with_capacity(parts);
    for (i, (group, text)) in groups.into_iter().zip(texts).enumerate() {
        let text = text?;
        let covers: Vec<String> = group.into_iter().flat_map(|s| s.covers).collect();
        let output = bounded(&text, share);
        if text.chars().count() > share {
            cuts.push(format!(
                "the summary of steps {} was cut to {share} characters",
                covers.join(", ")
            ));
        }
        next.push(Readable {
            input: SynthesisInput {
                id: format!("part {} of {parts}", i + 1),
                description: format!("summary of the results of steps {}", covers.join(", ")),
                status: "completed".to_owned(),
                output: Some(output),
                error: None,
            },
            covers,
        });
    }
    Ok(next)
}

/// The size of the next of `parts` parts that share `items` as evenly as can be.
fn even_share(items: usize, parts: usize) -> usize {
    items.div_ceil(parts.max(1))
}

/// The output of the plan's last succeeded `synthesize` step that no other step depends on.
fn final_synthesize_output(ex: &Outcome) -> Option<String> {
    let depended: HashSet<&StepId> = ex
        .plan
        .steps
        .iter()
        .flat_map(|s| s.dependencies.iter())
        .collect();
    ex.plan
        .steps
        .iter()
        .rev()
        .filter(|s| s.kind == StepKind::Synthesize && !depended.contains(&s.id))
        .find_map(|s| {
            ex.steps
                .iter()
                .find(|r| r.id == s.id && r.status == StepStatus::Completed)
                .and_then(|r| r.output.clone())
                .filter(|o| !o.trim().is_empty())
        })
}
