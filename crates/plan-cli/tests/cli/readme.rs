//! Every `plan` command shown in the README runs, against a fake model server.

use serde_json::Value;

use crate::support::{DIAMOND, Sandbox, agent_server, output, stderr, stdout};

/// A command from a ```console block, with the output lines shown under it.
struct Shown {
    line: String,
    output: Vec<String>,
}

fn readme_commands() -> Vec<Shown> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let text = std::fs::read_to_string(path).unwrap();
    let mut shown: Vec<Shown> = Vec::new();
    let mut in_console = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_console = line.trim() == "```console";
            continue;
        }
        if !in_console {
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ ") {
            shown.push(Shown {
                line: cmd.to_owned(),
                output: Vec::new(),
            });
        } else if let Some(last) = shown.last_mut() {
            last.output.push(line.to_owned());
        }
    }
    shown
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
    let commands = readme_commands();
    assert!(commands.len() >= 10, "README lost its commands");
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    sb.write("hello.py", "print(\"hello from the sandbox\")\n");
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
