//! What a run keeps through approval and resume, through the public `Agent` API over
//! plan-llm's fake OpenAI-compatible server and a SQLite store: an edited plan approved
//! for a replan keeps the steps the run finished (each asked for once), and a
//! hierarchical run keeps its goal tree through approval and through cancel and resume.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use plan_core::{Plan, RunStatus, Step, StepId};
use plan_exec::context::CancelToken;
use plan_exec::policy::{RunOptions, StepPolicy};
use plan_exec::store::RunStore;
use plan_llm::testing::{FakeOpenAi, FakeReply, FakeRequest};
use plan_llm::{Flavour, OpenAi};
use plan_sqlite::SqliteStore;
use plan_strategies::{Agent, AgentBuilder, ReportExt, RunReport, StrategyKind};

const GOAL: &str = "Fetch and parse the data";

const PLAN: &str = r#"{"goal": "Fetch and parse the data", "steps": [
    {"id": "fetch", "description": "Fetch the data", "dependencies": []},
    {"id": "parse", "description": "Parse it with the broken parser", "dependencies": ["fetch"]}]}"#;

const REPLAN: &str = r#"{"steps": [
    {"id": "parse2", "description": "Parse it by hand", "dependencies": ["fetch"]}]}"#;

/// The needle of step `id`'s prompt.
fn step_prompt(id: &str) -> String {
    format!("Your step (`{id}`)")
}

/// The step a request is for, from its prompt.
fn step_of(r: &FakeRequest) -> Option<String> {
    let text = r.last_user();
    let start = text.find("Your step (`")? + "Your step (`".len();
    let end = text[start..].find('`')? + start;
    Some(text[start..end].to_owned())
}

/// A server that plans, replans, decomposes, writes the answer, and answers each step
/// with `output of <id>`.
async fn server() -> FakeOpenAi {
    let server = FakeOpenAi::start().await;
    server
        .on("Plan again from the current state", FakeReply::text(REPLAN))
        .on("You are a planner", FakeReply::text(PLAN))
        .on("You break goals down", FakeReply::with(decompose))
        .on("You write the final answer", FakeReply::text("the answer"))
        .on(
            &step_prompt("parse"),
            FakeReply::error(400, "parser crashed"),
        )
        .otherwise(FakeReply::with(|r| {
            FakeReply::text(format!("output of {}", step_of(r).unwrap_or_default()))
        }));
    server
}

/// The goal splits into `gather` (itself split into `list` and `check`) and `write`.
fn decompose(r: &FakeRequest) -> FakeReply {
    let text = r.text();
    if text.contains("Goal: Gather the facts") {
        FakeReply::text(
            r#"{"atomic": false, "subgoals": [
            {"id": "list", "goal": "List the facts", "dependencies": []},
            {"id": "check", "goal": "Check the facts", "dependencies": ["list"]}]}"#,
        )
    } else if text.contains("This goal is part of a larger one") {
        FakeReply::text(r#"{"atomic": true, "subgoals": []}"#)
    } else {
        FakeReply::text(
            r#"{"atomic": false, "subgoals": [
            {"id": "gather", "goal": "Gather the facts", "dependencies": []},
            {"id": "write", "goal": "Write the summary", "dependencies": ["gather"]}]}"#,
        )
    }
}

/// An agent over `server` and the store at `path`, steps not retried.
fn agent(server: &FakeOpenAi, path: &Path, strategy: StrategyKind) -> AgentBuilder {
    let provider = OpenAi::new("fake-model", None)
        .with_base_url(server.base_url())
        .with_flavour(Flavour::compatible());
    Agent::builder()
        .provider(provider)
        .strategy(strategy)
        .run_options(RunOptions::default().with_policy(StepPolicy::default().with_retries(0)))
        .store(SqliteStore::open(path).unwrap())
}

/// The run's report as the store has it (what `plan show --json` prints).
async fn stored_report(path: &Path, report: &RunReport) -> RunReport {
    let stored = SqliteStore::open(path)
        .unwrap()
        .load_run(&report.run_id)
        .await
        .unwrap()
        .unwrap();
    RunReport::from_stored(&stored)
}

