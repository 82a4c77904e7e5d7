//! Issue 23, "One run, every door", through the public `Agent` API: a verify step's FAIL
//! fails it on the tool route and on an agent profile's route as on the plain model route,
//! and the synthesis reads every final step of a plan larger than one call reads.

mod support;

use std::sync::Arc;

use plan_core::{EventKind, Plan, RunStatus, Step, StepBody, StepKind, StepStatus};
use plan_exec::policy::{Backoff, RunOptions, StepPolicy};
use plan_llm::{Capabilities, Purpose, Reply, Request, ScriptedModel, ToolSpec};
use plan_strategies::{
    Agent, AgentCatalogue, AgentProfile, RunReport, StrategyKind, StrategyOptions,
};
use plan_tools::{DynTool, ToolContext, ToolError, ToolOutput, ToolSet};
use support::{Fake, is_for, step_of, system_text, user_text};

// --- verify verdicts on the tool and team routes ---

/// A tool the steps may call (the checks here answer without it).
struct Noop;

#[async_trait::async_trait]
impl DynTool for Noop {
    fn spec(&self) -> ToolSpec {
        ToolSpec::new(
            "noop",
            "Does nothing",
            serde_json::json!({"type": "object", "properties": {}}),
        )
    }

    async fn call_json(
        &self,
        _args: serde_json::Value,
        _ctx: &ToolContext,
    ) -> Result<ToolOutput, ToolError> {
        Ok(ToolOutput::Text(String::new()))
    }
}

fn tools() -> ToolSet {
    ToolSet::new().with_dyn(Arc::new(Noop))
}

fn no_backoff() -> RunOptions {
    RunOptions::default().with_policy(StepPolicy::default().with_backoff(Backoff::none()))
}

fn counted_plan(fallback: bool) -> Plan {
    let mut check = Step::new("check", "Check the count is 25")
        .depends_on(["count"])
        .with_kind(StepKind::Verify);
    if fallback {
        check = check.with_fallback(StepBody::new("Check the count by hand"));
    }
    Plan::new(
        "count the items",
        vec![Step::new("count", "Count the items"), check],
    )
}

/// Steps: the count is 24; the check says FAIL; a check by hand passes.
fn counting(id: &str, r: &Request) -> Result<String, String> {
    Ok(match id {
        "count" => "24".into(),
        "check" if user_text(r).contains("by hand") => "PASS: counted 25 by hand".into(),
        "check" => "FAIL: the count is 24 but the list has 25 items".into(),
        other => format!("output of {other}"),
    })
}

fn check_failures(report: &RunReport) -> Vec<(String, bool)> {
    report
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::StepFailed {
                step,
                error,
                retrying,
            } if step.as_str() == "check" => Some((error.clone(), *retrying)),
            _ => None,
        })
        .collect()
}

const FAILED: &str = "verification failed: the count is 24 but the list has 25 items";

#[tokio::test]
async fn a_fail_verdict_fails_a_step_run_by_the_tool_loop_and_its_fallback_runs() {
    for fallback in [false, true] {
        let fake = Fake::non_streaming().steps(counting);
        let report = Agent::builder()
            .provider(fake.model.clone())
            .tools(tools())
            .run_options(no_backoff())
            .build()
            .unwrap()
            .execute(counted_plan(fallback))
            .await
            .unwrap();
        assert_eq!(check_failures(&report), [(FAILED.to_owned(), false)]);
        let check = report.step("check").unwrap();
        // Through the tool loop, not one model call.
        let checks: Vec<Request> = fake
            .requests()
            .into_iter()
            .filter(|r| step_of(r).as_deref() == Some("check"))
            .collect();
        assert!(
            checks.iter().all(|r| is_for(r, Purpose::Tool)),
            "{checks:?}"
        );
        if fallback {
            assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.failure);
            assert!(check.fallback);
            assert_eq!(check.output.as_deref(), Some("PASS: counted 25 by hand"));
            assert_eq!(checks.len(), 2, "the check, then its fallback");
        } else {
            assert_eq!(report.status, RunStatus::Failed);
            assert_eq!(check.status, StepStatus::Failed);
            assert_eq!(check.error.as_deref(), Some(FAILED));
            assert_eq!(checks.len(), 1, "a FAIL is not asked again");
            assert!(report.answer.is_none());
        }
    }
}

