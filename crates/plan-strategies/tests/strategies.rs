//! The strategies through the public `Agent` API, with a scripted model.

mod support;

use std::time::Duration;

use plan_core::{EventKind, RunStatus};
use plan_exec::events::EventLog;
use plan_llm::{Purpose, Request, ScriptedModel};
use plan_sqlite::SqliteStore;
use plan_strategies::{Agent, PlannerConfig, PlanningMode, ReportExt, StrategyKind};
use support::*;

fn agent(fake: &Fake, strategy: StrategyKind) -> plan_strategies::AgentBuilder {
    Agent::builder()
        .provider(fake.model.clone())
        .strategy(strategy)
        .run_options(no_retries())
}

const THREE: &[(&str, &str, &[&str])] = &[
    ("search", "Find the frameworks", &[]),
    ("compare", "Compare them", &["search"]),
    ("check", "Check the table", &["compare"]),
];

#[tokio::test]
async fn dag_plans_runs_and_answers() {
    let fake = Fake::non_streaming().plan(plan_json(&[
        ("a", "Do a", &[]),
        ("b", "Do b", &[]),
        ("c", "Join a and b", &["a", "b"]),
    ]));
    let log = EventLog::new();
    let report = agent(&fake, StrategyKind::Dag)
        .event_sink(log.clone())
        .build()
        .unwrap()
        .run("reach the goal")
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.answer.as_deref(), Some("THE ANSWER"));
    assert_eq!(report.plan.as_ref().unwrap().goal, "reach the goal");
    assert_eq!(report.steps.len(), 3);
    assert!(
        report
            .steps
            .iter()
            .all(|s| s.status == plan_core::StepStatus::Completed && s.attempts == 1)
    );
    assert_eq!(
        report.step("a").unwrap().output.as_deref(),
        Some("output of a")
    );
    // c saw the outputs of its direct dependencies
    let c = fake
        .requests()
        .into_iter()
        .find(|r| step_of(r).as_deref() == Some("c"))
        .unwrap();
    assert!(user_text(&c).contains("output of a") && user_text(&c).contains("output of b"));
    // planning, three steps, synthesis
    assert_eq!(report.usage.llm_calls, 5);
    let events = log.events();
    assert_eq!(events, report.events);
    let n = names(&events);
    assert_eq!(n.first(), Some(&"run_started"));
    assert_eq!(n.last(), Some(&"run_finished"));
    let created = position(&events, |k| matches!(k, EventKind::PlanCreated { .. })).unwrap();
    let first_step = position(&events, |k| matches!(k, EventKind::StepStarted { .. })).unwrap();
    assert!(created < first_step, "{n:?}");
    assert!(matches!(
        &events.last().unwrap().kind,
        EventKind::RunFinished { status: RunStatus::Succeeded, answer: Some(a) } if a == "THE ANSWER"
    ));
}

#[tokio::test]
async fn report_serialises_to_the_cli_contract() {
    let fake = Fake::non_streaming().plan(plan_json(THREE));
    let report = agent(&fake, StrategyKind::Dag)
        .model_spec("openai:gpt-4o-mini")
        .build()
        .unwrap()
        .run("compare frameworks")
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&report.to_json_pretty()).unwrap();
    for key in [
        "run_id",
        "status",
        "goal",
        "strategy",
        "model",
        "plan",
        "steps",
        "answer",
        "usage",
        "replans",
        "duration_ms",
    ] {
        assert!(json.get(key).is_some(), "missing {key}: {json}");
    }
    assert_eq!(json["status"], "succeeded");
    assert_eq!(json["strategy"], "dag");
    assert_eq!(json["model"], "openai:gpt-4o-mini");
    assert_eq!(json["replans"], 0);
    for key in ["llm_calls", "prompt_tokens", "completion_tokens"] {
        assert!(json["usage"][key].is_u64(), "usage.{key}");
    }
    let step = &json["steps"][0];
    for key in ["id", "status", "attempts", "output", "error"] {
        assert!(step.get(key).is_some(), "steps[0].{key}");
    }
    assert!(json["plan"]["steps"].is_array());
}

#[tokio::test]
async fn linear_runs_steps_one_after_another() {
    let fake = Fake::non_streaming().plan(plan_json(&[
        ("one", "First", &[]),
        ("two", "Second", &[]),
        ("three", "Third", &[]),
    ]));
    let report = agent(&fake, StrategyKind::Linear)
        .concurrency(8)
        .build()
        .unwrap()
        .run("in order")
        .await
        .unwrap();
    assert!(report.is_success());
    let deps: Vec<Vec<&str>> = report
        .plan
        .as_ref()
        .unwrap()
        .steps
        .iter()
        .map(|s| s.dependencies.iter().map(|d| d.as_str()).collect())
        .collect();
    assert_eq!(deps, vec![vec![], vec!["one"], vec!["two"]]);
    assert_eq!(fake.step_requests(), ["one", "two", "three"]);
    // each step saw the one before it
    let third = fake
        .requests()
        .into_iter()
        .find(|r| step_of(r).as_deref() == Some("three"))
        .unwrap();
    assert!(user_text(&third).contains("output of two"));
}

