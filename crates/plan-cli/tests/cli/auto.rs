//! `--strategy auto` through the binary: a goal that needs no plan is answered in one call,
//! one that needs a plan runs it, and the report and events say which route was taken.

use serde_json::Value;

use crate::support::*;
use plan_llm::testing::{FakeOpenAi, FakeReply};

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

// --- `--approve` and `--budget-usd` plan first: the route holds there too. ---

/// A price for the fake model, so `--budget-usd` can be checked.
const PRICED: &str =
    "[prices.\"openai:fake-model\"]\ninput_per_mtok = 0.15\noutput_per_mtok = 0.60\n";

#[test]
fn approving_a_goal_answered_directly_has_nothing_to_approve() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    server.on_first(
        ROUTER,
        FakeReply::Text(r#"{"answer": "4", "plan": null}"#.to_owned()),
    );
    // No input: the approval question would abort the run.
    let out = output(&mut sb.plan(args(
        &["run", "What is 2 + 2?", "--approve", "--json"],
        model_flags(&server),
    )));
    expect_code(&out, 0);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["strategy"], "auto");
    assert_eq!(v["route"], "direct");
    assert_eq!(v["answer"], "4");
    assert_eq!(v["plan"], Value::Null);
    assert_eq!(v["usage"]["llm_calls"], 1);
    assert_eq!(server.requests().len(), 1);
    assert!(
        warnings(&v)
            .iter()
            .any(|w| w.contains("no plan to approve")),
        "{v}"
    );
    let err = stderr(&out);
    assert!(err.contains("there was nothing to approve"), "{err}");
    assert!(!err.contains("run this plan?"), "no question asked: {err}");
}

#[test]
fn approving_a_planned_goal_asks_about_the_routed_plan() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let out = with_input(
        sb.plan(args(
            &["run", "Compare two things", "--approve", "--json"],
            model_flags(&server),
        )),
        "r\n",
    );
    expect_code(&out, 0);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["route"], "planned");
    assert_eq!(v["steps"].as_array().unwrap().len(), 3);
    assert!(stderr(&out).contains("run this plan?"));
    // The routing call was the planning call: 1 + 3 steps + synthesis.
    assert_eq!(server.count("You are a planner"), 0);
    assert_eq!(v["usage"]["llm_calls"], 5);
}

#[test]
fn a_budget_check_keeps_the_direct_route() {
    let sb = Sandbox::new();
    sb.write("plan.toml", PRICED);
    let server = agent_server(DIAMOND);
    server.on_first(
        ROUTER,
        FakeReply::Text(r#"{"answer": "4", "plan": null}"#.to_owned()),
    );
    let v = run_json(
        &sb,
        &args(
            &["run", "What is 2 + 2?", "--budget-usd", "5", "--json"],
            model_flags(&server),
        ),
    );
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["route"], "direct");
    assert_eq!(v["answer"], "4");
    assert_eq!(v["usage"]["llm_calls"], 1);
    assert_eq!(server.requests().len(), 1);
    assert!(warnings(&v).is_empty(), "{v}");
}

#[test]
fn a_budget_check_runs_the_routed_plan() {
    let sb = Sandbox::new();
    sb.write("plan.toml", PRICED);
    let server = agent_server(DIAMOND);
    let v = run_json(
        &sb,
        &args(
            &["run", "Compare two things", "--budget-usd", "5", "--json"],
            model_flags(&server),
        ),
    );
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["route"], "planned");
    assert_eq!(server.count("You are a planner"), 0);
    assert_eq!(v["usage"]["llm_calls"], 5);
}

// --- A direct answer is never cut silently. ---

#[test]
fn a_direct_answer_at_the_length_limit_is_written_again_in_full() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    // A server that enforces the schema's maxLength stops the answer at 1,200 characters.
    let cut = "a".repeat(1200);
    let full = format!("{cut} and the end of the answer.");
    server.on_first(
        ROUTER,
        FakeReply::Text(serde_json::json!({"answer": cut, "plan": null}).to_string()),
    );
    server.on("You answer a goal directly", FakeReply::text(full.clone()));
    let v = run_json(
        &sb,
        &args(
            &["run", "Explain everything", "--json"],
            model_flags(&server),
        ),
    );
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["route"], "direct");
    assert_eq!(v["answer"], full.as_str());
    assert_eq!(
        v["usage"]["llm_calls"], 2,
        "the routing call and the full answer"
    );
    assert_eq!(server.requests().len(), 2);
    assert_eq!(server.count("You answer a goal directly"), 1);
    assert!(warnings(&v).is_empty(), "{v}");
}

// --- `plan exec --strategy reflective` critiques the given plan. ---

