//! [`TracedPlanner`]: a GenAI `plan` span around every planning call (a fresh plan, an
//! improvement, a replan), so a trace shows where a run's planning time went. The model
//! calls the planner makes are `chat` spans inside it.

use async_trait::async_trait;
use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::error::StrategyError;
use crate::planner::{PlanRequest, Planned, Planner, StepSink};

/// Wraps a planner in `plan` spans. The agent wraps every planner it is given.
pub(crate) struct TracedPlanner<P> {
    inner: P,
}

impl<P: Planner> TracedPlanner<P> {
    pub(crate) fn new(inner: P) -> Self {
        Self { inner }
    }
}

fn span(request: &PlanRequest) -> Span {
    let purpose = request.purpose();
    tracing::info_span!(
        "plan",
        otel.name = format!("plan {}", purpose.as_str()),
        otel.status_code = Empty,
        gen_ai.operation.name = "plan",
        plan.call.purpose = purpose.as_str(),
        plan.plan.steps = Empty,
        error.type = Empty,
    )
}

/// The `plan` span of the `auto` strategy's routing call, which answers or plans.
pub(crate) fn route_span() -> Span {
    tracing::info_span!(
        "plan",
        otel.name = "plan route",
        otel.status_code = Empty,
        gen_ai.operation.name = "plan",
        plan.call.purpose = "route",
        plan.route = Empty,
        plan.plan.steps = Empty,
        error.type = Empty,
    )
}

/// Records a routing call's outcome on its span: the route, the plan's size, or the error.
pub(crate) fn record_route(span: &Span, route: Result<(&str, Option<usize>), &StrategyError>) {
    match route {
        Ok((name, steps)) => {
            span.record("plan.route", name);
            if let Some(steps) = steps {
                span.record("plan.plan.steps", steps);
            }
        }
        Err(e) => {
            span.record("error.type", e.kind());
            span.record("otel.status_code", "ERROR");
        }
    }
}

fn record(span: &Span, result: &Result<Planned, StrategyError>) {
    match result {
        Ok(planned) => {
            span.record("plan.plan.steps", planned.plan.steps.len());
        }
        Err(e) => {
            span.record("error.type", e.kind());
            span.record("otel.status_code", "ERROR");
        }
    }
}

#[async_trait]
impl<P: Planner> Planner for TracedPlanner<P> {
    async fn plan(&self, request: &PlanRequest) -> Result<Planned, StrategyError> {
        let span = span(request);
        let result = self.inner.plan(request).instrument(span.clone()).await;
        record(&span, &result);
        result
    }

    async fn plan_streamed(
        &self,
        request: &PlanRequest,
        sink: StepSink,
    ) -> Result<Planned, StrategyError> {
        let span = span(request);
        let result = self
            .inner
            .plan_streamed(request, sink)
            .instrument(span.clone())
            .await;
        record(&span, &result);
        result
    }

    fn streams(&self) -> bool {
        self.inner.streams()
    }
}
