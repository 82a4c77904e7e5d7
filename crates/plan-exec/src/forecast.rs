//! Forecasts of what a run will take (model calls, tokens, wall time, dollars) from its
//! plan's critical path, weighted by per-kind statistics mined from earlier runs of the
//! same model in the run store; without such runs, conservative defaults, said as such.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use plan_core::{EventKind, Plan, PlanGraph, RunStatus, StepKind};
use plan_llm::Price;
use serde::Serialize;

use crate::error::StoreError;
use crate::report::RunReport;
use crate::store::{RunStore, StoredRun};

/// How many earlier runs of a model [`History::mine`] reads at most.
pub const HISTORY_RUNS: usize = 20;

/// Averages of one kind of work: per step, or per planning or synthesis phase.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Sample {
    count: u64,
    calls: f64,
    prompt_tokens: f64,
    completion_tokens: f64,
    wall_ms: f64,
}

impl Sample {
    const fn fixed(calls: f64, prompt_tokens: f64, completion_tokens: f64, wall_ms: f64) -> Self {
        Self {
            count: 1,
            calls,
            prompt_tokens,
            completion_tokens,
            wall_ms,
        }
    }

    fn add(&mut self, other: &Sample) {
        self.count += 1;
        self.calls += other.calls;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.wall_ms += other.wall_ms;
    }

    fn mean(&self) -> Sample {
        let n = self.count.max(1) as f64;
        Sample {
            count: self.count,
            calls: self.calls / n,
            prompt_tokens: self.prompt_tokens / n,
            completion_tokens: self.completion_tokens / n,
            wall_ms: self.wall_ms / n,
        }
    }
}

/// Conservative guesses for a model never seen in the store: a step is one call of about
/// 700 prompt and 300 completion tokens taking 5 s; planning and synthesis are larger.
const DEFAULT_STEP: Sample = Sample::fixed(1.0, 700.0, 300.0, 5_000.0);
const DEFAULT_PLAN: Sample = Sample::fixed(1.0, 900.0, 500.0, 8_000.0);
const DEFAULT_SYNTHESIS: Sample = Sample::fixed(1.0, 1_500.0, 500.0, 8_000.0);

/// The spread of a forecast around its point estimate: narrow with history, wide without.
const HISTORY_SPREAD: (f64, f64) = (0.8, 1.25);
const DEFAULT_SPREAD: (f64, f64) = (0.5, 2.0);

/// What earlier runs of one model took, per step kind and per phase.
#[derive(Clone, Debug, Default)]
pub struct History {
    kinds: BTreeMap<&'static str, Sample>,
    plan: Sample,
    synthesis: Sample,
    runs: usize,
}

impl History {
    /// No history: forecasts use the defaults.
    pub fn none() -> Self {
        Self::default()
    }

    /// How many runs the statistics come from.
    pub fn runs(&self) -> usize {
        self.runs
    }