#[test]
fn exec_under_reflective_critiques_and_improves_the_given_plan() {
    let sb = Sandbox::new();
    // The given plan has issues; the improved one (the planner's diamond) has none.
    let (file, server) = reflective_exec_setup(&sb);
    let v = run_json(
        &sb,
        &args(
            &[
                "exec",
                file.to_str().unwrap(),
                "--strategy",
                "reflective",
                "--json",
            ],
            model_flags(&server),
        ),
    );
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["strategy"], "reflective");
    // The improved plan (the planner's diamond) ran, not the given one.
    assert_eq!(v["steps"].as_array().unwrap().len(), 3);
    assert_eq!(v["critiques"].as_array().unwrap().len(), 2);
    assert!(
        warnings(&v)
            .iter()
            .any(|w| w.contains("given plan was revised") && w.contains("never described")),
        "{v}"
    );
    assert_eq!(server.count("You review plans"), 2);
    assert_eq!(server.count("You are a planner"), 1, "one improvement");
    // 2 critiques + 1 improvement + 3 steps + synthesis.
    assert_eq!(v["usage"]["llm_calls"], 7);
}

/// A one-step given plan, and a server whose critique finds an issue in it and none in
/// the planner's improvement (the diamond).
fn reflective_exec_setup(sb: &Sandbox) -> (std::path::PathBuf, FakeOpenAi) {
    let file = sb.write(
        "one.json",
        r#"{"goal": "Compare two things", "steps": [{"id": "a", "description": "Describe the first thing"}]}"#,
    );
    let server = agent_server(DIAMOND);
    server.on_first(
        "You review plans",
        FakeReply::with(|r| {
            if r.text().contains("Describe the second thing") {
                FakeReply::text(r#"{"approved": true, "issues": []}"#)
            } else {
                FakeReply::text(
                    r#"{"approved": false, "issues": ["the second thing is never described"]}"#,
                )
            }
        }),
    );
    (file, server)
}

#[test]
fn exec_under_reflective_asks_approval_of_the_plan_as_the_critique_left_it() {
    let sb = Sandbox::new();
    let (file, server) = reflective_exec_setup(&sb);
    let out = with_input(
        sb.plan(args(
            &[
                "exec",
                file.to_str().unwrap(),
                "--strategy",
                "reflective",
                "--approve",
                "--json",
            ],
            model_flags(&server),
        )),
        "r\n",
    );
    expect_code(&out, 0);
    let err = stderr(&out);
    assert!(err.contains("run this plan?"), "{err}");
    // The plan shown for approval is the improved one.
    assert!(err.contains("Describe the second thing"), "{err}");
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["status"], "succeeded");
    assert_eq!(
        v["steps"].as_array().unwrap().len(),
        3,
        "the approved plan ran"
    );
    assert_eq!(v["critiques"].as_array().unwrap().len(), 2);
    assert!(
        warnings(&v)
            .iter()
            .any(|w| w.contains("given plan was revised") && w.contains("never described")),
        "{v}"
    );
    // Critiqued once, before the approval, and not again after it.
    assert_eq!(server.count("You review plans"), 2);
    assert_eq!(server.count("You are a planner"), 1);
    assert_eq!(v["usage"]["llm_calls"], 7);
}

#[test]
fn exec_under_reflective_checks_the_budget_against_the_improved_plan() {
    let sb = Sandbox::new();
    sb.write("plan.toml", PRICED);
    let (file, server) = reflective_exec_setup(&sb);
    // A budget the one-step given plan fits and the three-step improvement does not.
    let budget = budget_between(&file);
    let out = output(&mut sb.plan(args(
        &[
            "exec",
            file.to_str().unwrap(),
            "--strategy",
            "reflective",
            "--budget-usd",
            &budget,
        ],
        model_flags(&server),
    )));
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("would exceed --budget-usd"), "{err}");
    assert_eq!(server.count("You review plans"), 2, "critiqued first");
    assert_eq!(
        server.requests().len(),
        3,
        "two critiques and the improvement, then no step"
    );
}

/// A dollar budget between the forecasts' low ends of the one-step plan in `file` and
/// of the three-step diamond, each forecast as `plan exec` reports it in a fresh store
/// (no history, as the test's).
fn budget_between(file: &std::path::Path) -> String {
    let low = |plan: &str| -> f64 {
        let fresh = Sandbox::new();
        fresh.write("plan.toml", PRICED);
        let path = fresh.write("p.json", plan);
        let server = agent_server(DIAMOND);
        let v = run_json(
            &fresh,
            &args(
                &[
                    "exec",
                    path.to_str().unwrap(),
                    "--strategy",
                    "dag",
                    "--json",
                ],
                model_flags(&server),
            ),
        );
        v["forecast"]["usd"][0]
            .as_f64()
            .unwrap_or_else(|| panic!("no forecast in {v}"))
    };
    let one = low(&std::fs::read_to_string(file).unwrap());
    let three = low(DIAMOND);
    assert!(
        one < three,
        "the forecasts: {one} for one step, {three} for three"
    );
    format!("{}", (one + three) / 2.0)
}

fn warnings(v: &Value) -> Vec<String> {
    v["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `cmd` with `input` on its standard input.
fn with_input(mut cmd: std::process::Command, input: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn args(fixed: &[&str], extra: Vec<String>) -> Vec<String> {
    fixed.iter().map(|s| (*s).to_owned()).chain(extra).collect()
}

fn run_json(sb: &Sandbox, args: &[String]) -> Value {
    let out = output(&mut sb.plan(args));
    expect_code(&out, 0);
    serde_json::from_str(&stdout(&out)).unwrap()
}
