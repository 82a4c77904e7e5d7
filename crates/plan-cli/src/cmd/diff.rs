//! `plan diff RUN_ID [A B]`: how a run's plan changed between two of its versions (the
//! first plan, each replan, each approved edit), what the change keeps and invalidates of
//! the finished work, and how it moves the forecast. Also the diff `plan approve` shows of
//! a replan waiting for approval, and the text of a revision that `--approve` puts to the
//! user.

use std::path::Path;
use std::process::ExitCode;

use plan_core::{
    Plan, PlanDiff, PlanVersion, RunStatus, Step, StepChange, StepField, StepId, VersionOrigin,
    WordChange, WordOp,
};
use plan_exec::forecast::{Basis, Forecast, Forecaster};
use plan_exec::store::{RunStore, StoredRun};
use serde::Serialize;

use crate::cli::{ApproveArgs, DiffArgs};
use crate::config::{Overrides, Settings};
use crate::exit::Usage;
use crate::style::Palette;

/// `plan diff`.
pub async fn diff(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_process(&Overrides::store(args.store.clone()))?;
    let (store, run) = crate::cmd::runs::load(&settings, &args.run_id).await?;
    let versions = PlanVersion::from_events(&run.events);
    if args.list {
        print_list(&versions, args.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let (from, to) = pick(&args, &versions)?;
    let forecaster = forecaster_of(&run, &settings, store.as_ref()).await;
    let change = Change::new(&versions[from], &versions[to], &forecaster);
    if args.json {
        let shown = Shown {
            run_id: run.record.id.as_str(),
            from: Listed::of(&versions[from]),
            to: Listed::of(&versions[to]),
            diff: &change.diff,
            forecast: &change.forecast,
        };
        println!("{}", serde_json::to_string_pretty(&shown)?);
    } else {
        let p = Palette::stdout();
        println!(
            "{}run {}{:#}: version {} ({}) → version {} ({})",
            p.bold,
            run.record.id,
            p.bold,
            from,
            describe(&versions[from]),
            to,
            describe(&versions[to])
        );
        print!("{}", change.text(&p));
    }
    Ok(ExitCode::SUCCESS)
}

/// Before `plan approve` of a run whose replan waits for approval: the replan as a diff
/// against the version before it (or, with `--plan FILE`, the edit as a diff against the
/// plan waiting), with the forecast's change, on stderr. Anything it cannot read is left
/// to `plan approve` itself to report.
pub async fn before_approval(args: &ApproveArgs) {
    let Ok(settings) = Settings::from_process(&Overrides::store(args.run.store.clone())) else {
        return;
    };
    let Ok((store, run)) = crate::cmd::runs::load(&settings, &args.run.run_id).await else {
        return;
    };
    if run.status != RunStatus::AwaitingApproval {
        return;
    }
    let versions = PlanVersion::from_events(&run.events);
    let Some(waiting) = versions.last() else {
        return;
    };
    let edited = match &args.plan {
        // Standard input is `plan approve`'s to read.
        Some(file) if file.as_path() != Path::new("-") => {
            match crate::cmd::graph::load_plan_file(file, usize::MAX) {
                Ok(plan) => Some(plan),
                Err(_) => return,
            }
        }
        Some(_) => return,
        None => None,
    };
    let (before, after, heading) = match (&edited, versions.len()) {
        (Some(plan), _) => (
            waiting.plan.clone(),
            plan.clone(),
            format!(
                "the edited plan in place of version {} ({}) of run {}:",
                waiting.version,
                describe(waiting),
                run.record.id
            ),
        ),
        // A first plan has no version before it to compare with.
        (None, 0 | 1) => return,
        (None, n) => (
            versions[n - 2].plan.clone(),
            waiting.plan.clone(),
            format!(
                "run {} waits for approval of version {} ({}); against version {}:",
                run.record.id,
                waiting.version,
                describe(waiting),
                n - 2
            ),
        ),
    };
    let forecaster = forecaster_of(&run, &settings, store.as_ref()).await;
    let p = Palette::stderr();
    eprintln!("{}{heading}{:#}", p.bold, p.bold);
    eprint!(
        "{}",
        revision_text(
            &before,
            &after,
            Some(&waiting.finished),
            Some(&forecaster),
            &p
        )
    );
    eprintln!(
        "the whole plan: plan graph --run {} --format tree",
        run.record.id
    );
}

/// A revised plan as a diff against the plan before it: steps added, removed and changed,
/// with `finished` steps (`None` when nothing has run) the outputs kept and invalidated,
/// and with a forecaster the forecast's change.
pub fn revision_text(
    before: &Plan,
    after: &Plan,
    finished: Option<&[StepId]>,
    forecaster: Option<&Forecaster>,
    p: &Palette,
) -> String {
    let diff = PlanDiff::between_finished(before, after, finished.unwrap_or_default());
    let mut out = diff_text(&diff, finished.is_some(), p);
    if let Some(forecaster) = forecaster {
        out.push_str(&ForecastChange::new(forecaster, before, after).text());
        out.push('\n');
    }
    out
}

/// The versions to compare: A and B as given, else the last two.
fn pick(args: &DiffArgs, versions: &[PlanVersion]) -> anyhow::Result<(usize, usize)> {
    let id = &args.run_id;
    let n = versions.len();
    if n == 0 {
        return Err(Usage::new(format!(
            "nothing to compare: run {id} has no plan (it was answered directly, or it has not planned yet)"
        ))
        .into());
    }
    let (from, to) = match (args.from, args.to) {
        (Some(a), Some(b)) => (a, b),
        _ if n == 1 => {
            return Err(Usage::new(format!(
                "nothing to compare: run {id} has one plan version (version 0, {}); `plan show {id}` shows it",
                describe(&versions[0])
            ))
            .into());
        }
        _ => (n - 2, n - 1),
    };
    for v in [from, to] {
        if v >= n {
            return Err(Usage::new(format!(
                "version {v} is out of range: run {id} has {n} plan version{} ({}); list them with `plan diff {id} --list`",
                if n == 1 { "" } else { "s" },
                if n == 1 {
                    "version 0".to_owned()
                } else {
                    format!("versions 0 to {}", n - 1)
                }
            ))
            .into());
        }
    }
    Ok((from, to))
}

/// The forecaster the run's forecasts come from: its model, endpoint and concurrency,
/// the price of its model, the history of that model in the store, and a planning call
/// when a model made its plan.
async fn forecaster_of(run: &StoredRun, settings: &Settings, store: &dyn RunStore) -> Forecaster {
    let spec = plan_strategies::RunSpec::from_record(&run.record).ok();
    let model = spec
        .as_ref()
        .map(|s| s.model.clone())
        .or_else(|| run.record.model.clone())
        .unwrap_or_else(|| settings.model.clone());
    let base_url = spec
        .as_ref()
        .and_then(|s| s.base_url.clone())
        .or_else(|| run.record.base_url.clone());
    let concurrency = spec
        .as_ref()
        .map_or(settings.concurrency, |s| s.limits.concurrency);
    let price = plan_strategies::model_price(&model, base_url.as_deref(), &settings.prices);
    Forecaster::mine(store, &model, concurrency, price)
        .await
        .planning_as(run)
}

/// A version in one line: where it came from and its size.
fn describe(v: &PlanVersion) -> String {
    let steps = v.plan.steps.len();
    let size = format!("{steps} step{}", if steps == 1 { "" } else { "s" });
    match (v.origin, &v.reason) {
        (VersionOrigin::Replan, Some(reason)) => format!("replan: {}; {size}", one_line(reason)),
        (origin, _) => format!("{}, {size}", origin_name(origin)),
    }
}

fn origin_name(origin: VersionOrigin) -> &'static str {
    match origin {
        VersionOrigin::First => "first plan",
        VersionOrigin::Replan => "replan",
        VersionOrigin::Edit => "edit approved",
        VersionOrigin::Revised => "revised while planning",
        _ => "revision",
    }
}

/// A version as `--list` and `--json` show it (without its plan).
#[derive(Serialize)]
struct Listed<'a> {
    version: usize,
    revision: u32,
    origin: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    steps: usize,
    finished: usize,
    at: String,
}