#[tokio::test]
async fn a_fail_verdict_on_an_agent_profiles_route_reaches_the_replanner() {
    let fake = Fake::non_streaming()
        .plan(
            r#"{"steps": [{"id": "recount", "description": "Count the items again, one by one", "dependencies": []}]}"#,
        )
        .steps(counting);
    let catalogue = AgentCatalogue::new()
        .with(
            AgentProfile::new("reviewer", "Checks results")
                .with_system_prompt("You are the reviewer.")
                .with_kinds([StepKind::Verify]),
        )
        .unwrap();
    let report = Agent::builder()
        .provider(fake.model.clone())
        .strategy(StrategyKind::Adaptive)
        .agent_profiles(catalogue)
        .run_options(no_backoff())
        .build()
        .unwrap()
        .execute(counted_plan(false))
        .await
        .unwrap();
    assert_eq!(check_failures(&report), [(FAILED.to_owned(), false)]);
    assert!(report.is_success(), "{:?}", report.failure);
    assert_eq!(report.replans, 1);
    let replan = user_text(&fake.planner_requests()[0]);
    assert!(
        replan.contains("the count is 24 but the list has 25 items"),
        "{replan}"
    );
    // The check ran as the reviewer, which was still asked for a verdict.
    let check = fake
        .requests()
        .into_iter()
        .find(|r| step_of(r).as_deref() == Some("check"))
        .unwrap();
    let system = system_text(&check);
    assert!(system.starts_with("You are the reviewer."), "{system}");
    assert!(system.contains("verdict (PASS or FAIL) first"), "{system}");
    assert_eq!(fake.step_requests(), ["count", "check", "recount"]);
}

// --- the synthesis reads every final step ---

/// A model whose step outputs are `FACT-<id>`, whose part summaries repeat every fact they
/// read, and whose answer lists every fact it read.
fn fact_model() -> ScriptedModel {
    let facts = |text: &str| -> Vec<String> {
        text.split_whitespace()
            .filter(|w| w.starts_with("FACT-"))
            .map(str::to_owned)
            .collect()
    };
    ScriptedModel::new()
        .with_capabilities(Capabilities::all().with_streaming(false))
        .respond_to_purpose(Purpose::Synthesize, move |r: &Request| {
            let found = facts(&user_text(r)).join(" ");
            if system_text(r).contains("You summarise") {
                Reply::text(format!("summary: {found}"))
            } else {
                Reply::text(format!("ANSWER: {found}"))
            }
        })
        .respond_with(|r: &Request| Reply::text(format!("FACT-{}", step_of(r).unwrap_or_default())))
}

/// `n` independent steps: every one of them is final.
fn wide_plan(n: usize) -> Plan {
    Plan::new(
        "list the facts",
        (1..=n)
            .map(|i| Step::new(format!("s{i:02}"), format!("Find fact {i}")))
            .collect(),
    )
}

async fn synthesise(model: &ScriptedModel, plan: Plan, step_cap: usize) -> RunReport {
    synthesise_capped(
        model,
        plan,
        step_cap,
        StrategyOptions::default().synthesis_output_cap,
    )
    .await
}

async fn synthesise_capped(
    model: &ScriptedModel,
    plan: Plan,
    step_cap: usize,
    output_cap: usize,
) -> RunReport {
    let mut options = StrategyOptions::default();
    options.synthesis_step_cap = step_cap;
    options.synthesis_output_cap = output_cap;
    Agent::builder()
        .provider(model.clone())
        .options(options)
        .run_options(no_backoff())
        .build()
        .unwrap()
        .execute(plan)
        .await
        .unwrap()
}

fn synthesis_requests(model: &ScriptedModel) -> Vec<Request> {
    model
        .requests()
        .into_iter()
        .filter(|r| is_for(r, Purpose::Synthesize))
        .collect()
}

/// How many results a synthesis request reads (its `### ` sections).
fn results_read(r: &Request) -> usize {
    user_text(r).matches("\n### ").count()
}

fn synthesis_events(report: &RunReport) -> usize {
    report
        .events
        .iter()
        .filter(
            |e| matches!(&e.kind, EventKind::LlmCall { purpose, .. } if purpose == "synthesize"),
        )
        .count()
}

