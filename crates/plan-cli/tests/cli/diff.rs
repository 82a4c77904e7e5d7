//! `plan diff RUN_ID [A B]`: a run's plan versions (the first plan, each replan, each
//! approved edit) compared step by step, with the finished outputs kept and invalidated
//! and the forecast's change; `plan approve` of a waiting replan and an edit at
//! `--approve` shown as diffs.

use std::io::Write;
use std::process::Stdio;

use plan_core::RunStatus;
use plan_llm::testing::{FakeOpenAi, FakeReply};
use plan_llm::{Flavour, OpenAi};
use plan_sqlite::SqliteStore;
use plan_strategies::{Agent, StrategyKind};
use serde_json::Value;

use crate::support::{
    DIAMOND, Sandbox, agent_server, expect_code, model_flags, output, stderr, stdout, step_prompt,
};

/// The replan after DIAMOND's `b` fails: `a` is kept, `b2` is new, `c` (skipped, never
/// finished) is reworded and follows `b2`, and `d` is new.
const REPLAN: &str = r#"{"goal": "Compare two things", "steps": [
    {"id": "b2", "description": "Describe the second thing from memory", "dependencies": []},
    {"id": "c", "description": "Compare them side by side", "dependencies": ["a", "b2"]},
    {"id": "d", "description": "Check the comparison", "dependencies": ["c"]}]}"#;

/// A server on which DIAMOND's step `b` fails once and the replan is REPLAN.
fn replanning_server() -> FakeOpenAi {
    let server = agent_server(DIAMOND);
    server.on_first(&step_prompt("b"), FakeReply::error(400, "fake failure"));
    server.on_first("Plan again from the current state", FakeReply::text(REPLAN));
    server
}

/// `plan ARGS` with the model flags of `server`; exit 0 expected; the report's run id.
fn run_id(sb: &Sandbox, server: &FakeOpenAi, args: &[&str]) -> String {
    let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    all.extend(model_flags(server));
    let out = output(&mut sb.plan(&all));
    expect_code(&out, 0);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    v["run_id"].as_str().unwrap().to_owned()
}

/// An adaptive run of DIAMOND that replans once; its id.
fn replanned_run(sb: &Sandbox, server: &FakeOpenAi) -> String {
    run_id(
        sb,
        server,
        &[
            "run",
            "Compare two things",
            "--json",
            "--strategy",
            "adaptive",
        ],
    )
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().or(s.as_str()).unwrap())
        .collect()
}

#[test]
fn a_replanned_run_diffs_its_two_versions_as_json_and_text() {
    let sb = Sandbox::new();
    let server = replanning_server();
    let id = replanned_run(&sb, &server);

    let out = output(&mut sb.plan(["diff", &id, "--json"]));
    expect_code(&out, 0);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["run_id"], id.as_str());
    assert_eq!(v["from"]["version"], 0);
    assert_eq!(v["from"]["origin"], "first");
    assert_eq!(v["from"]["steps"], 3);
    assert_eq!(v["to"]["version"], 1);
    assert_eq!(v["to"]["origin"], "replan");
    assert!(
        v["to"]["reason"]
            .as_str()
            .unwrap()
            .contains("step `b` failed"),
        "{v:#}"
    );
    assert_eq!(ids(&v["added"]), ["b2", "d"], "{v:#}");
    assert_eq!(ids(&v["removed"]), ["b"], "{v:#}");
    assert_eq!(ids(&v["changed"]), ["c"], "{v:#}");
    assert_eq!(
        v["changed"][0]["fields"],
        serde_json::json!(["description", "dependencies"])
    );
    assert_eq!(
        v["changed"][0]["description"],
        serde_json::json!([
            {"op": "equal", "text": "Compare them"},
            {"op": "insert", "text": " side by side"}
        ])
    );
    assert_eq!(v["unchanged"], serde_json::json!(["a"]));
    assert_eq!(v["kept"], serde_json::json!(["a"]), "a had finished");
    assert_eq!(v["invalidated"], serde_json::json!([]));
    // Four steps instead of three, forecast from the one succeeded run of the model in
    // the store (this one): more calls, by the difference of the two forecasts.
    let f = &v["forecast"];
    assert_eq!(f["after"]["basis"], "history", "{f:#}");
    assert_eq!(f["after"]["runs"], 1, "{f:#}");
    for (key, end) in [("calls", 0), ("calls", 1), ("wall_ms", 0), ("wall_ms", 1)] {
        let (b, a) = (
            f["before"][key][end].as_i64().unwrap(),
            f["after"][key][end].as_i64().unwrap(),
        );
        assert_eq!(f["delta"][key][end].as_i64().unwrap(), a - b, "{key} {f:#}");
    }
    assert!(
        f["delta"]["calls"][0].as_i64().unwrap() >= 1,
        "one more step, one more call at least: {f:#}"
    );

    let out = output(&mut sb.plan(["diff", &id]));
    expect_code(&out, 0);
    let text = stdout(&out);
    assert!(
        !text.contains('\x1b'),
        "no colours off a terminal: {text:?}"
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "run {id}: version 0 (first plan, 3 steps) → version 1 (replan: step `b` failed"
        )),
        "{text}"
    );
    assert_eq!(
        lines[1..7],
        [
            "+ b2: Describe the second thing from memory",
            "+ d: Check the comparison (after c)",
            "- b: Describe the second thing",
            "~ c: description, dependencies",
            "    description: Compare them{+ side by side+}",
            "    dependencies: a, b → a, b2",
        ],
        "{text}"
    );
    assert_eq!(lines[7], "kept: a; invalidated: none", "{text}");
    let calls = |end: &str| {
        let r = &f[end]["calls"];
        format!("{}-{}", r[0], r[1])
    };
    assert!(
        lines[8].starts_with(&format!(
            "forecast: calls {} → {} (+",
            calls("before"),
            calls("after")
        )),
        "{text}"
    );
    assert!(lines[8].contains("), tokens "), "{text}");
    assert!(
        lines[8].ends_with("(from 1 earlier run of the model)"),
        "{text}"
    );

    // Explicit versions, either way round: backwards, `c` is changed back and `a`, which
    // had finished before version 1, is still kept.
    let out = output(&mut sb.plan(["diff", &id, "1", "0", "--json"]));
    expect_code(&out, 0);
    let back: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(ids(&back["added"]), ["b"]);
    assert_eq!(ids(&back["removed"]), ["b2", "d"]);
    let calls = &v["forecast"]["delta"]["calls"];
    assert_eq!(
        back["forecast"]["delta"]["calls"],
        serde_json::json!([-calls[0].as_i64().unwrap(), -calls[1].as_i64().unwrap()])
    );
    assert_eq!(back["kept"], serde_json::json!(["a"]));

    let out = output(&mut sb.plan(["diff", &id, "--list"]));
    expect_code(&out, 0);
    let list = stdout(&out);
    let rows: Vec<&str> = list.lines().collect();
    assert_eq!(rows.len(), 2, "{list}");
    assert!(
        rows[0].starts_with("  0  first plan") && rows[0].contains("   3 steps"),
        "{list}"
    );
    assert!(
        rows[1].starts_with("  1  replan") && rows[1].contains("step `b` failed"),
        "{list}"
    );
    let out = output(&mut sb.plan(["diff", &id, "--list", "--json"]));
    expect_code(&out, 0);
    let listed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(listed[1]["origin"], "replan");
    assert_eq!(
        listed[1]["steps"], 4,
        "the kept `a` and b2, c, d: {listed:#}"
    );
    assert_eq!(listed[1]["finished"], 1, "{listed:#}");
}

