//! `--approve`: show the plan, then run it, edit it in `$EDITOR`, or abort.
//!
//! The first plan is shown whole. A plan revised since it was shown (an edit) is shown as
//! a diff against the plan before it, with the forecast's change when a forecaster is at
//! hand; `p` shows the whole plan.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::Command;

use anyhow::Context;
use plan_core::{Plan, PlanGraph};
use plan_exec::forecast::Forecaster;

use crate::render;
use crate::style::Palette;

/// What the user decided.
#[derive(Debug)]
pub enum Decision {
    /// Run this plan (possibly edited).
    Run(Plan),
    /// Do not run anything.
    Abort,
}

/// Asks on stderr, reading answers from `input`, until the user runs or aborts. End of
/// input counts as abort. An edited plan is shown as a diff against the plan before it,
/// with how it changes the forecast of `forecaster` when there is one.
pub fn ask_with(
    mut plan: Plan,
    forecaster: Option<&Forecaster>,
    input: &mut dyn BufRead,
) -> anyhow::Result<Decision> {
    let p = Palette::stderr();
    show(&plan, &p);
    loop {
        eprint!(
            "{}run this plan?{:#} [r]un, [e]dit, [p]lan, [a]bort: ",
            p.bold, p.bold
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        if input.read_line(&mut answer)? == 0 {
            eprintln!();
            eprintln!("no answer (end of input): aborting");
            return Ok(Decision::Abort);
        }
        match answer.trim().to_ascii_lowercase().as_str() {
            "r" | "run" | "y" | "yes" => return Ok(Decision::Run(plan)),
            "a" | "abort" | "n" | "no" | "q" | "quit" => return Ok(Decision::Abort),
            "p" | "plan" | "show" => show(&plan, &p),
            "e" | "edit" => {
                if let Some(edited) = edit(&plan, &p)? {
                    show_revision(&plan, &edited, forecaster, &p);
                    plan = edited;
                }
            }
            other => eprintln!(
                "unknown answer {other:?}: type r to run, e to edit, p to show the whole plan, a to abort"
            ),
        }
    }
}

/// A revised plan as a diff against the one before it (nothing has run, so no output is
/// kept or invalidated), with the forecast's change when there is a forecaster.
fn show_revision(before: &Plan, after: &Plan, forecaster: Option<&Forecaster>, p: &Palette) {
    eprintln!(
        "{}the edited plan{:#}, against the plan before it:\n{}",
        p.bold,
        p.bold,
        crate::cmd::diff::revision_text(before, after, None, forecaster, p).trim_end()
    );
}

fn show(plan: &Plan, p: &Palette) {
    eprintln!(
        "{}plan{:#} for: {}\n{}",
        p.bold,
        p.bold,
        plan.goal,
        render::tree(plan).trim_end()
    );
}

/// Opens the editor on the plan JSON until it validates. `None` when the user left it
/// unchanged or the editor failed: back to the question.
fn edit(plan: &Plan, p: &Palette) -> anyhow::Result<Option<Plan>> {
    let file = tempfile::Builder::new()
        .prefix("plan-")
        .suffix(".json")
        .tempfile()
        .context("cannot create a temporary file for the plan")?;
    let path = file.path().to_owned();
    let mut last = plan.to_json_pretty();
    last.push('\n');
    std::fs::write(&path, &last)
        .with_context(|| format!("cannot write the plan to {}", path.display()))?;
    loop {
        if !open_editor(&path, p)? {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the edited plan {}", path.display()))?;
        if text == last {
            eprintln!("the plan was left unchanged");
            return Ok(None);
        }
        match validate(&text) {
            Ok(edited) => return Ok(Some(edited)),
            Err(problems) => {
                eprintln!(
                    "{}the edited plan is invalid{:#}: {problems}\nreopening the editor; save it unchanged to give up",
                    p.error, p.error
                );
                last = text;
            }
        }
    }
}

fn validate(text: &str) -> Result<Plan, String> {
    let plan = Plan::from_json(text).map_err(|e| e.to_string())?;
    PlanGraph::new(plan.clone()).map_err(|e| e.to_string())?;
    Ok(plan)
}

/// Runs `$VISUAL`, `$EDITOR` or `vi` on `path`; false when it failed (reported).
fn open_editor(path: &Path, p: &Palette) -> anyhow::Result<bool> {
    let editor = ["VISUAL", "EDITOR"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|e| !e.trim().is_empty()))
        .unwrap_or_else(|| "vi".to_owned());
    // Through the shell, so EDITOR may carry arguments (`code --wait`).
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(path)
        .status();
    match status {
        Ok(s) if s.success() => Ok(true),
        Ok(s) => {
            eprintln!(
                "{}the editor `{editor}` failed{:#} ({s}): the plan is unchanged",
                p.error, p.error
            );
            Ok(false)
        }
        Err(e) => {
            eprintln!(
                "{}cannot start the editor `{editor}`{:#}: {e}; set EDITOR to your editor",
                p.error, p.error
            );
            Ok(false)
        }
    }
}