#[tokio::test]
async fn malformed_plans_are_fixed_by_re_prompting_with_the_exact_problems() {
    let fake = Fake::non_streaming()
        .plan("Here you go: {\"steps\": [ {\"id\": \"a\", ")
        .plan(plan_json(&[
            ("a", "Do a", &["c"]),
            ("b", "Do b", &["a", "ghost"]),
            ("c", "Do c", &["b"]),
        ]))
        .plan(plan_json(THREE));
    let report = agent(&fake, StrategyKind::Dag)
        .build()
        .unwrap()
        .run("fix me")
        .await
        .unwrap();
    assert!(report.is_success());
    assert!(report.repairs().is_empty());
    let planner = fake.planner_requests();
    assert_eq!(planner.len(), 3);
    let first_fix = user_text(&planner[1]);
    assert!(first_fix.contains("not valid JSON"), "{first_fix}");
    let second_fix = user_text(&planner[2]);
    assert!(
        second_fix.contains("step `b` depends on `ghost`, which is not a step of the plan"),
        "{second_fix}"
    );
    assert!(second_fix.contains("dependency cycle"), "{second_fix}");
    // the conversation keeps the bad replies so the model sees what it wrote
    assert_eq!(planner[2].messages.len(), 6);
    assert_eq!(report.plan.as_ref().unwrap().steps.len(), 3);
    // every re-prompt is in the report's warnings and a plan_adjusted event
    assert_eq!(report.warnings.len(), 2, "{:?}", report.warnings);
    assert!(
        report.warnings[0].contains("reply 1") && report.warnings[0].contains("not valid JSON")
    );
    assert!(
        report.warnings[1].contains("ghost"),
        "{:?}",
        report.warnings
    );
    let adjusted = report
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::PlanAdjusted { .. }))
        .count();
    assert_eq!(adjusted, 1);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["warnings"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn plans_still_invalid_after_re_prompting_are_repaired_and_reported() {
    let cyclic = plan_json(&[
        ("a", "Do a", &["b"]),
        ("b", "Do b", &["a"]),
        ("c", "Do c", &["b", "b"]),
    ]);
    let fake = Fake::non_streaming()
        .plan(cyclic.clone())
        .plan(cyclic.clone())
        .plan(cyclic);
    let log = EventLog::new();
    let report = agent(&fake, StrategyKind::Dag)
        .event_sink(log.clone())
        .build()
        .unwrap()
        .run("cycle")
        .await
        .unwrap();
    assert!(report.is_success(), "{:?}", report.failure);
    assert_eq!(report.repairs().len(), 1);
    let note = &report.repairs()[0];
    assert!(note.problems.iter().any(|p| p.contains("cycle")));
    assert!(
        note.changes.iter().any(|c| c.contains("break the cycle")),
        "{:?}",
        note.changes
    );
    assert!(!note.report.is_empty());
    assert_eq!(fake.planner_requests().len(), 3);
    // two re-prompts, then each repair, in the warnings
    assert!(
        report
            .warnings
            .iter()
            .filter(|w| w.contains("sent back"))
            .count()
            == 2
            && report
                .warnings
                .iter()
                .any(|w| w.contains("repaired") && w.contains("cycle")),
        "{:?}",
        report.warnings
    );
}

#[tokio::test]
async fn a_reply_that_is_no_plan_at_all_fails_with_every_problem() {
    let fake = Fake::non_streaming()
        .plan("I cannot help with that.")
        .plan("Still no.")
        .plan("No.");
    let err = agent(&fake, StrategyKind::Dag)
        .build()
        .unwrap()
        .run("impossible")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("after 3 attempts"), "{text}");
    assert!(text.contains("no JSON object"), "{text}");
}

#[tokio::test]
async fn streamed_planning_starts_the_first_step_before_the_plan_stream_ends() {
    // 30 chunks, 40 ms apart: the plan takes about 1.2 s to arrive.
    let fake = Fake::with_model(ScriptedModel::new().streaming(30, SLOW)).plan(plan_json(&[
        ("first", "Start right away", &[]),
        ("second", "Also independent", &[]),
        ("third", "Needs both", &["first", "second"]),
        ("fourth", "Last one", &["third"]),
    ]));
    let log = EventLog::new();
    let report = agent(&fake, StrategyKind::Dag)
        .event_sink(log.clone())
        .build()
        .unwrap()
        .run("stream it")
        .await
        .unwrap();
    assert!(report.is_success(), "{:?}", report.failure);
    let events = log.events();
    let started_first = find(
        &events,
        |k| matches!(k, EventKind::StepStarted { step, .. } if step.as_str() == "first"),
    )
    .unwrap();
    let completed_first = find(
        &events,
        |k| matches!(k, EventKind::StepCompleted { step, .. } if step.as_str() == "first"),
    )
    .unwrap();
    let plan_call = find(
        &events,
        |k| matches!(k, EventKind::LlmCall { purpose, .. } if purpose == "plan"),
    )
    .unwrap();
    let created = find(&events, |k| matches!(k, EventKind::PlanCreated { .. })).unwrap();
    let i_completed = position(
        &events,
        |k| matches!(k, EventKind::StepCompleted { step, .. } if step.as_str() == "first"),
    )
    .unwrap();
    let i_created = position(&events, |k| matches!(k, EventKind::PlanCreated { .. })).unwrap();
    // the first step finished before the plan was complete
    assert!(i_completed < i_created, "{:?}", names(&events));
    assert!(completed_first.ts <= created.ts);
    let lead = created.ts.unix_millis() - started_first.ts.unix_millis();
    assert!(
        lead >= 200,
        "first step started only {lead} ms before the plan ended"
    );
    assert!(plan_call.ts >= completed_first.ts);
    // every step ran exactly once
    let mut ran = fake.step_requests();
    ran.sort();
    assert_eq!(ran, ["first", "fourth", "second", "third"]);
    let announced = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::PlanCreated { .. }))
        .count();
    assert_eq!(announced, 1);
    let EventKind::PlanCreated { plan, revision } = &created.kind else {
        unreachable!()
    };
    assert_eq!(*revision, 0);
    assert_eq!(plan.steps.len(), 4);
}

#[tokio::test]
async fn a_streamed_plan_that_ends_invalid_is_fixed_and_the_rest_still_runs() {
    // `late` and `later` wait for each other: they are held back, the plan is
    // re-prompted, and the fixed plan keeps the streamed steps unchanged.
    let fake = Fake::with_model(ScriptedModel::new().streaming(10, Duration::from_millis(5)))
        .plan(plan_json(&[
            ("a", "Do a", &[]),
            ("b", "Do b", &["a"]),
            ("late", "Do late", &["later"]),
            ("later", "Do later", &["late"]),
        ]))
        .plan(plan_json(&[
            ("a", "Do a", &[]),
            ("b", "Do b", &["a"]),
            ("late", "Do late", &["b"]),
        ]));
    let log = EventLog::new();
    let report = agent(&fake, StrategyKind::Dag)
        .event_sink(log.clone())
        .build()
        .unwrap()
        .run("fix while streaming")
        .await
        .unwrap();
    assert!(report.is_success(), "{:?}", report.failure);
    let mut ran = fake.step_requests();
    ran.sort();
    assert_eq!(ran, ["a", "b", "late"]);
    assert_eq!(fake.planner_requests().len(), 2);
    let late = fake
        .requests()
        .into_iter()
        .find(|r| step_of(r).as_deref() == Some("late"))
        .unwrap();
    assert!(user_text(&late).contains("output of b"));
}

