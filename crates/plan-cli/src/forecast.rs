//! The forecast a run shows when its plan is made, its ETA while running, and the
//! `forecast`/`actual` pair of its `--json` report (plan-exec's `forecast` module does the
//! arithmetic; this module feeds it the store's history and the settings).

use std::collections::HashSet;
use std::sync::Arc;

use plan_core::{Plan, PlanGraph};
use plan_exec::forecast::{Actual, Forecast, History, remaining_ms};
use plan_exec::{RunSession, RunStore};
use plan_llm::Price;
use plan_strategies::RunReport;

use crate::config::Settings;

/// What a command's forecasts are computed from.
#[derive(Clone, Debug)]
pub struct Forecaster {
    history: Arc<History>,
    concurrency: usize,
    price: Option<Price>,
    /// Whether the plan is made by a model (`plan run`) or given (`plan exec`).
    planned: bool,
}

impl Forecaster {
    /// Mines the store for earlier runs of the settings' model; a store that cannot be
    /// read gives the defaults (a forecast is advice, never a reason to fail).
    pub async fn open(settings: &Settings, store: &dyn RunStore) -> Forecaster {
        let history = match History::mine(store, &settings.model).await {
            Ok(history) => history,
            Err(e) => {
                tracing::debug!("no run history for the forecast: {e}");
                History::none()
            }
        };
        Forecaster {
            history: Arc::new(history),
            concurrency: settings.concurrency,
            price: settings.price,
            planned: true,
        }
    }

    /// With no history: the defaults, stated as such.
    pub fn without_history(settings: &Settings) -> Forecaster {
        Forecaster {
            history: Arc::new(History::none()),
            concurrency: settings.concurrency,
            price: settings.price,
            planned: true,
        }
    }

    /// For a plan given as it is: no planning call is forecast.
    pub fn for_given_plan(mut self) -> Self {
        self.planned = false;
        self
    }

    /// The forecast of running `plan`.
    pub fn forecast(&self, plan: &Plan) -> Forecast {
        if self.planned {
            Forecast::of(plan, &self.history, self.concurrency, self.price)
        } else {
            Forecast::given(plan, &self.history, self.concurrency, self.price)
        }
    }

    /// Milliseconds left on `graph`'s critical path once `finished` steps are done.
    pub fn eta_ms(&self, graph: &PlanGraph, finished: &HashSet<usize>) -> u64 {
        remaining_ms(graph, finished, &self.history)
    }

    /// Adds `forecast` (made when the plan was) and `actual` to a report's JSON.
    pub fn annotate(&self, report: &mut RunReport, forecast: Option<&Forecast>) {
        if let Some(forecast) = forecast
            && let Ok(value) = serde_json::to_value(forecast)
        {
            report.extras.insert("forecast".to_owned(), value);
        }
        if let Ok(value) = serde_json::to_value(Actual::of(report, self.price)) {
            report.extras.insert("actual".to_owned(), value);
        }
    }

    /// The refusal of running `plan` when its forecast's low end is over `budget` dollars
    /// (the high end may be; the spend meter stops the run if the spend gets there).
    pub fn over_budget(&self, budget: Option<f64>, plan: &Plan) -> Option<String> {
        let budget = budget?;
        let [low, high] = self.forecast(plan).usd?;
        (low > budget).then(|| {
            format!(
                "the run would exceed --budget-usd ${budget:.4}: even the low end of its forecast (${low:.4}, of ${low:.4}-{high:.4}) is above it\n  hint: raise --budget-usd, lower --max-steps, or use a cheaper --model"
            )
        })
    }
}

/// Writes a report's `forecast` and `actual` into the run store beside the rest of its
/// end, so `plan show --json` prints what `plan run --json` printed.
pub async fn record(store: &dyn RunStore, report: &RunReport) {
    let extras: serde_json::Map<String, serde_json::Value> = report
        .extras
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "forecast" | "actual"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Err(e) = RunSession::amend_ended(store, &report.run_id, extras).await {
        tracing::warn!("cannot record the forecast of run {}: {e}", report.run_id);
    }
}
