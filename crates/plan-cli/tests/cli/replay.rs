//! `plan replay`: a stored run driven again with every model reply, tool result and
//! program run served from what the run recorded. The fake server's request count must
//! not move during a replay, for every strategy, for a run with a replan, for code steps
//! and for a run resumed after `kill -9`; a run whose recording no longer matches the
//! code's requests is named where it diverges.

use std::process::Stdio;
use std::time::{Duration, Instant};

use plan_llm::testing::{FakeOpenAi, FakeReply};
use serde_json::Value;

use crate::support::*;

/// `plan run GOAL --strategy STRATEGY --json` against `server`; returns the run id.
fn run(sb: &Sandbox, server: &FakeOpenAi, strategy: &str, extra: &[&str]) -> String {
    let mut args: Vec<String> = [
        "run",
        "Compare two things",
        "--json",
        "--strategy",
        strategy,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(model_flags(server));
    let out = output(&mut sb.plan(args));
    let report: Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("no report ({e})\n{}", stderr(&out)));
    report["run_id"].as_str().unwrap().to_owned()
}

/// `plan replay RUN --json` (with `extra`), its JSON and exit code.
fn replay(sb: &Sandbox, run: &str, extra: &[&str]) -> (Value, i32, String) {
    let mut args = vec!["replay", run, "--json"];
    args.extend(extra);
    let out = output(&mut sb.plan(args));
    let said = format!("{}\n{}", stdout(&out), stderr(&out));
    let json = serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}\n{said}"));
    (json, code(&out), said)
}

fn show(sb: &Sandbox, run: &str) -> Value {
    let out = output(&mut sb.plan(["show", run, "--json"]));
    serde_json::from_str(&stdout(&out)).unwrap()
}

/// Replays `run` and checks it made no request and did what the run did.
fn assert_faithful(sb: &Sandbox, server: &FakeOpenAi, run: &str) -> Value {
    let before = server.total_requests();
    let (json, exit, said) = replay(sb, run, &[]);
    assert_eq!(
        server.total_requests(),
        before,
        "the replay made requests\n{said}"
    );
    assert_eq!(exit, 0, "{said}");
    assert_eq!(json["faithful"], true, "{said}");
    assert!(json["calls_recorded"].as_u64().unwrap() > 0, "{said}");
    assert_eq!(json["calls_served"], json["calls_recorded"], "{said}");
    let stored = show(sb, run);
    assert_eq!(json["report"]["status"], stored["status"], "{said}");
    assert_eq!(json["report"]["answer"], stored["answer"], "{said}");
    json
}

#[test]
fn every_strategy_replays_with_zero_requests_and_the_same_report() {
    for strategy in [
        "auto",
        "linear",
        "dag",
        "hierarchical",
        "adaptive",
        "reflective",
    ] {
        let sb = Sandbox::new();
        let server = agent_server(DIAMOND);
        let id = run(&sb, &server, strategy, &[]);
        let json = assert_faithful(&sb, &server, &id);
        assert_eq!(
            json["report"]["strategy"], strategy,
            "{strategy}: the replay ran the run's strategy"
        );
    }
}

#[test]
fn a_run_with_a_failure_and_a_replan_replays_its_error_and_its_replan() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    // `b` fails (400 is not retried) and the adaptive strategy replans around it.
    server.on_first(
        &step_prompt("b"),
        FakeReply::error(400, "fake failure of b"),
    );
    server.on_first(
        "Plan again from the current state",
        FakeReply::text(
            r#"{"goal": "Compare two things", "steps": [
                {"id": "b2", "description": "Describe the second thing from memory", "dependencies": []},
                {"id": "c2", "description": "Compare them", "dependencies": ["a", "b2"]}]}"#,
        ),
    );
    let id = run(&sb, &server, "adaptive", &[]);
    let stored = show(&sb, &id);
    assert_eq!(stored["replans"], 1, "{stored:#}");
    let json = assert_faithful(&sb, &server, &id);
    assert_eq!(json["report"]["replans"], 1);
}

#[test]
fn a_failed_verification_and_a_fallback_replay_as_they_happened() {
    // A check that fails the run.
    let sb = Sandbox::new();
    let server = agent_server(
        r#"{"goal": "Compare two things", "steps": [
            {"id": "count", "description": "Count the items", "dependencies": []},
            {"id": "check", "description": "Check the count is 25", "dependencies": ["count"],
             "kind": "verify"}]}"#,
    );
    server.on_first(
        "Check to make (step `check`)",
        FakeReply::text("FAIL: the count is 24, the list has 25 items"),
    );
    let id = run(&sb, &server, "dag", &[]);
    assert_eq!(show(&sb, &id)["status"], "failed");
    let json = assert_faithful(&sb, &server, &id);
    assert_eq!(json["report"]["status"], "failed");
    // A step whose own body fails and whose fallback answers.
    let sb = Sandbox::new();
    let server = agent_server(
        r#"{"goal": "Compare two things", "steps": [
            {"id": "a", "description": "Describe the first thing", "dependencies": []},
            {"id": "b", "description": "Describe the second thing", "dependencies": [],
             "fallback": {"description": "Recall the second thing from memory"}}]}"#,
    );
    server.on_first(
        "Your step (`b`):\nDescribe the second thing\n",
        FakeReply::error(400, "fake failure"),
    );
    server.on_first(
        "Recall the second thing from memory",
        FakeReply::text("FALLBACK OUTPUT of b"),
    );
    let id = run(&sb, &server, "dag", &[]);
    let json = assert_faithful(&sb, &server, &id);
    let b = &json["report"]["steps"][1];
    assert_eq!(b["fallback"], true, "{b}");
    assert_eq!(b["output"], "FALLBACK OUTPUT of b");
}

