//! `plan runs` (one line per run, the id first), `plan runs prune`, the `retention`
//! setting `plan serve` and `plan worker` apply, and `plan show RUN_ID`.

use std::process::ExitCode;
use std::time::SystemTime;

use plan_core::{RunId, RunState, RunStatus, StepStatus, Timestamp};
use plan_exec::report::RunReport;
use plan_exec::store::StoredRun;
use plan_strategies::RunsError;
use serde_json::Value;

use crate::cli::{PruneArgs, RunsArgs, RunsCommand, ShowArgs};
use crate::config::{Overrides, Settings};
use crate::exit::Usage;
use crate::render;
use crate::session;
use crate::style::Palette;

/// `plan runs`.
pub async fn runs(args: RunsArgs) -> anyhow::Result<ExitCode> {
    if let Some(RunsCommand::Prune(prune_args)) = args.action {
        return prune(prune_args).await;
    }
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
        let list: Vec<Value> = runs
            .iter()
            .map(plan_exec::store::RunSummary::to_listing)
            .collect();
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

/// `plan runs prune`: deletes (or with `--dry-run` lists) the ended runs inactive for
/// longer than `--older-than`; one line per run and a total, or one JSON object.
async fn prune(args: PruneArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_process(&Overrides::store(args.store.clone()))?;
    let rule = plan_exec::store::Prune::inactive_for(args.older_than)
        .keep_failed(args.keep_failed)
        .dry_run(args.dry_run);
    let pruned = match session::open_existing_store(&settings.store).await? {
        Some(store) => store
            .prune(&rule)
            .await
            .map_err(|e| anyhow::anyhow!("cannot prune runs in {}: {e}", settings.store))?,
        None => plan_exec::store::Pruned::new(Vec::new(), args.dry_run),
    };
    let older = plan_exec::store::format_age(args.older_than);
    if args.json {
        let runs: Vec<Value> = pruned
            .runs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "run_id": r.id, "status": r.status, "updated": r.updated, "events": r.events,
                })
            })
            .collect();
        let report = serde_json::json!({
            "dry_run": pruned.dry_run,
            "older_than": older,
            "cutoff": rule.older_than,
            "keep_failed": args.keep_failed,
            "runs": runs,
            "pruned": pruned.runs.len(),
            "events": pruned.events(),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if pruned.dry_run {
        "would prune"
    } else {
        "pruned"
    };
    let now = SystemTime::now();
    for r in &pruned.runs {
        println!(
            "{verb} {}  {:<9}  last active {}  {} event{}",
            r.id,
            r.status.as_str(),
            age(now, r.updated),
            r.events,
            plural(r.events)
        );
    }
    println!("{}", summary(&pruned, &older, args.keep_failed));
    Ok(ExitCode::SUCCESS)
}

/// The total line of `plan runs prune` and of the retention log.
fn summary(pruned: &plan_exec::store::Pruned, age: &str, keep_failed: bool) -> String {
    let n = pruned.runs.len();
    format!(
        "{} {n} run{} ({} event{}) ended and inactive for more than {age}{}",
        if pruned.dry_run {
            "would prune"
        } else {
            "pruned"
        },
        plural(n as u64),
        pruned.events(),
        plural(pruned.events()),
        if keep_failed {
            ", keeping failed and cancelled runs"
        } else {
            ""
        }
    )
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Applies the `retention` setting of plan.toml, when there is one, for `command` (`plan
/// serve`, `plan worker`): in the background, prunes the store's ended runs inactive for
/// longer than it at once and then hourly, and says on stderr what it pruned.
///
/// # Errors
/// When the store cannot be opened.
pub async fn spawn_retention(settings: &Settings, command: &'static str) -> anyhow::Result<()> {
    let Some(keep_for) = settings.retention else {
        return Ok(());
    };
    let store = session::open_store(&settings.store).await?;
    let older = plan_exec::store::format_age(keep_for);
    eprintln!(
        "{command}: retention: deleting runs ended and inactive for more than {older}, now and hourly"
    );
    let report = move |result: Result<plan_exec::store::Pruned, plan_exec::error::StoreError>| {
        match result {
            Ok(pruned) if pruned.runs.is_empty() => {}
            Ok(pruned) => {
                const SHOWN: usize = 20;
                let ids: Vec<&str> = pruned
                    .runs
                    .iter()
                    .take(SHOWN)
                    .map(|r| r.id.as_str())
                    .collect();
                let more = pruned.runs.len().saturating_sub(SHOWN);
                eprintln!(
                    "{command}: retention: {}: {}{}",
                    summary(&pruned, &older, false),
                    ids.join(" "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                );
            }
            Err(e) => {
                eprintln!("{command}: retention: cannot prune runs (trying again in an hour): {e}")
            }
        }
    };
    tokio::spawn(plan_exec::store::keep_pruning(
        store,
        plan_exec::store::Retention::new(keep_for),
        report,
    ));
    Ok(())
}

/// `plan show RUN_ID`.
pub async fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_process(&Overrides::store(args.store.clone()))?;
    let (store, run) = load(&settings, &args.run_id).await?;
    // A fleet store knows which worker runs each running step.
    let report = plan_strategies::Runs::new(store).report_of(&run).await;
    if args.json {
        println!("{}", report.to_json_pretty());
    } else {
        print!("{}", text(&run, &report, args.full, &Palette::stdout()));
    }
    Ok(ExitCode::SUCCESS)
}

/// The store of `settings` and run `run_id` in it, or an error saying how to find a run.
pub async fn load(
    settings: &Settings,
    run_id: &str,
) -> anyhow::Result<(std::sync::Arc<dyn plan_exec::store::RunStore>, StoredRun)> {
    let missing = || {
        Usage::new(format!(
            "no run `{run_id}` in {}: list runs with `plan runs` (or pass the --store the run used)",
            settings.store
        ))
    };
    let store = session::open_existing_store(&settings.store)
        .await?
        .ok_or_else(missing)?;
    let run = plan_strategies::Runs::new(store.clone())
        .load(&RunId::new(run_id))
        .await
        .map_err(|e| -> anyhow::Error {
            match e {
                RunsError::NotFound(_) => missing().into(),
                e => anyhow::anyhow!("cannot read the run store: {e}"),
            }
        })?;
    Ok((store, run))
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
