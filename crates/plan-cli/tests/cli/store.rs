//! The run store through the CLI: `plan runs`, `plan show`, `plan graph --run`, `plan
//! resume` after a killed run and after Ctrl-C.

use std::process::{Command, Stdio};
use std::time::Duration;

use plan_llm::testing::{FakeOpenAi, FakeReply};
use serde_json::Value;

use crate::support::{
    DIAMOND, Sandbox, agent_server, expect_code, model_flags, output, read_events, stderr, stdout,
    step_prompt, wait_for_event,
};

const CHAIN: &str = r#"{"goal": "Count to four", "steps": [
    {"id": "s1", "description": "Say one", "dependencies": []},
    {"id": "s2", "description": "Say two", "dependencies": ["s1"]},
    {"id": "s3", "description": "Say three", "dependencies": ["s2"]},
    {"id": "s4", "description": "Say four", "dependencies": ["s3"]}]}"#;

fn run_id(sb: &Sandbox, server: &FakeOpenAi) -> String {
    let mut args = vec![
        "run".to_owned(),
        "Compare two things".into(),
        "--json".into(),
    ];
    args.extend(model_flags(server));
    let out = output(&mut sb.plan(&args));
    expect_code(&out, 0);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    v["run_id"].as_str().unwrap().to_owned()
}

#[test]
fn runs_lists_one_line_per_run_id_first() {
    let sb = Sandbox::new();
    let out = output(&mut sb.plan(["runs"]));
    expect_code(&out, 0);
    assert_eq!(stdout(&out), "");
    let server = agent_server(DIAMOND);
    let first = run_id(&sb, &server);
    let second = run_id(&sb, &server);
    let out = output(&mut sb.plan(["runs"]));
    expect_code(&out, 0);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    // Newest first, the id first.
    assert!(lines[0].starts_with(&format!("{second} ")), "{text}");
    assert!(lines[1].starts_with(&format!("{first} ")), "{text}");
    for needle in [
        "succeeded",
        "auto",
        "openai:fake-model",
        "Compare two things",
        "ago",
    ] {
        assert!(lines[0].contains(needle), "{needle} missing: {}", lines[0]);
    }
    let out = output(&mut sb.plan(["runs", "--json"]));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["run_id"], second.as_str());
    assert_eq!(v[0]["status"], "succeeded");
    // --store names another store.
    let out = output(&mut sb.plan(["runs", "--store", "elsewhere.sqlite"]));
    expect_code(&out, 0);
    assert_eq!(stdout(&out), "");
}

#[test]
fn show_prints_tree_outputs_timings_usage() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let id = run_id(&sb, &server);
    let out = output(&mut sb.plan(["show", &id]));
    expect_code(&out, 0);
    let text = stdout(&out);
    for needle in [
        id.as_str(),
        "succeeded",
        "Goal: Compare two things",
        "[x] c",
        "result of a",
        "model calls",
        "FINAL ANSWER: all done",
        "attempt",
    ] {
        assert!(text.contains(needle), "{needle} missing in:\n{text}");
    }
    let out = output(&mut sb.plan(["show", &id, "--json"]));
    expect_code(&out, 0);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["run_id"], id.as_str());
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["steps"].as_array().unwrap().len(), 3);
    assert_eq!(v["usage"]["llm_calls"], 5);
    let out = output(&mut sb.plan(["show", &id, "--full"]));
    expect_code(&out, 0);

    let out = output(&mut sb.plan(["show", "no-such-run"]));
    expect_code(&out, 2);
    assert!(stderr(&out).contains("plan runs"), "{}", stderr(&out));
}

#[test]
fn show_truncates_long_outputs_unless_full() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let long: String = (1..=40).map(|i| format!("line {i}\n")).collect();
    server.on_first(&step_prompt("a"), FakeReply::Text(long));
    let id = run_id(&sb, &server);
    let short = stdout(&output(&mut sb.plan(["show", &id])));
    assert!(
        short.contains("--full shows all") && !short.contains("line 40"),
        "{short}"
    );
    let full = stdout(&output(&mut sb.plan(["show", &id, "--full"])));
    assert!(full.contains("line 40"), "{full}");
}

#[test]
fn graph_of_a_run() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let id = run_id(&sb, &server);
    let out = output(&mut sb.plan(["graph", "--run", &id, "--format", "mermaid"]));
    expect_code(&out, 0);
    assert!(stdout(&out).contains("flowchart"), "{}", stdout(&out));
    let out = output(&mut sb.plan(["graph", "--run", &id, "--format", "tree"]));
    assert!(stdout(&out).contains("[x] a"), "{}", stdout(&out));
    let out = output(&mut sb.plan(["graph", "--run", "nope"]));
    expect_code(&out, 2);
}