    /// Statistics from these runs (succeeded ones only; others are skipped).
    pub fn from_runs<'a>(runs: impl IntoIterator<Item = &'a StoredRun>) -> Self {
        let mut history = Self::default();
        for run in runs {
            if run.status == RunStatus::Succeeded {
                history.add_run(run);
            }
        }
        history
    }

    /// Statistics from the last [`HISTORY_RUNS`] succeeded runs of `model` in `store`.
    ///
    /// # Errors
    /// The store's error when it cannot list or load runs.
    pub async fn mine(store: &dyn RunStore, model: &str) -> Result<Self, StoreError> {
        let mut summaries: Vec<_> = store
            .list_runs()
            .await?
            .into_iter()
            .filter(|r| r.status == RunStatus::Succeeded && r.model.as_deref() == Some(model))
            .collect();
        summaries.sort_by_key(|r| std::cmp::Reverse(r.created));
        let mut runs = Vec::new();
        for summary in summaries.into_iter().take(HISTORY_RUNS) {
            if let Some(run) = store.load_run(&summary.id).await? {
                runs.push(run);
            }
        }
        Ok(Self::from_runs(&runs))
    }

    fn add_run(&mut self, run: &StoredRun) {
        let Some(plan) = run.plans.last().map(|p| &p.plan) else {
            return;
        };
        let kind_of = |id: &str| plan.step(id).map_or(StepKind::Action, |s| s.kind);
        let mut steps: BTreeMap<String, (StepKind, Sample)> = BTreeMap::new();
        let mut planning = Sample::default();
        let mut synthesis = Sample::default();
        for event in &run.events {
            match &event.kind {
                EventKind::LlmCall {
                    purpose,
                    step,
                    prompt_tokens,
                    completion_tokens,
                    duration_ms,
                } => {
                    let target = match step {
                        Some(id) => {
                            &mut steps
                                .entry(id.as_str().to_owned())
                                .or_insert_with(|| (kind_of(id.as_str()), Sample::default()))
                                .1
                        }
                        None if purpose == "synthesize" => &mut synthesis,
                        None => &mut planning,
                    };
                    target.calls += 1.0;
                    target.prompt_tokens += *prompt_tokens as f64;
                    target.completion_tokens += *completion_tokens as f64;
                    if step.is_none() {
                        target.wall_ms += *duration_ms as f64;
                    }
                }
                EventKind::StepCompleted { step, duration_ms } => {
                    steps
                        .entry(step.as_str().to_owned())
                        .or_insert_with(|| (kind_of(step.as_str()), Sample::default()))
                        .1
                        .wall_ms = *duration_ms as f64;
                }
                _ => {}
            }
        }
        for (kind, sample) in steps.values() {
            self.kinds.entry(kind.as_str()).or_default().add(sample);
        }
        if planning.calls > 0.0 {
            self.plan.add(&planning);
        }
        if synthesis.calls > 0.0 {
            self.synthesis.add(&synthesis);
        }
        self.runs += 1;
    }

    fn step(&self, kind: StepKind) -> Sample {
        self.kinds
            .get(kind.as_str())
            .map(Sample::mean)
            .or_else(|| self.all_steps())
            .unwrap_or(DEFAULT_STEP)
    }

    /// Every kind pooled: the estimate for a kind this model has not run yet.
    fn all_steps(&self) -> Option<Sample> {
        let mut pooled = Sample::default();
        for s in self.kinds.values() {
            pooled.count += s.count;
            pooled.calls += s.calls;
            pooled.prompt_tokens += s.prompt_tokens;
            pooled.completion_tokens += s.completion_tokens;
            pooled.wall_ms += s.wall_ms;
        }
        (pooled.count > 0).then(|| pooled.mean())
    }

    fn phase(&self, sample: &Sample, default: Sample) -> Sample {
        if sample.count > 0 {
            sample.mean()
        } else {
            default
        }
    }

    /// Expected wall time of one step of `kind`, in milliseconds.
    pub fn step_wall_ms(&self, kind: StepKind) -> f64 {
        self.step(kind).wall_ms
    }
}

/// Where a forecast's statistics come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// Earlier runs of the same model in the store.
    History,
    /// No earlier runs: conservative defaults.
    Defaults,
}

/// What a run is expected to take, as `[low, high]` ranges.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Forecast {
    /// Model calls.
    pub calls: [u64; 2],
    /// Prompt tokens.
    pub prompt_tokens: [u64; 2],
    /// Completion tokens.
    pub completion_tokens: [u64; 2],
    /// Wall time in milliseconds.
    pub wall_ms: [u64; 2],
    /// Dollars, when the model's price is known.
    pub usd: Option<[f64; 2]>,
    /// Where the statistics come from.
    pub basis: Basis,
    /// How many earlier runs they come from (0 for the defaults).
    pub runs: usize,
}

impl Forecast {
    /// The forecast of running `plan` (planning and synthesis included) with at most
    /// `concurrency` steps at once: wall time follows the plan's critical path weighted by
    /// each step kind's expected time, or the total work spread over `concurrency` slots
    /// when that is longer.
    pub fn of(plan: &Plan, history: &History, concurrency: usize, price: Option<Price>) -> Self {
        Self::estimate(plan, history, concurrency, price, true)
    }

