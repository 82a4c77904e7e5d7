//! Running a plan inside a session, with the adaptive replanning loop.

use std::collections::HashSet;

use plan_core::{Plan, PlanGraph, RunStatus, Step, StepId, StepStatus};
use plan_exec::report::Execution;
use plan_exec::runner::PlanRun;
use plan_exec::session::RunSession;

use super::{Outcome, PlanStart, StrategyContext, add_repairs};
use crate::error::StrategyError;
use crate::planner::{FailedStep, FinishedStep, PlanRequest, ReplanContext};

/// Runs `start` (recording it unless announced) and, with `replan`, replans after each
/// failure from the current state until it succeeds, stalls or runs out of replans.
pub(super) async fn drive(
    cx: &StrategyContext,
    session: &RunSession,
    start: PlanStart,
    replan: bool,
) -> Result<Outcome, StrategyError> {
    let PlanStart {
        mut plan,
        mut revision,
        mut completed,
        prior_attempts,
        replans,
        announced,
        ..
    } = start;
    let mut replans = replans;
    let max_replans = cx.options.max_replans;
    if !announced {
        cx.plan_created(session, &plan, revision).await?;
    }
    let mut last_failure: Option<(StepId, String, String)> = None;
    loop {
        let job = PlanRun::new(session.id().clone(), plan.clone())
            .with_revision(revision)
            .with_completed(completed.clone())
            .with_prior_attempts(prior_attempts.clone());
        let execution = cx.runner.execute(session, job).await?;
        let mut outcome = Outcome::from_execution(&execution);
        if execution.status != RunStatus::Failed || !replan {
            return Ok(outcome);
        }
        completed.extend(execution.completed_outputs());
        let Some(failed) = execution.failures().next() else {
            return Ok(outcome);
        };
        let error = failed.error.clone().unwrap_or_default();
        let failed_step = plan
            .step(failed.id.as_str())
            .cloned()
            .unwrap_or_else(|| Step::new(failed.id.clone(), failed.id.to_string()));
        if let Some((prev_id, prev_desc, prev_err)) = &last_failure {
            let same_step = *prev_id == failed_step.id || *prev_desc == failed_step.description;
            if same_step && prev_err.trim() == error.trim() {
                outcome.failure = Some(format!(
                    "stalled: step `{}` failed the same way after a replan ({}); stopped instead of replanning again — the goal may need a different approach, another model or a tool",
                    failed_step.id,
                    error.trim()
                ));
                return Ok(outcome);
            }
        }
        if replans >= max_replans {
            outcome.failure = Some(format!(
                "step `{}` failed ({}) and the {} replans allowed are used up; allow more replans or change the goal",
                failed_step.id,
                error.trim(),
                max_replans
            ));
            return Ok(outcome);
        }
        let finished: Vec<FinishedStep> = plan
            .steps
            .iter()
            .filter_map(|s| {
                completed.get(&s.id).map(|o| FinishedStep {
                    step: s.clone(),
                    output: o.clone(),
                })
            })
            .collect();
        let kept: Vec<StepId> = finished.iter().map(|f| f.step.id.clone()).collect();
        let kept_set: HashSet<&StepId> = kept.iter().collect();
        let abandoned: Vec<StepId> = plan
            .steps
            .iter()
            .filter(|s| !kept_set.contains(&s.id) && s.id != failed_step.id)
            .map(|s| s.id.clone())
            .collect();
        let request = PlanRequest::replan(
            session.record().goal,
            ReplanContext {
                finished,
                failed: FailedStep {
                    step: failed_step.clone(),
                    error: error.clone(),
                },
                abandoned,
            },
        );
        let planned = cx.planner.plan(&request).await?;
        cx.record_calls(session, &planned.calls);
        cx.record_adjustments(session, &planned.adjustments);
        add_repairs(session, planned.repair.as_slice());
        if let Some(catalogue) = &cx.agents {
            catalogue.check_plan(&planned.plan)?;
        }
        revision += 1;
        replans += 1;
        let reason = format!("step `{}` failed: {}", failed_step.id, error.trim());
        session
            .replanned(&planned.plan, revision, reason, kept)
            .await?;
        if cx.options.approve_replans {
            // The revised plan waits for someone to approve it; finished steps are kept
            // in the store for when it continues.
            session.set_status(RunStatus::AwaitingApproval).await?;
            return Ok(Outcome {
                plan: planned.plan,
                steps: Vec::new(),
                status: RunStatus::AwaitingApproval,
                failure: None,
                answer: None,
            });
        }
        last_failure = Some((
            failed_step.id.clone(),
            failed_step.description.clone(),
            error,
        ));
        completed.retain(|id, _| planned.plan.step(id.as_str()).is_some());
        plan = planned.plan;
    }
}

/// Makes each step depend on the one before it, in a valid running order.
pub(crate) fn chain(plan: Plan) -> Plan {
    let order = match PlanGraph::new(plan.clone()) {
        Ok(g) => g.topological_order(),
        Err(_) => (0..plan.steps.len()).collect(),
    };
    let mut steps = Vec::with_capacity(order.len());
    let mut prev: Option<StepId> = None;
    for i in order {
        let mut s = plan.steps[i].clone();
        s.dependencies = prev.iter().cloned().collect();
        prev = Some(s.id.clone());
        steps.push(s);
    }
    Plan::new(plan.goal, steps)
}

/// Why an execution did not succeed, in words.
pub(super) fn failure_text(execution: &Execution) -> Option<String> {
    match execution.status {
        RunStatus::Succeeded => None,
        RunStatus::Cancelled => {
            Some("the run was cancelled: it can be resumed where it stopped".to_owned())
        }
        _ => {
            let failed: Vec<String> = execution
                .failures()
                .map(|s| {
                    format!(
                        "`{}` ({})",
                        s.id,
                        s.error.as_deref().unwrap_or("no error text")
                    )
                })
                .collect();
            let skipped = execution.count(StepStatus::Skipped);
            Some(if failed.is_empty() {
                "the run did not complete every step".to_owned()
            } else {
                format!(
                    "step{} {} failed{}; try the adaptive strategy, more retries, or a fallback",
                    if failed.len() == 1 { "" } else { "s" },
                    failed.join(", "),
                    if skipped > 0 {
                        format!(" and {skipped} dependent step(s) were skipped")
                    } else {
                        String::new()
                    }
                )
            })
        }
    }
}