#[tokio::test]
async fn a_streamed_step_changed_by_the_fix_is_cancelled_and_the_fixed_plan_runs() {
    // The stream breaks off mid-plan; the fixed plan rewrites `b`, which had started.
    let fake = Fake::with_model(ScriptedModel::new().streaming(10, Duration::from_millis(5)))
        .plan(r#"{"goal": "g", "steps": [{"id": "a", "description": "Do a", "dependencies": []}, {"id": "b", "description": "Do b", "dependencies": []}, {"id": "c", "descr"#)
        .plan(plan_json(&[
            ("a", "Do a", &[]),
            ("b", "Do b differently", &[]),
            ("c", "Do c", &["a", "b"]),
        ]));
    let log = EventLog::new();
    let report = agent(&fake, StrategyKind::Dag)
        .event_sink(log.clone())
        .build()
        .unwrap()
        .run("changed mid-stream")
        .await
        .unwrap();
    assert!(report.is_success(), "{:?}", report.failure);
    // The fixed plan completes the streamed one: nothing is left marked incomplete.
    assert!(
        !report.extras.contains_key("incomplete_plan"),
        "{:?}",
        report.extras
    );
    let events = log.events();
    let revisions: Vec<u32> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::PlanCreated { revision, .. } => Some(*revision),
            _ => None,
        })
        .collect();
    // revision 0 may be announced by the runner as the stream closes; the fixed plan is 1
    assert_eq!(revisions.last(), Some(&1), "{revisions:?}");
    // `a` is unchanged: done once, kept. `b` changed: its new version runs (renamed if the
    // old one had completed).
    let ran = fake.step_requests();
    assert_eq!(ran.iter().filter(|s| *s == "a").count(), 1, "{ran:?}");
    let new_b = fake
        .requests()
        .into_iter()
        .filter(|r| {
            step_of(r).is_some_and(|id| id.starts_with('b'))
                && user_text(r).contains("Do b differently")
        })
        .count();
    assert_eq!(new_b, 1);
    let b_id = &report.plan.as_ref().unwrap().steps[1].id;
    assert!(b_id.as_str() == "b" || b_id.as_str() == "b_v2", "{b_id}");
    assert!(report.step("c").is_some());
    // The old `b` was started and then cancelled: the report says so.
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("streamed step `b` was started, then cancelled")),
        "{:?}",
        report.warnings
    );
}

#[tokio::test]
async fn plan_then_run_when_the_provider_does_not_stream() {
    let fake = Fake::non_streaming().plan(plan_json(THREE));
    let log = EventLog::new();
    agent(&fake, StrategyKind::Dag)
        .event_sink(log.clone())
        .build()
        .unwrap()
        .run("no stream")
        .await
        .unwrap();
    let events = log.events();
    let created = position(&events, |k| matches!(k, EventKind::PlanCreated { .. })).unwrap();
    let started = position(&events, |k| matches!(k, EventKind::StepStarted { .. })).unwrap();
    assert!(created < started);
}

#[tokio::test]
async fn plan_then_run_mode_with_a_streaming_provider() {
    let fake = Fake::with_model(ScriptedModel::new().streaming(5, Duration::from_millis(1)))
        .plan(plan_json(THREE));
    let log = EventLog::new();
    agent(&fake, StrategyKind::Dag)
        .planning_mode(PlanningMode::PlanThenRun)
        .event_sink(log.clone())
        .build()
        .unwrap()
        .run("no stream")
        .await
        .unwrap();
    let events = log.events();
    let created = position(&events, |k| matches!(k, EventKind::PlanCreated { .. })).unwrap();
    let started = position(&events, |k| matches!(k, EventKind::StepStarted { .. })).unwrap();
    assert!(created < started);
}

#[tokio::test]
async fn adaptive_replans_keeping_finished_steps_that_are_never_run_again() {
    let fake = Fake::non_streaming()
        .plan(plan_json(&[
            ("fetch", "Fetch the data", &[]),
            ("parse", "Parse it with the broken parser", &["fetch"]),
            ("report", "Write the report", &["parse"]),
        ]))
        .plan(
            r#"{"steps": [
            {"id": "parse2", "description": "Parse it by hand", "dependencies": ["fetch"]},
            {"id": "report2", "description": "Write the report", "dependencies": ["parse2"]}]}"#,
        )
        .steps(|id, _| match id {
            "parse" => Err("parser crashed on line 3".into()),
            "fetch" => Ok("ROWS: 1,2,3".into()),
            other => Ok(format!("output of {other}")),
        });
    let log = EventLog::new();
    let report = agent(&fake, StrategyKind::Adaptive)
        .event_sink(log.clone())
        .build()
        .unwrap()
        .run("adapt")
        .await
        .unwrap();
    assert!(report.is_success(), "{:?}", report.failure);
    assert_eq!(report.replans, 1);
    // fetch ran once, and no step request after the replan mentions it as the step to do
    let ran = fake.step_requests();
    assert_eq!(ran, ["fetch", "parse", "parse2", "report2"]);
    // the replanning prompt showed the finished step's output and the failure
    let planner = fake.planner_requests();
    let replan = user_text(&planner[1]);
    assert!(
        replan.contains("`fetch`") && replan.contains("ROWS: 1,2,3"),
        "{replan}"
    );
    assert!(replan.contains("parser crashed on line 3"), "{replan}");
    assert!(
        replan.contains("`report`"),
        "abandoned steps are named: {replan}"
    );
    // the kept step's output still feeds the new steps
    let parse2 = fake
        .requests()
        .into_iter()
        .find(|r| step_of(r).as_deref() == Some("parse2"))
        .unwrap();
    assert!(user_text(&parse2).contains("ROWS: 1,2,3"));
    // the replanned event says why and what was kept
    let events = log.events();
    let replanned = find(&events, |k| matches!(k, EventKind::Replanned { .. })).unwrap();
    let EventKind::Replanned {
        revision,
        reason,
        kept,
        plan,
    } = &replanned.kind
    else {
        unreachable!()
    };
    assert_eq!(*revision, 1);
    assert!(reason.contains("parse") && reason.contains("parser crashed"));
    assert_eq!(
        kept.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        ["fetch"]
    );
    let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["fetch", "parse2", "report2"]);
    // the final report: kept step marked reused, with its original attempt
    let fetch = report.step("fetch").unwrap();
    assert!(fetch.reused);
    assert_eq!(fetch.attempts, 1);
    assert_eq!(report.replan_log.len(), 1);
}

