//! The PostgreSQL run store through the CLI: `--store postgres://...` (and `PLAN_STORE`)
//! for `plan exec`, `plan runs`, `plan show`, `plan graph --run` and `plan resume`, on a
//! throwaway cluster (one per test binary, a database per test).

use std::process::{Command, Stdio};
use std::time::Duration;

use plan_postgres::testing::TempCluster;
use serde_json::Value;

use crate::support::{
    DIAMOND, Sandbox, agent_server, expect_code, model_flags, output, read_events, stderr, stdout,
    step_prompt, wait_for_event,
};

const CHAIN: &str = r#"{"goal": "Count to three", "steps": [
    {"id": "s1", "description": "Say one", "dependencies": []},
    {"id": "s2", "description": "Say two", "dependencies": ["s1"]},
    {"id": "s3", "description": "Say three", "dependencies": ["s2"]}]}"#;

/// A fresh database's URL, or `None` when PostgreSQL tests are skipped.
fn database() -> Option<String> {
    TempCluster::shared_or_skip().map(TempCluster::create_database)
}

/// The status of run `id` as the database has it, read directly.
fn stored_status(url: &str, id: &str) -> Option<String> {
    use plan_exec::store::RunStore as _;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = plan_postgres::PostgresStore::connect(url).await.unwrap();
        let run = store.load_run(&plan_core::RunId::new(id)).await.unwrap();
        run.map(|r| r.status.as_str().to_owned())
    })
}

#[test]
fn exec_runs_show_and_graph_on_a_postgres_store() {
    let Some(url) = database() else { return };
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    sb.write("diamond.json", DIAMOND);
    let mut args = vec![
        "exec".to_owned(),
        "diamond.json".into(),
        "--json".into(),
        "--store".into(),
        url.clone(),
    ];
    args.extend(model_flags(&server));
    let out = output(&mut sb.plan(&args));
    expect_code(&out, 0);
    let ran: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let id = ran["run_id"].as_str().unwrap().to_owned();
    assert_eq!(ran["status"], "succeeded");
    // The run is in the database, and nothing went to a SQLite file.
    assert_eq!(stored_status(&url, &id).as_deref(), Some("succeeded"));
    assert!(!sb.store().exists());
    assert_eq!(
        std::fs::read_dir(sb.work()).unwrap().count(),
        1,
        "only diamond.json"
    );

    // `plan runs` by flag, and by PLAN_STORE.
    let out = output(&mut sb.plan(["runs", "--store", &url]));
    expect_code(&out, 0);
    let text = stdout(&out);
    assert!(text.starts_with(&format!("{id} ")), "{text}");
    assert!(text.contains("succeeded") && text.contains("3/3"), "{text}");
    let out = output(sb.plan(["runs", "--json"]).env("PLAN_STORE", &url));
    expect_code(&out, 0);
    let listed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["run_id"], id.as_str());
    assert_eq!(listed[0]["steps_done"], 3);

    // `plan show --json` prints what `plan exec --json` printed.
    let out = output(&mut sb.plan(["show", &id, "--json", "--store", &url]));
    expect_code(&out, 0);
    let shown: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(shown, ran);
    let out = output(&mut sb.plan(["show", &id, "--store", &url]));
    expect_code(&out, 0);
    assert!(stdout(&out).contains("result of c"), "{}", stdout(&out));
    let out = output(&mut sb.plan(["show", "no-such-run", "--store", &url]));
    expect_code(&out, 2);

    let out = output(&mut sb.plan(["graph", "--run", &id, "--format", "tree", "--store", &url]));
    expect_code(&out, 0);
    assert!(stdout(&out).contains("[x] c"), "{}", stdout(&out));
}

#[test]
fn an_interrupted_run_resumes_from_postgres_and_the_hint_hides_the_password() {
    let Some(url) = database() else { return };
    // Trust authentication accepts any password; the hint must not repeat it.
    let url = url.replace("postgres@", "postgres:pg-secret-123@");
    let sb = Sandbox::new();
    let server = agent_server(CHAIN);
    server.latency(Duration::from_millis(400));
    sb.write("chain.json", CHAIN);
    let events = sb.path("events.jsonl");
    let mut args = vec![
        "exec".to_owned(),
        "chain.json".into(),
        "--events".into(),
        events.to_str().unwrap().into(),
        "--store".into(),
        url.clone(),
    ];
    args.extend(model_flags(&server));
    let child = sb
        .plan(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run = wait_for_event(&events, "run_started", 30)["run"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for_event(&events, "step_completed", 30);
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    expect_code(&out, 130);
    let err = stderr(&out);
    assert!(!err.contains("pg-secret-123"), "{err}");
    assert!(
        err.contains(&format!(
            "plan resume {run} --store postgres://postgres:***@127.0.0.1"
        )),
        "{err}"
    );
    let done_before: Vec<String> = read_events(&events)
        .iter()
        .filter(|e| e["event"] == "step_completed")
        .map(|e| e["step"].as_str().unwrap().to_owned())
        .collect();

    let out = output(&mut sb.plan(["show", &run, "--json", "--store", &url]));
    let shown: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(shown["status"], "cancelled");

    server.latency(Duration::ZERO);
    let out = output(&mut sb.plan(["resume", &run, "--json", "--store", &url]));
    expect_code(&out, 0);
    let resumed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(resumed["status"], "succeeded");
    assert_eq!(resumed["run_id"], run.as_str());
    for id in ["s1", "s2", "s3"] {
        let calls = server.count(&step_prompt(id));
        if done_before.iter().any(|d| d == id) {
            assert_eq!(
                calls, 1,
                "{id} was finished before the interrupt and ran again"
            );
        } else {
            assert!(calls >= 1, "{id} never ran");
        }
    }
}

#[test]
fn an_unreachable_postgres_is_a_usage_error_naming_the_host() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://plan:not-shown-42@127.0.0.1:{port}/plan");
    let sb = Sandbox::new();
    for args in [
        vec!["runs", "--store", &url],
        vec!["show", "some-run", "--store", &url],
    ] {
        let out = output(&mut sb.plan(&args));
        expect_code(&out, 2);
        let err = stderr(&out);
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        assert!(err.contains("check that the server is running"), "{err}");
        assert!(!err.contains("not-shown-42"), "{err}");
    }
    let out = output(sb.plan(["runs"]).env("PLAN_STORE", &url));
    expect_code(&out, 2);
    assert!(!stderr(&out).contains("not-shown-42"), "{}", stderr(&out));
}
