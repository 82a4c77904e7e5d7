//! The `auto` strategy through the public `Agent` API: one model call decides whether a
//! goal is answered directly or planned, and a planned goal costs no more calls than `dag`.

mod support;

use plan_core::{EventKind, RunStatus};
use plan_exec::EventLog;
use plan_llm::Purpose;
use plan_strategies::{Agent, StrategyKind};
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
