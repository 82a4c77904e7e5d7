//! [`Auto`]: plan only when it pays. One model call decides: a goal that needs no plan (a
//! single step, a factual question, conversation) is answered in that call; otherwise the
//! call's reply is the plan, which then runs like [`Dag`]. Either way the first call is
//! the only call before the work starts, so a planned goal costs no more than under `dag`
//! (a direct answer that reaches the reply's length limit is written again in full by a
//! second call, as the first may have been cut).

use async_trait::async_trait;
use plan_core::{EventKind, Limits, PlanGraph};
use plan_exec::session::RunSession;
use plan_llm::CallRecord;
use serde_json::{Value, json};

use super::{
    Dag, DirectAnswer, Outcome, PlanOutcome, PlanStart, Planning, Strategy, StrategyContext,
};
use crate::calls::{Route, decide};
use crate::error::StrategyError;
use crate::planner::parse_reply;
use crate::traced::{record_route, route_span};
use tracing::Instrument;

/// The report's and the event's name of the route taken.
pub(crate) const DIRECT: &str = "direct";
pub(crate) const PLANNED: &str = "planned";

/// Answers directly when no plan is needed, else plans and runs like [`Dag`]. The report
/// says which (`route`: `direct` or `planned`), and a `route_chosen` event does too.
/// [`plan_or_answer`](Strategy::plan_or_answer) routes the same way without running
/// anything (the doors that plan first: approval, a cost check); [`plan`](Strategy::plan)
/// always plans (`plan plan`); [`execute`](Strategy::execute) runs the given plan like
/// [`Dag`] (`plan exec`, approvals, resume).
#[derive(Clone, Copy, Debug, Default)]
pub struct Auto;

#[async_trait]
impl Strategy for Auto {
    fn name(&self) -> &str {
        "auto"
    }

    async fn plan(&self, cx: &StrategyContext, goal: &str) -> Result<PlanOutcome, StrategyError> {
        Dag.plan(cx, goal).await
    }

    /// The routing call first: a direct answer, or the plan in its reply (planned again
    /// properly when it cannot be used, and the change listed), with `route: planned`.
    async fn plan_or_answer(
        &self,
        cx: &StrategyContext,
        goal: &str,
    ) -> Result<Planning, StrategyError> {
        let mut calls = Vec::new();
        let route = route(cx, goal, &mut calls).await?;
        match route {
            Route::Direct { answer, warnings } => {
                let mut direct = DirectAnswer::new(answer, calls);
                direct.warnings = warnings;
                Ok(Planning::Answered(direct))
            }
            Route::Planned(plan) => {
                let mut planned = match usable_plan(goal, &plan, cx.max_steps) {
                    Ok(plan) => PlanOutcome::new(plan).with_calls(calls),
                    // The planner validates, repairs and re-prompts; the change is listed.
                    Err(problem) => {
                        let mut out = after_calls(calls, Dag.plan(cx, goal).await?);
                        out.adjustments.insert(
                            0,
                            format!(
                                "the plan in the routing reply could not be used ({problem}); the goal was planned again"
                            ),
                        );
                        out
                    }
                };
                planned.route = Some(PLANNED.to_owned());
                Ok(Planning::Plan(planned))
            }
        }
    }

    async fn execute(
        &self,
        cx: &StrategyContext,
        session: &RunSession,
        start: PlanStart,
    ) -> Result<Outcome, StrategyError> {
        Dag.execute(cx, session, start).await
    }

    async fn run(
        &self,
        cx: &StrategyContext,
        session: &RunSession,
        goal: &str,
    ) -> Result<Outcome, StrategyError> {
        match self.plan_or_answer(cx, goal).await {
            Ok(Planning::Answered(direct)) => {
                direct.record(cx, session);
                Ok(Outcome::direct(goal, direct.answer))
            }
            Ok(Planning::Plan(planned)) => {
                cx.record_plan_outcome(session, &planned);
                self.execute(cx, session, PlanStart::from_outcome(planned))
                    .await
            }
            Err(e) => Err(e),
        }
    }
}

/// `outcome` with the `earlier` calls (the routing call) before its own.
fn after_calls(earlier: Vec<CallRecord>, mut outcome: PlanOutcome) -> PlanOutcome {
    let own = std::mem::take(&mut outcome.calls);
    outcome.with_calls(earlier).with_calls(own)
}

/// The routing call, traced (`plan route` span with the route taken).
async fn route(
    cx: &StrategyContext,
    goal: &str,
    calls: &mut Vec<CallRecord>,
) -> Result<Route, StrategyError> {
    let span = route_span();
    let route = decide(cx.provider().as_ref(), goal, cx.max_steps, calls)
        .instrument(span.clone())
        .await;
    record_route(
        &span,
        match &route {
            Ok(Route::Direct { .. }) => Ok((DIRECT, None)),
            Ok(Route::Planned(plan)) => Ok((
                PLANNED,
                plan.get("steps").and_then(Value::as_array).map(Vec::len),
            )),
            Err(e) => Err(e),
        },
    );
    route
}

/// Records the route taken: the report's `route` and a `route_chosen` event.
pub(crate) fn choose(session: &RunSession, route: &str) {
    session.set_extra("route", json!(route));
    session.emit(EventKind::RouteChosen {
        route: route.to_owned(),
    });
}

/// The routing reply's plan, if it is valid as it stands and within the step cap.
fn usable_plan(goal: &str, plan: &Value, max_steps: usize) -> Result<plan_core::Plan, String> {
    let plan = parse_reply(goal, &plan.to_string())?;
    PlanGraph::with_limits(plan.clone(), &Limits::with_max_steps(max_steps))
        .map_err(|e| e.to_string())?;
    Ok(plan)
}
