//! Writing a run's answer from what its strategy did, and ending the run.

use std::collections::HashSet;

use plan_core::{RunStatus, StepId, StepKind, StepStatus};
use plan_exec::{RunReport, RunSession};

use crate::calls::{SynthesisInput, synthesize};
use crate::error::StrategyError;
use crate::hierarchy::render_tree;
use crate::options::{AnswerSource, StrategyOptions};
use crate::prompts::bounded;
use crate::report::GoalResult;
use crate::strategy::{Outcome, StrategyContext};

/// Writes the answer of a succeeded outcome and finishes the run in its session; an error
/// from the strategy ends the run as failed (or cancelled) and is returned.
pub(crate) async fn finish(
    cx: &StrategyContext,
    session: &RunSession,
    outcome: Result<Outcome, StrategyError>,
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
        Err(e) => {
            let status = if cancelled {
                RunStatus::Cancelled
            } else {
                RunStatus::Failed
            };
            let _ = session.finish(status, None, Some(e.to_string())).await;
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
        let written = synthesize(
            cx.provider().as_ref(),
            &session.record().goal,
            &synthesis_inputs(&ex, options),
            tree.as_ref().map(render_tree).as_deref(),
            &mut calls,
        )
        .await;
        cx.record_calls(session, &calls);
        match written {
            Ok(text) => answer = Some(text),
            Err(e) => {
                ex.status = RunStatus::Failed;
                ex.failure = Some(format!(
                    "every step completed but the answer could not be written: {e}"
                ));
            }
        }
    }
    Ok(session.finish(ex.status, answer, ex.failure).await?)
}

/// What the synthesis reads: every step of a plan within
/// [`synthesis_step_cap`](StrategyOptions::synthesis_step_cap), else the final steps (no
/// other step depends on them; they carry the rest), at most the cap of them, and a line
/// saying how many were left out. Each output is capped too, so the prompt stays bounded
/// however large the plan.
fn synthesis_inputs(ex: &Outcome, options: &StrategyOptions) -> Vec<SynthesisInput> {
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
        let sinks: Vec<&plan_core::Step> = ex
            .plan
            .steps
            .iter()
            .filter(|s| !depended.contains(&s.id))
            .collect();
        // The last ones in plan order when even the final steps are too many.
        sinks[sinks.len().saturating_sub(step_cap)..].to_vec()
    };
    let left_out = ex.plan.steps.len() - chosen.len();
    let mut inputs: Vec<SynthesisInput> = chosen
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
    if left_out > 0 {
        inputs.push(SynthesisInput {
            id: "(others)".to_owned(),
            description: format!(
                "{left_out} earlier steps are not shown: their results are carried by the steps above"
            ),
            status: "completed".to_owned(),
            output: None,
            error: None,
        });
    }
    inputs
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