#[test]
fn a_run_with_one_plan_version_has_nothing_to_compare() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let id = run_id(&sb, &server, &["run", "Compare two things", "--json"]);

    let out = output(&mut sb.plan(["diff", &id]));
    expect_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "nothing to compare: run {id} has one plan version"
        )),
        "{err}"
    );
    assert!(stdout(&out).is_empty());
    // Its one version lists, and compares with itself.
    let out = output(&mut sb.plan(["diff", &id, "--list"]));
    expect_code(&out, 0);
    assert!(
        stdout(&out).starts_with("  0  first plan"),
        "{}",
        stdout(&out)
    );
    let out = output(&mut sb.plan(["diff", &id, "0", "0"]));
    expect_code(&out, 0);
    assert!(
        stdout(&out).contains("no steps added, removed or changed"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_version_out_of_range_or_an_unknown_run_is_a_usage_error() {
    let sb = Sandbox::new();
    let server = replanning_server();
    let id = replanned_run(&sb, &server);

    let out = output(&mut sb.plan(["diff", &id, "0", "5"]));
    expect_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "version 5 is out of range: run {id} has 2 plan versions (versions 0 to 1); list them with `plan diff {id} --list`"
        )),
        "{err}"
    );
    let out = output(&mut sb.plan(["diff", &id, "1"]));
    expect_code(&out, 2);
    assert!(stderr(&out).contains("<B>"), "{}", stderr(&out));
    let out = output(&mut sb.plan(["diff", "no-such-run"]));
    expect_code(&out, 2);
    assert!(
        stderr(&out).contains("no run `no-such-run` in"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn plan_approve_of_a_waiting_replan_shows_it_as_a_diff() {
    let sb = Sandbox::new();
    let server = replanning_server();
    // As `plan submit --approve replans` leaves a run: stopped at its replan.
    std::fs::create_dir_all(sb.store().parent().unwrap()).unwrap();
    let agent = Agent::builder()
        .provider(
            OpenAi::new("fake-model", None)
                .with_base_url(server.base_url())
                .with_flavour(Flavour::compatible()),
        )
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
    let id = waiting.run_id.to_string();

    let mut args = vec!["approve".to_owned(), id.clone(), "--json".into()];
    args.extend(model_flags(&server));
    let out = output(&mut sb.plan(&args));
    expect_code(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "run {id} waits for approval of version 1 (replan: step `b` failed"
        )),
        "{err}"
    );
    for line in [
        "+ b2: Describe the second thing from memory",
        "- b: Describe the second thing",
        "    description: Compare them{+ side by side+}",
        "kept: a; invalidated: none",
        "forecast: calls 5-10 → 6-12 (+1..+2)",
        &format!("the whole plan: plan graph --run {id} --format tree"),
    ] {
        assert!(err.contains(line), "{line:?} missing from:\n{err}");
    }
    // The whole plan is not printed in its place.
    assert!(!err.contains("└─"), "{err}");
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["status"], "succeeded", "{v:#}");
}

