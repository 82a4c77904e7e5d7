//! `plan approve RUN --plan FILE` of a replan that waits for approval after steps have
//! finished: the finished steps the edit leaves unchanged are kept (each asked for once),
//! and a finished step the edit changed runs again under a fresh id.

use plan_core::{Plan, RunStatus};
use plan_llm::testing::{FakeOpenAi, FakeReply};
use plan_llm::{Flavour, OpenAi};
use plan_sqlite::SqliteStore;
use plan_strategies::{Agent, StrategyKind};
use serde_json::Value;

use crate::support::{
    DIAMOND, Sandbox, agent_server, expect_code, model_flags, output, stderr, stdout, step_prompt,
};

/// The replan after `b` fails: `a` is kept, `b2` and `c2` are new.
const REPLAN: &str = r#"{"goal": "Compare two things", "steps": [
    {"id": "b2", "description": "Describe the second thing from memory", "dependencies": []},
    {"id": "c2", "description": "Compare them", "dependencies": ["a", "b2"]}]}"#;

/// A server on which DIAMOND's step `b` fails and the replan is REPLAN.
fn replanning_server() -> FakeOpenAi {
    let server = agent_server(DIAMOND);
    server.on_first(&step_prompt("b"), FakeReply::error(400, "fake failure"));
    server.on_first("Plan again from the current state", FakeReply::text(REPLAN));
    server
}

/// Runs DIAMOND under the adaptive strategy with replans waiting for approval, in the
/// sandbox's store, as `plan submit --approve replans` leaves a run; returns the run id
/// and the plan that waits.
fn wait_for_replan(sb: &Sandbox, server: &FakeOpenAi) -> (String, Plan) {
    std::fs::create_dir_all(sb.store().parent().unwrap()).unwrap();
    let provider = OpenAi::new("fake-model", None)
        .with_base_url(server.base_url())
        .with_flavour(Flavour::compatible());
    let agent = Agent::builder()
        .provider(provider)
        .strategy(StrategyKind::Adaptive)
        .approve_replans(true)
        .store(SqliteStore::open(sb.store()).unwrap())
        .build()
        .unwrap();
    let waiting = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(agent.run("Compare two things"))
        .unwrap();
    assert_eq!(waiting.status, RunStatus::AwaitingApproval, "{waiting:?}");
    assert_eq!(server.count(&step_prompt("a")), 1);
    (waiting.run_id.to_string(), waiting.plan.unwrap())
}

/// `plan approve ID --plan edited.json --json` with `edited`; returns the report.
fn approve_edited(sb: &Sandbox, server: &FakeOpenAi, id: &str, edited: &Plan) -> Value {
    sb.write("edited.json", &edited.to_json_pretty());
    let mut args = vec![
        "approve".to_owned(),
        id.to_owned(),
        "--plan".into(),
        "edited.json".into(),
        "--json".into(),
    ];
    args.extend(model_flags(server));
    let out = output(&mut sb.plan(&args));
    expect_code(&out, 0);
    serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)))
}

fn ids(report: &Value) -> Vec<&str> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect()
}

#[test]
fn an_edited_replan_keeps_the_finished_step_and_asks_for_it_once() {
    let sb = Sandbox::new();
    let server = replanning_server();
    let (id, mut edited) = wait_for_replan(&sb, &server);
    let c2 = edited
        .steps
        .iter_mut()
        .find(|s| s.id.as_str() == "c2")
        .unwrap();
    c2.description = "Compare them side by side".into();

    let v = approve_edited(&sb, &server, &id, &edited);
    assert_eq!(v["status"], "succeeded", "{v:#}");
    assert_eq!(v["run_id"], id.as_str());
    assert_eq!(ids(&v), ["a", "b2", "c2"]);
    assert_eq!(v["steps"][0]["output"], "result of a", "{v:#}");
    assert_eq!(
        server.count(&step_prompt("a")),
        1,
        "`a` is never asked again"
    );
    let c2_prompts: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.text())
        .filter(|t| t.contains(&step_prompt("c2")))
        .collect();
    assert_eq!(c2_prompts.len(), 1);
    assert!(
        c2_prompts[0].contains("Compare them side by side"),
        "the edited step runs as edited: {c2_prompts:?}"
    );
    assert_eq!(v["warnings"].as_array().map_or(0, Vec::len), 0, "{v:#}");

    let out = output(&mut sb.plan(["show", &id, "--json"]));
    expect_code(&out, 0);
    let shown: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(shown["status"], "succeeded");
    assert_eq!(shown["steps"], v["steps"]);
}

#[test]
fn a_finished_step_the_edit_changed_runs_again_under_a_fresh_id() {
    let sb = Sandbox::new();
    let server = replanning_server();
    let (id, mut edited) = wait_for_replan(&sb, &server);
    let a = edited
        .steps
        .iter_mut()
        .find(|s| s.id.as_str() == "a")
        .unwrap();
    a.description = "Describe the first thing in detail".into();

    let v = approve_edited(&sb, &server, &id, &edited);
    assert_eq!(v["status"], "succeeded", "{v:#}");
    assert_eq!(ids(&v), ["a_v2", "b2", "c2"]);
    assert_eq!(server.count(&step_prompt("a")), 1);
    assert_eq!(server.count(&step_prompt("a_v2")), 1);
    assert!(
        v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains(
                "step `a` had completed, but the approved plan changed it: it runs again as `a_v2`"
            )),
        "{v:#}"
    );
}
