//! `plan approve` and `plan reject`: answering a run that waits for approval in the store
//! (a wait that outlives the process that planned it), and `plan resume` refusing it.

use plan_core::Plan;
use plan_exec::store::RunRecord;
use serde_json::Value;

use crate::support::{DIAMOND, Sandbox, agent_server, expect_code, output, stderr, stdout};

/// A run planned with DIAMOND, stored in the old record layout (loose keys, no spec) and
/// waiting for approval; returns its id.
fn park(sb: &Sandbox, base_url: &str) -> String {
    let plan = Plan::from_json(DIAMOND).unwrap();
    let record = RunRecord::new(plan.goal.clone())
        .with_strategy("dag")
        .with_model("openai:fake-model")
        .with_base_url(base_url);
    crate::support::park(sb, record, &plan)
}

fn show(sb: &Sandbox, id: &str) -> Value {
    let out = output(&mut sb.plan(["show", id, "--json"]));
    expect_code(&out, 0);
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[test]
fn an_approved_run_runs_its_plan_once_and_resume_points_to_approval() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let id = park(&sb, &server.base_url());
    assert_eq!(show(&sb, &id)["status"], "awaiting_approval");

    // Resuming is not how a waiting run continues.
    let out = output(&mut sb.plan(["resume", &id]));
    expect_code(&out, 2);
    assert!(
        stderr(&out).contains(&format!("run it with `plan approve {id}`")),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains(&format!("`plan reject {id}`")));

    // An invalid edited plan is refused with every problem, and the run keeps waiting.
    sb.write(
        "bad.json",
        r#"{"goal": "g", "steps": [
            {"id": "a", "description": "A", "dependencies": ["b"]},
            {"id": "b", "description": "B", "dependencies": ["a"]},
            {"id": "c", "description": "C", "dependencies": ["zzz"]}]}"#,
    );
    let out = output(&mut sb.plan(["approve", &id, "--plan", "bad.json"]));
    expect_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("dependency cycle a -> b -> a") && err.contains("`zzz`"),
        "{err}"
    );
    assert_eq!(show(&sb, &id)["status"], "awaiting_approval");
    assert_eq!(server.requests().len(), 0, "nothing ran");

    let out = output(&mut sb.plan(["approve", &id, "--json"]));
    expect_code(&out, 0);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["run_id"], id.as_str());
    assert_eq!(v["status"], "succeeded");
    assert!(
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "completed"),
        "{v}"
    );
    assert_eq!(
        server.count("You are a planner"),
        0,
        "approval does not plan again"
    );
    assert_eq!(show(&sb, &id)["status"], "succeeded");

    // Answered once.
    let out = output(&mut sb.plan(["approve", &id]));
    expect_code(&out, 2);
    assert!(
        stderr(&out).contains("is succeeded, not awaiting approval"),
        "{}",
        stderr(&out)
    );
    let out = output(&mut sb.plan(["reject", &id]));
    expect_code(&out, 2);
}

#[test]
fn an_approval_can_run_an_edited_plan() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let id = park(&sb, &server.base_url());
    sb.write(
        "edited.json",
        r#"{"goal": "Compare two things", "steps": [
            {"id": "only", "description": "Describe both things at once", "dependencies": []}]}"#,
    );
    let out = output(&mut sb.plan(["approve", &id, "--plan", "edited.json", "--json"]));
    expect_code(&out, 0);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["status"], "succeeded");
    let ids: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["only"]);
    assert_eq!(server.count("Describe the first thing"), 0);
}

#[test]
fn a_rejected_run_ends_rejected_with_exit_1_and_runs_nothing() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let id = park(&sb, &server.base_url());
    let out = output(&mut sb.plan(["reject", &id, "--reason", "too costly"]));
    expect_code(&out, 1);
    assert!(stderr(&out).contains(&format!("run {id} rejected: too costly")));
    let v = show(&sb, &id);
    assert_eq!(v["status"], "rejected");
    assert_eq!(v["failure"], "too costly");
    assert!(server.requests().is_empty());
    let out = output(&mut sb.plan(["runs"]));
    expect_code(&out, 0);
    assert!(stdout(&out).contains("rejected"), "{}", stdout(&out));
    let out = output(&mut sb.plan(["approve", &id]));
    expect_code(&out, 2);
}

#[test]
fn approving_an_unknown_run_says_how_to_find_one() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let _ = park(&sb, &server.base_url());
    for cmd in ["approve", "reject"] {
        let out = output(&mut sb.plan([cmd, "nosuchrun"]));
        expect_code(&out, 2);
        assert!(
            stderr(&out).contains("list runs with `plan runs`"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn plan_wait_blocks_through_the_approval_and_prints_what_plan_run_prints() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let id = park(&sb, &server.base_url());
    // Waiting for approval is not an end.
    let out = output(&mut sb.plan(["wait", &id, "--timeout", "1"]));
    expect_code(&out, 124);
    assert!(
        stderr(&out).contains(&format!(
            "run {id} is still awaiting_approval after 1 s; wait again with `plan wait {id}`"
        )),
        "{}",
        stderr(&out)
    );
    let waiter = sb
        .plan(["wait", &id, "--json", "--timeout", "60"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = output(&mut sb.plan(["approve", &id, "--json"]));
    expect_code(&out, 0);
    let approved: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let waited = waiter.wait_with_output().unwrap();
    expect_code(&waited, 0);
    let waited: Value = serde_json::from_str(&stdout(&waited)).unwrap();
    assert_eq!(waited["status"], "succeeded");
    assert_eq!(waited["answer"], approved["answer"]);
    assert_eq!(waited["steps"], approved["steps"]);
}

#[test]
fn plan_wait_of_an_ended_run_exits_as_the_run_did() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let id = park(&sb, &server.base_url());
    let out = output(&mut sb.plan(["reject", &id]));
    expect_code(&out, 1);
    let out = output(&mut sb.plan(["wait", &id]));
    expect_code(&out, 1);
    let out = output(&mut sb.plan(["wait", "nosuchrun"]));
    expect_code(&out, 2);
}
