//! Every `plan` command shown in the README runs: the tour's on the embedded model (and
//! what it shows is checked against what the run printed), the rest against a fake model
//! server.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::{DIAMOND, Sandbox, agent_server, expect_code, output, stderr, stdout};

/// The README section whose commands run on the embedded model.
const TOUR: &str = "A short tour";

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap()
}

/// A command from a ```console block, with the output lines shown under it.
struct Shown {
    /// The `## ` heading it is under.
    section: String,
    line: String,
    output: Vec<String>,
}

fn readme_commands() -> Vec<Shown> {
    let text = readme();
    let mut shown: Vec<Shown> = Vec::new();
    let mut in_console = false;
    let mut section = String::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_console = line.trim() == "```console";
            continue;
        }
        if let Some(heading) = line.strip_prefix("## ") {
            section = heading.trim().to_owned();
        }
        if !in_console {
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ ") {
            shown.push(Shown {
                section: section.clone(),
                line: cmd.to_owned(),
                output: Vec::new(),
            });
        } else if let Some(last) = shown.last_mut() {
            last.output.push(line.to_owned());
        }
    }
    shown
}

/// The files the README gives in full: a ```json block right after a line that names
/// the file as `NAME.json`.
fn readme_files() -> Vec<(String, String)> {
    let text = readme();
    let mut files = Vec::new();
    let mut previous = "";
    let mut open: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some((name, body)) = &mut open {
            if line.starts_with("```") {
                files.push((std::mem::take(name), std::mem::take(body)));
                open = None;
            } else {
                body.push_str(line);
                body.push('\n');
            }
            continue;
        }
        if line.trim() == "```json"
            && let Some(name) = previous
                .split('`')
                .find(|w| w.ends_with(".json") && !w.contains(' '))
        {
            open = Some((name.to_owned(), String::new()));
        }
        if !line.trim().is_empty() {
            previous = line;
        }
    }
    files
}

/// Splits a command line on spaces, keeping double-quoted words together.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(word);
    }
    out
}

#[test]
fn every_readme_command_runs() {
    let commands: Vec<Shown> = readme_commands()
        .into_iter()
        .filter(|s| s.section != TOUR)
        .collect();
    assert!(commands.len() >= 10, "README lost its commands");
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    sb.write("hello.py", "print(\"hello from the sandbox\")\n");
    for (name, body) in readme_files() {
        sb.write(&name, &body);
    }
    let mut ran = 0;
    for shown in &commands {
        let mut w = words(&shown.line);
        assert_eq!(w.remove(0), "plan", "not a plan command: {}", shown.line);
        // `> FILE` sends stdout to a file.
        let redirect = match w.iter().position(|a| a == ">") {
            Some(i) => {
                let file = w[i + 1].clone();
                w.truncate(i);
                Some(file)
            }
            None => None,
        };
        if w.iter().any(|a| a == "RUN_ID") {
            let out = output(sb.plan(["runs", "--json"]).env("PLAN_MODEL", "x"));
            let runs: Value = serde_json::from_str(&stdout(&out)).unwrap();
            let id = runs[0]["run_id"]
                .as_str()
                .expect("a run before RUN_ID")
                .to_owned();
            for a in w.iter_mut() {
                if a == "RUN_ID" {
                    *a = id.clone();
                }
            }
        }
        if let Some(i) = w.iter().position(|a| a == "--base-url") {
            w[i + 1] = server.base_url();
        }
        let out = output(
            sb.plan(&w)
                .env("PLAN_MODEL", "openai:fake-model")
                .env("OPENAI_BASE_URL", server.base_url()),
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "`plan {}` failed\n--- stdout\n{}\n--- stderr\n{}",
            shown.line,
            stdout(&out),
            stderr(&out)
        );
        if let Some(file) = redirect {
            std::fs::write(sb.path(&file), &out.stdout).unwrap();
        }
        if w.first().map(String::as_str) == Some("sandbox") && !shown.output.is_empty() {
            let expected: String = shown.output.iter().map(|l| format!("{l}\n")).collect();
            assert_eq!(stdout(&out), expected, "output of `plan {}`", shown.line);
        }
        ran += 1;
    }
    assert_eq!(ran, commands.len());
}

