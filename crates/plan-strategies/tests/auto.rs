//! The `auto` strategy through the public `Agent` API: one model call decides whether a
//! goal is answered directly or planned, and a planned goal costs no more calls than `dag`.

mod support;

use plan_core::{EventKind, RunStatus};
use plan_exec::events::EventLog;
use plan_llm::Purpose;
use plan_strategies::{Agent, Planning, StrategyKind};
use support::*;

fn auto(fake: &Fake, log: &EventLog) -> Agent {
    Agent::builder()
        .provider(fake.model.clone())
        .strategy(StrategyKind::Auto)
        .run_options(no_retries())
        .event_sink(log.clone())
        .build()
        .unwrap()
}

fn routes(log: &EventLog) -> Vec<String> {
    log.events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::RouteChosen { route } => Some(route.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_goal_that_needs_no_plan_is_answered_in_one_call() {
    let fake = Fake::non_streaming().plan(r#"{"answer": "2 + 2 = 4", "plan": null}"#);
    let log = EventLog::new();
    let report = auto(&fake, &log).run("What is 2 + 2?").await.unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.answer.as_deref(), Some("2 + 2 = 4"));
    assert!(report.plan.is_none());
    assert!(report.steps.is_empty());
    assert_eq!(report.strategy.as_deref(), Some("auto"));
    assert_eq!(
        report.extras.get("route"),
        Some(&serde_json::json!("direct"))
    );
    assert_eq!(report.usage.llm_calls, 1, "one call, no synthesis");
    assert_eq!(fake.requests().len(), 1);
    assert_eq!(routes(&log), ["direct"]);
    // The decision is asked for with a schema of both nullable fields and the rule.
    let request = &fake.requests()[0];
    assert_eq!(request.purpose, Some(Purpose::Plan));
    assert!(system_text(request).contains("Answer it directly when it needs no plan"));
    let json = report.to_json_pretty();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["route"], "direct");
    assert_eq!(v["plan"], serde_json::Value::Null);
    assert_eq!(v["steps"], serde_json::json!([]));
}

#[tokio::test]
async fn a_goal_that_needs_a_plan_runs_it_with_no_extra_call() {
    let plan = plan_json(&[
        ("a", "Do a", &[]),
        ("b", "Do b", &[]),
        ("c", "Join a and b", &["a", "b"]),
    ]);
    let fake = Fake::non_streaming().plan(format!(r#"{{"answer": null, "plan": {plan}}}"#));
    let log = EventLog::new();
    let report = auto(&fake, &log)
        .run("Compare two frameworks")
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.steps.len(), 3);
    assert_eq!(report.answer.as_deref(), Some("THE ANSWER"));
    assert_eq!(
        report.extras.get("route"),
        Some(&serde_json::json!("planned"))
    );
    assert_eq!(routes(&log), ["planned"]);
    // The routing call was the planning call: 1 + 3 steps + synthesis, as under `dag`.
    assert_eq!(fake.planner_requests().len(), 1);
    assert_eq!(report.usage.llm_calls, 5);
}

#[tokio::test]
async fn an_unusable_plan_in_the_routing_reply_is_planned_again_and_said_so() {
    // A cycle: the planner is asked properly and the change is listed.
    let cyclic = plan_json(&[("a", "Do a", &["b"]), ("b", "Do b", &["a"])]);
    let fake = Fake::non_streaming()
        .plan(format!(r#"{{"answer": null, "plan": {cyclic}}}"#))
        .plan(plan_json(&[("a", "Do a", &[]), ("b", "Do b", &["a"])]));
    let log = EventLog::new();
    let report = auto(&fake, &log).run("Do two things").await.unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.steps.len(), 2);
    assert_eq!(fake.planner_requests().len(), 2);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("routing reply could not be used")),
        "{:?}",
        report.warnings
    );
}

#[tokio::test]
async fn a_reply_with_neither_answer_nor_plan_is_asked_again() {
    let fake = Fake::non_streaming()
        .plan(r#"{"answer": null, "plan": null}"#)
        .plan(r#"{"answer": "hello", "plan": null}"#);
    let log = EventLog::new();
    let report = auto(&fake, &log).run("Say hello").await.unwrap();
    assert_eq!(report.answer.as_deref(), Some("hello"));
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn given_plans_run_as_under_dag_and_plan_only_always_plans() {
    let fake = Fake::non_streaming().plan(plan_json(&[("a", "Do a", &[])]));
    let log = EventLog::new();
    let agent = auto(&fake, &log);
    let planned = agent.plan_only("Plan something").await.unwrap();
    assert_eq!(planned.plan.steps.len(), 1);
    let report = agent.execute(planned.plan).await.unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    assert!(routes(&log).is_empty(), "a given plan takes no route");
}

// --- The doors that plan first (approval, a cost check) route the same way. ---

/// An `auto` agent over `model`, with a run store in `dir`.
fn auto_stored(model: plan_llm::ScriptedModel, dir: &std::path::Path, log: &EventLog) -> Agent {
    Agent::builder()
        .provider(model)
        .strategy(StrategyKind::Auto)
        .run_options(no_retries())
        .event_sink(log.clone())
        .store(plan_sqlite::SqliteStore::open(dir.join("runs.db")).unwrap())
        .build()
        .unwrap()
}

fn route_of(report: &plan_strategies::RunReport) -> Option<&str> {
    report
        .extras
        .get("route")
        .and_then(serde_json::Value::as_str)
}

#[tokio::test]
async fn planning_first_answers_a_goal_that_needs_no_plan_in_one_call() {
    let fake = Fake::non_streaming().plan(r#"{"answer": "2 + 2 = 4", "plan": null}"#);
    let log = EventLog::new();
    let Planning::Answered(report) = auto(&fake, &log)
        .plan_or_answer("What is 2 + 2?")
        .await
        .unwrap()
    else {
        panic!("a goal that needs no plan was planned")
    };
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.answer.as_deref(), Some("2 + 2 = 4"));
    assert_eq!(route_of(&report), Some("direct"));
    assert!(report.plan.is_none());
    assert_eq!(report.usage.llm_calls, 1);
    assert_eq!(fake.requests().len(), 1);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(routes(&log), ["direct"]);
}

#[tokio::test]
async fn planning_first_keeps_the_routing_plan_and_reports_the_planned_route() {
    let plan = plan_json(&[("a", "Do a", &[]), ("b", "Do b", &["a"])]);
    let fake = Fake::non_streaming().plan(format!(r#"{{"answer": null, "plan": {plan}}}"#));
    let log = EventLog::new();
    let agent = auto(&fake, &log);
    let Planning::Plan(planned) = agent.plan_or_answer("Do two things").await.unwrap() else {
        panic!("a goal that needs a plan was answered")
    };
    assert_eq!(planned.plan.steps.len(), 2);
    assert_eq!(planned.route.as_deref(), Some("planned"));
    assert_eq!(
        planned.usage().llm_calls,
        1,
        "the routing call was the planning call"
    );
    let report = agent.execute_planned(planned).await.unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(route_of(&report), Some("planned"));
    assert_eq!(routes(&log), ["planned"]);
    // 1 routing call + 2 steps + synthesis, as `run` takes.
    assert_eq!(report.usage.llm_calls, 4);
    assert_eq!(fake.planner_requests().len(), 1);
}

#[tokio::test]
async fn a_direct_answer_needs_no_approval_and_the_run_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::non_streaming().plan(r#"{"answer": "Hello!", "plan": null}"#);
    let log = EventLog::new();
    let report = auto_stored(fake.model.clone(), dir.path(), &log)
        .plan_for_approval("Say hello")
        .await
        .unwrap();
    assert_eq!(
        report.status,
        RunStatus::Succeeded,
        "nothing waits for approval"
    );
    assert_eq!(report.answer.as_deref(), Some("Hello!"));
    assert_eq!(route_of(&report), Some("direct"));
    assert_eq!(report.usage.llm_calls, 1);
    assert_eq!(fake.requests().len(), 1);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("there was no plan to approve")),
        "{:?}",
        report.warnings
    );
    // The store holds the same ended run.
    let store = plan_sqlite::SqliteStore::open(dir.path().join("runs.db")).unwrap();
    let stored = plan_exec::store::RunStore::load_run(&store, &report.run_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, RunStatus::Succeeded);
    assert_eq!(
        plan_strategies::RunReport::from_stored(&stored).warnings,
        report.warnings
    );
}

#[tokio::test]
async fn a_planned_goal_waits_for_approval_with_its_route_and_runs_like_dag() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_json(&[
        ("a", "Do a", &[]),
        ("b", "Do b", &[]),
        ("c", "Join", &["a", "b"]),
    ]);
    let fake = Fake::non_streaming().plan(format!(r#"{{"answer": null, "plan": {plan}}}"#));
    let log = EventLog::new();
    let agent = auto_stored(fake.model.clone(), dir.path(), &log);
    let parked = agent.plan_for_approval("Compare two things").await.unwrap();
    assert_eq!(parked.status, RunStatus::AwaitingApproval);
    assert_eq!(parked.plan.as_ref().unwrap().steps.len(), 3);
    assert_eq!(route_of(&parked), Some("planned"));
    assert_eq!(parked.usage.llm_calls, 1, "the routing call planned it");
    assert!(
        fake.step_requests().is_empty(),
        "nothing ran before approval"
    );
    let report = agent.approve(&parked.run_id, None).await.unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(route_of(&report), Some("planned"));
    assert_eq!(report.usage.llm_calls, 5, "1 routing + 3 steps + synthesis");
    assert_eq!(fake.planner_requests().len(), 1);
}

// --- A direct answer is never cut silently. ---

/// A routing reply holding `answer`.
fn routed(answer: &str) -> String {
    serde_json::json!({"answer": answer, "plan": null}).to_string()
}

/// A scripted model: the routing call answers `routed`, the follow-up answer call
/// (purpose `answer`) replies `full`.
fn answering(routed_answer: &str, full: plan_llm::Reply) -> plan_llm::ScriptedModel {
    let mut caps = plan_llm::Capabilities::default();
    caps.json_schema = true;
    let routing = routed(routed_answer);
    plan_llm::ScriptedModel::new()
        .with_capabilities(caps)
        .respond_with(move |r| match &r.purpose {
            Some(Purpose::Plan) => plan_llm::Reply::text(routing.clone()),
            _ => full.clone(),
        })
}

#[tokio::test]
async fn a_direct_answer_at_the_schemas_length_limit_is_written_again_in_full() {
    let cut = "x".repeat(1200);
    let full = format!("{}{}", "x".repeat(1200), " and the rest of it.");
    let model = answering(&cut, plan_llm::Reply::text(full.clone()));
    let log = EventLog::new();
    let agent = Agent::builder()
        .provider(model.clone())
        .strategy(StrategyKind::Auto)
        .event_sink(log.clone())
        .build()
        .unwrap();
    let report = agent.run("Explain everything").await.unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.answer.as_deref(), Some(full.as_str()));
    assert_eq!(route_of(&report), Some("direct"));
    assert_eq!(
        report.usage.llm_calls, 2,
        "the routing call and the full answer"
    );
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    let follow_up = &requests[1];
    assert_eq!(follow_up.purpose, Some(Purpose::Other("answer".to_owned())));
    assert_eq!(
        follow_up.response_format,
        plan_llm::ResponseFormat::Text,
        "no schema"
    );
    assert!(follow_up.max_tokens.is_none(), "no length limit");
    assert!(user_text(follow_up).contains("Explain everything"));
}

#[tokio::test]
async fn a_short_direct_answer_takes_no_second_call() {
    let model = answering(&"x".repeat(1199), plan_llm::Reply::text("never asked"));
    let report = Agent::builder()
        .provider(model.clone())
        .strategy(StrategyKind::Auto)
        .build()
        .unwrap()
        .run("Explain a little")
        .await
        .unwrap();
    assert_eq!(report.answer.as_deref().map(str::len), Some(1199));
    assert_eq!(report.usage.llm_calls, 1);
    assert_eq!(model.requests().len(), 1);
}

#[tokio::test]
async fn a_full_answer_cut_at_the_token_limit_is_reported_in_warnings() {
    let partial =
        plan_llm::Reply::text("x".repeat(1500)).with_finish_reason(plan_llm::FinishReason::Length);
    let model = answering(&"x".repeat(1200), partial);
    let report = Agent::builder()
        .provider(model)
        .strategy(StrategyKind::Auto)
        .build()
        .unwrap()
        .run("Explain everything")
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(
        report.answer.as_deref().map(str::len),
        Some(1500),
        "the longer answer is kept"
    );
    assert_eq!(report.usage.llm_calls, 2);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("cut off") && w.contains("incomplete")),
        "{:?}",
        report.warnings
    );
}

#[tokio::test]
async fn a_failed_full_answer_call_keeps_the_routed_answer_with_a_warning() {
    let failure = plan_llm::Reply::error(plan_llm::LlmError::BadRequest {
        provider: "fake".into(),
        status: 400,
        message: "too long".into(),
    });
    let model = answering(&"x".repeat(1200), failure);
    let report = Agent::builder()
        .provider(model)
        .strategy(StrategyKind::Auto)
        .run_options(no_retries())
        .build()
        .unwrap()
        .run("Explain everything")
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.answer.as_deref().map(str::len), Some(1200));
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("1200 characters") && w.contains("may be incomplete")),
        "{:?}",
        report.warnings
    );
}

