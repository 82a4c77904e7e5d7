//! `--help` of every command, snapshotted; each has an example.

use crate::support::{Sandbox, expect_code, output, stdout};

const COMMANDS: &[&[&str]] = &[
    &[],
    &["run"],
    &["plan"],
    &["exec"],
    &["resume"],
    &["runs"],
    &["show"],
    &["graph"],
    &["sandbox"],
    &["sandbox", "run"],
    &["model"],
    &["model", "pull"],
    &["model", "list"],
];

#[test]
fn help_texts() {
    let sb = Sandbox::new();
    for command in COMMANDS {
        let mut args: Vec<&str> = command.to_vec();
        args.push("--help");
        let out = output(&mut sb.plan(&args));
        expect_code(&out, 0);
        let text = stdout(&out);
        assert!(
            text.contains("Examples:")
                || command.len() == 1 && ["sandbox", "model"].contains(&command[0]),
            "`plan {}` has no example",
            args.join(" ")
        );
        assert!(
            !text.contains('\x1b'),
            "colours in help when not a terminal"
        );
        let name = if command.is_empty() {
            "plan".to_owned()
        } else {
            format!("plan_{}", command.join("_"))
        };
        insta::assert_snapshot!(name, text);
    }
}

#[test]
fn version() {
    let out = output(&mut Sandbox::new().plan(["--version"]));
    expect_code(&out, 0);
    assert_eq!(
        stdout(&out),
        format!("plan {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_exit_2() {
    let sb = Sandbox::new();
    for args in [
        &["run"][..],
        &["run", "g", "--strategy", "sideways"],
        &["run", "g", "--concurrency", "many"],
        &["graph", "x.json", "--format", "png"],
        &["sandbox", "run", "f.py"],
        &["resume", "r1", "--tools", "search_docs"],
        &["frobnicate"],
    ] {
        let out = output(&mut sb.plan(args));
        expect_code(&out, 2);
    }
}
