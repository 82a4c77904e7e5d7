//! The five built-in strategies besides `auto`.

use async_trait::async_trait;
use plan_core::Plan;
use plan_exec::session::RunSession;
use plan_llm::CallRecord;

use super::{
    Outcome, PlanOutcome, PlanStart, Strategy, StrategyContext, chain, drop_tree, kept_tree,
    record_tree, streamed,
};
use crate::calls::critique;
use crate::error::StrategyError;
use crate::hierarchy::{RunTree, TreeLimits, build_tree};
use crate::options::PlanningMode;
use crate::planner::PlanRequest;

/// Asks the planner once and records what it did.
async fn plan_once(cx: &StrategyContext, goal: &str) -> Result<PlanOutcome, StrategyError> {
    let planned = cx.planner.plan(&PlanRequest::new(goal)).await?;
    let mut out = PlanOutcome::new(planned.plan).with_calls(planned.calls);
    out.repairs.extend(planned.repair);
    out.adjustments = planned.adjustments;
    Ok(out)
}

/// An ordered list: each step depends on the one before it. A given plan is chained
/// before it runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Linear;

#[async_trait]
impl Strategy for Linear {
    fn name(&self) -> &str {
        "linear"
    }

    async fn plan(&self, cx: &StrategyContext, goal: &str) -> Result<PlanOutcome, StrategyError> {
        let mut out = plan_once(cx, goal).await?;
        out.plan = chain(out.plan);
        Ok(out)
    }

    async fn execute(
        &self,
        cx: &StrategyContext,
        session: &RunSession,
        mut start: PlanStart,
    ) -> Result<Outcome, StrategyError> {
        if !start.announced {
            start.plan = chain(start.plan);
        }
        cx.drive(session, start, false).await
    }
}

/// Explicit dependencies, run in parallel where the graph allows; with a streaming
/// planner the plan is streamed into the runner ([`PlanningMode::Streamed`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Dag;

#[async_trait]
impl Strategy for Dag {
    fn name(&self) -> &str {
        "dag"
    }

    async fn plan(&self, cx: &StrategyContext, goal: &str) -> Result<PlanOutcome, StrategyError> {
        plan_once(cx, goal).await
    }

    async fn execute(
        &self,
        cx: &StrategyContext,
        session: &RunSession,
        start: PlanStart,
    ) -> Result<Outcome, StrategyError> {
        cx.drive(session, start, false).await
    }

    async fn run(
        &self,
        cx: &StrategyContext,
        session: &RunSession,
        goal: &str,
    ) -> Result<Outcome, StrategyError> {
        if cx.options.planning == PlanningMode::Streamed && cx.planner.streams() {
            return streamed::run_streamed(cx, session, goal).await;
        }
        let planned = self.plan(cx, goal).await?;
        cx.record_plan_outcome(session, &planned);
        self.execute(cx, session, PlanStart::from_outcome(planned))
            .await
    }
}

/// Recursive decomposition into sub-goals (up to [`max_depth`](crate::StrategyOptions::max_depth)
/// levels), run as a DAG of the leaves, with results rolled up the goal tree.
#[derive(Clone, Copy, Debug, Default)]
pub struct Hierarchical;

fn tree_limits(cx: &StrategyContext) -> TreeLimits {
    TreeLimits {
        max_depth: cx.options.max_depth,
        max_subgoals: cx.options.max_subgoals.max(2),
        max_leaves: cx.options.max_leaves.max(1),
    }
}

#[async_trait]
impl Strategy for Hierarchical {
    fn name(&self) -> &str {
        "hierarchical"
    }

    async fn plan(&self, cx: &StrategyContext, goal: &str) -> Result<PlanOutcome, StrategyError> {
        let mut calls: Vec<CallRecord> = Vec::new();
        let tree = build_tree(cx.provider.as_ref(), goal, tree_limits(cx), &mut calls).await?;
        let flat = tree.flatten()?;
        let mut out = PlanOutcome::new(flat.plan).with_calls(calls);
        out.tree = Some(tree);
        Ok(out)
    }

    /// Runs the plan and rolls its results up the goal tree: the one it was planned with,
    /// or, for a run approved or resumed later, the one kept with the run. A tree whose
    /// leaves are no longer the plan's steps (an edited plan) is dropped, and the report
    /// says so.
    async fn execute(
        &self,
        cx: &StrategyContext,
        session: &RunSession,
        start: PlanStart,
    ) -> Result<Outcome, StrategyError> {
        let tree = run_tree(cx, session, &start);
        let outcome = cx.drive(session, start, false).await?;
        if let Some(tree) = tree {
            record_tree(session, &tree.roll_up(&outcome.steps));
        }
        Ok(outcome)
    }
}