/// Runs the adaptive agent with `approve_replans` until the replan waits.
async fn waiting_replan(server: &FakeOpenAi, path: &Path) -> RunReport {
    let waiting = agent(server, path, StrategyKind::Adaptive)
        .approve_replans(true)
        .build()
        .unwrap()
        .run(GOAL)
        .await
        .unwrap();
    assert_eq!(waiting.status, RunStatus::AwaitingApproval, "{waiting:?}");
    assert_eq!(waiting.replans, 1);
    assert_eq!(server.count(&step_prompt("fetch")), 1);
    waiting
}

fn step_ids(report: &RunReport) -> Vec<&str> {
    report.steps.iter().map(|s| s.id.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_replan_keeps_the_finished_steps_it_leaves_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let server = server().await;
    let waiting = waiting_replan(&server, &path).await;
    let mut edited: Plan = waiting.plan.clone().unwrap();
    let parse2 = edited
        .steps
        .iter_mut()
        .find(|s| s.id.as_str() == "parse2")
        .unwrap();
    parse2.description = "Parse it by hand, line by line".into();
    edited
        .steps
        .push(Step::new("summarise", "Summarise the records").depends_on(["parse2"]));

    // Approved by another agent (another process) over the same store.
    let done = agent(&server, &path, StrategyKind::Adaptive)
        .build()
        .unwrap()
        .approve(&waiting.run_id, Some(edited))
        .await
        .unwrap();
    assert!(done.is_success(), "{:?}", done.failure);
    assert_eq!(done.run_id, waiting.run_id);
    assert_eq!(
        server.count(&step_prompt("fetch")),
        1,
        "the finished step is never asked for again"
    );
    let edited_parse2 = server
        .requests()
        .iter()
        .filter(|r| step_of(r).as_deref() == Some("parse2"))
        .map(|r| r.text())
        .collect::<Vec<_>>();
    assert_eq!(edited_parse2.len(), 1);
    assert!(
        edited_parse2[0].contains("Parse it by hand, line by line"),
        "the edited step runs as edited: {edited_parse2:?}"
    );
    assert_eq!(server.count(&step_prompt("summarise")), 1);
    assert_eq!(step_ids(&done), ["fetch", "parse2", "summarise"]);
    let fetch = done.step("fetch").unwrap();
    assert!(fetch.reused, "{fetch:?}");
    assert_eq!(fetch.output.as_deref(), Some("output of fetch"));
    assert!(done.warnings.is_empty(), "{:?}", done.warnings);
    assert_eq!(done.answer.as_deref(), Some("the answer"));
    let stored = stored_report(&path, &done).await;
    assert_eq!(stored.status, RunStatus::Succeeded);
    assert_eq!(step_ids(&stored), step_ids(&done));
    assert_eq!(stored.output("fetch"), Some("output of fetch"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_step_the_edit_changed_runs_again_under_a_fresh_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let server = server().await;
    let waiting = waiting_replan(&server, &path).await;
    let mut edited: Plan = waiting.plan.clone().unwrap();
    edited.steps[0].description = "Fetch the data again, from the mirror".into();

    let done = agent(&server, &path, StrategyKind::Adaptive)
        .build()
        .unwrap()
        .approve(&waiting.run_id, Some(edited))
        .await
        .unwrap();
    assert!(done.is_success(), "{:?}", done.failure);
    assert_eq!(step_ids(&done), ["fetch_v2", "parse2"]);
    assert_eq!(server.count(&step_prompt("fetch")), 1);
    assert_eq!(server.count(&step_prompt("fetch_v2")), 1);
    assert_eq!(
        done.plan.as_ref().unwrap().steps[1].dependencies,
        [StepId::new("fetch_v2")]
    );
    assert!(
        done.warnings.iter().any(|w| w.contains(
            "step `fetch` had completed, but the approved plan changed it: it runs again as `fetch_v2`"
        )),
        "{:?}",
        done.warnings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hierarchical_run_keeps_its_goal_tree_through_approval() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let server = server().await;
    let straight = agent(&server, &path, StrategyKind::Hierarchical)
        .build()
        .unwrap()
        .run(GOAL)
        .await
        .unwrap();
    assert!(straight.is_success(), "{:?}", straight.failure);
    let expected = straight.tree().expect("a straight run has its tree");
    assert_eq!(expected.status, "completed");
    assert_eq!(expected.children.len(), 2);
    assert_eq!(expected.children[0].children.len(), 2, "{expected:#?}");

    let parked = agent(&server, &path, StrategyKind::Hierarchical)
        .build()
        .unwrap()
        .plan_for_approval(GOAL)
        .await
        .unwrap();
    assert_eq!(parked.status, RunStatus::AwaitingApproval);
    let waiting_tree = stored_report(&path, &parked).await.tree();
    assert_eq!(
        waiting_tree.map(|t| t.status),
        Some("pending".to_owned()),
        "the tree waits with the run"
    );

    let approved = agent(&server, &path, StrategyKind::Hierarchical)
        .build()
        .unwrap()
        .approve(&parked.run_id, None)
        .await
        .unwrap();
    assert!(approved.is_success(), "{:?}", approved.failure);
    assert_eq!(approved.tree(), Some(expected.clone()));
    assert_eq!(stored_report(&path, &approved).await.tree(), Some(expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_plan_that_no_longer_fits_the_tree_drops_it_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let server = server().await;
    let parked = agent(&server, &path, StrategyKind::Hierarchical)
        .build()
        .unwrap()
        .plan_for_approval(GOAL)
        .await
        .unwrap();
    let mut edited = parked.plan.clone().unwrap();
    edited.steps.pop();
    let approved = agent(&server, &path, StrategyKind::Hierarchical)
        .build()
        .unwrap()
        .approve(&parked.run_id, Some(edited))
        .await
        .unwrap();
    assert!(approved.is_success(), "{:?}", approved.failure);
    assert_eq!(approved.tree(), None);
    assert!(
        approved
            .warnings
            .iter()
            .any(|w| w.contains("the goal tree was dropped from the report")),
        "{:?}",
        approved.warnings
    );
    assert_eq!(stored_report(&path, &approved).await.tree(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hierarchical_run_keeps_its_goal_tree_through_cancel_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let server = server().await;
    let expected = agent(&server, &path, StrategyKind::Hierarchical)
        .build()
        .unwrap()
        .run(GOAL)
        .await
        .unwrap()
        .tree()
        .expect("a straight run has its tree");

    // The second leaf's request cancels the run; its reply comes too late to count.
    let cancel = CancelToken::new();
    let armed = Arc::new(AtomicBool::new(true));
    let (trigger, fired) = (cancel.clone(), armed.clone());
    server.on_first(
        &step_prompt("gather/check"),
        FakeReply::with(move |r| {
            if fired.swap(false, Ordering::SeqCst) {
                trigger.cancel();
            }
            FakeReply::text(format!("output of {}", step_of(r).unwrap_or_default()))
        }),
    );
    server.latency(Duration::from_millis(300));
    let cancelled = agent(&server, &path, StrategyKind::Hierarchical)
        .cancel_token(cancel)
        .build()
        .unwrap()
        .run(GOAL)
        .await
        .unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled, "{cancelled:?}");
    assert!(
        !armed.load(Ordering::SeqCst),
        "the run was cancelled mid-way"
    );
    let partial = cancelled.tree().expect("a cancelled run keeps its tree");
    assert_ne!(partial.status, "completed");

    server.latency(Duration::ZERO);
    let resumed = agent(&server, &path, StrategyKind::Hierarchical)
        .build()
        .unwrap()
        .resume(&cancelled.run_id)
        .await
        .unwrap();
    assert!(resumed.is_success(), "{:?}", resumed.failure);
    assert!(resumed.step("gather/list").unwrap().reused);
    assert_eq!(server.count(&step_prompt("gather/list")), 2, "once per run");
    assert_eq!(resumed.tree(), Some(expected.clone()));
    assert_eq!(stored_report(&path, &resumed).await.tree(), Some(expected));
}
