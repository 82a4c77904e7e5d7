//! `--help` of every command, snapshotted; each has an example.

use crate::support::{Sandbox, expect_code, output, stdout};

const COMMANDS: &[&[&str]] = &[
    &[],
    &["run"],
    &["plan"],
    &["exec"],
    &["resume"],
    &["approve"],
    &["reject"],
    &["wait"],
    &["serve"],
    &["mcp"],
    &["worker"],
    &["submit"],
    &["runs"],
    &["runs", "prune"],
    &["show"],
    &["diff"],
    &["replay"],
    &["rerun"],
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

/// `--quiet` is taken before the command and after each command that shows progress.
#[test]
fn quiet_is_taken_where_progress_is_shown() {
    let sb = Sandbox::new();
    for command in [
        &["run"][..],
        &["plan"],
        &["exec"],
        &["resume"],
        &["approve"],
        &["model", "pull"],
    ] {
        let mut args: Vec<&str> = command.to_vec();
        args.push("--help");
        let text = stdout(&output(&mut sb.plan(&args)));
        assert!(
            text.contains("-q, --quiet"),
            "plan {} --help:\n{text}",
            command.join(" ")
        );
    }
    for command in [
        &["wait"][..],
        &["reject"],
        &["serve"],
        &["mcp"],
        &["worker"],
        &["submit"],
    ] {
        let mut args: Vec<&str> = command.to_vec();
        args.push("--help");
        let text = stdout(&output(&mut sb.plan(&args)));
        assert!(
            !text.contains("--quiet"),
            "plan {} --help:\n{text}",
            command.join(" ")
        );
    }
    let text = stdout(&output(&mut sb.plan(["--help"])));
    assert!(text.contains("-q, --quiet"), "{text}");
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
        // `--quiet` only where there is progress to quieten.
        &["wait", "r1", "--quiet"],
        &["reject", "r1", "-q"],
        &["serve", "--quiet"],
        &["mcp", "-q"],
        &["worker", "--quiet"],
        &["submit", "g", "--quiet"],
        &["runs", "-q"],
        // `plan plan --store` is where the estimate learns from: nothing without it.
        &["plan", "g", "--store", "s.db"],
    ] {
        let out = output(&mut sb.plan(args));
        expect_code(&out, 2);
    }
}
