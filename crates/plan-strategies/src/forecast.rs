//! The forecast of every run an agent journals in a store, and what the run took: its
//! report's `forecast` (made from the run's first plan and the store's history of the
//! agent's model) and `actual` (its calls, tokens, wall time and, at the model's price,
//! dollars), recorded with the run's end. The agent does it, so every door (the CLI, the
//! HTTP server, the MCP server, a fleet worker) gets the same report. plan-exec's
//! `forecast` module does the arithmetic.

use std::sync::Arc;

use plan_exec::forecast::{ACTUAL_KEY, FORECAST_KEY, Forecaster};
use plan_exec::report::RunReport;
use plan_exec::session::RunSession;
use plan_exec::store::RunStore;
use plan_llm::Price;

/// Whether a run's plan was made by the model or given as it is (no planning call to
/// forecast).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PlanSource {
    /// Made by the model (planning is forecast).
    Planned,
    /// Given to the agent ([`Agent::execute`](crate::Agent::execute)).
    Given,
}

/// How an agent forecasts its runs: the store whose history it learns from, its model,
/// concurrency and price, or the forecaster it was given.
pub(crate) struct Forecasting {
    store: Arc<dyn RunStore>,
    model: String,
    concurrency: usize,
    price: Option<Price>,
    given: Option<Forecaster>,
}

impl Forecasting {
    /// Forecasts runs of `model` from the history in `store`, with `given` in place of
    /// mining it (a live view's forecaster, so both say the same).
    pub(crate) fn new(
        store: Arc<dyn RunStore>,
        model: String,
        concurrency: usize,
        price: Option<Price>,
        given: Option<Forecaster>,
    ) -> Self {
        let price = price.or_else(|| given.as_ref().and_then(Forecaster::price));
        Self {
            store,
            model,
            concurrency,
            price,
            given,
        }
    }

    /// The forecaster given, else one from the store's history as it is now (so an agent
    /// running run after run learns from each).
    async fn forecaster(&self) -> Forecaster {
        match &self.given {
            Some(given) => given.clone(),
            None => {
                Forecaster::mine(
                    self.store.as_ref(),
                    &self.model,
                    self.concurrency,
                    self.price,
                )
                .await
            }
        }
    }

    /// Puts the forecast of the run's first plan in its report, unless it has one (a run
    /// continued keeps the forecast made when its plan was made) or no plan.
    pub(crate) async fn note_forecast(&self, session: &RunSession, source: PlanSource) {
        let snapshot = session.snapshot();
        if snapshot.extras.contains_key(FORECAST_KEY) {
            return;
        }
        let Some(first) = snapshot.plans.iter().min_by_key(|p| p.revision) else {
            return;
        };
        let forecaster = self
            .forecaster()
            .await
            .planning(source == PlanSource::Planned);
        if let Ok(value) = serde_json::to_value(forecaster.forecast(&first.plan)) {
            session.set_extra(FORECAST_KEY, value);
        }
    }

    /// What the run took so far, as its report's `actual`.
    fn actual(&self, report: &RunReport) -> Option<serde_json::Value> {
        serde_json::to_value(plan_exec::forecast::Actual::of(report, self.price)).ok()
    }
}

/// How a run's end is recorded beside its status and answer: with its forecast and what
/// it took, when the agent forecasts (it has a store).
#[derive(Clone, Copy)]
pub(crate) struct Ending<'a> {
    forecasting: Option<&'a Forecasting>,
    source: PlanSource,
}

impl<'a> Ending<'a> {
    /// The ending of a run whose plan comes from `source`.
    pub(crate) fn new(forecasting: Option<&'a Forecasting>, source: PlanSource) -> Self {
        Self {
            forecasting,
            source,
        }
    }