// --- The reflective strategy critiques a given plan too (`plan exec`). ---

#[tokio::test]
async fn a_given_plan_is_critiqued_and_improved_before_it_runs_under_reflective() {
    let given = plan_core::Plan::from_json(&plan_json(&[("a", "Do a", &[])])).unwrap();
    let fake = Fake::non_streaming()
        .critique(r#"{"approved": false, "issues": ["nothing checks the result"]}"#)
        .critique(r#"{"approved": true, "issues": []}"#)
        .plan(plan_json(&[
            ("a", "Do a", &[]),
            ("check", "Check a", &["a"]),
        ]));
    let log = EventLog::new();
    let report = Agent::builder()
        .provider(fake.model.clone())
        .strategy(StrategyKind::Reflective)
        .run_options(no_retries())
        .event_sink(log.clone())
        .build()
        .unwrap()
        .execute(given)
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(
        report.plan.as_ref().unwrap().steps.len(),
        2,
        "the improved plan ran"
    );
    assert_eq!(fake.step_requests(), ["a", "check"]);
    let critiques = report.extras.get("critiques").unwrap().as_array().unwrap();
    assert_eq!(critiques.len(), 2);
    assert!(
        report.warnings.iter().any(
            |w| w.contains("given plan was revised") && w.contains("nothing checks the result")
        ),
        "{:?}",
        report.warnings
    );
    // 2 critiques + 1 improvement + 2 steps + synthesis.
    assert_eq!(report.usage.llm_calls, 6);
}

#[tokio::test]
async fn a_plan_the_reflective_strategy_made_is_not_critiqued_twice() {
    let fake = Fake::non_streaming().plan(plan_json(&[("a", "Do a", &[])]));
    let report = Agent::builder()
        .provider(fake.model.clone())
        .strategy(StrategyKind::Reflective)
        .run_options(no_retries())
        .build()
        .unwrap()
        .run("Do a")
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    let critiques = fake
        .requests()
        .iter()
        .filter(|r| is_for(r, Purpose::Critique))
        .count();
    assert_eq!(critiques, 1, "one approving critique, made while planning");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}