#[test]
fn quick_start_uses_the_run_command() {
    // The quick start's `cargo run ... -- run "GOAL"` is run by the embedded-model test
    // with the same goal; keep them in step.
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    assert!(text.contains(&format!(
        "cargo run --release -p plan-cli -- run \"{}\"",
        crate::local::QUICK_START_GOAL
    )));
    assert!(text.contains("    cargo xtask test\n"));
}

/// What a progress line shows, with the parts that change from run to run (times, run
/// ids, token counts, step ids in model calls) left out; `None` for lines not compared.
fn signature(line: &str) -> Option<String> {
    // `2026-11-25T23:34:08.152Z text`
    let (ts, rest) = line.split_once(' ')?;
    if !(ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T') {
        return None;
    }
    if rest.starts_with("run started:") {
        return Some(rest.to_owned());
    }
    if let Some(purpose) = rest.strip_prefix("model call (") {
        let purpose = purpose.split(')').next()?;
        let purpose = purpose.split(" for ").next()?;
        return Some(format!("model call ({purpose})"));
    }
    if let Some((_, tool)) = rest.split_once(" called ") {
        let (tool, result) = tool.split_once(": ")?;
        let result = result.split(' ').next()?;
        return Some(format!("called {tool}: {result}"));
    }
    for kind in ["run succeeded", "run failed", "replanned", "↪ fallback"] {
        if rest.starts_with(kind) {
            return Some(kind.to_owned());
        }
    }
    None
}

#[test]
fn signatures_leave_out_what_changes() {
    let line = |s: &str| signature(&format!("2026-11-25T23:34:08.152Z {s}"));
    assert_eq!(
        line("model call (step for 1): 117 + 69 tokens in 3.0s").as_deref(),
        Some("model call (step)")
    );
    assert_eq!(
        line("add called python (bwrap): ok in 0.2s").as_deref(),
        Some("called python (bwrap): ok")
    );
    assert_eq!(line("run succeeded").as_deref(), Some("run succeeded"));
    assert_eq!(line("progress 1/3"), None);
    assert_eq!(signature("                 └─ 1: step"), None);
}

/// The tour's commands run offline on the embedded model, and each shows what a run
/// prints: its first line, the kinds of model calls the strategy makes, programs run in
/// the sandbox, how it ended. (The model's words and the timings differ by machine.)
#[test]
fn the_tour_runs_on_the_embedded_model() {
    let Some(model) = crate::local::cached_model() else {
        return;
    };
    let tour: Vec<Shown> = readme_commands()
        .into_iter()
        .filter(|s| s.section == TOUR)
        .collect();
    assert!(tour.len() >= 6, "the tour lost its commands");
    let sb = Sandbox::new();
    for (name, body) in readme_files() {
        sb.write(&name, &body);
    }
    for shown in &tour {
        let mut w = words(&shown.line);
        assert_eq!(w.remove(0), "plan", "not a plan command: {}", shown.line);
        let out = output(
            sb.plan(&w)
                .env("PLAN_MODEL_DIR", model.parent().unwrap())
                // Offline: any provider URL would fail.
                .env("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
                .env_remove("OPENAI_API_KEY"),
        );
        expect_code(&out, 0);
        assert!(!stdout(&out).trim().is_empty(), "no answer: {}", shown.line);
        let printed: BTreeSet<String> = stderr(&out).lines().filter_map(signature).collect();
        let claimed: BTreeSet<String> = shown.output.iter().filter_map(|l| signature(l)).collect();
        assert!(
            claimed.iter().any(|s| s.starts_with("run started:")),
            "the tour shows no progress for `{}`",
            shown.line
        );
        let missing: Vec<&String> = claimed.difference(&printed).collect();
        assert!(
            missing.is_empty(),
            "`plan {}` did not print {missing:?}\n--- stderr\n{}",
            shown.line,
            stderr(&out)
        );
    }
}
