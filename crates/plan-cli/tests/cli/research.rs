//! `plan run --research DIR`: answers from a folder of documents cite the right files.

use std::path::PathBuf;

use crate::support::{Sandbox, expect_code, model_flags, output, stdout};
use plan_llm::testing::{FakeOpenAi, FakeReply};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/research-corpus")
}

fn research_server(search: &str) -> FakeOpenAi {
    let plan = serde_json::json!({"goal": "g", "steps": [
        {"id": "search", "description": search, "kind": "search", "agent": "researcher"},
        {"id": "analyze", "description": "Pick out the facts", "kind": "analyze", "dependencies": ["search"]},
        {"id": "report", "description": "Answer the question", "kind": "synthesize", "dependencies": ["analyze"]},
    ]});
    let server = FakeOpenAi::start_detached();
    server
        .on("You are a planner", FakeReply::Text(plan.to_string()))
        .on(
            "careful research analyst",
            FakeReply::Text("The answer is in the first result [search#1].".to_owned()),
        )
        .on(
            "final research report",
            FakeReply::Text("Here is the answer [search#1].".to_owned()),
        )
        .otherwise(FakeReply::Text("unexpected request".to_owned()));
    server
}

fn ask(search: &str) -> String {
    let sb = Sandbox::new();
    let server = research_server(search);
    let mut args = vec![
        "run".to_owned(),
        "--strategy".to_owned(),
        "dag".to_owned(),
        "--research".to_owned(),
        corpus().display().to_string(),
        search.to_owned(),
    ];
    args.extend(model_flags(&server));
    let out = output(&mut sb.plan(args));
    expect_code(&out, 0);
    assert_eq!(
        server.count("You write the final answer"),
        0,
        "no separate synthesis"
    );
    stdout(&out)
}

#[test]
fn research_answers_cite_the_files_that_hold_the_answer() {
    let answer = ask("Who discovered the planet Vessa?");
    assert!(
        answer.contains("Here is the answer [search#1]."),
        "{answer}"
    );
    assert!(
        answer.contains("Sources:\n[search#1] astronomy/vessa.md"),
        "{answer}"
    );
    let answer = ask("Quillon package manager manifest file");
    assert!(
        answer.contains("Sources:\n[search#1] software/quillon-package-manager.md"),
        "{answer}"
    );
}

#[test]
fn research_needs_a_folder() {
    let sb = Sandbox::new();
    let server = research_server("x");
    let mut args = vec!["run", "--research", "/no/such/folder", "q"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    args.extend(model_flags(&server));
    let out = output(&mut sb.plan(args));
    expect_code(&out, 2);
    assert!(crate::support::stderr(&out).contains("--research /no/such/folder: not a folder"));
}

#[test]
fn search_local_dir_is_the_long_form_of_research() {
    let sb = Sandbox::new();
    let question = "Who discovered the planet Vessa?";
    let server = research_server(question);
    let mut args = vec![
        "run".to_owned(),
        "--strategy".to_owned(),
        "dag".to_owned(),
        "--search".to_owned(),
        format!("local:{}", corpus().display()),
        question.to_owned(),
    ];
    args.extend(model_flags(&server));
    let out = output(&mut sb.plan(args));
    expect_code(&out, 0);
    assert!(
        stdout(&out).contains("Sources:\n[search#1] astronomy/vessa.md"),
        "{}",
        stdout(&out)
    );
}
