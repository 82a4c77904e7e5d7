//! Progress on stderr, driven by [`Event`]s: a live view on a terminal, plain timestamped
//! lines otherwise (or with `--quiet`).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use plan_core::{Event, EventKind, Plan, PlanGraph, RunStatus, StepId, Timestamp};
use plan_exec::forecast::Forecaster;

use crate::render;
use crate::style::{self, Palette};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Spinners and a bar, redrawn in place (stderr is a terminal).
    Live,
    /// One timestamped line per event.
    Plain,
}

impl Mode {
    /// Live on a terminal unless `quiet`, plain otherwise. A terminal without escape
    /// sequences (`TERM` unset or `dumb`) gets plain lines: indicatif would draw nothing there,
    /// leaving neither a live view nor timestamps.
    pub fn detect(quiet: bool) -> Mode {
        if !quiet && style::stderr_is_terminal() {
            Mode::Live
        } else {
            Mode::Plain
        }
    }
}

/// The progress display of one command.
pub struct Display {
    palette: Palette,
    live: Option<Live>,
    forecasting: Option<Forecasting>,
}

/// The forecast shown when a plan is made, and the ETA kept while it runs (the agent
/// records the first plan's forecast in the report, from the same forecaster).
struct Forecasting {
    forecaster: Forecaster,
    graph: Option<PlanGraph>,
    finished: HashSet<StepId>,
}

impl Forecasting {
    /// Follows `kind`; returns the forecast line when a plan was made.
    fn on(&mut self, kind: &EventKind) -> Option<String> {
        match kind {
            EventKind::PlanCreated { plan, .. } | EventKind::Replanned { plan, .. } => {
                self.graph = PlanGraph::with_limits(
                    plan.clone(),
                    &plan_core::Limits::with_max_steps(plan.steps.len().max(1)),
                )
                .ok();
                Some(self.forecaster.forecast(plan).summary())
            }
            EventKind::StepCompleted { step, .. }
            | EventKind::StepReused { step, .. }
            | EventKind::StepFailed {
                step,
                retrying: false,
                ..
            }
            | EventKind::StepSkipped { step, .. } => {
                self.finished.insert(step.clone());
                None
            }
            _ => None,
        }
    }

    /// Milliseconds left on the critical path, once a plan exists.
    fn eta_ms(&self) -> Option<u64> {
        let graph = self.graph.as_ref()?;
        let finished: HashSet<usize> = self
            .finished
            .iter()
            .filter_map(|id| graph.index_of(id.as_str()))
            .collect();
        Some(self.forecaster.eta_ms(graph, &finished))
    }
}

struct Live {
    multi: MultiProgress,
    /// A "planning" spinner until the plan's size is known, then the done/total bar.
    bar: ProgressBar,
    bar_style: Option<ProgressStyle>,
    spinners: HashMap<StepId, ProgressBar>,
    spinner_style: ProgressStyle,
    tokens: u64,
    calls: u64,
    eta_ms: Option<u64>,
}

impl Display {
    /// A display in `mode`, coloured when stderr is a terminal and `NO_COLOR` is unset.
    pub fn new(mode: Mode) -> Self {
        let palette = Palette::stderr();
        let live = (mode == Mode::Live).then(|| Live::new(style::stderr_colours()));
        Display {
            palette,
            live,
            forecasting: None,
        }
    }

    /// Shows a forecast when a plan is made and an ETA while it runs.
    pub fn set_forecaster(&mut self, forecaster: Forecaster) {
        self.forecasting = Some(Forecasting {
            forecaster,
            graph: None,
            finished: HashSet::new(),
        });
    }

