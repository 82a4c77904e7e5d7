//! `plan runs` (one line per run, the id first) and `plan show RUN_ID`.

use std::process::ExitCode;
use std::time::SystemTime;

use plan_core::{EventKind, RunId, RunState, StepId, Timestamp};
use plan_exec::{RunStore, StoredRun};
use serde_json::{Value, json};

use crate::cli::{RunsArgs, ShowArgs};
use crate::config::{Overrides, Settings};
use crate::exit::Usage;
use crate::render;
use crate::session;
use crate::style::Palette;

/// `plan runs`.
pub async fn runs(args: RunsArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_process(&Overrides::store(args.store.clone()))?;
    let Some(store) = session::open_existing_store(&settings.store)? else {
        if args.json {
            println!("[]");
        } else {
            eprintln!("no runs yet in {}", settings.store.display());
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
            .map(|r| {
                json!({
                    "run_id": r.id, "goal": r.goal, "status": r.status,
                    "strategy": r.strategy, "model": r.model,
                    "created": r.created, "updated": r.updated,
                    "steps_total": r.steps_total, "steps_done": r.steps_done,
                })
            })
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

/// `plan show RUN_ID`.
pub async fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_process(&Overrides::store(args.store.clone()))?;
    let missing = || {
        Usage::new(format!(
            "no run `{}` in {}: list runs with `plan runs` (or pass the --store the run used)",
            args.run_id,
            settings.store.display()
        ))
    };
    let store = session::open_existing_store(&settings.store)?.ok_or_else(missing)?;
    let run = store
        .load_run(&RunId::new(args.run_id.clone()))
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the run store: {e}"))?
        .ok_or_else(missing)?;
    let view = View::of(&run);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view.json(&run))?);
    } else {
        print!("{}", view.text(&run, args.full, &Palette::stdout()));
    }
    Ok(ExitCode::SUCCESS)
}

/// The step statuses of a stored run's latest plan.
pub fn state_of(run: &StoredRun) -> Option<RunState> {
    View::of(run).state
}

/// A stored run as `plan show` presents it.
struct View {
    state: Option<RunState>,
    steps: Vec<StepView>,
    llm_calls: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    replans: u32,
    duration_ms: u64,
}

struct StepView {
    id: StepId,
    status: &'static str,
    attempts: u32,
    output: Option<String>,
    error: Option<String>,
    duration_ms: Option<u64>,
}

impl View {
    fn of(run: &StoredRun) -> View {
        let plan = run.latest_plan().map(|p| &p.plan);
        let mut view = View {
            state: plan.map(RunState::new),
            steps: Vec::new(),
            llm_calls: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            replans: 0,
            duration_ms: 0,
        };
        let mut last_error: std::collections::HashMap<&str, (&'static str, String)> =
            std::collections::HashMap::new();
        for event in &run.events {
            match &event.kind {
                EventKind::LlmCall {
                    prompt_tokens,
                    completion_tokens,
                    ..
                } => {
                    view.llm_calls += 1;
                    view.prompt_tokens += prompt_tokens;
                    view.completion_tokens += completion_tokens;
                }
                EventKind::Replanned { .. } => view.replans += 1,
                EventKind::StepFailed {
                    step,
                    error,
                    retrying: false,
                } => {
                    last_error.insert(step.as_str(), ("failed", error.clone()));
                }
                EventKind::StepSkipped { step, reason } => {
                    last_error.insert(step.as_str(), ("skipped", reason.clone()));
                }
                EventKind::StepStarted { step, .. } => {
                    last_error.remove(step.as_str());
                }
                _ => {}
            }
        }
        if let (Some(first), Some(last)) = (run.events.first(), run.events.last()) {
            view.duration_ms = last.ts.unix_millis().saturating_sub(first.ts.unix_millis());
        }
        for step in plan.map(|p| p.steps.as_slice()).unwrap_or_default() {
            let id = step.id.clone();
            let record = run.output(step.id.as_str());
            let (status, error) = match (record, last_error.get(step.id.as_str())) {
                (Some(_), _) => ("completed", None),
                (None, Some((status, error))) => (*status, Some(error.clone())),
                (None, None) => ("pending", None),
            };
            if let Some(state) = &mut view.state {
                let _ = match status {
                    "completed" => state.start(&id).and_then(|_| {
                        state.complete(&id, record.map(|r| r.output.clone()).unwrap_or_default())
                    }),
                    "failed" => state
                        .start(&id)
                        .and_then(|_| state.fail(&id, error.clone().unwrap_or_default())),
                    "skipped" => state.skip(&id, error.clone().unwrap_or_default()),
                    _ => Ok(()),
                };
            }
            view.steps.push(StepView {
                attempts: run.attempts(step.id.as_str()),
                output: record.map(|r| r.output.clone()),
                duration_ms: record.map(|r| r.duration_ms),
                id,
                status,
                error,
            });
        }
        view
    }

    fn json(&self, run: &StoredRun) -> Value {
        json!({
            "run_id": run.record.id,
            "status": run.status,
            "goal": run.record.goal,
            "strategy": run.record.strategy,
            "model": run.record.model,
            "plan": run.latest_plan().map(|p| &p.plan),
            "steps": self.steps.iter().map(|s| json!({
                "id": s.id, "status": s.status, "attempts": s.attempts,
                "output": s.output, "error": s.error,
            })).collect::<Vec<_>>(),
            "answer": run.answer,
            "usage": {
                "llm_calls": self.llm_calls,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
            },
            "replans": self.replans,
            "duration_ms": self.duration_ms,
        })
    }

    fn text(&self, run: &StoredRun, full: bool, p: &Palette) -> String {
        let mut out = String::new();
        let r = &run.record;
        let status_style = match run.status.as_str() {
            "succeeded" => p.ok,
            "failed" => p.error,
            _ => p.warn,
        };
        out.push_str(&format!(
            "{}run {}{:#}  {status_style}{}{status_style:#}\n",
            p.bold, r.id, p.bold, run.status
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
            crate::display::seconds(self.duration_ms)
        ));
        out.push_str(&format!(
            "usage:    {} model calls, {} prompt + {} completion tokens, {} replan{}\n",
            self.llm_calls,
            self.prompt_tokens,
            self.completion_tokens,
            self.replans,
            if self.replans == 1 { "" } else { "s" }
        ));
        if let Some(rev) = run.latest_plan() {
            out.push('\n');
            out.push_str(&render::tree_with(&rev.plan, self.state.as_ref()));
        }
        out.push_str(&format!("\n{}steps{:#}\n", p.bold, p.bold));
        for s in &self.steps {
            let timing = s
                .duration_ms
                .map(|ms| format!(", {}", crate::display::seconds(ms)))
                .unwrap_or_default();
            out.push_str(&format!(
                "{}{}{:#}  {}  ({} attempt{}{timing})\n",
                p.bold,
                s.id,
                p.bold,
                s.status,
                s.attempts,
                if s.attempts == 1 { "" } else { "s" }
            ));
            if let Some(e) = &s.error {
                out.push_str(&format!("    {}{}{:#}\n", p.error, e, p.error));
            }
            if let Some(o) = &s.output {
                out.push_str(&indent(&clip(o, full), "    "));
            }
        }
        if let Some(answer) = &run.answer {
            out.push_str(&format!("\n{}answer{:#}\n", p.bold, p.bold));
            out.push_str(&clip(answer, full));
        }
        out
    }
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