    /// As [`of`](Self::of) for a plan given as it is (`plan exec`): no planning call.
    pub fn given(plan: &Plan, history: &History, concurrency: usize, price: Option<Price>) -> Self {
        Self::estimate(plan, history, concurrency, price, false)
    }

    fn estimate(
        plan: &Plan,
        history: &History,
        concurrency: usize,
        price: Option<Price>,
        planned: bool,
    ) -> Self {
        let steps: Vec<Sample> = plan.steps.iter().map(|s| history.step(s.kind)).collect();
        let planning = if planned {
            history.phase(&history.plan, DEFAULT_PLAN)
        } else {
            Sample::default()
        };
        let synthesis = history.phase(&history.synthesis, DEFAULT_SYNTHESIS);
        let sum =
            |f: fn(&Sample) -> f64| steps.iter().map(f).sum::<f64>() + f(&planning) + f(&synthesis);
        let path_ms = match PlanGraph::with_limits(
            plan.clone(),
            &plan_core::Limits::with_max_steps(plan.steps.len().max(1)),
        ) {
            Ok(graph) => graph.critical_path_weighted(|i| steps[i].wall_ms).length,
            Err(_) => steps.iter().map(|s| s.wall_ms).sum(),
        };
        let work_ms: f64 = steps.iter().map(|s| s.wall_ms).sum();
        let wall =
            path_ms.max(work_ms / concurrency.max(1) as f64) + planning.wall_ms + synthesis.wall_ms;
        let (basis, (low, high)) = if history.runs > 0 {
            (Basis::History, HISTORY_SPREAD)
        } else {
            (Basis::Defaults, DEFAULT_SPREAD)
        };
        let range = |x: f64| [(x * low).round() as u64, (x * high).round() as u64];
        let calls = sum(|s| s.calls).round() as u64;
        let prompt = sum(|s| s.prompt_tokens);
        let completion = sum(|s| s.completion_tokens);
        Forecast {
            // Calls vary less than tokens: the low end is what the plan needs at least.
            calls: [calls, (calls as f64 * high).round() as u64],
            prompt_tokens: range(prompt),
            completion_tokens: range(completion),
            wall_ms: range(wall),
            usd: price.map(|p| {
                let usd = p.cost(prompt as u64, completion as u64);
                [usd * low, usd * high]
            }),
            basis,
            runs: history.runs,
        }
    }

    /// One line for people: `forecast: 7-13 calls, 5.2k-8.1k tokens, 12-19 s, $0.002-0.004
    /// (from 3 earlier runs)`.
    pub fn summary(&self) -> String {
        let tokens =
            |r: [u64; 2], s: [u64; 2]| format!("{}-{}", human(r[0] + s[0]), human(r[1] + s[1]));
        let usd = match self.usd {
            Some([_, 0.0]) => "no cost (runs locally)".to_owned(),
            Some([lo, hi]) => format!("${lo:.4}-{hi:.4}"),
            None => "cost unknown".to_owned(),
        };
        let basis = match self.basis {
            Basis::History => format!(
                "from {} earlier run{}",
                self.runs,
                if self.runs == 1 { "" } else { "s" }
            ),
            Basis::Defaults => "defaults: no earlier runs of this model".to_owned(),
        };
        format!(
            "forecast: {}-{} calls, {} tokens, {}-{}, {usd} ({basis})",
            self.calls[0],
            self.calls[1],
            tokens(self.prompt_tokens, self.completion_tokens),
            seconds(self.wall_ms[0]),
            seconds(self.wall_ms[1]),
        )
    }
}

/// What a run took, beside its [`Forecast`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Actual {
    /// Model calls.
    pub calls: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Wall time in milliseconds.
    pub wall_ms: u64,
    /// Dollars, when the model's price is known.
    pub usd: Option<f64>,
}

impl Actual {
    /// What the run in `report` took, priced at `price`.
    pub fn of(report: &RunReport, price: Option<Price>) -> Self {
        let u = &report.usage;
        Actual {
            calls: u.llm_calls,
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            wall_ms: report.duration_ms,
            usd: price.map(|p| p.cost(u.prompt_tokens, u.completion_tokens)),
        }
    }
}

