//! DAG with streamed planning: steps start while the plan is still being written.

use std::collections::HashMap;

use plan_core::{Plan, Step, StepId};
use plan_exec::runner::PlanRun;
use plan_exec::session::RunSession;

use super::{Outcome, PlanStart, StrategyContext, add_repairs};
use crate::error::StrategyError;
use crate::planner::{PlanRequest, step_channel, streamed_consistent};

/// Streams the plan into the runner. If the finished plan is invalid, the planner
/// re-prompts and repairs it; when that changes a step that was already handed out, the
/// streamed execution is cancelled and the final plan runs as revision 1, keeping the
/// outputs of streamed steps that are unchanged in it (a changed step that had completed
/// runs again under a new id).
pub(super) async fn run_streamed(
    cx: &StrategyContext,
    session: &RunSession,
    goal: &str,
) -> Result<Outcome, StrategyError> {
    let (sink, source) = step_channel();
    let stream_cancel = cx.runner.cancel_token().child();
    let runner = cx.runner.clone().with_cancel(stream_cancel.clone());
    let request = PlanRequest::new(goal);
    let planning = async {
        let result = cx.planner.plan_streamed(&request, sink).await;
        match &result {
            // The runner records the plan (`plan_created`) when the stream ends.
            Ok(planned) if streamed_consistent(planned) => {
                cx.record_calls(session, &planned.calls);
            }
            _ => stream_cancel.cancel(),
        }
        result
    };
    let executing = runner.execute_stream(
        session,
        PlanRun::new(session.id().clone(), Plan::new(goal, Vec::new())),
        source.into_stream(),
    );
    let (planned, execution) = tokio::join!(planning, executing);
    let planned = match planned {
        Ok(planned) => planned,
        Err(e) => {
            // The runner recorded the steps handed out so far as revision 0: not a plan
            // to finish, so a resume plans again (keeping what finished).
            if let Ok(execution) = &execution {
                let why = if cx.runner.cancel_token().is_cancelled() {
                    "cancelled".to_owned()
                } else {
                    e.to_string()
                };
                session.plan_incomplete(execution.revision, &why);
                cx.record_adjustments(
                    session,
                    &[format!(
                        "planning stopped before the plan was complete ({why}), after {} step(s) had been handed out: the plan recorded holds only those, and `plan resume` plans again, keeping the steps that finished",
                        execution.plan.steps.len()
                    )],
                );
            }
            return Err(e);
        }
    };
    cx.record_adjustments(session, &planned.adjustments);
    add_repairs(session, planned.repair.as_slice());
    if streamed_consistent(&planned) {
        let execution = execution?;
        let mut outcome = Outcome::from_execution(&execution);
        outcome.plan = planned.plan;
        return Ok(outcome);
    }
    // The fixed plan differs from what was streamed: run it, keeping what is unchanged.
    tracing::info!("streamed plan was replaced after validation; running the fixed plan");
    // The streamed steps were stopped to make way for the fixed plan, which completes it.
    session.plan_completed();
    cx.record_calls(session, &planned.calls);
    let done: HashMap<StepId, String> = match &execution {
        Ok(r) => r.completed_outputs(),
        Err(_) => HashMap::new(),
    };
    let streamed: HashMap<&StepId, &Step> = planned.streamed.iter().map(|s| (&s.id, s)).collect();
    let mut plan = planned.plan.clone();
    let mut kept = HashMap::new();
    let mut renames = HashMap::new();
    for s in &plan.steps {
        match (streamed.get(&s.id), done.get(&s.id)) {
            (Some(old), Some(out)) if *old == s => {
                kept.insert(s.id.clone(), out.clone());
            }
            (Some(_), Some(_)) => {
                renames.insert(s.id.clone(), StepId::new(format!("{}_v2", s.id)));
            }
            _ => {}
        }
    }
    // Streamed steps that the final plan dropped or changed were stopped (the stream's
    // execution was cancelled): say so.
    let started: Vec<&StepId> = match &execution {
        Ok(r) => r
            .steps
            .iter()
            .filter(|s| s.attempts > 0)
            .map(|s| &s.id)
            .collect(),
        Err(_) => planned.streamed.iter().map(|s| &s.id).collect(),
    };
    let mut cancelled = Vec::new();
    for id in started {
        let kept_as_is = kept.contains_key(id);
        if !kept_as_is {
            let why = match renames.get(id) {
                Some(new) => format!("the fixed plan changed it; it runs again as `{new}`"),
                None if plan.step(id.as_str()).is_some() => {
                    "it had not finished; it runs again in the fixed plan".to_owned()
                }
                None => "the fixed plan dropped it".to_owned(),
            };
            cancelled.push(format!(
                "streamed step `{id}` was started, then cancelled: {why}"
            ));
        }
    }
    cx.record_adjustments(session, &cancelled);
    for s in &mut plan.steps {
        if let Some(new) = renames.get(&s.id) {
            s.id = new.clone();
        }
        for d in &mut s.dependencies {
            if let Some(new) = renames.get(d) {
                *d = new.clone();
            }
        }
    }
    let start = PlanStart {
        revision: 1,
        completed: kept,
        ..PlanStart::new(plan)
    };
    cx.drive(session, start, false).await
}
