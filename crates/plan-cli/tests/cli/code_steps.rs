//! Code steps through `plan exec`: programs written by the model and programs carried by
//! the plan file run in the sandbox (bubblewrap, as `--sandbox auto` picks it), errors are
//! fed back, and a failing check fails the run.

use serde_json::Value;

use crate::support::{
    Sandbox, agent_server, expect_code, model_flags, output, read_events, stderr, stdout,
};
use plan_llm::testing::{FakeOpenAi, FakeReply};

/// A code step the model writes, then a check that the plan file carries.
const CODE_PLAN: &str = r#"{"goal": "Count the primes below 100", "steps": [
    {"id": "count", "description": "Count the prime numbers below 100 and print the count", "kind": "code"},
    {"id": "check", "description": "The count is 25", "dependencies": ["count"], "kind": "verify",
     "lang": "bash", "code": "grep -qx 25 deps/count.txt || { echo \"expected 25, got $(cat deps/count.txt)\" >&2; exit 1; }"}]}"#;

/// A program with a bug on the first attempt, then the corrected one.
fn programmer() -> FakeReply {
    FakeReply::with(|r| {
        if r.text().contains("Your previous program failed") {
            FakeReply::text(
                "```python\nprint(sum(1 for n in range(2, 100) if all(n % d for d in range(2, n))))\n```",
            )
        } else {
            FakeReply::text("```python\nprint(len(primes))\n```")
        }
    })
}

fn exec(sb: &Sandbox, plan: &str, extra: &[&str], server: &FakeOpenAi) -> std::process::Output {
    sb.write("plan.json", plan);
    let mut args: Vec<String> = ["exec", "plan.json", "--json", "--events", "events.jsonl"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(model_flags(server));
    output(&mut sb.plan(args))
}

#[test]
fn model_written_programs_run_in_the_sandbox_and_errors_are_fed_back() {
    let sb = Sandbox::new();
    let server = agent_server(CODE_PLAN);
    server.on_first("You write one complete program", programmer());
    let out = exec(&sb, CODE_PLAN, &[], &server);
    expect_code(&out, 0);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let step = |id: &str| {
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()
            .clone()
    };
    // The output is what the program printed, not the model's text.
    assert_eq!(step("count")["output"], "25\n");
    assert_eq!(step("check")["status"], "completed");
    // Two programs: the first failed with a NameError that went back to the model.
    assert_eq!(server.count("You write one complete program"), 2);
    let retry = server
        .requests()
        .iter()
        .map(|r| r.text())
        .find(|t| t.contains("Your previous program failed"))
        .unwrap();
    assert!(retry.contains("NameError"), "{retry}");
    // The check ran as is: no model call for it.
    assert_eq!(server.count("(`check`)"), 0);
    let runs: Vec<Value> = read_events(&sb.path("events.jsonl"))
        .into_iter()
        .filter(|e| e["event"] == "tool_call")
        .collect();
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert!(
        runs.iter()
            .all(|e| e["tool"] == "python (bwrap)" || e["tool"] == "bash (bwrap)")
    );
    assert_eq!(runs.iter().filter(|e| e["ok"] == true).count(), 2);
    let err = stderr(&out);
    assert!(err.contains("count called python (bwrap): failed"), "{err}");
}

#[test]
fn a_failing_check_fails_the_run_and_names_the_step() {
    let sb = Sandbox::new();
    let server = agent_server(CODE_PLAN);
    // A model that gets the count wrong, every time.
    server.on_first(
        "You write one complete program",
        FakeReply::Text("```python\nprint(24)\n```".to_owned()),
    );
    let out = exec(&sb, CODE_PLAN, &[], &server);
    expect_code(&out, 1);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["status"], "failed");
    let err = stderr(&out);
    assert!(err.contains("check"), "{err}");
    assert!(err.contains("expected 25, got 24"), "{err}");
}

#[test]
fn code_steps_are_refused_when_code_execution_is_off() {
    let sb = Sandbox::new();
    let server = agent_server(CODE_PLAN);
    server.on_first("You write one complete program", programmer());
    let out = exec(&sb, CODE_PLAN, &["--sandbox", "none"], &server);
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("code steps are disabled"), "{err}");
    assert!(err.contains("--sandbox auto"), "{err}");
    // Nothing was asked of the model for a step that cannot run.
    assert_eq!(server.count("You write one complete program"), 0);
}