/// Milliseconds the unfinished part of `graph` is expected to take with unlimited
/// parallelism: the critical path over the steps not in `finished` (an ETA).
pub fn remaining_ms(graph: &PlanGraph, finished: &HashSet<usize>, history: &History) -> u64 {
    graph
        .critical_path_weighted(|i| {
            if finished.contains(&i) {
                0.0
            } else {
                history.step_wall_ms(graph.step(i).kind)
            }
        })
        .length
        .round() as u64
}

/// What the forecasts of one model's runs are computed from: the [`History`] mined from
/// a store, the concurrency the runs use and the model's price. Cheap to clone (the history
/// is shared).
///
/// The agent of `plan-strategies` makes one for every run it journals in a store, so the
/// report of every run says what it was expected to take (`forecast`) beside what it took
/// (`actual`); a live view uses the same one for its forecast line and its ETA.
#[derive(Clone, Debug)]
pub struct Forecaster {
    history: Arc<History>,
    concurrency: usize,
    price: Option<Price>,
    /// Whether the plan is made by a model (a planning call is forecast) or given.
    planned: bool,
}

impl Forecaster {
    /// Forecasts from `history`, for runs of at most `concurrency` steps at once, priced
    /// at `price` (`None`: the dollar figures are left out).
    pub fn new(history: History, concurrency: usize, price: Option<Price>) -> Self {
        Self {
            history: Arc::new(history),
            concurrency,
            price,
            planned: true,
        }
    }

    /// Forecasts from the last [`HISTORY_RUNS`] succeeded runs of `model` in `store`; a
    /// store that cannot be read gives the defaults (a forecast is advice, never a reason
    /// for a run to fail).
    pub async fn mine(
        store: &dyn RunStore,
        model: &str,
        concurrency: usize,
        price: Option<Price>,
    ) -> Self {
        let history = match History::mine(store, model).await {
            Ok(history) => history,
            Err(e) => {
                tracing::debug!("no run history for the forecast: {e}");
                History::none()
            }
        };
        Self::new(history, concurrency, price)
    }

    /// Forecasts plans the way `run` got its plan: made by a model (a planning call, or
    /// any model call, before its first plan) or given as it is (`plan exec`).
    #[must_use]
    pub fn planning_as(self, run: &StoredRun) -> Self {
        let mut before_plan = true;
        for e in &run.events {
            match &e.kind {
                EventKind::PlanCreated { .. } | EventKind::Replanned { .. } => {
                    before_plan = false;
                }
                EventKind::LlmCall { purpose, .. } if before_plan || purpose == "plan" => {
                    return self.planning(true);
                }
                _ => {}
            }
        }
        self.planning(false)
    }

    /// For a plan given as it is (not made by a model): no planning call is forecast.
    #[must_use]
    pub fn for_given_plan(self) -> Self {
        self.planning(false)
    }

    /// Whether the plans forecast are made by a model (`true`, the default: a planning
    /// call is forecast) or given as they are.
    #[must_use]
    pub fn planning(mut self, planned: bool) -> Self {
        self.planned = planned;
        self
    }

    /// Whether the forecasts include a planning call.
    pub fn forecasts_planning(&self) -> bool {
        self.planned
    }

    /// The price the forecasts and actuals are priced at.
    pub fn price(&self) -> Option<Price> {
        self.price
    }

    /// The statistics the forecasts come from.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The forecast of running `plan` ([`Forecast::of`], or [`Forecast::given`] for a
    /// [given plan](Self::for_given_plan)).
    pub fn forecast(&self, plan: &Plan) -> Forecast {
        Forecast::estimate(
            plan,
            &self.history,
            self.concurrency,
            self.price,
            self.planned,
        )
    }

    /// Milliseconds left on `graph`'s critical path once the `finished` steps are done
    /// (an ETA).
    pub fn eta_ms(&self, graph: &PlanGraph, finished: &HashSet<usize>) -> u64 {
        remaining_ms(graph, finished, &self.history)
    }

    /// What the run in `report` took, priced at this forecaster's price.
    pub fn actual(&self, report: &RunReport) -> Actual {
        Actual::of(report, self.price)
    }