#[tokio::test]
async fn a_replan_that_repeats_a_finished_step_is_re_prompted() {
    let fake = Fake::non_streaming()
        .plan(plan_json(&[("a", "Do a", &[]), ("b", "Do b", &["a"])]))
        .plan(plan_json(&[
            ("a", "Do a again", &[]),
            ("b2", "Do b another way", &["a"]),
        ]))
        .plan(plan_json(&[("b2", "Do b another way", &["a"])]))
        .steps(|id, _| {
            if id == "b" {
                Err("nope".into())
            } else {
                Ok(format!("output of {id}"))
            }
        });
    let report = agent(&fake, StrategyKind::Adaptive)
        .build()
        .unwrap()
        .run("no redo")
        .await
        .unwrap();
    assert!(report.is_success(), "{:?}", report.failure);
    let fix = user_text(&fake.planner_requests()[2]);
    assert!(fix.contains("step `a` is already finished"), "{fix}");
    assert_eq!(fake.step_requests(), ["a", "b", "b2"]);
}

#[tokio::test]
async fn adaptive_gives_up_after_max_replans_with_a_clear_report() {
    let mut fake = Fake::non_streaming().plan(plan_json(&[("s0", "Attempt 0", &[])]));
    for i in 1..=5 {
        fake = fake.plan(plan_json(&[(
            Box::leak(format!("s{i}").into_boxed_str()),
            Box::leak(format!("Attempt {i}").into_boxed_str()),
            &[],
        )]));
    }
    let fake = fake.steps(|id, _| Err(format!("failure number {id}")));
    let log = EventLog::new();
    let report = agent(&fake, StrategyKind::Adaptive)
        .max_replans(2)
        .event_sink(log.clone())
        .build()
        .unwrap()
        .run("never works")
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(report.replans, 2);
    assert_eq!(fake.planner_requests().len(), 3);
    assert_eq!(fake.step_requests(), ["s0", "s1", "s2"]);
    let failure = report.failure.unwrap();
    assert!(
        failure.contains("2 replans allowed are used up"),
        "{failure}"
    );
    assert!(failure.contains("failure number s2"), "{failure}");
    let replans = log
        .events()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Replanned { .. }))
        .count();
    assert_eq!(replans, 2);
    assert!(report.answer.is_none());
}

#[tokio::test]
async fn adaptive_stops_early_when_the_same_step_fails_the_same_way() {
    let fake = Fake::non_streaming()
        .plan(plan_json(&[("get", "Download the file", &[])]))
        .plan(plan_json(&[("get_again", "Download the file", &[])]))
        .plan(plan_json(&[("never", "Never asked for", &[])]))
        .steps(|_, _| Err("connection refused".into()));
    let report = agent(&fake, StrategyKind::Adaptive)
        .max_replans(3)
        .build()
        .unwrap()
        .run("stall")
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(report.replans, 1);
    assert_eq!(fake.planner_requests().len(), 2);
    let failure = report.failure.unwrap();
    assert!(failure.starts_with("stalled"), "{failure}");
    assert!(failure.contains("connection refused"));
}

#[tokio::test]
async fn hierarchical_decomposes_to_the_depth_limit_and_runs_the_leaves() {
    let split = |a: &str, b: &str| {
        serde_json::json!({"atomic": false, "subgoals": [
            {"id": "x", "goal": a, "dependencies": []},
            {"id": "y", "goal": b, "dependencies": ["x"]}]})
        .to_string()
    };
    let fake = Fake::non_streaming()
        .decompose("build a blog", split("backend", "frontend"))
        .decompose("backend", split("schema", "api"))
        .decompose("frontend", r#"{"atomic": true, "subgoals": []}"#)
        // anything deeper would split again, but the depth limit stops it
        .decompose_default(split("deeper one", "deeper two"));
    let report = agent(&fake, StrategyKind::Hierarchical)
        .max_depth(2)
        .build()
        .unwrap()
        .run("build a blog")
        .await
        .unwrap();
    assert!(report.is_success(), "{:?}", report.failure);
    let ids: Vec<&str> = report
        .plan
        .as_ref()
        .unwrap()
        .steps
        .iter()
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(ids, ["x/x", "x/y", "y"]);
    // frontend (y) waits for both leaves of backend (x)
    let y = report.plan.as_ref().unwrap().step("y").unwrap();
    assert_eq!(y.dependencies.len(), 2);
    // decompose asked for: the goal, backend, frontend — not the depth-2 leaves
    let asked: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| is_for(r, Purpose::Decompose))
        .map(user_text)
        .collect();
    assert_eq!(asked.len(), 3, "{asked:?}");
    assert!(
        asked
            .iter()
            .any(|u| u.contains("Goal: backend") && u.contains("- build a blog"))
    );
    // results roll up
    let tree = report.tree().unwrap();
    assert_eq!(tree.status, "completed");
    let backend = &tree.children[0];
    assert_eq!(backend.goal, "backend");
    assert_eq!(backend.children.len(), 2);
    let rolled = backend.output.as_deref().unwrap();
    assert!(
        rolled.contains("output of x/x") && rolled.contains("output of x/y"),
        "{rolled}"
    );
    assert_eq!(tree.children[1].children.len(), 0);
    // the synthesis saw the tree
    let synth = fake
        .requests()
        .into_iter()
        .find(|r| is_for(r, Purpose::Synthesize))
        .unwrap();
    assert!(
        user_text(&synth).contains("backend"),
        "{}",
        user_text(&synth)
    );
}

#[tokio::test]
async fn hierarchical_atomic_goal_is_one_step() {
    let fake = Fake::non_streaming();
    let report = agent(&fake, StrategyKind::Hierarchical)
        .build()
        .unwrap()
        .run("say hi")
        .await
        .unwrap();
    assert!(report.is_success());
    assert_eq!(report.plan.as_ref().unwrap().steps.len(), 1);
    assert_eq!(report.plan.as_ref().unwrap().steps[0].description, "say hi");
}

