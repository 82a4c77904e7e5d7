//! `plan run`, `plan plan`, `plan exec`: strategies, the `--json` report, JSONL events,
//! exit codes and configuration, against a fake OpenAI-compatible server on loopback.

use serde_json::Value;

use crate::support::{
    DIAMOND, Sandbox, agent_server, expect_code, model_flags, output, read_events, stderr, stdout,
    step_prompt,
};
use plan_llm::testing::FakeReply;

fn run_json(sb: &Sandbox, args: &[String]) -> Value {
    let out = output(&mut sb.plan(args));
    expect_code(&out, 0);
    assert!(
        !stderr(&out).contains('\x1b'),
        "colours when not a terminal"
    );
    serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

fn args(list: &[&str], extra: Vec<String>) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.extend(extra);
    v
}

#[test]
fn run_prints_the_answer() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let out = output(&mut sb.plan(args(&["run", "Compare two things"], model_flags(&server))));
    expect_code(&out, 0);
    assert_eq!(stdout(&out), "FINAL ANSWER: all done\n");
    let err = stderr(&out);
    assert!(err.contains("succeeded"), "{err}");
    assert!(
        !err.contains('\x1b'),
        "colours when not a terminal: {err:?}"
    );
    // Each step ran once, each saw only its own dependencies' outputs.
    for id in ["a", "b", "c"] {
        assert_eq!(server.count(&step_prompt(id)), 1, "step {id}");
    }
    let c = server
        .requests()
        .into_iter()
        .map(|r| r.text())
        .find(|t| t.contains(&step_prompt("c")))
        .unwrap();
    assert!(c.contains("result of a") && c.contains("result of b"));
}

#[test]
fn json_report_has_the_contract_shape() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let v = run_json(
        &sb,
        &args(
            &["run", "Compare two things", "--json"],
            model_flags(&server),
        ),
    );
    for key in [
        "run_id",
        "status",
        "goal",
        "strategy",
        "model",
        "plan",
        "steps",
        "answer",
        "usage",
        "replans",
        "duration_ms",
    ] {
        assert!(v.get(key).is_some(), "report has no {key}: {v:#}");
    }
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["goal"], "Compare two things");
    // The default strategy is auto; this goal got a plan from the routing call.
    assert_eq!(v["strategy"], "auto");
    assert_eq!(v["route"], "planned");
    assert_eq!(v["model"], "openai:fake-model");
    assert_eq!(v["answer"], "FINAL ANSWER: all done");
    assert_eq!(v["replans"], 0);
    assert_eq!(v["plan"]["steps"].as_array().unwrap().len(), 3);
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    for s in steps {
        for key in ["id", "status", "attempts", "output", "error"] {
            assert!(s.get(key).is_some(), "step has no {key}: {s}");
        }
        assert_eq!(s["status"], "completed");
        assert_eq!(s["attempts"], 1);
        assert_eq!(
            s["output"],
            format!("result of {}", s["id"].as_str().unwrap())
        );
    }
    let usage = &v["usage"];
    // Planning, three steps, the answer.
    assert_eq!(usage["llm_calls"], 5, "{usage}");
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0);
    assert!(v["duration_ms"].is_u64());
    // No key anywhere.
    assert!(!v.to_string().contains("sk-test-secret"));
}

#[test]
fn events_file_is_jsonl_as_the_contract_says() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let path = sb.path("events.jsonl");
    let out = output(&mut sb.plan(args(
        &[
            "run",
            "Compare two things",
            "--events",
            path.to_str().unwrap(),
        ],
        model_flags(&server),
    )));
    expect_code(&out, 0);
    let events = read_events(&path);
    let run = events[0]["run"].as_str().unwrap().to_owned();
    for e in &events {
        assert!(e.is_object());
        assert_eq!(e["run"], run.as_str(), "{e}");
        let ts = e["ts"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.contains('T'), "not RFC 3339: {ts}");
        assert!(e["event"].is_string());
    }
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&"run_started"));
    assert_eq!(names.last(), Some(&"run_finished"));
    for name in [
        "plan_created",
        "step_started",
        "step_completed",
        "llm_call",
        "progress",
    ] {
        assert!(names.contains(&name), "no {name} in {names:?}");
    }
    let plan = events
        .iter()
        .find(|e| e["event"] == "plan_created")
        .unwrap();
    assert_eq!(plan["revision"], 0);
    assert_eq!(plan["plan"]["steps"].as_array().unwrap().len(), 3);
    let started = events
        .iter()
        .find(|e| e["event"] == "step_started")
        .unwrap();
    assert_eq!(started["attempt"], 1);
    let done = events
        .iter()
        .find(|e| e["event"] == "step_completed")
        .unwrap();
    assert!(done["duration_ms"].is_u64());
    let call = events.iter().find(|e| e["event"] == "llm_call").unwrap();
    for key in [
        "purpose",
        "prompt_tokens",
        "completion_tokens",
        "duration_ms",
    ] {
        assert!(call.get(key).is_some(), "llm_call has no {key}");
    }
    let last_progress = events
        .iter()
        .rev()
        .find(|e| e["event"] == "progress")
        .unwrap();
    assert_eq!(last_progress["done"], last_progress["total"]);
    let finished = events.last().unwrap();
    assert_eq!(finished["status"], "succeeded");
    assert_eq!(finished["answer"], "FINAL ANSWER: all done");
}

