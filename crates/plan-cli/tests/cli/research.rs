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
        answer.starts_with("Here is the answer [search#1].\n\nSources:\n"),
        "{answer}"
    );
    // The passage retrieved before planning, and the search step's hit the report cites.
    assert!(answer.contains("[doc#1] astronomy/vessa.md:"), "{answer}");
    assert!(
        answer.contains("[search#1] astronomy/vessa.md:"),
        "{answer}"
    );
    let answer = ask("Quillon package manager manifest file");
    assert!(
        answer.contains("[search#1] software/quillon-package-manager.md"),
        "{answer}"
    );
}

/// `plan run --research CORPUS QUESTION --json` against `server`, with extra flags.
fn research_json(server: &FakeOpenAi, question: &str, extra: &[&str]) -> serde_json::Value {
    let sb = Sandbox::new();
    let mut args = vec![
        "run".to_owned(),
        "--research".to_owned(),
        corpus().display().to_string(),
        question.to_owned(),
        "--json".to_owned(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args.extend(model_flags(server));
    let out = output(&mut sb.plan(args));
    expect_code(&out, 0);
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[test]
fn the_json_report_lists_the_cited_files_relative_to_the_folder() {
    let server = research_server("Who discovered the planet Vessa?");
    let v = research_json(
        &server,
        "Who discovered the planet Vessa?",
        &["--strategy", "dag"],
    );
    assert_eq!(v["sources"], serde_json::json!(["astronomy/vessa.md"]));
    assert_eq!(v["grounding"]["abstained"], false);
    // The planner was given the passages found for the question, with their paths.
    let planner = server
        .requests()
        .into_iter()
        .find(|r| r.body.to_string().contains("You are a planner"))
        .unwrap();
    assert!(
        planner
            .body
            .to_string()
            .contains("[doc#1] astronomy/vessa.md:"),
        "{}",
        planner.body
    );
}

#[test]
fn under_auto_a_covered_question_is_answered_in_one_call_from_the_passages() {
    // With --approve too: a direct answer has no plan to approve, so the route holds.
    for extra in [&[][..], &["--approve"][..]] {
        let server = FakeOpenAi::start_detached();
        server.otherwise(FakeReply::Text(
            "The Heron H4 carries up to 350 kg [doc#1].".to_owned(),
        ));
        let v = research_json(
            &server,
            "What payload can the Heron H4 warehouse robot carry?",
            extra,
        );
        assert_heron_answered_directly(&v, &server, extra);
    }
}

fn assert_heron_answered_directly(v: &serde_json::Value, server: &FakeOpenAi, extra: &[&str]) {
    assert_eq!(v["strategy"], "auto", "{extra:?}");
    assert_eq!(v["route"], "direct", "{extra:?}");
    assert_eq!(v["usage"]["llm_calls"], 1, "{extra:?}");
    assert_eq!(server.requests().len(), 1, "{extra:?}");
    assert_eq!(
        v["sources"],
        serde_json::json!(["companies/tessaly-heron.md"])
    );
    let answer = v["answer"].as_str().unwrap();
    assert!(
        answer.starts_with("The Heron H4 carries up to 350 kg [doc#1].\n\nSources:\n[doc#1] companies/tessaly-heron.md:"),
        "{answer}"
    );
}

#[test]
fn a_question_the_documents_do_not_answer_is_declined_without_asking_the_model() {
    let server = FakeOpenAi::start_detached();
    server.otherwise(FakeReply::Text("Brazil won it.".to_owned()));
    for extra in [
        &["--strategy", "auto"][..],
        &["--strategy", "dag"],
        &["--strategy", "adaptive"],
        &["--strategy", "auto", "--approve"],
        &["--strategy", "dag", "--approve"],
    ] {
        let v = research_json(&server, "Who won the 1998 football World Cup?", extra);
        assert_eq!(v["status"], "succeeded");
        assert_eq!(v["sources"], serde_json::json!([]));
        assert_eq!(v["grounding"]["abstained"], true);
        assert_eq!(v["usage"]["llm_calls"], 0);
        let answer = v["answer"].as_str().unwrap();
        assert!(
            answer.starts_with("The documents do not contain an answer to this question"),
            "{answer}"
        );
        assert!(!answer.contains("Brazil"), "{answer}");
    }
    assert!(server.requests().is_empty(), "the model was never asked");
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
        stdout(&out).contains("[search#1] astronomy/vessa.md"),
        "{}",
        stdout(&out)
    );
}

/// The questions the embedded-model test asks (the bench, `grounded_research`, asks them
/// all): single-hop questions answered directly, a two-hop one that is planned, a
/// two-part one searched part by part, and three the documents do not answer (near misses,
/// one of them a two-part question whose second part no document holds).
const EMBEDDED_SUBSET: &[&str] = &[
    "quillon-designer",
    "heron-payload",
    "tallow-rings",
    "lindqvist-moon",
    "skellan-ferry",
    "world-cup",
    "zorblax",
    "wren-price",
];

#[test]
fn grounded_research_on_the_embedded_model_cites_its_sources_and_abstains() {
    use crate::research_eval::{Scores, cases, line, run_case};

    let Some(model) = crate::local::cached_model() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let plan = std::path::Path::new(env!("CARGO_BIN_EXE_plan"));
    let results: Vec<_> = cases()
        .into_iter()
        .filter(|c| EMBEDDED_SUBSET.contains(&c.id.as_str()))
        .map(|case| run_case(plan, home.path(), model.parent().unwrap(), &case))
        .collect();
    assert_eq!(
        results.len(),
        EMBEDDED_SUBSET.len(),
        "every id is in questions.toml"
    );
    for r in &results {
        eprintln!("{}", line(r));
    }
    let scores = Scores::of(&results);
    eprintln!("{scores}");
    assert!(scores.fully_cited_rate() >= 0.8, "{scores}");
    assert!(scores.precision >= 0.6, "{scores}");
    assert_eq!(scores.abstention_rate(), 1.0, "{scores}");
    assert_eq!(scores.false_abstentions, 0, "{scores}");
}
