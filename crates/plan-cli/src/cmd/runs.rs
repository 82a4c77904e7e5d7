//! `plan runs` (one line per run, the id first) and `plan show RUN_ID`.

use std::process::ExitCode;
use std::time::SystemTime;

use plan_core::{RunId, RunState, RunStatus, StepStatus, Timestamp};
use plan_exec::{RunReport, StoredRun};
use plan_strategies::RunsError;
use serde_json::Value;

use crate::cli::{RunsArgs, ShowArgs};
use crate::config::{Overrides, Settings};
use crate::exit::Usage;
use crate::render;
use crate::session;
use crate::style::Palette;

/// `plan runs`.
pub async fn runs(args: RunsArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_process(&Overrides::store(args.store.clone()))?;
    let Some(store) = session::open_existing_store(&settings.store).await? else {
        if args.json {
            println!("[]");
        } else {
            eprintln!("no runs yet in {}", settings.store);
        }
        return Ok(ExitCode::SUCCESS);
    };
    let mut runs = store
        .list_runs()
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the run store: {e}"))?;
    runs.truncate(args.limit);
    if args.json {
        let list: Vec<Value> = runs.iter().map(plan_exec::RunSummary::to_listing).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    let now = SystemTime::now();
    for r in &runs {
        println!(
            "{}  {:<9}  {:<12}  {:<24}  {:>5}/{:<3}  {:>8}  {}",
            r.id,
            r.status.as_str(),
            r.strategy.as_deref().unwrap_or("-"),
            r.model.as_deref().unwrap_or("-"),
            r.steps_done,
            r.steps_total,
            age(now, r.updated),
            one_line(&r.goal, 60)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `plan show RUN_ID`.
pub async fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_process(&Overrides::store(args.store.clone()))?;
    let missing = || {
        Usage::new(format!(
            "no run `{}` in {}: list runs with `plan runs` (or pass the --store the run used)",
            args.run_id, settings.store
        ))
    };
    let store = session::open_existing_store(&settings.store)
        .await?
        .ok_or_else(missing)?;
    let runs = plan_strategies::Runs::new(store);
    let id = RunId::new(args.run_id.clone());
    let failed = |e: RunsError| -> anyhow::Error {
        match e {
            RunsError::NotFound(_) => missing().into(),
            e => anyhow::anyhow!("cannot read the run store: {e}"),
        }
    };
    let run = runs.load(&id).await.map_err(failed)?;
    // A fleet store knows which worker runs each running step.
    let report = runs.report_of(&run).await;
    if args.json {
        println!("{}", report.to_json_pretty());
    } else {
        print!("{}", text(&run, &report, args.full, &Palette::stdout()));
    }
    Ok(ExitCode::SUCCESS)
}

/// The step states of a stored run's latest plan, as its report has them.
pub fn state_of(run: &StoredRun) -> Option<RunState> {
    let report = RunReport::from_stored(run);
    report.plan.as_ref()?;
    Some(RunState::from(report.steps))
}

/// A stored run as `plan show` presents it: the report, as text.
fn text(run: &StoredRun, report: &RunReport, full: bool, p: &Palette) -> String {
    let mut out = String::new();
    let r = &run.record;
    let status_style = match report.status {
        RunStatus::Succeeded => p.ok,
        RunStatus::Failed | RunStatus::Rejected => p.error,
        _ => p.warn,
    };
    out.push_str(&format!(
        "{}run {}{:#}  {status_style}{}{status_style:#}\n",
        p.bold, r.id, p.bold, report.status
    ));
    out.push_str(&format!("goal:     {}\n", r.goal));
    out.push_str(&format!(
        "strategy: {}  model: {}{}\n",
        r.strategy.as_deref().unwrap_or("-"),
        r.model.as_deref().unwrap_or("-"),
        r.base_url
            .as_deref()
            .map(|u| format!(" at {u}"))
            .unwrap_or_default()
    ));
    out.push_str(&format!(
        "started:  {} ({}), took {}\n",
        r.created,
        age(SystemTime::now(), r.created),
        crate::display::seconds(report.duration_ms)
    ));
    let u = &report.usage;
    out.push_str(&format!(
        "usage:    {} model calls, {} prompt + {} completion tokens, {} replan{}\n",
        u.llm_calls,
        u.prompt_tokens,
        u.completion_tokens,
        report.replans,
        if report.replans == 1 { "" } else { "s" }
    ));
    if let Some(plan) = &report.plan {
        let state = RunState::from(report.steps.clone());
        out.push('\n');
        out.push_str(&render::tree_with(plan, Some(&state)));
    }
    out.push_str(&format!("\n{}steps{:#}\n", p.bold, p.bold));
    for s in &report.steps {
        let mut timing = s
            .duration_ms
            .map(|ms| format!(", {}", crate::display::seconds(ms)))
            .unwrap_or_default();
        if let Some(worker) = &s.worker {
            timing.push_str(&format!(", on worker {worker}"));
        }
        out.push_str(&format!(
            "{}{}{:#}  {}  ({} attempt{}{timing})\n",
            p.bold,
            s.id,
            p.bold,
            s.status,
            s.attempts,
            if s.attempts == 1 { "" } else { "s" }
        ));
        if let Some(e) = s
            .error
            .as_ref()
            .filter(|_| s.status != StepStatus::Completed)
        {
            out.push_str(&format!("    {}{}{:#}\n", p.error, e, p.error));
        }
        if let Some(o) = &s.output {
            out.push_str(&indent(&clip(o, full), "    "));
        }
    }
    if let Some(why) = &report.failure {
        out.push_str(&format!("\n{}failure{:#}\n{why}\n", p.bold, p.bold));
    }
    if let Some(answer) = &report.answer {
        out.push_str(&format!("\n{}answer{:#}\n", p.bold, p.bold));
        out.push_str(&clip(answer, full));
    }
    out
}

/// The first lines of `text` unless `full`, with a marker saying how much was left out.
fn clip(text: &str, full: bool) -> String {
    const LINES: usize = 6;
    const CHARS: usize = 600;
    let text = text.trim_end();
    if full {
        return format!("{text}\n");
    }
    let mut shown: String = text.lines().take(LINES).collect::<Vec<_>>().join("\n");
    if shown.chars().count() > CHARS {
        shown = shown.chars().take(CHARS).collect();
    }
    let rest = text.chars().count().saturating_sub(shown.chars().count());
    if rest > 0 {
        shown.push_str(&format!("\n… ({rest} more characters; --full shows all)"));
    }
    shown.push('\n');
    shown
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines().map(|l| format!("{prefix}{l}\n")).collect()
}

fn one_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > max || text.lines().nth(1).is_some() {
        let cut: String = line.chars().take(max).collect();
        format!("{}…", cut.trim_end())
    } else {
        line.to_owned()
    }
}

/// `3m ago`.
fn age(now: SystemTime, then: Timestamp) -> String {
    let secs = now
        .duration_since(then.system_time())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..172_800 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_marks_what_it_leaves_out() {
        let long = (1..=10)
            .map(|i| format!("line {i}"))
            .collect::<Vec<_>>()
            .join("\n");
        let c = clip(&long, false);
        assert!(c.contains("line 6") && !c.contains("line 7"), "{c}");
        assert!(c.contains("more characters; --full shows all"));
        assert_eq!(clip(&long, true), format!("{long}\n"));
        assert_eq!(clip("short", false), "short\n");
    }

    #[test]
    fn ages() {
        let now = SystemTime::now();
        let at = |s: u64| Timestamp::from(now - std::time::Duration::from_secs(s));
        assert_eq!(age(now, at(5)), "5s ago");
        assert_eq!(age(now, at(125)), "2m ago");
        assert_eq!(age(now, at(7200)), "2h ago");
        assert_eq!(age(now, at(3 * 86_400)), "3d ago");
    }
}