#[test]
fn every_strategy_runs() {
    for strategy in ["linear", "dag", "hierarchical", "adaptive", "reflective"] {
        let sb = Sandbox::new();
        let server = agent_server(DIAMOND);
        let v = run_json(
            &sb,
            &args(
                &[
                    "run",
                    "Compare two things",
                    "--json",
                    "--strategy",
                    strategy,
                ],
                model_flags(&server),
            ),
        );
        assert_eq!(v["status"], "succeeded", "{strategy}: {v:#}");
        assert_eq!(v["strategy"], strategy);
        match strategy {
            "reflective" => assert!(server.count("You review plans") >= 1),
            "hierarchical" => {
                assert!(server.count("You break goals down") >= 3);
                assert!(v["tree"].is_object(), "hierarchical report has its tree");
            }
            "linear" => {
                // Each step depends on the one before.
                let steps = v["plan"]["steps"].as_array().unwrap();
                for pair in steps.windows(2) {
                    assert_eq!(pair[1]["dependencies"][0], pair[0]["id"], "{steps:?}");
                }
            }
            _ => {}
        }
    }
}

#[test]
fn adaptive_replans_keeping_finished_steps() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    // `b` fails for good (400 is not retryable); the replan replaces it with `b2`.
    server.on_first(&step_prompt("b"), FakeReply::error(400, "fake failure"));
    let replan = r#"{"goal": "Compare two things", "steps": [
        {"id": "b2", "description": "Describe the second thing from memory", "dependencies": []},
        {"id": "c2", "description": "Compare them", "dependencies": ["a", "b2"]}]}"#;
    // Only the replanning prompt has this text; its rule goes before the planner's.
    let server2 = server.clone();
    server.on_first(
        "Plan again from the current state",
        FakeReply::Text(replan.to_owned()),
    );
    let path = sb.path("events.jsonl");
    let v = run_json(
        &sb,
        &args(
            &[
                "run",
                "Compare two things",
                "--json",
                "--strategy",
                "adaptive",
                "--events",
                path.to_str().unwrap(),
            ],
            model_flags(&server),
        ),
    );
    assert_eq!(v["status"], "succeeded", "{v:#}");
    assert_eq!(v["replans"], 1);
    assert_eq!(
        server2.count(&step_prompt("a")),
        1,
        "a finished and was kept"
    );
    let events = read_events(&path);
    let replanned = events.iter().find(|e| e["event"] == "replanned").unwrap();
    assert_eq!(replanned["revision"], 1);
    assert!(
        replanned["kept"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "a")
    );
    assert!(replanned["reason"].as_str().unwrap().contains('b'));
    assert!(replanned["plan"]["steps"].is_array());

    // `plan show --json` prints the same report, read back from the store.
    let id = v["run_id"].as_str().unwrap();
    let shown = run_json(
        &sb,
        &["show".to_owned(), id.to_owned(), "--json".to_owned()],
    );
    assert_eq!(shown, v, "plan show --json differs from plan run --json");
    let b = v["steps"].as_array().unwrap();
    assert!(b.iter().any(|s| s["id"] == "a" && s["reused"] == true));
    assert_eq!(v["replan_log"][0]["revision"], 1);
}

