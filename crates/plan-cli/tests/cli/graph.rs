//! `plan graph` and plan-file validation errors.

use crate::support::{Sandbox, expect_code, output, stderr, stdout};

const PLAN: &str = r#"{
  "goal": "Research the top 3 Python web frameworks and create a comparison table",
  "steps": [
    {"id": "search", "description": "Find the most used Python web frameworks", "dependencies": []},
    {"id": "compare", "description": "Compare them on speed, features, ecosystem",
     "dependencies": ["search"], "kind": "analyze", "agent": "analyst",
     "fallback": {"description": "Compare them from general knowledge"}},
    {"id": "check", "description": "Check the table covers all three", "dependencies": ["compare"],
     "kind": "verify"}
  ]
}"#;

#[test]
fn formats() {
    let sb = Sandbox::new();
    sb.write("plan.json", PLAN);
    for format in ["mermaid", "dot", "tree"] {
        let out = output(&mut sb.plan(["graph", "plan.json", "--format", format]));
        expect_code(&out, 0);
        insta::assert_snapshot!(format!("graph_{format}"), stdout(&out));
    }
}

#[test]
fn reads_standard_input() {
    let sb = Sandbox::new();
    let path = sb.write("plan.json", PLAN);
    let out = output(
        sb.plan(["graph", "-", "--format", "tree"])
            .stdin(std::fs::File::open(path).unwrap()),
    );
    expect_code(&out, 0);
    assert!(stdout(&out).contains("compare"));
}

#[test]
fn invalid_plan_lists_every_problem() {
    let sb = Sandbox::new();
    sb.write(
        "bad.json",
        r#"{"goal": "g", "steps": [
            {"id": "a", "description": "first", "dependencies": ["c"]},
            {"id": "b", "description": "second", "dependencies": ["b", "ghost"]},
            {"id": "c", "description": "third", "dependencies": ["a"]},
            {"id": "c", "description": "again", "dependencies": []}
        ]}"#,
    );
    let out = output(&mut sb.plan(["graph", "bad.json", "--format", "tree"]));
    expect_code(&out, 2);
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    for needle in ["bad.json", "depends on itself", "`ghost`", "`c`", "cycle"] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn malformed_json_names_the_position() {
    let sb = Sandbox::new();
    sb.write("broken.json", "{\"goal\": \"g\",\n \"steps\": [{]}");
    let out = output(&mut sb.plan(["graph", "broken.json"]));
    expect_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("broken.json") && err.contains("line 2"),
        "{err}"
    );
}

#[test]
fn empty_plan_and_missing_file() {
    let sb = Sandbox::new();
    sb.write("empty.json", r#"{"goal": "g", "steps": []}"#);
    let out = output(&mut sb.plan(["graph", "empty.json"]));
    expect_code(&out, 2);
    assert!(stderr(&out).contains("no steps"), "{}", stderr(&out));

    let out = output(&mut sb.plan(["graph", "missing.json"]));
    expect_code(&out, 2);
    assert!(stderr(&out).contains("missing.json"));
}
