//! Ctrl-C while the plan is still being written: the steps streamed so far may have run,
//! but the plan is not complete. The run must not later pass that fragment off as its
//! plan: `plan resume` plans again and keeps the steps that finished.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use plan_llm::testing::{FakeOpenAi, FakeReply};
use serde_json::Value;

use crate::support::*;

/// Three steps, one more than `--max-steps 2` allows: `a` and `b` stream into the runner
/// and `a` runs while the planner re-prompts about the third (`b`'s call is held).
const TOO_LONG: &str = r#"{"goal": "Count to three", "steps": [
    {"id": "a", "description": "Say one", "dependencies": []},
    {"id": "b", "description": "Say two", "dependencies": ["a"]},
    {"id": "c", "description": "Say three", "dependencies": ["b"]}]}"#;

/// What the re-prompt gets: two steps, `a` unchanged, `b` changed.
const FIXED: &str = r#"{"goal": "Count to three", "steps": [
    {"id": "a", "description": "Say one", "dependencies": []},
    {"id": "b", "description": "Say two and three", "dependencies": ["a"]}]}"#;

#[test]
fn ctrl_c_while_planning_then_resume_plans_again_and_keeps_finished_steps() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(FakeOpenAi::start());
    let hold = Hold::default();
    let planning_calls = Arc::new(AtomicUsize::new(0));
    {
        let hold = hold.clone();
        let calls = planning_calls.clone();
        server.on(
            "You are a planner",
            FakeReply::with(move |_| match calls.fetch_add(1, Ordering::SeqCst) {
                0 => FakeReply::text(TOO_LONG),
                1 => {
                    // The first run's re-prompt: Ctrl-C comes while it is unanswered.
                    hold.wait_here();
                    FakeReply::text(FIXED)
                }
                // The resumed run plans again.
                _ => FakeReply::text(FIXED),
            }),
        );
    }
    // `b` (after `a`) never finishes in the first run: its call is held past Ctrl-C.
    let hold_b = Hold::default();
    {
        let hold_b = hold_b.clone();
        server.on_first(
            &step_prompt("b"),
            FakeReply::with(move |_| {
                hold_b.wait_here();
                FakeReply::text("result of b")
            }),
        );
    }
    server
        .on(
            "You write the final answer",
            FakeReply::text("FINAL ANSWER: one, two, three"),
        )
        .otherwise(FakeReply::with(|r| {
            FakeReply::text(format!("result of {}", step_id(&r.text()).unwrap_or("?")))
        }));

    let sb = Sandbox::new();
    let first_events = sb.path("first.jsonl");
    let mut args = vec![
        "run".to_owned(),
        "Count to three".into(),
        "--strategy".into(),
        "dag".into(),
        "--max-steps".into(),
        "2".into(),
        "--json".into(),
        "--events".into(),
        first_events.display().to_string(),
    ];
    args.extend(model_flags(&server));
    let child = sb
        .plan(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `a` ran to completion from the stream, and the planner is still at work.
    wait_for_event(&first_events, "step_completed", 60);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !hold.holding() {
        assert!(Instant::now() < deadline, "the planner never re-prompted");
        std::thread::sleep(Duration::from_millis(10));
    }
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let first = child.wait_with_output().unwrap();
    hold.release();
    hold_b.release();
    let said = format!("{}\n{}", stdout(&first), stderr(&first));
    assert_eq!(first.status.code(), Some(130), "Ctrl-C exits 130\n{said}");
    let events = read_events(&first_events);
    let run = events
        .iter()
        .find(|e| e["event"] == "run_started")
        .and_then(|e| e["run"].as_str())
        .unwrap()
        .to_owned();
    assert!(
        events.iter().any(|e| e["event"] == "plan_adjusted"
            && e["changes"]
                .to_string()
                .contains("planning stopped before the plan was complete")),
        "the first run does not say its plan is incomplete\n{events:#?}"
    );

    let shown = output(&mut sb.plan(["show", &run, "--json"]));
    let stored: Value = serde_json::from_str(&stdout(&shown)).unwrap();
    assert_eq!(stored["status"], "cancelled", "{stored:#}");
    assert_eq!(
        stored["incomplete_plan"]["revision"], 0,
        "the report marks the streamed fragment as an incomplete plan\n{stored:#}"
    );

    // A re-run needs a whole plan: this run has only the part streamed before Ctrl-C.
    let out = output(&mut sb.plan(["rerun", &run]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("resume it instead"),
        "{}",
        stderr(&out)
    );

    let steps_before = server.count(&step_prompt("a"));
    assert_eq!(steps_before, 1, "step `a` ran once before Ctrl-C");
    let resumed_events = sb.path("resumed.jsonl");
    let out = output(&mut sb.plan([
        "resume",
        &run,
        "--json",
        "--events",
        resumed_events.to_str().unwrap(),
    ]));
    let said = format!("{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(code(&out), 0, "{said}");
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["status"], "succeeded", "{said}");
    assert_eq!(
        planning_calls.load(Ordering::SeqCst),
        3,
        "the resume planned again (one call)\n{said}"
    );
    // The new plan is the fixed one, not the fragment: `b` says "two and three".
    let ids: Vec<&str> = report["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"], "{said}");
    assert_eq!(
        report["plan"]["steps"][1]["description"], "Say two and three",
        "{said}"
    );
    assert_eq!(
        server.count(&step_prompt("a")),
        1,
        "step `a` had finished: the resume kept its output\n{said}"
    );
    assert!(
        report.get("incomplete_plan").is_none(),
        "a complete plan replaced the incomplete one\n{said}"
    );
    let resumed = read_events(&resumed_events);
    assert!(
        resumed.iter().any(|e| e["event"] == "plan_adjusted"
            && e["changes"]
                .to_string()
                .contains("the goal was planned again (revision 1)")),
        "the resume says it planned again\n{resumed:#?}"
    );
    drop(runtime);
}