#[test]
fn an_edit_at_approve_is_shown_as_a_diff_and_p_shows_the_whole_plan() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let edited = DIAMOND.replace("Compare them", "Compare them in a table");
    sb.write("edited.json", &edited);
    let editor = sb.write(
        "editor.sh",
        &format!(
            "#!/bin/sh\ncp {} \"$1\"\n",
            sb.path("edited.json").display()
        ),
    );
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&editor)
        .status()
        .unwrap();
    let mut args = vec![
        "run".to_owned(),
        "Compare two things".into(),
        "--approve".into(),
        "--json".into(),
    ];
    args.extend(model_flags(&server));
    let mut child = sb
        .plan(&args)
        .env("EDITOR", &editor)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"e\np\nr\n").unwrap();
    let out = child.wait_with_output().unwrap();
    expect_code(&out, 0);
    let err = stderr(&out);
    let diff_at = err
        .find("the edited plan, against the plan before it:\n~ c: description\n    description: Compare them{+ in a table+}\n")
        .unwrap_or_else(|| panic!("no diff of the edit in:\n{err}"));
    // The first plan is shown whole before the diff, the edited one on `p` after it.
    let first = err.find("c: Compare them").unwrap();
    let whole = err.rfind("c: Compare them in a table").unwrap();
    assert!(first < diff_at && diff_at < whole, "{err}");
    assert_eq!(server.count(&step_prompt("c")), 1);
}

/// The API says the same as `plan diff --json`: the versions and the diff of the last two,
/// with both forecasts.
#[test]
fn the_api_lists_versions_and_diffs_them() {
    use crate::serve::{TOKEN, authed, client, json_of, start, start_run, wait_status};
    let sb = Sandbox::new();
    let server = replanning_server();
    let s = start(&sb, &model_flags(&server), &["--token", TOKEN]);
    let c = client();
    let id = start_run(
        &c,
        &s,
        serde_json::json!({"goal": "Compare two things", "strategy": "adaptive"}),
    );
    wait_status(&c, &s, &id, "succeeded");
    let get = |path: &str| {
        json_of(
            authed(&c, "GET", &format!("{}{path}", s.base))
                .send()
                .unwrap(),
        )
    };
    let (code, versions) = get(&format!("/api/runs/{id}/versions"));
    assert_eq!(code, 200, "{versions}");
    assert_eq!(versions.as_array().unwrap().len(), 2, "{versions}");
    assert_eq!(versions[1]["origin"], "replan");
    let (code, api) = get(&format!("/api/runs/{id}/diff"));
    assert_eq!(code, 200, "{api}");
    let out = output(&mut sb.plan(["diff", &id, "--json"]));
    let cli: Value = serde_json::from_str(&stdout(&out)).unwrap();
    for key in ["added", "removed", "changed", "kept", "invalidated"] {
        assert_eq!(api[key], cli[key], "{key}: {api:#} vs {cli:#}");
    }
    assert!(api["forecast"]["before"]["calls"].is_array(), "{api:#}");
    assert!(api["forecast"]["after"]["calls"].is_array(), "{api:#}");
    let (code, e) = get(&format!("/api/runs/{id}/diff?from=0&to=7"));
    assert_eq!(code, 404, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("versions 0 to 1"),
        "{e}"
    );
}

/// The web view of a replan waiting for approval shows what it changes and the forecast
/// of both plans, not only a whole new plan.
#[test]
fn a_waiting_replan_is_shown_as_a_diff_on_the_web_page() {
    use crate::serve::{TOKEN, client, start, start_run, wait_status};
    use crate::support::browser::{LivePage, chromium};
    let Some(browser) = chromium() else { return };
    let sb = Sandbox::new();
    let server = replanning_server();
    let s = start(&sb, &model_flags(&server), &["--token", TOKEN]);
    let c = client();
    let id = start_run(
        &c,
        &s,
        serde_json::json!({"goal": "Compare two things", "strategy": "adaptive", "approve": "replans"}),
    );
    wait_status(&c, &s, &id, "awaiting_approval");
    let mut page = LivePage::open(browser, &format!("{}/runs/{id}?token={TOKEN}", s.base));
    let text = page.wait_for(
        r#"!!document.getElementById('approval-diff')
            && document.getElementById('approval-diff').textContent.includes('Forecast')
            && document.getElementById('approval-diff').textContent"#,
        "the waiting replan as a diff",
    );
    let text = text.as_str().unwrap();
    assert!(text.contains("This plan (v1) against v0"), "{text}");
    assert!(text.contains("added b2, d"), "{text}");
    assert!(text.contains("removed b"), "{text}");
    assert!(text.contains("keeps the outputs of a"), "{text}");
    assert!(text.contains("calls "), "{text}");
}