impl<'a> Listed<'a> {
    fn of(v: &'a PlanVersion) -> Self {
        Listed {
            version: v.version,
            revision: v.revision,
            origin: v.origin.as_str(),
            reason: v.reason.as_deref(),
            steps: v.plan.steps.len(),
            finished: v.finished.len(),
            at: v.at.to_string(),
        }
    }
}

fn print_list(versions: &[PlanVersion], json: bool) -> anyhow::Result<()> {
    if json {
        let list: Vec<Listed<'_>> = versions.iter().map(Listed::of).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    for v in versions {
        println!(
            "{:>3}  {:<22}  {:>4} steps  {}{}",
            v.version,
            origin_name(v.origin),
            v.plan.steps.len(),
            v.at,
            v.reason
                .as_deref()
                .map(|r| format!("  {}", one_line(r)))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// What `plan diff --json` prints.
#[derive(Serialize)]
struct Shown<'a> {
    run_id: &'a str,
    from: Listed<'a>,
    to: Listed<'a>,
    #[serde(flatten)]
    diff: &'a PlanDiff,
    forecast: &'a ForecastChange,
}

/// Two versions compared.
struct Change {
    diff: PlanDiff,
    forecast: ForecastChange,
}

impl Change {
    fn new(from: &PlanVersion, to: &PlanVersion, forecaster: &Forecaster) -> Self {
        Change {
            diff: PlanDiff::between_versions(from, to),
            forecast: ForecastChange::new(forecaster, &from.plan, &to.plan),
        }
    }

    fn text(&self, p: &Palette) -> String {
        let mut out = diff_text(&self.diff, true, p);
        out.push_str(&self.forecast.text());
        out.push('\n');
        out
    }
}

/// The diff as lines: `+ id: description`, `- id: description`, `~ id: fields` with what
/// changed under it (a description as a word diff, `[-old-]{+new+}`), then the finished
/// outputs kept and invalidated (when `finished_known`).
fn diff_text(diff: &PlanDiff, finished_known: bool, p: &Palette) -> String {
    let mut out = String::new();
    if let Some(goal) = &diff.goal {
        out.push_str(&format!("goal: {}\n", words(goal, p)));
    }
    if diff.is_empty() {
        out.push_str("no steps added, removed or changed\n");
    }
    for s in &diff.added {
        out.push_str(&format!(
            "{}+ {}{:#}: {}{}\n",
            p.ok,
            s.id,
            p.ok,
            one_line(&s.description),
            after(s)
        ));
    }
    for s in &diff.removed {
        out.push_str(&format!(
            "{}- {}{:#}: {}\n",
            p.error,
            s.id,
            p.error,
            one_line(&s.description)
        ));
    }
    for c in &diff.changed {
        let names: Vec<&str> = c.fields.iter().map(|f| f.as_str()).collect();
        out.push_str(&format!(
            "{}~ {}{:#}: {}\n",
            p.warn,
            c.id,
            p.warn,
            names.join(", ")
        ));
        for line in field_lines(c, p) {
            out.push_str(&format!("    {line}\n"));
        }
    }
    if finished_known {
        out.push_str(&format!(
            "kept: {}; invalidated: {}\n",
            list(&diff.kept),
            list(&diff.invalidated)
        ));
    }
    out
}

/// ` (after a, b)` for a step with dependencies.
fn after(s: &Step) -> String {
    if s.dependencies.is_empty() {
        String::new()
    } else {
        format!(" (after {})", list(&s.dependencies))
    }
}

/// What changed in each field of a changed step, one line each.
fn field_lines(c: &StepChange, p: &Palette) -> Vec<String> {
    let (b, a) = (&c.before, &c.after);
    let opt = |o: &Option<String>| o.as_deref().map_or("-".to_owned(), one_line);
    c.fields
        .iter()
        .map(|f| {
            let what = match f {
                StepField::Description => c.description.as_ref().map_or_else(
                    || plan_core::word_diff(&b.description, &a.description),
                    Clone::clone,
                ),
                StepField::ExpectedOutput => plan_core::word_diff(
                    b.expected_output.as_deref().unwrap_or_default(),
                    a.expected_output.as_deref().unwrap_or_default(),
                ),
                StepField::Fallback => plan_core::word_diff(
                    b.fallback.as_ref().map_or("", |f| f.description.as_str()),
                    a.fallback.as_ref().map_or("", |f| f.description.as_str()),
                ),
                _ => Vec::new(),
            };
            let shown = match f {
                StepField::Description | StepField::ExpectedOutput => words(&what, p),
                StepField::Fallback if what.iter().any(|w| w.op != WordOp::Equal) => {
                    words(&what, p)
                }
                StepField::Fallback => "changed (its description is the same)".to_owned(),
                StepField::Kind => format!("{} → {}", b.kind, a.kind),
                StepField::Agent => format!("{} → {}", opt(&b.agent), opt(&a.agent)),
                StepField::Dependencies => {
                    format!("{} → {}", list(&b.dependencies), list(&a.dependencies))
                }
                StepField::Code => format!(
                    "changed ({} → {} lines)",
                    b.code.as_deref().map_or(0, |c| c.lines().count()),
                    a.code.as_deref().map_or(0, |c| c.lines().count())
                ),
                StepField::Lang => format!(
                    "{} → {}",
                    b.lang.map_or("-", |l| l.as_str()),
                    a.lang.map_or("-", |l| l.as_str())
                ),
                _ => "changed".to_owned(),
            };
            format!("{}: {shown}", f.as_str())
        })
        .collect()
}

/// A word diff as `[-old-]{+new+}`, coloured when the palette is.
fn words(pieces: &[WordChange], p: &Palette) -> String {
    pieces
        .iter()
        .map(|w| {
            let text = one_line(&w.text);
            match w.op {
                WordOp::Delete => format!("{}[-{text}-]{:#}", p.error, p.error),
                WordOp::Insert => format!("{}{{+{text}+}}{:#}", p.ok, p.ok),
                WordOp::Equal => text,
            }
        })
        .collect()
}

/// Ids joined by commas, `none` for none.
fn list(ids: &[StepId]) -> String {
    if ids.is_empty() {
        "none".to_owned()
    } else {
        ids.iter()
            .map(StepId::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Text on one line: line breaks become spaces.
fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The forecasts of running the plan before and after, and their difference.
#[derive(Debug, Serialize)]
struct ForecastChange {
    before: Forecast,
    after: Forecast,
    /// `after - before`, as `[low, high]` of each.
    delta: Delta,
}

/// Differences of two forecasts' ranges, end by end.
#[derive(Debug, Serialize)]
struct Delta {
    calls: [i64; 2],
    tokens: [i64; 2],
    wall_ms: [i64; 2],
    #[serde(skip_serializing_if = "Option::is_none")]
    usd: Option<[f64; 2]>,
}

impl ForecastChange {
    fn new(forecaster: &Forecaster, before: &Plan, after: &Plan) -> Self {
        let (b, a) = (forecaster.forecast(before), forecaster.forecast(after));
        let diff = |x: [u64; 2], y: [u64; 2]| {
            let d = |i: usize| {
                i64::try_from(y[i]).unwrap_or(i64::MAX) - i64::try_from(x[i]).unwrap_or(i64::MAX)
            };
            [d(0), d(1)]
        };
        let delta = Delta {
            calls: diff(b.calls, a.calls),
            tokens: diff(tokens(&b), tokens(&a)),
            wall_ms: diff(b.wall_ms, a.wall_ms),
            usd: b.usd.zip(a.usd).map(|(x, y)| [y[0] - x[0], y[1] - x[1]]),
        };
        ForecastChange {
            before: b,
            after: a,
            delta,
        }
    }

    /// `forecast: calls 5-6 → 6-8 (+1..+2), tokens ..., time ..., cost ... (basis)`.
    fn text(&self) -> String {
        let (b, a, d) = (&self.before, &self.after, &self.delta);
        let range = |r: [u64; 2], f: fn(u64) -> String| format!("{}-{}", f(r[0]), f(r[1]));
        let count = |n: u64| n.to_string();
        let calls = format!(
            "calls {} → {} {}",
            range(b.calls, count),
            range(a.calls, count),
            signed(d.calls, |n| n.to_string())
        );
        let tokens = format!(
            "tokens {} → {} {}",
            range(tokens(b), human),
            range(tokens(a), human),
            signed(d.tokens, |n| human(n.unsigned_abs()))
        );
        let time = format!(
            "time {} → {} {}",
            range(b.wall_ms, seconds),
            range(a.wall_ms, seconds),
            signed(d.wall_ms, |n| seconds(n.unsigned_abs()))
        );
        let cost = match (b.usd, a.usd) {
            (Some([_, 0.0]), Some([_, 0.0])) => "no cost (runs locally)".to_owned(),
            (Some(x), Some(y)) => {
                let usd = |r: [f64; 2]| format!("${:.4}-{:.4}", r[0], r[1]);
                let moved = |v: f64| {
                    let sign = if v < 0.0 { "-" } else { "+" };
                    format!("{sign}${:.4}", v.abs())
                };
                let delta = [y[0] - x[0], y[1] - x[1]];
                let change = if delta.iter().all(|v| v.abs() < 0.000_05) {
                    "(no change)".to_owned()
                } else {
                    format!("({}..{})", moved(delta[0]), moved(delta[1]))
                };
                format!("cost {} → {} {change}", usd(x), usd(y))
            }
            _ => "cost unknown (no price for the model)".to_owned(),
        };
        let basis = match b.basis {
            Basis::History => format!(
                "from {} earlier run{} of the model",
                b.runs,
                if b.runs == 1 { "" } else { "s" }
            ),
            Basis::Defaults => "defaults: no earlier runs of this model".to_owned(),
        };
        format!("forecast: {calls}, {tokens}, {time}, {cost} ({basis})")
    }
}

/// Prompt and completion tokens together.
fn tokens(f: &Forecast) -> [u64; 2] {
    [
        f.prompt_tokens[0] + f.completion_tokens[0],
        f.prompt_tokens[1] + f.completion_tokens[1],
    ]
}

/// `(+2)`, `(+1..+3)`, `(no change)`.
fn signed(d: [i64; 2], show: impl Fn(i64) -> String) -> String {
    let one = |n: i64| {
        let sign = if n < 0 { "-" } else { "+" };
        format!("{sign}{}", show(n).trim_start_matches('-'))
    };
    match d {
        [0, 0] => "(no change)".to_owned(),
        [lo, hi] if lo == hi => format!("({})", one(lo)),
        [lo, hi] => format!("({}..{})", one(lo), one(hi)),
    }
}

/// `950`, `1.2k`, `14k`.
fn human(n: u64) -> String {
    if n >= 10_000 {
        format!("{:.0}k", n as f64 / 1000.0)
    } else if n >= 1_000 {
        format!("{:.1}k", n as f64 / 1000.0)
    } else {
        n.to_string()
    }
}

/// `40 ms`, `2.5 s`, `12 s`, `3 min`: precise enough that a small change shows.
fn seconds(ms: u64) -> String {
    if ms >= 120_000 {
        format!("{:.0} min", ms as f64 / 60_000.0)
    } else if ms >= 10_000 {
        format!("{:.0} s", ms as f64 / 1000.0)
    } else if ms >= 1_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{ms} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plan_exec::forecast::History;

    fn plain() -> Palette {
        Palette::new(false)
    }

    #[test]
    fn a_revision_reads_as_a_diff_with_the_forecast_change() {
        let before = Plan::new(
            "g",
            vec![
                Step::new("a", "Describe the first thing"),
                Step::new("b", "Describe the second thing"),
                Step::new("c", "Compare them").depends_on(["a", "b"]),
            ],
        );
        let after = Plan::new(
            "g",
            vec![
                Step::new("a", "Describe the first thing"),
                Step::new("b2", "Describe the second thing from memory"),
                Step::new("c", "Compare them side by side").depends_on(["a", "b2"]),
            ],
        );
        let forecaster = Forecaster::new(History::none(), 4, None);
        let text = revision_text(
            &before,
            &after,
            Some(&["a".into()]),
            Some(&forecaster),
            &plain(),
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..6],
            [
                "+ b2: Describe the second thing from memory",
                "- b: Describe the second thing",
                "~ c: description, dependencies",
                "    description: Compare them{+ side by side+}",
                "    dependencies: a, b → a, b2",
                "kept: a; invalidated: none",
            ]
        );
        assert!(
            lines[6].starts_with("forecast: calls 5-10 → 5-10 (no change), tokens "),
            "{}",
            lines[6]
        );
        assert!(
            lines[6].ends_with(
                "cost unknown (no price for the model) (defaults: no earlier runs of this model)"
            ),
            "{}",
            lines[6]
        );
    }

    #[test]
    fn signed_deltas() {
        assert_eq!(signed([0, 0], |n| n.to_string()), "(no change)");
        assert_eq!(signed([2, 2], |n| n.to_string()), "(+2)");
        assert_eq!(signed([-1, -3], |n| n.to_string()), "(-1..-3)");
        assert_eq!(
            signed([-1500, 2500], |n| human(n.unsigned_abs())),
            "(-1.5k..+2.5k)"
        );
        assert_eq!(
            signed([1, 2500], |n| seconds(n.unsigned_abs())),
            "(+1 ms..+2.5 s)"
        );
        assert_eq!(seconds(61_000), "61 s");
        assert_eq!(seconds(180_000), "3 min");
    }
}