/// The goal tree `start`'s results roll up, recorded (nothing run yet) if it is new to
/// the run, so an interrupted run keeps it too.
fn run_tree(cx: &StrategyContext, session: &RunSession, start: &PlanStart) -> Option<RunTree> {
    if let Some(tree) = &start.tree {
        let planned = RunTree::planned(tree.clone(), &start.plan);
        match &planned {
            Some(tree) => record_tree(session, &tree.roll_up(&[])),
            None => drop_tree(
                cx,
                session,
                "the plan is not the one the goal tree was flattened into",
            ),
        }
        return planned;
    }
    let kept = RunTree::kept(kept_tree(session)?, &start.plan);
    if kept.is_none() {
        drop_tree(
            cx,
            session,
            "the plan's steps are no longer the leaves of the goal tree kept with the run",
        );
    }
    kept
}

/// Replans from the current state when a step fails, keeping finished steps, up to
/// [`max_replans`](crate::StrategyOptions::max_replans) times.
#[derive(Clone, Copy, Debug, Default)]
pub struct Adaptive;

#[async_trait]
impl Strategy for Adaptive {
    fn name(&self) -> &str {
        "adaptive"
    }

    async fn plan(&self, cx: &StrategyContext, goal: &str) -> Result<PlanOutcome, StrategyError> {
        plan_once(cx, goal).await
    }

    async fn execute(
        &self,
        cx: &StrategyContext,
        session: &RunSession,
        start: PlanStart,
    ) -> Result<Outcome, StrategyError> {
        cx.drive(session, start, true).await
    }
}

/// Critiques the plan and improves it, up to
/// [`reflection_rounds`](crate::StrategyOptions::reflection_rounds) times, before running it.
/// A given plan (`plan exec`) is critiqued and improved the same way before it runs, and
/// the report's warnings say when the critique changed it; a plan it made, approved or
/// resumed is not reviewed again.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reflective;

#[async_trait]
impl Strategy for Reflective {
    fn name(&self) -> &str {
        "reflective"
    }

    async fn plan(&self, cx: &StrategyContext, goal: &str) -> Result<PlanOutcome, StrategyError> {
        let planned = plan_once(cx, goal).await?;
        reflect(cx, goal, planned).await
    }

    /// The rounds of critique and improvement, over a given plan.
    async fn prepare_given(
        &self,
        cx: &StrategyContext,
        plan: Plan,
    ) -> Result<PlanOutcome, StrategyError> {
        review_given(cx, plan).await
    }

    async fn execute(
        &self,
        cx: &StrategyContext,
        session: &RunSession,
        mut start: PlanStart,
    ) -> Result<Outcome, StrategyError> {
        if !start.announced && !reviewed(session) {
            let reviewed = review_given(cx, start.plan).await?;
            cx.record_plan_outcome(session, &reviewed);
            start.plan = reviewed.plan;
        }
        cx.drive(session, start, false).await
    }
}

/// The report extra that holds the critiques of a run's plan.
const CRITIQUES: &str = "critiques";

/// Whether the run's plan was critiqued already (its critiques are in the report).
fn reviewed(session: &RunSession) -> bool {
    session.snapshot().extras.contains_key(CRITIQUES)
}

/// The rounds of critique and improvement over the plan of `out`: each round reviews the
/// plan, and a plan with issues is improved by the planner (validated, repaired and
/// re-prompted as any plan it makes). The critiques, calls, repairs and adjustments are
/// added to `out`.
async fn reflect(
    cx: &StrategyContext,
    goal: &str,
    mut out: PlanOutcome,
) -> Result<PlanOutcome, StrategyError> {
    let mut calls: Vec<CallRecord> = Vec::new();
    for _ in 0..cx.options.reflection_rounds {
        let verdict = critique(
            cx.provider.as_ref(),
            goal,
            &out.plan.to_json_pretty(),
            &mut calls,
        )
        .await?;
        let approved = verdict.approved || verdict.issues.is_empty();
        let issues = verdict.issues.clone();
        out.critiques.push(verdict);
        if approved {
            break;
        }
        let improved = cx
            .planner
            .plan(&PlanRequest::improve(out.plan.clone(), issues))
            .await?;
        calls.extend(improved.calls);
        out.repairs.extend(improved.repair);
        out.adjustments.extend(improved.adjustments);
        out.plan = improved.plan;
    }
    Ok(out.with_calls(calls))
}

/// Critiques and improves a given plan before it runs; when the critique changed it, the
/// outcome's adjustments (the report's warnings) say how, listing each issue.
async fn review_given(cx: &StrategyContext, given: Plan) -> Result<PlanOutcome, StrategyError> {
    let goal = given.goal.clone();
    let mut out = reflect(cx, &goal, PlanOutcome::new(given.clone())).await?;
    if out.plan != given {
        let mut issues: Vec<&str> = Vec::new();
        for issue in out.critiques.iter().flat_map(|c| c.issues.iter()) {
            if !issues.contains(&issue.as_str()) {
                issues.push(issue);
            }
        }
        let note = format!(
            "the given plan was revised after the critique ({} steps, now {}): {}",
            given.steps.len(),
            out.plan.steps.len(),
            issues.join("; ")
        );
        out.adjustments.push(note);
    }
    Ok(out)
}
