//! Resuming a run whose planning had not finished.
//!
//! A DAG plan streams into the runner while the model writes it, so steps run before the
//! plan is complete. When planning stops there (Ctrl-C, a planning failure, a crash), the
//! run has at most the steps handed out so far, recorded as an incomplete revision
//! ([`RunSession::plan_incomplete`]), and perhaps outputs of steps that finished. Running
//! that fragment would report a success the goal never had, so a resume plans again and
//! runs the new plan as the next revision, keeping the output of every finished step the
//! new plan repeats unchanged; a finished step it changes runs again under a fresh id
//! (see [`carried_start`]), and each such change is reported.

use plan_exec::session::{ResumePoint, RunSession};

use super::{Outcome, PlanStart, Strategy, StrategyContext, carried_start};
use crate::error::StrategyError;

/// Plans `session`'s goal again and runs the new plan, keeping what `point` says is done.
pub(crate) async fn plan_again(
    strategy: &dyn Strategy,
    cx: &StrategyContext,
    session: &RunSession,
    point: &ResumePoint,
) -> Result<Outcome, StrategyError> {
    let goal = session.record().goal;
    let Some(latest) = &point.plan else {
        if point.completed.is_empty() {
            // Nothing was recorded or done: plan as a new run would.
            return strategy.run(cx, session, &goal).await;
        }
        return replace(strategy, cx, session, point, &goal, 0).await;
    };
    replace(strategy, cx, session, point, &goal, latest.revision + 1).await
}

async fn replace(
    strategy: &dyn Strategy,
    cx: &StrategyContext,
    session: &RunSession,
    point: &ResumePoint,
    goal: &str,
    revision: u32,
) -> Result<Outcome, StrategyError> {
    let planned = strategy.plan(cx, goal).await?;
    cx.record_plan_outcome(session, &planned);
    let snapshot = session.snapshot();
    let carried = carried_start(
        &snapshot,
        point,
        planned.plan.clone(),
        revision,
        "the plan made again",
    );
    let mut start = carried.start;
    if carried.changes.is_empty() {
        // The goal tree (hierarchical) still names the plan's steps.
        start = PlanStart {
            tree: planned.tree,
            ..start
        };
    }
    let mut changes = vec![format!(
        "planning had not finished when the run stopped: the goal was planned again (revision {revision}); {} finished step(s) the new plan repeats unchanged keep their outputs",
        start.completed.len()
    )];
    changes.extend(carried.changes);
    cx.record_adjustments(session, &changes);
    session.plan_completed();
    strategy.execute(cx, session, start).await
}