    /// Adds `forecast` (when there is one) and the run's [`Actual`] to `report`'s
    /// extras, as its `forecast` and `actual` keys.
    pub fn annotate(&self, report: &mut RunReport, forecast: Option<&Forecast>) {
        if let Some(forecast) = forecast
            && let Ok(value) = serde_json::to_value(forecast)
        {
            report.extras.insert(FORECAST_KEY.to_owned(), value);
        }
        if let Ok(value) = serde_json::to_value(self.actual(report)) {
            report.extras.insert(ACTUAL_KEY.to_owned(), value);
        }
    }

    /// Whether running `plan` would exceed a spending limit of `budget` dollars before it
    /// starts: the *low* end of its forecast is over the budget. A forecast whose high end
    /// only is over it passes (the spend meter stops the run if its spend gets there).
    /// `None` also when the model's price is unknown (no dollar forecast).
    pub fn over_budget(&self, budget: f64, plan: &Plan) -> Option<OverBudget> {
        let [low, high] = self.forecast(plan).usd?;
        (low > budget).then_some(OverBudget { budget, low, high })
    }
}

/// The report key of the forecast made when a run's plan was made.
pub const FORECAST_KEY: &str = "forecast";

/// The report key of what a run took ([`Actual`]).
pub const ACTUAL_KEY: &str = "actual";

/// A plan whose forecast is over a dollar budget before it runs
/// ([`Forecaster::over_budget`]): even the low end of its forecast is above it.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct OverBudget {
    /// The budget, in dollars.
    pub budget: f64,
    /// The low end of the forecast's dollars (above the budget).
    pub low: f64,
    /// The high end.
    pub high: f64,
}

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let OverBudget { budget, low, high } = *self;
        write!(
            f,
            "the run would exceed its budget of ${budget:.4}: even the low end of its forecast (${low:.4}, of ${low:.4}-{high:.4}) is above it; raise the budget, lower the step cap or use a cheaper model"
        )
    }
}

fn human(n: u64) -> String {
    if n >= 10_000 {
        format!("{:.0}k", n as f64 / 1000.0)
    } else if n >= 1_000 {
        format!("{:.1}k", n as f64 / 1000.0)
    } else {
        n.to_string()
    }
}