#[test]
fn exec_under_adaptive_replans_a_given_plan() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    server.on_first(&step_prompt("b"), FakeReply::error(400, "fake failure"));
    let replan = r#"{"goal": "Compare two things", "steps": [
        {"id": "b2", "description": "Describe the second thing from memory", "dependencies": []},
        {"id": "c2", "description": "Compare them", "dependencies": ["a", "b2"]}]}"#;
    server.on_first(
        "Plan again from the current state",
        FakeReply::Text(replan.to_owned()),
    );
    let file = sb.write("plan.json", DIAMOND);
    let v = run_json(
        &sb,
        &args(
            &[
                "exec",
                file.to_str().unwrap(),
                "--json",
                "--strategy",
                "adaptive",
            ],
            model_flags(&server),
        ),
    );
    assert_eq!(v["status"], "succeeded", "{v:#}");
    assert_eq!(v["replans"], 1, "a given plan replans under adaptive");
    assert_eq!(v["strategy"], "adaptive");
    assert_eq!(
        server.count(&step_prompt("a")),
        1,
        "a finished and was kept"
    );
    assert_eq!(server.count(&step_prompt("b2")), 1);
}

#[test]
fn exec_under_linear_chains_a_given_plan() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let file = sb.write("plan.json", DIAMOND);
    let v = run_json(
        &sb,
        &args(
            &[
                "exec",
                file.to_str().unwrap(),
                "--json",
                "--strategy",
                "linear",
            ],
            model_flags(&server),
        ),
    );
    assert_eq!(v["status"], "succeeded", "{v:#}");
    let steps = v["plan"]["steps"].as_array().unwrap();
    for pair in steps.windows(2) {
        assert_eq!(
            pair[1]["dependencies"],
            serde_json::json!([pair[0]["id"]]),
            "{v:#}"
        );
    }
}

#[test]
fn failed_run_exits_1_naming_the_failed_steps() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    server.on_first(&step_prompt("b"), FakeReply::error(400, "fake failure"));
    let out = output(&mut sb.plan(args(
        &["run", "Compare two things", "--max-replans", "0"],
        model_flags(&server),
    )));
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("failed"), "{err}");
    assert!(err.contains("  b: "), "failed step not named: {err}");
    assert!(err.contains("plan show "), "{err}");

    // --json still prints the report, with the failed step.
    let out = output(&mut sb.plan(args(
        &["run", "Compare two things", "--json"],
        model_flags(&server),
    )));
    expect_code(&out, 1);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["status"], "failed");
    let b = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "b")
        .unwrap();
    assert_eq!(b["status"], "failed");
    assert!(b["error"].is_string());
}

#[test]
fn plan_command_prints_every_format_without_running() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    for (format, needle) in [
        ("json", "\"steps\""),
        ("tree", "Goal: "),
        ("mermaid", "flowchart"),
        ("dot", "digraph"),
    ] {
        let out = output(&mut sb.plan(args(
            &["plan", "Compare two things", "--format", format],
            model_flags(&server),
        )));
        expect_code(&out, 0);
        assert!(stdout(&out).contains(needle), "{format}: {}", stdout(&out));
    }
    let out = output(&mut sb.plan(args(
        &["plan", "Compare two things", "--format", "json"],
        model_flags(&server),
    )));
    let plan: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(plan["steps"].as_array().unwrap().len(), 3);
    assert_eq!(server.count("Your step"), 0, "plan ran steps");
}

#[test]
fn exec_runs_a_plan_file_without_planning() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    sb.write("plan.json", DIAMOND);
    let v = run_json(
        &sb,
        &args(&["exec", "plan.json", "--json"], model_flags(&server)),
    );
    assert_eq!(v["status"], "succeeded");
    assert_eq!(server.count("You are a planner"), 0);
    assert_eq!(server.count("Your step"), 3);
}

#[test]
fn exec_rejects_an_invalid_plan_file_with_exit_2() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    sb.write(
        "bad.json",
        r#"{"goal": "g", "steps": [{"id": "a", "description": "x", "dependencies": ["a", "nope"]}]}"#,
    );
    let out = output(&mut sb.plan(args(&["exec", "bad.json"], model_flags(&server))));
    expect_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("depends on itself") && err.contains("`nope`"),
        "{err}"
    );
    assert_eq!(server.requests().len(), 0);
}

#[test]
fn concurrency_and_step_limits_are_passed_on() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    server.latency(std::time::Duration::from_millis(150));
    let path = sb.path("events.jsonl");
    let plan_file = sb.write("plan.json", DIAMOND);
    let out = output(
        sb.plan(args(
            &[
                "exec",
                "--concurrency",
                "1",
                "--events",
                path.to_str().unwrap(),
                "-",
            ],
            model_flags(&server),
        ))
        .stdin(std::fs::File::open(plan_file).unwrap()),
    );
    expect_code(&out, 0);
    // With one slot, a step starts only after the previous one completed.
    let mut running = 0i32;
    for e in read_events(&path) {
        match e["event"].as_str().unwrap() {
            "step_started" => running += 1,
            "step_completed" | "step_failed" => running -= 1,
            _ => {}
        }
        assert!(running <= 1, "two steps at once with --concurrency 1");
    }
}