    /// Before the end is stored: the forecast, and what the run took until now, go into
    /// the report's parts, so the stored end has both as soon as the run has ended.
    pub(crate) async fn before(&self, session: &RunSession) {
        let Some(forecasting) = self.forecasting else {
            return;
        };
        forecasting.note_forecast(session, self.source).await;
        if let Some(actual) = forecasting.actual(&session.report()) {
            session.set_extra(ACTUAL_KEY, actual);
        }
    }

    /// After the end is stored: `actual` with the run's final wall time (its report's
    /// `duration_ms`, known once `run_finished` is journaled), written into the stored end
    /// too.
    pub(crate) async fn after(&self, session: &RunSession, report: &mut RunReport) {
        let Some(forecasting) = self.forecasting else {
            return;
        };
        let Some(actual) = forecasting.actual(report) else {
            return;
        };
        if report.extras.get(ACTUAL_KEY) == Some(&actual) {
            return;
        }
        report.extras.insert(ACTUAL_KEY.to_owned(), actual.clone());
        session.set_extra(ACTUAL_KEY, actual.clone());
        let amend = serde_json::Map::from_iter([(ACTUAL_KEY.to_owned(), actual)]);
        if let Err(e) =
            RunSession::amend_ended(forecasting.store.as_ref(), session.id(), amend).await
        {
            tracing::warn!(run = %session.id(), "cannot record what the run took: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use plan_core::{Plan, Step};
    use plan_exec::store::RunStore;
    use plan_llm::{Price, Reply, ScriptedModel};
    use plan_sqlite::SqliteStore;
    use serde_json::Value;

    use crate::Agent;

    fn plan() -> Plan {
        Plan::new(
            "g",
            vec![
                Step::new("a", "Do a"),
                Step::new("b", "Do b").depends_on(["a"]),
            ],
        )
    }

    fn agent(store: Option<SqliteStore>) -> crate::AgentBuilder {
        let mut builder = Agent::builder()
            .provider(ScriptedModel::new().otherwise(Reply::text("done")))
            .price(Price::new(1.0, 2.0));
        if let Some(store) = store {
            builder = builder.store(store);
        }
        builder
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stored_run_records_its_forecast_and_what_it_took() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("runs.db")).unwrap();
        let agent = agent(Some(store.clone())).build().unwrap();
        let report = agent.execute(plan()).await.unwrap();
        let forecast = &report.extras["forecast"];
        assert_eq!(forecast["basis"], "defaults", "{forecast}");
        // A given plan: its two steps and the synthesis, no planning call.
        assert_eq!(forecast["calls"][0], 3, "{forecast}");
        let actual = &report.extras["actual"];
        assert_eq!(actual["calls"], report.usage.llm_calls);
        assert_eq!(actual["wall_ms"], report.duration_ms);
        assert!(actual["usd"].is_f64(), "priced: {actual}");
        // The last two parts of the report, in this order, as the CLI always printed them.
        let keys: Vec<&String> = report.extras.keys().collect();
        assert_eq!(keys[keys.len() - 2..], ["forecast", "actual"]);
        // Recorded with the run's end: the store says what the report says.
        let stored = store.load_run(&report.run_id).await.unwrap().unwrap();
        assert_eq!(stored.extras["forecast"], *forecast);
        assert_eq!(stored.extras["actual"], *actual);
        // The next run learns from this one.
        let next = agent.execute(plan()).await.unwrap();
        assert_eq!(next.extras["forecast"]["basis"], "history");
        assert_eq!(next.extras["forecast"]["runs"], 1);
    }

    #[tokio::test]
    async fn without_a_store_or_with_forecasts_off_the_report_is_left_alone() {
        let report = agent(None).build().unwrap().execute(plan()).await.unwrap();
        assert!(!report.extras.contains_key("forecast"));
        assert!(!report.extras.contains_key("actual"));
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("runs.db")).unwrap();
        let report = agent(Some(store))
            .without_forecasts()
            .build()
            .unwrap()
            .execute(plan())
            .await
            .unwrap();
        assert_eq!(report.extras.get("actual"), None::<&Value>);
    }
}
