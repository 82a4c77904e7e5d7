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

/// A layered plan of `n` steps, each depending on the one before it.
fn chain_plan(n: usize) -> String {
    let steps: Vec<String> = (0..n)
        .map(|i| {
            let deps = if i == 0 {
                String::new()
            } else {
                format!(r#""s{}""#, i - 1)
            };
            format!(r#"{{"id": "s{i}", "description": "Step {i}", "dependencies": [{deps}]}}"#)
        })
        .collect();
    format!(
        r#"{{"goal": "A long chain", "steps": [{}]}}"#,
        steps.join(", ")
    )
}

#[test]
fn plan_files_of_any_size_up_to_max_steps_are_taken() {
    let sb = Sandbox::new();
    let file = sb.write("long.json", &chain_plan(500));
    // Over the old fixed limit of 200, within the default of 10,000.
    let out = output(&mut sb.plan(["graph", file.to_str().unwrap(), "--format", "mermaid"]));
    expect_code(&out, 0);
    assert!(stdout(&out).contains("s498 --> s499"), "{}", stdout(&out));
    // A lower cap refuses it, naming the count, the cap and the flag.
    let out = output(&mut sb.plan(["graph", file.to_str().unwrap(), "--max-steps", "100"]));
    expect_code(&out, 2);
    let err = stderr(&out);
    for needle in ["500 steps", "limit of 100", "--max-steps"] {
        assert!(err.contains(needle), "{needle} missing: {err}");
    }
    let out = output(&mut sb.plan(["exec", file.to_str().unwrap(), "--max-steps", "100"]));
    expect_code(&out, 2);
    assert!(stderr(&out).contains("limit of 100"), "{}", stderr(&out));
}