fn seconds(ms: u64) -> String {
    if ms >= 120_000 {
        format!("{:.0} min", ms as f64 / 60_000.0)
    } else {
        format!("{:.0} s", (ms as f64 / 1000.0).max(1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{PlanRevision, RunRecord};
    use plan_core::{Event, RunId, Step, StepId, Timestamp};

    /// A diamond a → (b, c) → d where every step took `step_ms` and one call of 100 + 50
    /// tokens, planning 1 s and synthesis 2 s.
    fn run(step_ms: u64) -> StoredRun {
        let plan = Plan::new(
            "g",
            vec![
                Step::new("a", "a"),
                Step::new("b", "b").depends_on(["a"]),
                Step::new("c", "c")
                    .depends_on(["a"])
                    .with_kind(StepKind::Code),
                Step::new("d", "d").depends_on(["b", "c"]),
            ],
        );
        let id = RunId::new("r");
        let mut run = StoredRun::new(RunRecord::new("g"));
        run.status = RunStatus::Succeeded;
        run.plans.push(PlanRevision::new(0, plan));
        let event = |kind| Event::at(Timestamp::now(), id.clone(), kind);
        let call = |purpose: &str, step: Option<&str>, ms| EventKind::LlmCall {
            purpose: purpose.to_owned(),
            step: step.map(StepId::new),
            prompt_tokens: 100,
            completion_tokens: 50,
            duration_ms: ms,
        };
        run.events.push(event(call("plan", None, 1_000)));
        for s in ["a", "b", "c", "d"] {
            run.events.push(event(call("step", Some(s), step_ms)));
            run.events.push(event(EventKind::StepCompleted {
                step: StepId::new(s),
                duration_ms: step_ms,
            }));
        }
        run.events.push(event(call("synthesize", None, 2_000)));
        run
    }

    #[test]
    fn history_weights_the_critical_path() {
        let runs = [run(3_000), run(5_000)];
        let history = History::from_runs(&runs);
        assert_eq!(history.runs(), 2);
        let plan = &runs[0].plans[0].plan;
        let f = Forecast::of(plan, &history, 4, Some(Price::new(1.0, 2.0)));
        assert_eq!(f.basis, Basis::History);
        // 4 steps + planning + synthesis, one call each.
        assert_eq!(f.calls[0], 6);
        // Critical path a → b → d: 3 steps of 4 s, plus 1 s planning and 2 s synthesis.
        let mid = (f.wall_ms[0] + f.wall_ms[1]) as f64 / 2.0;
        assert!((f.wall_ms[0]..=f.wall_ms[1]).contains(&15_000), "{f:?}");
        assert!((mid - 15_000.0).abs() < 15_000.0 * 0.25, "{f:?}");
        assert_eq!(f.prompt_tokens, [480, 750]);
        let usd = f.usd.unwrap();
        assert!(usd[0] < usd[1] && usd[0] > 0.0);
    }

    #[test]
    fn one_slot_runs_the_steps_one_after_another() {
        let runs = [run(4_000)];
        let history = History::from_runs(&runs);
        let plan = &runs[0].plans[0].plan;
        let wide = Forecast::of(plan, &history, 8, None);
        let narrow = Forecast::of(plan, &history, 1, None);
        // 16 s of steps in one slot against a 12 s critical path.
        assert_eq!(narrow.wall_ms[1] - wide.wall_ms[1], (4_000.0 * 1.25) as u64);
        assert!(narrow.usd.is_none());
    }

    #[test]
    fn without_history_the_defaults_say_so() {
        let plan = run(1).plans[0].plan.clone();
        let f = Forecast::of(&plan, &History::none(), 4, Some(Price::FREE));
        assert_eq!(f.basis, Basis::Defaults);
        assert_eq!(f.usd, Some([0.0, 0.0]));
        assert!(f.summary().contains("defaults"), "{}", f.summary());
        assert!(f.wall_ms[1] >= 4 * f.wall_ms[0] - 1, "a wide range: {f:?}");
    }

    #[test]
    fn a_forecaster_refuses_on_the_low_end_only_and_prices_the_actual() {
        let runs = [run(3_000)];
        let plan = runs[0].plans[0].plan.clone();
        let forecaster = Forecaster::new(
            History::from_runs(&runs),
            4,
            Some(Price::new(1000.0, 1000.0)),
        );
        let [low, high] = forecaster.forecast(&plan).usd.unwrap();
        assert!(forecaster.over_budget(high + 1.0, &plan).is_none());
        // Between the ends: the spend meter decides, not the forecast.
        assert!(forecaster.over_budget((low + high) / 2.0, &plan).is_none());
        let over = forecaster.over_budget(low / 2.0, &plan).unwrap();
        assert_eq!((over.low, over.high), (low, high));
        assert!(over.to_string().contains("even the low end"), "{over}");
        assert!(
            Forecaster::new(History::none(), 4, None)
                .over_budget(0.0, &plan)
                .is_none(),
            "no price, no dollar forecast, no refusal"
        );
        // A given plan has no planning call to forecast.
        let given = forecaster.clone().for_given_plan().forecast(&plan);
        assert_eq!(given.calls[0] + 1, forecaster.forecast(&plan).calls[0]);
    }

    #[test]
    fn failed_runs_teach_nothing_and_eta_shrinks_as_steps_finish() {
        let mut failed = run(60_000);
        failed.status = RunStatus::Failed;
        let ok = run(2_000);
        let history = History::from_runs([&failed, &ok]);
        assert_eq!(history.runs(), 1);
        let graph = PlanGraph::new(ok.plans[0].plan.clone()).unwrap();
        let all = remaining_ms(&graph, &HashSet::new(), &history);
        assert_eq!(all, 6_000);
        let after_a = remaining_ms(&graph, &HashSet::from([0]), &history);
        assert_eq!(after_a, 4_000);
    }
}
