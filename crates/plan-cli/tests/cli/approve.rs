//! `--approve`: run, edit in `$EDITOR` (validated, reopened on errors) or abort, with
//! scripted standard input and a fake editor.

use std::io::Write;
use std::process::Stdio;

use plan_llm::testing::FakeOpenAi;
use serde_json::Value;

use crate::support::{
    DIAMOND, Sandbox, agent_server, expect_code, model_flags, stderr, stdout, step_prompt,
};

fn approve(
    sb: &Sandbox,
    server: &FakeOpenAi,
    answers: &str,
    editor: Option<&str>,
) -> std::process::Output {
    approve_with(sb, server, answers, editor, &[])
}

fn approve_with(
    sb: &Sandbox,
    server: &FakeOpenAi,
    answers: &str,
    editor: Option<&str>,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "run".to_owned(),
        "Compare two things".into(),
        "--approve".into(),
        "--json".into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args.extend(model_flags(server));
    let mut cmd = sb.plan(&args);
    if let Some(editor) = editor {
        cmd.env("EDITOR", editor);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answers.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn run_answer_runs_the_plan_shown() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let out = approve(&sb, &server, "r\n", None);
    expect_code(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains("run this plan?") && err.contains("Describe the first thing"),
        "{err}"
    );
    assert_eq!(server.count("Your step"), 3);
}

#[test]
fn abort_runs_nothing() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let out = approve(&sb, &server, "a\n", None);
    expect_code(&out, 1);
    assert!(stderr(&out).contains("aborted"), "{}", stderr(&out));
    assert_eq!(server.count("Your step"), 0);
    // End of input counts as abort too.
    let out = approve(&sb, &server, "", None);
    expect_code(&out, 1);
    assert_eq!(server.count("Your step"), 0);
}

#[test]
fn edit_validates_and_reopens_the_editor_until_the_plan_is_valid() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    // First save: a plan with a cycle and an unknown dependency. Second save: a valid
    // one-step plan.
    let bad = r#"{"goal": "Compare two things", "steps": [
        {"id": "x", "description": "one", "dependencies": ["y"]},
        {"id": "y", "description": "two", "dependencies": ["x", "ghost"]}]}"#;
    let good = r#"{"goal": "Compare two things", "steps": [
        {"id": "only", "description": "Do it all at once", "dependencies": []}]}"#;
    sb.write("bad.json", bad);
    sb.write("good.json", good);
    let script = sb.write(
        "editor.sh",
        &format!(
            "#!/bin/sh\nn=$(cat {count} 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > {count}\nif [ $n = 1 ]; then cp {bad} \"$1\"; else cp {good} \"$1\"; fi\n",
            count = sb.path("count").display(),
            bad = sb.path("bad.json").display(),
            good = sb.path("good.json").display(),
        ),
    );
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    let out = approve(&sb, &server, "e\nr\n", Some(script.to_str().unwrap()));
    expect_code(&out, 0);
    let err = stderr(&out);
    assert!(err.contains("the edited plan is invalid"), "{err}");
    assert!(err.contains("cycle") && err.contains("`ghost`"), "{err}");
    assert_eq!(
        std::fs::read_to_string(sb.path("count")).unwrap().trim(),
        "2"
    );
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["plan"]["steps"][0]["id"], "only");
    assert_eq!(server.count(&step_prompt("only")), 1);
    assert_eq!(server.count(&step_prompt("a")), 0);
}

#[test]
fn editor_that_changes_nothing_goes_back_to_the_question() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let out = approve(&sb, &server, "e\nbogus\na\n", Some("true"));
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("left unchanged"), "{err}");
    assert!(err.contains("unknown answer"), "{err}");
    assert_eq!(server.count("Your step"), 0);
}

#[test]
fn an_approved_plan_replans_under_adaptive() {
    use plan_llm::testing::FakeReply;
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    server.on_first(&step_prompt("b"), FakeReply::error(400, "fake failure"));
    server.on_first(
        "Plan again from the current state",
        FakeReply::Text(
            r#"{"goal": "Compare two things", "steps": [
            {"id": "b2", "description": "Describe the second thing from memory", "dependencies": []},
            {"id": "c2", "description": "Compare them", "dependencies": ["a", "b2"]}]}"#
                .to_owned(),
        ),
    );
    let out = approve_with(&sb, &server, "r\n", None, &["--strategy", "adaptive"]);
    expect_code(&out, 0);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["status"], "succeeded", "{v:#}");
    assert_eq!(v["replans"], 1, "{v:#}");
    assert_eq!(server.count(&step_prompt("a")), 1);
}

#[test]
fn an_approved_hierarchical_plan_keeps_its_goal_tree() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let out = approve_with(&sb, &server, "r\n", None, &["--strategy", "hierarchical"]);
    expect_code(&out, 0);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["status"], "succeeded", "{v:#}");
    let tree = &v["tree"];
    assert_eq!(tree["status"], "completed", "{v:#}");
    let children: Vec<&str> = tree["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(children, ["gather", "write"], "{v:#}");
}