#[test]
fn an_approved_run_replays_without_waiting() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let mut args: Vec<String> = ["run", "Compare two things", "--json", "--approve"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(model_flags(&server));
    let mut child = sb
        .plan(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(b"r\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["status"], "succeeded", "{}", stderr(&out));
    assert_faithful(&sb, &server, report["run_id"].as_str().unwrap());
}

#[test]
fn code_steps_replay_without_running_their_programs() {
    let sb = Sandbox::new();
    let server = agent_server("{}");
    sb.write(
        "plan.json",
        r#"{"goal": "Count", "steps": [
            {"id": "count", "description": "Print 25", "kind": "code", "lang": "bash",
             "code": "echo 25 > counted; cat counted"},
            {"id": "say", "description": "Say the count", "dependencies": ["count"]}]}"#,
    );
    let mut args: Vec<String> = ["exec", "plan.json", "--json", "--sandbox", "process"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(model_flags(&server));
    let out = output(&mut sb.plan(args));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["status"], "succeeded", "{}", stderr(&out));
    let id = report["run_id"].as_str().unwrap();
    // The program's file is gone: a replay that ran it would make it again.
    std::fs::remove_file(sb.work().join("counted")).ok();
    let json = assert_faithful(&sb, &server, id);
    assert!(
        !sb.work().join("counted").exists(),
        "the replay ran the program"
    );
    assert_eq!(
        json["report"]["steps"][0]["output"],
        report["steps"][0]["output"]
    );
}

#[test]
fn built_in_tool_calls_replay_without_running_the_tool() {
    let sb = Sandbox::new();
    std::fs::write(
        sb.work().join("notes.txt"),
        "the launch code is tangerine-42\n",
    )
    .unwrap();
    let server = FakeOpenAi::start_detached();
    server.otherwise(FakeReply::with(|r| match r.tool_result() {
        Some(result) => FakeReply::text(format!("The file says: {}", result.trim())),
        None if !r.tools().is_empty() => {
            FakeReply::tool_call("read_file", serde_json::json!({"path": "notes.txt"}))
        }
        None => FakeReply::text("FINAL ANSWER"),
    }));
    sb.write(
        "plan.json",
        r#"{"goal": "Find the launch code", "steps": [
            {"id": "read", "description": "Read notes.txt and report the launch code"}]}"#,
    );
    let mut args: Vec<String> = ["exec", "plan.json", "--json", "--tools", "read_file"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(model_flags(&server));
    let out = output(&mut sb.plan(args));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["status"], "succeeded", "{}", stderr(&out));
    let output_then = report["steps"][0]["output"].as_str().unwrap().to_owned();
    assert!(output_then.contains("tangerine-42"), "{output_then}");
    // The file is gone: a replay that ran the tool would not find it.
    std::fs::remove_file(sb.work().join("notes.txt")).unwrap();
    let json = assert_faithful(&sb, &server, report["run_id"].as_str().unwrap());
    assert_eq!(json["report"]["steps"][0]["output"], output_then.as_str());
}

#[test]
fn an_mcp_servers_tool_calls_replay_without_starting_the_server() {
    let sb = Sandbox::new();
    let docs = sb.dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let secret = docs.join("secret.txt");
    std::fs::write(&secret, "the launch code is tangerine-42\n").unwrap();
    let server = FakeOpenAi::start_detached();
    let path = secret.display().to_string();
    server.otherwise(FakeReply::with(move |r| match r.tool_result() {
        Some(result) => FakeReply::text(format!("The file says: {}", result.trim())),
        None if !r.tools().is_empty() => {
            FakeReply::tool_call("read_text_file", serde_json::json!({"path": path}))
        }
        None => FakeReply::text("FINAL ANSWER"),
    }));
    sb.write(
        "plan.json",
        r#"{"goal": "Find the launch code", "steps": [
            {"id": "read", "description": "Read the secret file and report the launch code"}]}"#,
    );
    let mut args: Vec<String> = vec![
        "exec".into(),
        "plan.json".into(),
        "--json".into(),
        "--mcp".into(),
        plan_mcp::testing::filesystem_spec(&docs),
    ];
    args.extend(model_flags(&server));
    let out = output(&mut sb.plan(args));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["status"], "succeeded", "{}", stderr(&out));
    let then = report["steps"][0]["output"].as_str().unwrap().to_owned();
    assert!(then.contains("tangerine-42"), "{then}");
    // Gone: a replay that asked the server would not find it (and it starts no server).
    std::fs::remove_dir_all(&docs).unwrap();
    let json = assert_faithful(&sb, &server, report["run_id"].as_str().unwrap());
    assert_eq!(json["report"]["steps"][0]["output"], then.as_str());
}