/// Starts `plan exec` of the chain against a slow server, in the background.
fn start_chain(sb: &Sandbox, server: &FakeOpenAi, events: &std::path::Path) -> std::process::Child {
    server.latency(Duration::from_millis(400));
    sb.write("chain.json", CHAIN);
    let mut args = vec![
        "exec".to_owned(),
        "chain.json".into(),
        "--events".into(),
        events.to_str().unwrap().into(),
    ];
    args.extend(model_flags(server));
    sb.plan(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &std::process::Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn resume_after_a_killed_run_never_redoes_finished_steps() {
    let sb = Sandbox::new();
    let server = agent_server(CHAIN);
    let events = sb.path("events.jsonl");
    let mut child = start_chain(&sb, &server, &events);
    let started = wait_for_event(&events, "run_started", 30);
    let run = started["run"].as_str().unwrap().to_owned();
    wait_for_event(&events, "step_completed", 30);
    signal(&child, "KILL");
    child.wait().unwrap();
    let done_before: Vec<String> = read_events(&events)
        .iter()
        .filter(|e| e["event"] == "step_completed")
        .map(|e| e["step"].as_str().unwrap().to_owned())
        .collect();
    assert!(!done_before.is_empty());

    let out = output(&mut sb.plan(["runs"]));
    assert!(stdout(&out).starts_with(&run), "{}", stdout(&out));

    server.latency(Duration::ZERO);
    let mut args = vec!["resume".to_owned(), run.clone(), "--json".into()];
    // The run recorded its model and endpoint; nothing else is needed.
    let out = output(&mut sb.plan(&args));
    expect_code(&out, 0);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["run_id"], run.as_str());
    for id in ["s1", "s2", "s3", "s4"] {
        let calls = server.count(&step_prompt(id));
        if done_before.iter().any(|d| d == id) {
            assert_eq!(calls, 1, "{id} was finished before the kill and ran again");
        } else {
            assert!(calls >= 1, "{id} never ran");
        }
    }
    args.truncate(2);
    let out = output(&mut sb.plan(["show", &run]));
    assert!(stdout(&out).contains("succeeded"));
}

#[test]
fn ctrl_c_cancels_saves_and_says_how_to_resume() {
    let sb = Sandbox::new();
    let server = agent_server(CHAIN);
    let events = sb.path("events.jsonl");
    let child = start_chain(&sb, &server, &events);
    let run = wait_for_event(&events, "run_started", 30)["run"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for_event(&events, "step_started", 30);
    signal(&child, "INT");
    let out = child.wait_with_output().unwrap();
    expect_code(&out, 130);
    let err = stderr(&out);
    assert!(err.contains(&format!("plan resume {run}")), "{err}");
    let last = read_events(&events).pop().unwrap();
    assert_eq!(last["event"], "run_finished", "{last}");
    assert_eq!(last["status"], "cancelled");

    server.latency(Duration::ZERO);
    let out = output(&mut sb.plan(["resume", &run]));
    expect_code(&out, 0);
    assert_eq!(stdout(&out), "FINAL ANSWER: all done\n");
}

#[test]
fn second_ctrl_c_exits_at_once() {
    // The first press cannot finish gracefully while the approval question waits for an
    // answer that never comes; the second press must end the process anyway.
    let sb = Sandbox::new();
    let server = agent_server(CHAIN);
    sb.write("chain.json", CHAIN);
    let mut args = vec!["exec".to_owned(), "chain.json".into(), "--approve".into()];
    args.extend(model_flags(&server));
    let mut child = sb
        .plan(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _stdin = child.stdin.take();
    let err = Stderr::read(&mut child);
    // Each press once the process shows it is ready for it, however slow it is to start.
    err.wait_for("run this plan?");
    signal(&child, "INT");
    err.wait_for("interrupted: cancelling");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited at the first press"
    );
    signal(&child, "INT");
    let status = child.wait().unwrap();
    let err = err.all();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("exiting now"), "{err}");
    assert_eq!(server.count("Your step"), 0);
}

/// What a child process writes to stderr, read on a thread as it comes.
struct Stderr {
    text: std::sync::Arc<std::sync::Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl Stderr {
    /// Reads `child`'s piped stderr from now on.
    fn read(child: &mut std::process::Child) -> Stderr {
        use std::io::Read as _;
        let mut pipe = child.stderr.take().expect("stderr is piped");
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = text.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Stderr { text, reader }
    }

    /// Everything written so far.
    fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Everything written, once the pipe is closed (the process ended).
    fn all(self) -> String {
        self.reader.join().unwrap();
        let text = self.text.lock().unwrap();
        text.clone()
    }

    /// Waits until `needle` was written (or panics after a minute).
    fn wait_for(&self, needle: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !self.text().contains(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "no {needle:?} on stderr after 60s: {}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn resume_of_an_unknown_run_is_a_usage_error() {
    let sb = Sandbox::new();
    let out = output(&mut sb.plan(["resume", "nope"]));
    expect_code(&out, 2);
    assert!(stderr(&out).contains("plan runs"), "{}", stderr(&out));
}