#[test]
fn missing_api_key_is_a_configuration_error() {
    let sb = Sandbox::new();
    let out = output(
        sb.plan(["run", "g", "--model", "openai:gpt-4o-mini"])
            .env_remove("OPENAI_API_KEY"),
    );
    expect_code(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("OPENAI_API_KEY"), "{err}");
    assert!(err.contains("hint: choose another --model"), "{err}");

    // The registry names every prefix --model can use, the embedded model's included.
    let out = output(&mut sb.plan(["run", "g", "--model", "gemini:pro"]));
    expect_code(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("unknown provider `gemini`"), "{err}");
    assert!(
        err.contains("local") && err.contains("openai-compatible"),
        "{err}"
    );
}

#[test]
fn a_server_at_a_base_url_needs_no_api_key() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let out = output(
        sb.plan([
            "run",
            "Compare two things",
            "--json",
            "--model",
            "openai:qwen2.5",
            "--base-url",
            &server.base_url(),
        ])
        .env_remove("OPENAI_API_KEY"),
    );
    expect_code(&out, 0);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["status"], "succeeded");
    assert!(
        server.requests().len() >= 3,
        "plan, steps and synthesis went to the server"
    );
}

#[test]
fn configuration_file_and_environment() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    sb.write(
        "plan.toml",
        &format!(
            "model = \"openai:from-file\"\nbase_url = \"{}\"\nstrategy = \"linear\"\nstore = \"my-runs.sqlite\"\n",
            server.base_url()
        ),
    );
    let v = run_json(
        &sb,
        &["run".into(), "Compare two things".into(), "--json".into()],
    );
    assert_eq!(v["model"], "openai:from-file");
    assert_eq!(v["strategy"], "linear");
    assert!(sb.path("my-runs.sqlite").exists(), "store from plan.toml");

    // The environment beats the file; flags beat both.
    let out = output(
        sb.plan(["run", "Compare two things", "--json"])
            .env("PLAN_MODEL", "openai:from-env"),
    );
    expect_code(&out, 0);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["model"], "openai:from-env");
    let out = output(
        sb.plan([
            "run",
            "Compare two things",
            "--json",
            "--strategy",
            "dag",
            "--model",
            "openai:from-flag",
        ])
        .env("PLAN_MODEL", "openai:from-env"),
    );
    expect_code(&out, 0);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["model"], "openai:from-flag");
    assert_eq!(v["strategy"], "dag");

    // The user config directory is read too, below the working directory's file.
    let user = sb.dir.path().join("config/plan");
    std::fs::create_dir_all(&user).unwrap();
    std::fs::write(user.join("plan.toml"), "concurrency = 0\n").unwrap();
    let out = output(&mut sb.plan(["runs"]));
    expect_code(&out, 2);
    assert!(stderr(&out).contains("concurrency"), "{}", stderr(&out));
}

#[test]
fn token_budget_stops_the_run() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let out = output(&mut sb.plan(args(
        &["run", "Compare two things", "--budget-tokens", "5"],
        model_flags(&server),
    )));
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("budget"), "{}", stderr(&out));
}

#[test]
fn quiet_gives_plain_timestamped_lines() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let out = output(&mut sb.plan(args(
        &["-q", "run", "Compare two things"],
        model_flags(&server),
    )));
    expect_code(&out, 0);
    let err = stderr(&out);
    let first = err.lines().next().unwrap();
    assert!(
        first.len() > 24 && &first[10..11] == "T",
        "not timestamped: {first}"
    );
    assert!(err.contains("✓ a done in"), "{err}");
}

#[test]
fn a_verify_step_that_says_fail_fails_the_run_with_its_reasons() {
    let plan = r#"{"goal": "Count the items", "steps": [
        {"id": "count", "description": "Count the items", "dependencies": []},
        {"id": "check", "description": "Check the count is 25", "dependencies": ["count"],
         "kind": "verify"}]}"#;
    let sb = Sandbox::new();
    let server = agent_server(plan);
    server.on_first(
        "Check to make (step `check`)",
        FakeReply::Text("FAIL: the count is 24, the list has 25 items".to_owned()),
    );
    let file = sb.write("plan.json", plan);
    let out = output(&mut sb.plan(args(
        &["exec", file.to_str().unwrap(), "--json"],
        model_flags(&server),
    )));
    expect_code(&out, 1);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["status"], "failed");
    let check = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "check")
        .unwrap();
    assert_eq!(check["status"], "failed");
    assert_eq!(check["attempts"], 1, "a FAIL is not retried: {v:#}");
    assert!(
        check["error"].as_str().unwrap().contains("the count is 24"),
        "{v:#}"
    );
    assert!(stderr(&out).contains("the count is 24"), "{}", stderr(&out));
    assert_eq!(server.count("Check to make (step `check`)"), 1);
}