    /// Runs `f` with the live view cleared from the screen (for prompts).
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.live {
            Some(live) => live.multi.suspend(f),
            None => f(),
        }
    }

    /// Shows one event.
    pub fn event(&mut self, event: &Event) {
        let p = self.palette;
        let forecast = self.forecasting.as_mut().and_then(|f| f.on(&event.kind));
        let eta = self.forecasting.as_ref().and_then(Forecasting::eta_ms);
        if let Some(live) = &mut self.live {
            if let Some(text) = live.update(event, &p) {
                live.multi.suspend(|| eprintln!("{text}"));
            }
            if let Some(text) = forecast {
                live.multi
                    .suspend(|| eprintln!("{}{text}{:#}", p.dim, p.dim));
            }
            live.set_eta(eta);
            return;
        }
        let text = match (plain_line(&event.kind, &p), forecast) {
            (Some(line), Some(forecast)) => Some(format!("{line}\n{forecast}")),
            (line, forecast) => line.or(forecast),
        };
        if let Some(text) = text {
            let ts = event.ts;
            let mut err = std::io::stderr().lock();
            for (i, line) in text.lines().enumerate() {
                // Continuation lines (the plan tree) are indented under the first.
                let _ = if i == 0 {
                    writeln!(err, "{}{ts}{:#} {line}", p.dim, p.dim)
                } else {
                    writeln!(err, "{}{line}", " ".repeat(25))
                };
            }
        }
    }

    /// Clears the live view (spinners and bar).
    pub fn finish(&mut self) {
        if let Some(live) = self.live.take() {
            for (_, spinner) in live.spinners {
                spinner.finish_and_clear();
            }
            live.bar.finish_and_clear();
            let _ = live.multi.clear();
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Live {
    fn new(colour: bool) -> Live {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let bar_template = if colour {
            "{bar:30.green/dim} {pos}/{len} steps  {elapsed:.dim}  {msg:.dim}"
        } else {
            "{bar:30} {pos}/{len} steps  {elapsed}  {msg}"
        };
        let spinner_template = if colour {
            "{spinner:.cyan} {prefix:.bold} {elapsed:.dim} {wide_msg:.dim}"
        } else {
            "{spinner} {prefix} {elapsed} {wide_msg}"
        };
        let planning_template = if colour {
            "{spinner:.cyan} planning  {elapsed:.dim}  {msg:.dim}"
        } else {
            "{spinner} planning  {elapsed}  {msg}"
        };
        let bar_style = ProgressStyle::with_template(bar_template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("━╸ ");
        let spinner_style = ProgressStyle::with_template(spinner_template)
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let planning_style = ProgressStyle::with_template(planning_template)
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        // Until a plan exists there is nothing to count: a spinner, not a full bar of 0/0.
        let bar = multi.add(ProgressBar::new(0).with_style(planning_style));
        bar.enable_steady_tick(Duration::from_millis(250));
        Live {
            multi,
            bar,
            bar_style: Some(bar_style),
            spinners: HashMap::new(),
            spinner_style,
            tokens: 0,
            calls: 0,
            eta_ms: None,
        }
    }

    /// Shows `eta_ms` (time left on the critical path) beside the usage in the bar.
    fn set_eta(&mut self, eta_ms: Option<u64>) {
        if self.eta_ms != eta_ms {
            self.eta_ms = eta_ms;
            self.refresh_message();
        }
    }

    fn refresh_message(&self) {
        let mut message = if self.calls > 0 {
            format!(
                "{} model call{}, {} tokens",
                self.calls,
                plural(self.calls as usize),
                self.tokens
            )
        } else {
            String::new()
        };
        if let Some(ms) = self.eta_ms.filter(|ms| *ms > 0) {
            if !message.is_empty() {
                message.push_str(", ");
            }
            message.push_str(&format!("ETA ~{}", seconds(ms)));
        }
        self.bar.set_message(message);
    }

    /// Sets the bar's total, turning the planning spinner into the bar on first use.
    fn set_total(&mut self, total: u64) {
        if let Some(style) = self.bar_style.take() {
            self.bar.set_style(style);
        }
        self.bar.set_length(total);
    }

    /// Updates the view; returns a line to print above it, if any.
    fn update(&mut self, event: &Event, p: &Palette) -> Option<String> {
        match &event.kind {
            EventKind::StepStarted { step, attempt } => {
                let spinner = self.spinners.entry(step.clone()).or_insert_with(|| {
                    let s = self.multi.insert_before(
                        &self.bar,
                        ProgressBar::new_spinner().with_style(self.spinner_style.clone()),
                    );
                    s.set_prefix(step.to_string());
                    s.enable_steady_tick(Duration::from_millis(120));
                    s
                });
                if *attempt > 1 {
                    spinner.set_message(format!("attempt {attempt}"));
                }
                None
            }
            EventKind::StepCompleted { step, .. }
            | EventKind::StepFailed {
                step,
                retrying: false,
                ..
            }
            | EventKind::StepSkipped { step, .. } => {
                if let Some(s) = self.spinners.remove(step) {
                    s.finish_and_clear();
                }
                plain_line(&event.kind, p)
            }
            EventKind::StepFailed { step, .. } => {
                if let Some(s) = self.spinners.get(step) {
                    s.set_message("retrying");
                }
                plain_line(&event.kind, p)
            }
            EventKind::Progress { done, total, .. } => {
                self.set_total(*total as u64);
                self.bar.set_position(*done as u64);
                None
            }
            EventKind::PlanCreated { plan, .. } | EventKind::Replanned { plan, .. } => {
                self.set_total(plan.steps.len() as u64);
                plain_line(&event.kind, p)
            }
            EventKind::LlmCall {
                prompt_tokens,
                completion_tokens,
                ..
            } => {
                self.calls += 1;
                self.tokens += prompt_tokens + completion_tokens;
                self.refresh_message();
                None
            }
            EventKind::RunFinished { .. } => {
                self.bar.finish_and_clear();
                plain_line(&event.kind, p)
            }
            _ => plain_line(&event.kind, p),
        }
    }
}

/// The text shown for an event (without timestamp); `None` for events only the live view
/// shows (progress, model calls are summarised in the bar).
pub fn plain_line(kind: &EventKind, p: &Palette) -> Option<String> {
    let (b, ok, warn, err, dim) = (p.bold, p.ok, p.warn, p.error, p.dim);
    let text = match kind {
        EventKind::RunStarted { goal } => format!("run started: {goal}"),
        EventKind::PlanCreated { plan, revision } => {
            let what = if *revision == 0 {
                "plan".to_owned()
            } else {
                format!("plan revision {revision}")
            };
            format!(
                "{what}: {} step{}\n{}",
                plan.steps.len(),
                plural(plan.steps.len()),
                tree(plan)
            )
        }
        EventKind::StepStarted { step, attempt } => {
            if *attempt > 1 {
                format!("{b}{step}{b:#} started (attempt {attempt})")
            } else {
                format!("{b}{step}{b:#} started")
            }
        }
        EventKind::StepCompleted { step, duration_ms } => {
            format!(
                "{ok}✓{ok:#} {b}{step}{b:#} done in {}",
                seconds(*duration_ms)
            )
        }
        EventKind::StepFailed {
            step,
            error,
            retrying,
        } => {
            if *retrying {
                format!("{warn}!{warn:#} {b}{step}{b:#} failed, retrying: {error}")
            } else {
                format!("{err}✗{err:#} {b}{step}{b:#} failed: {error}")
            }
        }
        EventKind::StepSkipped { step, reason } => {
            format!("{dim}-{dim:#} {b}{step}{b:#} skipped: {reason}")
        }
        EventKind::StepReused { step, from } => {
            format!("{ok}↺{ok:#} {b}{step}{b:#} reused from run {from}: unchanged, not run again")
        }
        EventKind::FallbackUsed { step, error } => {
            format!("{warn}↪ fallback{warn:#} for {b}{step}{b:#} after: {error}")
        }
        EventKind::Replanned {
            revision,
            reason,
            kept,
            plan,
        } => {
            let kept: Vec<&str> = kept.iter().map(StepId::as_str).collect();
            let kept = if kept.is_empty() {
                "none".to_owned()
            } else {
                kept.join(", ")
            };
            format!(
                "{warn}↻ replanned{warn:#} (revision {revision}): {reason}\n  kept: {kept}\n{}",
                tree(plan)
            )
        }
        EventKind::LlmCall {
            purpose,
            step,
            prompt_tokens,
            completion_tokens,
            duration_ms,
        } => {
            let step = step
                .as_ref()
                .map(|s| format!(" for {s}"))
                .unwrap_or_default();
            format!(
                "{dim}model call ({purpose}{step}): {prompt_tokens} + {completion_tokens} tokens in {}{dim:#}",
                seconds(*duration_ms)
            )
        }
        EventKind::ToolCall {
            step,
            tool,
            ok: success,
            duration_ms,
        } => format!(
            "{b}{step}{b:#} called {tool}: {} in {}",
            if *success { "ok" } else { "failed" },
            seconds(*duration_ms)
        ),
        EventKind::Progress { done, total, .. } => format!("progress {done}/{total}"),
        EventKind::RouteChosen { route } => match route.as_str() {
            "direct" => "route: direct (answered without a plan)".to_owned(),
            _ => format!("route: {route}"),
        },
        EventKind::PlanAdjusted { changes } => changes
            .iter()
            .map(|c| format!("{warn}note{warn:#}: {c}"))
            .collect::<Vec<_>>()
            .join("\n"),
        EventKind::RunFinished { status, .. } => {
            let s = match status {
                RunStatus::Succeeded => ok,
                RunStatus::Failed => err,
                _ => warn,
            };
            format!("run {s}{status}{s:#}")
        }
        _ => return None,
    };
    Some(text)
}

fn tree(plan: &Plan) -> String {
    render::tree(plan)
        .lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `1.2s` from milliseconds.
pub fn seconds(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// A timestamp for messages that are not events.
pub fn now() -> Timestamp {
    Timestamp::now()
}

#[cfg(test)]
mod tests {
    use super::*;
    use plan_core::Step;

    #[test]
    fn plain_lines_name_what_happened() {
        let p = Palette::new(false);
        let line = |k: EventKind| plain_line(&k, &p).unwrap();
        assert_eq!(
            line(EventKind::StepCompleted {
                step: "a".into(),
                duration_ms: 1234
            }),
            "✓ a done in 1.2s"
        );
        assert_eq!(
            line(EventKind::StepFailed {
                step: "a".into(),
                error: "timeout".into(),
                retrying: true
            }),
            "! a failed, retrying: timeout"
        );
        let plan = Plan::new("g", vec![Step::new("a", "do a")]);
        let text = line(EventKind::Replanned {
            revision: 1,
            reason: "b failed".into(),
            kept: vec!["a".into()],
            plan,
        });
        assert!(text.starts_with("↻ replanned (revision 1): b failed\n  kept: a"));
    }

    #[test]
    fn colours_only_when_enabled() {
        let k = EventKind::StepCompleted {
            step: "a".into(),
            duration_ms: 1,
        };
        assert!(
            !plain_line(&k, &Palette::new(false))
                .unwrap()
                .contains('\x1b')
        );
        assert!(
            plain_line(&k, &Palette::new(true))
                .unwrap()
                .contains('\x1b')
        );
    }
}
