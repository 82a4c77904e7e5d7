//! `--strategy auto` through the binary: a goal that needs no plan is answered in one call,
//! one that needs a plan runs it, and the report and events say which route was taken.

use serde_json::Value;

use crate::support::*;
use plan_llm::testing::FakeReply;

const ROUTER: &str = "You decide how to meet a goal";

#[test]
fn a_simple_goal_is_answered_directly() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    server.on_first(
        ROUTER,
        FakeReply::Text(r#"{"answer": "4", "plan": null}"#.to_owned()),
    );
    let events = sb.path("events.jsonl");
    let out = output(&mut sb.plan(args(
        &[
            "run",
            "What is 2 + 2?",
            "--strategy",
            "auto",
            "--json",
            "--events",
            events.to_str().unwrap(),
        ],
        model_flags(&server),
    )));
    expect_code(&out, 0);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["strategy"], "auto");
    assert_eq!(v["route"], "direct");
    assert_eq!(v["plan"], Value::Null);
    assert_eq!(v["steps"], serde_json::json!([]));
    assert_eq!(v["answer"], "4");
    assert_eq!(v["usage"]["llm_calls"], 1);
    assert_eq!(server.requests().len(), 1, "one call, no synthesis");
    let routes: Vec<Value> = read_events(&events)
        .into_iter()
        .filter(|e| e["event"] == "route_chosen")
        .collect();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0]["route"], "direct");
}

#[test]
fn a_goal_that_needs_a_plan_runs_it() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    server.on_first(
        ROUTER,
        FakeReply::Text(format!(r#"{{"answer": null, "plan": {DIAMOND}}}"#)),
    );
    let v = run_json(
        &sb,
        &args(
            &["run", "Compare two things", "--strategy", "auto", "--json"],
            model_flags(&server),
        ),
    );
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["route"], "planned");
    assert_eq!(v["steps"].as_array().unwrap().len(), 3);
    // The routing call was the planning call: no planner prompt was sent.
    assert_eq!(server.count("You are a planner"), 0);
    assert_eq!(v["usage"]["llm_calls"], 5);
}

fn args(fixed: &[&str], extra: Vec<String>) -> Vec<String> {
    fixed.iter().map(|s| (*s).to_owned()).chain(extra).collect()
}

fn run_json(sb: &Sandbox, args: &[String]) -> Value {
    let out = output(&mut sb.plan(args));
    expect_code(&out, 0);
    serde_json::from_str(&stdout(&out)).unwrap()
}
