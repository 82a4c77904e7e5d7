//! The CLI's forecasts: plan-exec's [`Forecaster`] fed the settings (the agent records a
//! run's `forecast` and `actual` itself; the live view shows the forecast line and an ETA
//! from the same forecaster), and the `--budget-usd` refusal in the CLI's words.

use plan_core::Plan;
use plan_exec::forecast::{Forecaster, History};
use plan_exec::store::RunStore;

use crate::config::Settings;

/// Mines the store for earlier runs of the settings' model; a store that cannot be read
/// gives the defaults (a forecast is advice, never a reason to fail).
pub async fn open(settings: &Settings, store: &dyn RunStore) -> Forecaster {
    Forecaster::mine(store, &settings.model, settings.concurrency, settings.price).await
}

/// With no history: the defaults, stated as such.
pub fn without_history(settings: &Settings) -> Forecaster {
    Forecaster::new(History::none(), settings.concurrency, settings.price)
}

/// The refusal of running `plan` when its forecast's low end is over `--budget-usd` (the
/// high end may be; the spend meter stops the run if the spend gets there).
pub fn over_budget(forecaster: &Forecaster, budget: Option<f64>, plan: &Plan) -> Option<String> {
    let over = forecaster.over_budget(budget?, plan)?;
    let (budget, low, high) = (over.budget, over.low, over.high);
    Some(format!(
        "the run would exceed --budget-usd ${budget:.4}: even the low end of its forecast (${low:.4}, of ${low:.4}-{high:.4}) is above it\n  hint: raise --budget-usd, lower --max-steps, or use a cheaper --model"
    ))
}