#[tokio::test]
async fn hierarchical_unusable_decomposition_leaves_the_goal_one_step() {
    // Every reply is cut-off JSON, also after the re-prompts: the goal still runs, whole.
    let fake =
        Fake::non_streaming().decompose_default(r#"{"atomic": false, "subgoals": [{"id": "a""#);
    let report = agent(&fake, StrategyKind::Hierarchical)
        .build()
        .unwrap()
        .run("say hi")
        .await
        .unwrap();
    assert!(report.is_success());
    assert_eq!(report.plan.as_ref().unwrap().steps.len(), 1);
    assert_eq!(report.plan.as_ref().unwrap().steps[0].description, "say hi");
    let asked = fake
        .requests()
        .iter()
        .filter(|r| is_for(r, Purpose::Decompose))
        .count();
    assert!(asked >= 2, "the decomposition was not re-asked: {asked}");
    // Every call, the unusable ones included, counts in the usage.
    assert_eq!(report.usage.llm_calls as usize, asked + 2);
}

#[tokio::test]
async fn reflective_critiques_and_improves_until_approved() {
    let fake = Fake::non_streaming()
        .plan(plan_json(&[
            ("a", "Write it", &[]),
            ("b", "Ship it", &["a"]),
        ]))
        .critique(r#"{"approved": false, "issues": ["nothing checks the result before shipping"]}"#)
        .plan(plan_json(&[
            ("a", "Write it", &[]),
            ("check", "Check it", &["a"]),
            ("b", "Ship it", &["check"]),
        ]))
        .critique(r#"{"approved": true, "issues": []}"#);
    let report = agent(&fake, StrategyKind::Reflective)
        .reflection_rounds(3)
        .build()
        .unwrap()
        .run("ship")
        .await
        .unwrap();
    assert!(report.is_success());
    assert_eq!(report.critiques().len(), 2);
    assert!(!report.critiques()[0].approved);
    assert!(report.critiques()[1].approved);
    assert_eq!(report.plan.as_ref().unwrap().steps.len(), 3);
    let improve = user_text(&fake.planner_requests()[1]);
    assert!(
        improve.contains("nothing checks the result before shipping"),
        "{improve}"
    );
    assert!(
        improve.contains("\"Ship it\""),
        "the current plan is shown: {improve}"
    );
    assert_eq!(fake.step_requests(), ["a", "check", "b"]);
}

#[tokio::test]
async fn reflective_stops_after_its_rounds() {
    let never = r#"{"approved": false, "issues": ["could be better"]}"#;
    let fake = Fake::non_streaming()
        .plan(plan_json(&[("v1", "Version 1", &[])]))
        .critique(never)
        .plan(plan_json(&[("v2", "Version 2", &[])]))
        .critique(never)
        .plan(plan_json(&[("v3", "Version 3", &[])]))
        .critique(never);
    let report = agent(&fake, StrategyKind::Reflective)
        .reflection_rounds(2)
        .build()
        .unwrap()
        .run("never good enough")
        .await
        .unwrap();
    assert_eq!(report.critiques().len(), 2);
    assert_eq!(report.plan.as_ref().unwrap().steps[0].id.as_str(), "v3");
    assert_eq!(fake.step_requests(), ["v3"]);
}

#[tokio::test]
async fn plan_only_and_execute() {
    let fake = Fake::non_streaming().plan(plan_json(THREE));
    let agent = agent(&fake, StrategyKind::Dag).build().unwrap();
    let planned = agent.plan_only("compare").await.unwrap();
    assert_eq!(planned.plan.steps.len(), 3);
    assert_eq!(planned.usage().llm_calls, 1);
    assert!(fake.step_requests().is_empty());
    let report = agent.execute(planned.plan).await.unwrap();
    assert!(report.is_success());
    // no further planning call
    assert_eq!(fake.planner_requests().len(), 1);
    assert_eq!(fake.step_requests().len(), 3);
}

#[tokio::test]
async fn execute_rejects_an_invalid_plan_with_every_problem() {
    let fake = Fake::non_streaming();
    let agent = agent(&fake, StrategyKind::Dag).build().unwrap();
    let plan = plan_core::Plan::from_json(&plan_json(&[
        ("a", "a", &["b"]),
        ("b", "b", &["a"]),
        ("c", "c", &["zz"]),
    ]))
    .unwrap();
    let err = agent.execute(plan).await.unwrap_err().to_string();
    assert!(err.contains("cycle") && err.contains("zz"), "{err}");
    assert_eq!(fake.requests().len(), 0);
}

#[tokio::test]
async fn runs_are_stored_and_resumed_without_redoing_completed_steps() {
    let dir = std::env::temp_dir().join(format!("plan-strat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("runs.db");
    let _ = std::fs::remove_file(&path);
    let fake = Fake::non_streaming().plan(plan_json(THREE)).steps(|id, _| {
        if id == "compare" {
            Err("model overloaded".into())
        } else {
            Ok(format!("output of {id}"))
        }
    });
    let first = agent(&fake, StrategyKind::Dag)
        .store(SqliteStore::open(&path).unwrap())
        .build()
        .unwrap()
        .run("resume me")
        .await
        .unwrap();
    assert_eq!(first.status, RunStatus::Failed);
    // resume with a model that now works
    let fake2 = Fake::non_streaming();
    let second = agent(&fake2, StrategyKind::Dag)
        .store(SqliteStore::open(&path).unwrap())
        .build()
        .unwrap()
        .resume(&first.run_id)
        .await
        .unwrap();
    assert!(second.is_success(), "{:?}", second.failure);
    assert_eq!(second.run_id, first.run_id);
    assert_eq!(fake2.step_requests(), ["compare", "check"]);
    assert!(fake2.planner_requests().is_empty());
    assert!(second.step("search").unwrap().reused);
    assert_eq!(second.answer.as_deref(), Some("THE ANSWER"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn planner_is_told_the_agents_and_rejects_unknown_ones() {
    let fake = Fake::non_streaming()
        .plan(r#"{"steps": [{"id": "a", "description": "Search", "dependencies": [], "agent": "wizard"}]}"#)
        .plan(r#"{"steps": [{"id": "a", "description": "Search", "dependencies": [], "agent": "researcher"}]}"#);
    let config = PlannerConfig::default().with_agents(vec![plan_strategies::AgentInfo::new(
        "researcher",
        "finds sources",
    )]);
    let report = agent(&fake, StrategyKind::Dag)
        .planner_config(config)
        .build()
        .unwrap()
        .run("route")
        .await
        .unwrap();
    assert!(report.is_success());
    let planner = fake.planner_requests();
    assert!(system_text(&planner[0]).contains("`researcher`: finds sources"));
    assert!(user_text(&planner[1]).contains("names the agent `wizard`, which does not exist"));
}

#[test]
fn strategy_names_round_trip() {
    for s in StrategyKind::ALL {
        assert_eq!(s.as_str().parse::<StrategyKind>().unwrap(), s);
    }
    let err = "wild".parse::<StrategyKind>().unwrap_err().to_string();
    assert!(err.contains("use one of auto, linear, dag"), "{err}");
}

#[test]
fn key_types_are_send_and_sync() {
    fn is<T: Send + Sync>() {}
    is::<Agent>();
    is::<plan_strategies::LlmPlanner>();
    is::<plan_strategies::RunReport>();
    is::<plan_strategies::StrategyError>();
}

#[tokio::test]
async fn a_cancelled_run_is_reported_and_resumes_where_it_stopped() {
    let dir = std::env::temp_dir().join(format!("plan-strat-cancel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("runs.db");
    let _ = std::fs::remove_file(&path);
    let cancel = plan_exec::context::CancelToken::new();
    // Cancelled as `compare`, the second step, asks the model: `search` is done, `compare`
    // is in flight (each call takes 150 ms) and `check` never starts, however fast or slow
    // the machine.
    let cancel_at_compare = cancel.clone();
    let fake = Fake::with_model(ScriptedModel::new().with_latency(Duration::from_millis(150)))
        .plan(plan_json(THREE))
        .steps(move |id, _| {
            if id == "compare" {
                cancel_at_compare.cancel();
            }
            Ok(format!("output of {id}"))
        });
    let cancellable = agent(&fake, StrategyKind::Dag)
        .planning_mode(PlanningMode::PlanThenRun)
        .store(SqliteStore::open(&path).unwrap())
        .cancel_token(cancel.clone())
        .build()
        .unwrap();
    let first = cancellable.run("cancel me").await.unwrap();
    assert!(cancel.is_cancelled());
    assert_eq!(first.status, RunStatus::Cancelled);
    assert!(first.failure.as_deref().unwrap().contains("resumed"));
    assert!(first.answer.is_none());
    let done_before: Vec<String> = fake.step_requests();
    let fake2 = Fake::non_streaming();
    let second = agent(&fake2, StrategyKind::Dag)
        .store(SqliteStore::open(&path).unwrap())
        .build()
        .unwrap()
        .resume(&first.run_id)
        .await
        .unwrap();
    assert!(second.is_success(), "{:?}", second.failure);
    // every step ran to completion exactly once over both sessions, except one cancelled
    // in flight, which the resume ran again
    let completed_before: Vec<&str> = first
        .steps
        .iter()
        .filter(|s| s.status == plan_core::StepStatus::Completed)
        .map(|s| s.id.as_str())
        .collect();
    for id in &completed_before {
        assert!(
            !fake2.step_requests().iter().any(|s| s == id),
            "{id} ran again"
        );
    }
    assert_eq!(
        completed_before.len() + fake2.step_requests().len(),
        3,
        "before: {done_before:?}, after: {:?}",
        fake2.step_requests()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn team() -> plan_strategies::AgentCatalogue {
    plan_strategies::AgentCatalogue::from_toml_str(
        r#"
        [[agent]]
        name = "researcher"
        description = "Finds facts in the document folder"
        tools = ["search_docs"]
        kinds = ["search"]

        [[agent]]
        name = "writer"
        description = "Writes the final report"
        "#,
    )
    .unwrap()
}

#[tokio::test]
async fn the_planner_is_told_which_agents_exist() {
    let plan = serde_json::json!({"goal": "g", "steps": [
        {"id": "find", "description": "Find facts", "agent": "researcher"},
        {"id": "write", "description": "Write it up", "dependencies": ["find"], "agent": "writer"},
    ]});
    let fake = Fake::non_streaming().plan(plan.to_string());
    let report = agent(&fake, StrategyKind::Dag)
        .agents(team())
        .build()
        .unwrap()
        .run("report on the docs")
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    let prompt = user_text(&fake.planner_requests()[0]) + &system_text(&fake.planner_requests()[0]);
    assert!(prompt.contains("researcher"), "{prompt}");
    assert!(
        prompt.contains("Finds facts in the document folder"),
        "{prompt}"
    );
    assert!(prompt.contains("writer"), "{prompt}");
    let infos = team().agent_infos();
    assert_eq!(infos[0].name, "researcher");
    assert!(infos[0].description.contains("handles search steps"));
    assert_eq!(Vec::<plan_strategies::AgentInfo>::from(&team()), infos);
}

#[tokio::test]
async fn a_plan_naming_an_unknown_agent_is_rejected_before_running() {
    let fake = Fake::non_streaming();
    let agent = agent(&fake, StrategyKind::Dag)
        .agents(team())
        .build()
        .unwrap();
    let plan = plan_core::Plan::new(
        "g",
        vec![
            plan_core::Step::new("a", "Do a").with_agent("researcher"),
            plan_core::Step::new("b", "Do b").with_agent("poet"),
        ],
    );
    let err = agent.execute(plan).await.unwrap_err();
    assert!(
        matches!(err, plan_strategies::StrategyError::Agents(_)),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("step `b` uses `poet`"), "{text}");
    assert!(text.contains("known agents: researcher, writer"), "{text}");
    assert!(fake.requests().is_empty(), "no step may run");
}

#[tokio::test]
async fn a_planner_that_keeps_naming_an_unknown_agent_is_re_prompted_and_the_agent_dropped() {
    let plan = serde_json::json!({"goal": "g", "steps": [
        {"id": "a", "description": "Do a", "agent": "poet"},
    ]});
    let fake = Fake::non_streaming()
        .plan(plan.to_string())
        .plan(plan.to_string())
        .plan(plan.to_string());
    let report = agent(&fake, StrategyKind::Dag)
        .agents(team())
        .build()
        .unwrap()
        .run("goal")
        .await
        .unwrap();
    let planners = fake.planner_requests();
    assert!(
        planners.len() >= 2,
        "the bad plan is answered with its problems"
    );
    let reprompt = user_text(planners.last().unwrap());
    assert!(
        reprompt.contains("`poet`, which does not exist"),
        "{reprompt}"
    );
    assert!(
        report
            .plan
            .as_ref()
            .unwrap()
            .steps
            .iter()
            .all(|s| s.agent.is_none()),
        "{report:?}"
    );
}

/// Steps of kind `code` run in the sandbox by default: the model writes the program, the
/// step's output is what it printed; a step with its own program runs it with no model.
#[tokio::test]
async fn code_steps_run_their_programs_in_the_sandbox() {
    let plan = r#"{"goal": "g", "steps": [
        {"id": "square", "description": "Print 7 squared", "kind": "code"},
        {"id": "check", "description": "It is 49", "dependencies": ["square"], "kind": "verify",
         "lang": "bash", "code": "grep -qx 49 deps/square.txt && echo verified"}]}"#;
    let fake = Fake::non_streaming().plan(plan).steps(|id, r| match id {
        "square" if is_for(r, Purpose::Code) => Ok("```python\nprint(7 * 7)\n```".to_owned()),
        other => Err(format!("unexpected step call for {other}")),
    });
    let log = EventLog::new();
    let report = agent(&fake, StrategyKind::Dag)
        .event_sink(log.clone())
        .build()
        .unwrap()
        .run("g")
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.steps);
    assert_eq!(
        report.step("square").unwrap().output.as_deref(),
        Some("49\n")
    );
    assert_eq!(
        report.step("check").unwrap().output.as_deref(),
        Some("verified\n")
    );
    assert_eq!(fake.step_requests(), ["square"]);
    let programs = log
        .events()
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::ToolCall { ok: true, .. }))
        .count();
    assert_eq!(programs, 2);

    // With code execution off, the code steps fail and the model writes nothing.
    let fake = Fake::non_streaming().plan(plan);
    let report = agent(&fake, StrategyKind::Dag)
        .sandbox(plan_sandbox::SandboxChoice::None.lazy())
        .build()
        .unwrap()
        .run("g")
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    let error = report.step("square").unwrap().error.clone().unwrap();
    assert!(error.contains("code steps are disabled"), "{error}");
    assert!(fake.step_requests().is_empty());
}

const VERIFIED: &str = r#"{"goal": "count the items", "steps": [
    {"id": "count", "description": "Count the items", "dependencies": []},
    {"id": "check", "description": "Check the count is 25", "dependencies": ["count"],
     "kind": "verify", "fallback": {"description": "Check the count by hand"}}]}"#;

#[tokio::test]
async fn a_failed_verification_fails_its_step_once_and_its_fallback_runs() {
    let fake = Fake::non_streaming()
        .plan(VERIFIED)
        .steps(|id, r| match id {
            "count" => Ok("24".into()),
            // The fallback is a check of its own, with its own verdict.
            "check" if user_text(r).contains("by hand") => Ok("PASS: counted 25 by hand".into()),
            "check" => Ok("FAIL: the count is 24 but the list has 25 items".into()),
            other => Ok(format!("output of {other}")),
        });
    let report = Agent::builder()
        .provider(fake.model.clone())
        .strategy(StrategyKind::Dag)
        .run_options(
            plan_exec::policy::RunOptions::default().with_policy(
                plan_exec::policy::StepPolicy::default()
                    .with_retries(3)
                    .with_backoff(plan_exec::policy::Backoff::none()),
            ),
        )
        .build()
        .unwrap()
        .run("count the items")
        .await
        .unwrap();
    let check = report.step("check").unwrap();
    assert!(check.fallback, "{check:?}");
    assert_eq!(check.output.as_deref(), Some("PASS: counted 25 by hand"));
    let failed = report
        .events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::StepFailed {
                step,
                error,
                retrying,
            } if step.as_str() == "check" => Some((error.clone(), *retrying)),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        failed,
        (
            "verification failed: the count is 24 but the list has 25 items".to_owned(),
            false
        ),
        "a FAIL is not retried on unchanged inputs"
    );
    // Asked once as a check (with the verdict schema), once as the fallback.
    let checks: Vec<Request> = fake
        .requests()
        .into_iter()
        .filter(|r| step_of(r).as_deref() == Some("check"))
        .collect();
    assert_eq!(checks.len(), 2);
    assert!(matches!(
        checks[0].response_format,
        plan_llm::ResponseFormat::JsonSchema { .. }
    ));
}

#[tokio::test]
async fn a_failed_verification_reaches_the_replanner_under_adaptive() {
    let fake = Fake::non_streaming()
        .plan(VERIFIED.replace(
            r#", "fallback": {"description": "Check the count by hand"}"#,
            "",
        ))
        .plan(
            r#"{"steps": [
            {"id": "recount", "description": "Count the items again, one by one", "dependencies": []}]}"#,
        )
        .steps(|id, _| match id {
            "count" => Ok("24".into()),
            "check" => Ok(r#"{"verdict": "FAIL", "reasons": "24 is not 25"}"#.into()),
            other => Ok(format!("output of {other}")),
        });
    let report = agent(&fake, StrategyKind::Adaptive)
        .build()
        .unwrap()
        .run("count the items")
        .await
        .unwrap();
    assert!(report.is_success(), "{:?}", report.failure);
    assert_eq!(report.replans, 1);
    let replan = user_text(&fake.planner_requests()[1]);
    assert!(replan.contains("24 is not 25"), "{replan}");
    assert_eq!(fake.step_requests(), ["count", "check", "recount"]);
}

#[tokio::test]
async fn added_routes_keep_the_default_ones_and_guidance_reaches_the_planner() {
    let plan = r#"{"goal": "g", "steps": [
        {"id": "find", "description": "Find the facts", "kind": "search"},
        {"id": "square", "description": "Print 7 squared", "kind": "code", "dependencies": ["find"]}]}"#;
    let fake = Fake::non_streaming().plan(plan);
    let report = agent(&fake, StrategyKind::Dag)
        .sandbox(plan_sandbox::SandboxChoice::None.lazy())
        .routes(|router| {
            router.route_kind(
                plan_core::StepKind::Search,
                plan_exec::executor::executor_fn(|_| async {
                    Ok("found by the added route".to_owned())
                }),
            )
        })
        .planner_guidance("Search the documents before you answer.")
        .build()
        .unwrap()
        .run("g")
        .await
        .unwrap();
    assert_eq!(
        report.step("find").unwrap().output.as_deref(),
        Some("found by the added route")
    );
    // The code step still goes to the sandbox (off here), not to a plain model call.
    let error = report.step("square").unwrap().error.clone().unwrap();
    assert!(error.contains("code steps are disabled"), "{error}");
    assert!(fake.step_requests().is_empty());
    let system = system_text(&fake.planner_requests()[0]);
    assert!(
        system.contains("Search the documents before you answer."),
        "{system}"
    );
}

#[tokio::test]
async fn synthesis_over_a_large_plan_reads_its_final_steps_only() {
    // A fan-in: 40 parts, then one step joining them.
    let mut steps: Vec<plan_core::Step> = (0..40)
        .map(|i| plan_core::Step::new(format!("part{i}"), format!("Do part {i}")))
        .collect();
    let parts: Vec<String> = (0..40).map(|i| format!("part{i}")).collect();
    steps.push(plan_core::Step::new("join", "Join the parts").depends_on(parts));
    let plan = plan_core::Plan::new("big", steps);
    let fake = Fake::non_streaming();
    let report = agent(&fake, StrategyKind::Dag)
        .concurrency(16)
        .build()
        .unwrap()
        .execute(plan)
        .await
        .unwrap();
    assert!(report.is_success(), "{:?}", report.failure);
    let synthesis = fake
        .requests()
        .into_iter()
        .find(|r| system_text(r).contains("final answer"))
        .unwrap();
    let text = user_text(&synthesis);
    assert!(text.contains("### join: Join the parts"), "{text}");
    assert!(!text.contains("### part0:"), "{text}");
    assert!(text.contains("40 earlier steps are not shown"), "{text}");
}

#[tokio::test]
async fn a_durable_approval_outlives_the_agent_and_is_answered_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let fake = Fake::non_streaming().plan(plan_json(THREE));
    let parked = agent(&fake, StrategyKind::Dag)
        .store(SqliteStore::open(&path).unwrap())
        .build()
        .unwrap()
        .plan_for_approval("wait for me")
        .await
        .unwrap();
    assert_eq!(parked.status, RunStatus::AwaitingApproval);
    assert_eq!(parked.plan.as_ref().unwrap().steps.len(), 3);
    assert!(
        fake.step_requests().is_empty(),
        "nothing ran before approval"
    );
    let id = parked.run_id.clone();

    // Another agent (another process) over the same store: the run waits there.
    let fake2 = Fake::non_streaming();
    let later = agent(&fake2, StrategyKind::Dag)
        .store(SqliteStore::open(&path).unwrap())
        .build()
        .unwrap();
    let e = later.resume(&id).await.unwrap_err();
    assert!(e.to_string().contains("awaits approval"), "{e}");
    // An invalid edit is refused with its problems, and the run keeps waiting.
    let bad = plan_core::Plan::new(
        "wait for me",
        vec![
            plan_core::Step::new("a", "A").depends_on(["b"]),
            plan_core::Step::new("b", "B").depends_on(["a"]),
            plan_core::Step::new("a", "again"),
        ],
    );
    let e = later.approve(&id, Some(bad)).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("dependency cycle") && text.contains("2 steps have the id `a`"),
        "{text}"
    );
    // An edited plan runs in place of the first (as revision 1).
    let edited = plan_core::Plan::new(
        "wait for me",
        vec![
            plan_core::Step::new("search", "Find the frameworks"),
            plan_core::Step::new("check", "Check them").depends_on(["search"]),
        ],
    );
    let done = later.approve(&id, Some(edited)).await.unwrap();
    assert!(done.is_success(), "{:?}", done.failure);
    assert_eq!(done.run_id, id);
    assert_eq!(fake2.step_requests(), ["search", "check"]);
    assert!(
        fake2.planner_requests().is_empty(),
        "approval does not plan again"
    );
    // Answered once: a second approval or a rejection is refused.
    let e = later.approve(&id, None).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("is succeeded, not awaiting approval"),
        "{e}"
    );
    assert!(later.reject(&id, None).await.is_err());
}

