//! Output conventions: no colours when not a terminal, errors on stderr.

use crate::support::{Sandbox, expect_code, output, stderr};

#[test]
fn no_colours_when_not_a_terminal() {
    let sb = Sandbox::new();
    sb.write("bad.json", r#"{"goal": "g", "steps": []}"#);
    let out = output(&mut sb.plan(["graph", "bad.json"]));
    expect_code(&out, 2);
    assert!(!stderr(&out).contains('\x1b'), "{:?}", stderr(&out));
    assert!(!out.stdout.contains(&0x1b));
}

#[test]
fn bad_config_file_is_a_usage_error() {
    let sb = Sandbox::new();
    sb.write("plan.toml", "modle = \"openai:gpt-4o-mini\"\n");
    let out = output(&mut sb.plan(["runs"]));
    expect_code(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("plan.toml") && err.contains("modle"), "{err}");
}