/// A plan of `n` independent steps.
fn wide_plan(n: usize) -> String {
    let steps: Vec<String> = (1..=n)
        .map(|i| format!(r#"{{"id": "s{i}", "description": "Do part {i}", "dependencies": []}}"#))
        .collect();
    format!(
        r#"{{"goal": "Compare two things", "steps": [{}]}}"#,
        steps.join(", ")
    )
}

#[test]
fn a_twenty_step_plan_runs_every_step_with_default_flags() {
    let sb = Sandbox::new();
    let server = agent_server(&wide_plan(20));
    let v = run_json(
        &sb,
        &args(
            &["run", "Compare two things", "--json"],
            model_flags(&server),
        ),
    );
    assert_eq!(v["status"], "succeeded", "{v:#}");
    assert_eq!(v["plan"]["steps"].as_array().unwrap().len(), 20);
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 20);
    assert!(steps.iter().all(|s| s["status"] == "completed"), "{v:#}");
    for i in 1..=20 {
        assert_eq!(server.count(&step_prompt(&format!("s{i}"))), 1, "s{i}");
    }
}

#[test]
fn a_plan_over_the_cap_is_never_cut_the_run_fails_naming_count_cap_and_flag() {
    let sb = Sandbox::new();
    let server = agent_server(&wide_plan(12));
    let out = output(&mut sb.plan(args(
        &["run", "Compare two things", "--json", "--max-steps", "10"],
        model_flags(&server),
    )));
    expect_code(&out, 1);
    let err = stderr(&out);
    for needle in ["12 steps", "limit of 10", "--max-steps"] {
        assert!(err.contains(needle), "{needle} missing: {err}");
    }
    // Streamed planning may start steps within the cap; none beyond it ever starts.
    assert_eq!(server.count(&step_prompt("s11")), 0, "{err}");
    assert_eq!(server.count(&step_prompt("s12")), 0, "{err}");
}

#[test]
fn nonsense_counts_are_usage_errors() {
    let sb = Sandbox::new();
    for flag in ["--max-steps", "--max-depth", "--concurrency"] {
        let out = output(&mut sb.plan(["run", "Compare two things", flag, "0"]));
        expect_code(&out, 2);
        assert!(
            stderr(&out).contains("at least 1"),
            "{flag}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn a_persistent_server_error_is_retried_in_one_layer_then_the_run_replans() {
    let plan = r#"{"goal": "Compare two things", "steps": [
        {"id": "a", "description": "Describe the first thing", "dependencies": []},
        {"id": "b", "description": "Describe the second thing", "dependencies": []},
        {"id": "c", "description": "Compare them", "dependencies": ["a", "b"]},
        {"id": "d", "description": "Summarise", "dependencies": ["c"]}]}"#;
    let sb = Sandbox::new();
    let server = agent_server(plan);
    // `b` always gets HTTP 500.
    server.on_first(&step_prompt("b"), FakeReply::error(500, "fake failure"));
    server.on_first(
        "Plan again from the current state",
        FakeReply::Text(
            r#"{"goal": "Compare two things", "steps": [
            {"id": "b2", "description": "Describe the second thing from memory", "dependencies": []},
            {"id": "c2", "description": "Compare them", "dependencies": ["a", "b2"]},
            {"id": "d2", "description": "Summarise", "dependencies": ["c2"]}]}"#
                .to_owned(),
        ),
    );
    let v = run_json(
        &sb,
        &args(
            &[
                "run",
                "Compare two things",
                "--json",
                "--strategy",
                "adaptive",
            ],
            model_flags(&server),
        ),
    );
    assert_eq!(v["status"], "succeeded", "{v:#}");
    assert_eq!(v["replans"], 1);
    // The provider layer makes at most 4 attempts; the step does not retry them again.
    assert_eq!(server.count(&step_prompt("b")), 4, "{v:#}");
    let b = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "b");
    assert!(b.is_none(), "b was replaced by the replan: {v:#}");
}