#[tokio::test]
async fn a_rejected_run_ends_rejected_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::non_streaming().plan(plan_json(THREE));
    let agent = agent(&fake, StrategyKind::Adaptive)
        .store(SqliteStore::open(dir.path().join("runs.db")).unwrap())
        .build()
        .unwrap();
    let parked = agent.plan_for_approval("not this").await.unwrap();
    let report = agent
        .reject(&parked.run_id, Some("too expensive".to_owned()))
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Rejected);
    assert_eq!(report.failure.as_deref(), Some("too expensive"));
    assert!(fake.step_requests().is_empty());
    assert!(agent.approve(&parked.run_id, None).await.is_err());
}

#[tokio::test]
async fn a_replan_waits_for_approval_and_continues_keeping_finished_steps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let fake = Fake::non_streaming()
        .plan(plan_json(&[
            ("fetch", "Fetch the data", &[]),
            ("parse", "Parse it with the broken parser", &["fetch"]),
        ]))
        .plan(
            r#"{"steps": [
            {"id": "parse2", "description": "Parse it by hand", "dependencies": ["fetch"]}]}"#,
        )
        .steps(|id, _| match id {
            "parse" => Err("parser crashed on line 3".into()),
            other => Ok(format!("output of {other}")),
        });
    let waiting = agent(&fake, StrategyKind::Adaptive)
        .store(SqliteStore::open(&path).unwrap())
        .approve_replans(true)
        .build()
        .unwrap()
        .run("adapt with approval")
        .await
        .unwrap();
    assert_eq!(waiting.status, RunStatus::AwaitingApproval);
    assert_eq!(waiting.replans, 1);
    assert_eq!(waiting.answer, None);
    let revised: Vec<&str> = waiting
        .plan
        .as_ref()
        .unwrap()
        .steps
        .iter()
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(
        revised,
        ["fetch", "parse2"],
        "the revised plan is stored, not run"
    );
    assert_eq!(fake.step_requests(), ["fetch", "parse"]);

    // Approved later (another agent, same store): the replan runs; fetch is not redone.
    let fake2 = Fake::non_streaming();
    let done = agent(&fake2, StrategyKind::Adaptive)
        .store(SqliteStore::open(&path).unwrap())
        .build()
        .unwrap()
        .approve(&waiting.run_id, None)
        .await
        .unwrap();
    assert!(done.is_success(), "{:?}", done.failure);
    assert_eq!(fake2.step_requests(), ["parse2"]);
    assert!(fake2.planner_requests().is_empty());
    assert_eq!(done.replans, 1);
}