#[test]
fn a_run_resumed_after_kill_9_replays_as_one_run() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(FakeOpenAi::start());
    let hold = Hold::default();
    {
        let hold = hold.clone();
        server.on_first(
            &step_prompt("c"),
            FakeReply::with(move |_| {
                hold.wait_here();
                FakeReply::text("result of c")
            }),
        );
    }
    server
        .on("You are a planner", FakeReply::text(DIAMOND))
        .on("You write the final answer", FakeReply::text("FINAL: done"))
        .otherwise(FakeReply::with(|r| {
            FakeReply::text(format!("result of {}", step_id(&r.text()).unwrap_or("?")))
        }));
    let sb = Sandbox::new();
    let events = sb.path("first.jsonl");
    let mut args: Vec<String> = ["run", "Compare two things", "--strategy", "dag", "--events"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(events.display().to_string());
    args.extend(model_flags(&server));
    let mut child = sb
        .plan(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !hold.holding() {
        assert!(Instant::now() < deadline, "step `c` was never asked for");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    hold.release();
    let id = read_events(&events)
        .iter()
        .find(|e| e["event"] == "run_started")
        .and_then(|e| e["run"].as_str().map(str::to_owned))
        .unwrap();
    let out = output(&mut sb.plan(["resume", &id, "--json"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_faithful(&sb, &server, &id);
    drop(runtime);
}

#[test]
fn check_names_the_first_request_that_differs_with_a_diff() {
    let sb = Sandbox::new();
    let server = agent_server(CHAIN);
    let id = run(&sb, &server, "dag", &["--record-requests"]);
    // The recorded reply of `a` says something else now, so the request of `b`, which
    // carries `a`'s output, is not the one the run made.
    let db = rusqlite::Connection::open(sb.store()).unwrap();
    let changed = db
        .execute(
            "UPDATE events SET body = replace(body, 'result of a', 'changed output of a') \
             WHERE run = ?1 AND event = 'call_recorded' AND body LIKE '%\"step\":\"a\"%'",
            [&id],
        )
        .unwrap();
    assert_eq!(changed, 1, "one recorded call of step `a`");
    drop(db);
    let before = server.total_requests();
    let (json, exit, said) = replay(&sb, &id, &["--check"]);
    assert_eq!(server.total_requests(), before, "{said}");
    assert_eq!(exit, 1, "a divergence exits 1\n{said}");
    assert_eq!(json["faithful"], false, "{said}");
    assert_eq!(json["divergence"]["step"], "b", "{said}");
    assert_eq!(json["divergence"]["purpose"], "step", "{said}");
    let diff = json["divergence"]["request_diff"].as_str().unwrap();
    assert!(
        diff.contains("-") && diff.contains("result of a") && diff.contains("changed output of a"),
        "{diff}"
    );
    assert!(
        json.get("report").is_none(),
        "--check prints the verdict only"
    );
    // Text: the step, the purpose and the diff.
    let out = output(&mut sb.plan(["replay", &id, "--check"]));
    let text = stdout(&out);
    assert_eq!(code(&out), 1);
    assert!(
        text.contains("diverged: the model call for `step` of step `b`"),
        "{text}"
    );
    assert!(
        text.contains("+") && text.contains("changed output of a"),
        "{text}"
    );
}

#[test]
fn without_recorded_requests_check_says_how_to_get_a_diff() {
    let sb = Sandbox::new();
    let server = agent_server(CHAIN);
    let id = run(&sb, &server, "dag", &[]);
    let db = rusqlite::Connection::open(sb.store()).unwrap();
    db.execute(
        "UPDATE events SET body = replace(body, 'result of a', 'changed output of a') \
         WHERE run = ?1 AND event = 'call_recorded' AND body LIKE '%\"step\":\"a\"%'",
        [&id],
    )
    .unwrap();
    drop(db);
    let out = output(&mut sb.plan(["replay", &id, "--check"]));
    let text = stdout(&out);
    assert_eq!(code(&out), 1, "{text}");
    assert!(text.contains("--record-requests"), "{text}");
}

#[test]
fn replaying_an_unknown_run_says_how_to_find_one() {
    let sb = Sandbox::new();
    let server = agent_server(CHAIN);
    run(&sb, &server, "dag", &[]);
    let out = output(&mut sb.plan(["replay", "no-such-run"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("plan runs"), "{}", stderr(&out));
}

/// A chain: `b` reads `a`'s output.
const CHAIN: &str = r#"{"goal": "Compare two things", "steps": [
    {"id": "a", "description": "Describe the first thing", "dependencies": []},
    {"id": "b", "description": "Describe it again", "dependencies": ["a"]}]}"#;