#[tokio::test]
async fn twenty_six_final_steps_are_summarised_in_two_parts_then_answered() {
    let model = fact_model();
    let report = synthesise(&model, wide_plan(26), 24).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.failure);
    let requests = synthesis_requests(&model);
    // ceil(26 / 24) = 2 parts of 13, then the answer from the 2 summaries.
    assert_eq!(requests.len(), 3);
    assert_eq!(synthesis_events(&report), 3);
    let (parts, last) = requests.split_at(2);
    assert_eq!(parts.iter().map(results_read).collect::<Vec<_>>(), [13, 13]);
    assert_eq!(results_read(&last[0]), 2);
    for i in 1..=26 {
        let fact = format!("FACT-s{i:02}");
        let readers = parts
            .iter()
            .filter(|r| user_text(r).contains(&fact))
            .count();
        assert_eq!(readers, 1, "{fact} is read by exactly one part");
        assert!(
            user_text(&last[0]).contains(&fact),
            "{fact} reaches the answer"
        );
        assert!(report.answer.as_deref().unwrap().contains(&fact));
    }
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

#[tokio::test]
async fn many_final_steps_take_as_many_rounds_as_the_cap_implies() {
    let model = fact_model();
    let report = synthesise(&model, wide_plan(50), 4).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.failure);
    let requests = synthesis_requests(&model);
    // 50 results: 13 parts of at most 4; their 13 summaries: 4 parts; then the answer.
    assert_eq!(requests.len(), 13 + 4 + 1);
    assert_eq!(synthesis_events(&report), 18);
    assert!(requests.iter().all(|r| results_read(r) <= 4));
    let answer = report.answer.as_deref().unwrap();
    for i in 1..=50 {
        assert!(
            answer.contains(&format!("FACT-s{i:02}")),
            "s{i:02}: {answer}"
        );
    }
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

#[tokio::test]
async fn a_plan_over_the_cap_with_few_final_steps_is_answered_in_one_call() {
    let model = fact_model();
    let mut plan = wide_plan(5);
    plan.steps
        .push(Step::new("all", "Gather the facts").depends_on(["s01", "s02", "s03", "s04"]));
    let report = synthesise(&model, plan, 3).await;
    let requests = synthesis_requests(&model);
    assert_eq!(requests.len(), 1);
    let read = user_text(&requests[0]);
    assert!(
        read.contains("FACT-all") && read.contains("FACT-s05"),
        "{read}"
    );
    assert!(read.contains("4 earlier steps are not shown"), "{read}");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

#[tokio::test]
async fn what_the_synthesis_cannot_read_is_in_the_warnings_and_the_answer() {
    let model = fact_model();
    // One result a call: parts of one would summarise nothing away.
    let report = synthesise(&model, wide_plan(3), 1).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.failure);
    assert_eq!(synthesis_requests(&model).len(), 1);
    let warning = report
        .warnings
        .iter()
        .find(|w| w.starts_with("synthesis: "))
        .unwrap_or_else(|| panic!("no synthesis warning in {:?}", report.warnings));
    assert!(warning.contains("2 final steps (s01, s02)"), "{warning}");
    let answer = report.answer.as_deref().unwrap();
    assert!(answer.starts_with("ANSWER: FACT-s03"), "{answer}");
    assert!(
        answer.contains("\n\nNote: the answer was written without"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_summary_longer_than_its_share_is_cut_and_said_so() {
    let model = fact_model();
    // Two parts (of 2 and 1); each summary may take 12 × 2 / 2 = 12 characters.
    let report = synthesise_capped(&model, wide_plan(3), 2, 12).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.failure);
    assert_eq!(synthesis_requests(&model).len(), 3);
    // "summary: FACT-s01 FACT-s02" is 26 characters; "summary: FACT-s03" 17.
    assert_eq!(
        report.warnings,
        [
            "synthesis: the summary of steps s01, s02 was cut to 12 characters",
            "synthesis: the summary of steps s03 was cut to 12 characters"
        ]
    );
    let answer = report.answer.as_deref().unwrap();
    assert!(
        answer.ends_with("Note: the summary of steps s03 was cut to 12 characters."),
        "{answer}"
    );
}
