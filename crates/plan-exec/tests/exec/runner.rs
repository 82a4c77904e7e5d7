//! Runners: ordering, concurrency, context, streaming, routing, events.

use std::time::Duration;

use futures::StreamExt as _;
use plan_core::{EventKind, RunStatus, Step, StepKind, StepStatus};
use plan_exec::context::StepContext;
use plan_exec::error::ExecError;
use plan_exec::events::EventLog;
use plan_exec::executor::executor_fn;
use plan_exec::policy::RunOptions;
use plan_exec::router::Router;
use plan_exec::runner::Runner;
use plan_exec::store::RunRecord;

use crate::support::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn diamond_runs_with_direct_dependency_outputs_and_events() {
    let probe = Probe::default();
    let log = EventLog::new();
    let runner = Runner::parallel(probe.executor(|_| ms(100))).with_event_sink(log.clone());
    let report = runner
        .run(plan(&[
            ("a", &[]),
            ("b", &["a"]),
            ("c", &["a"]),
            ("d", &["b", "c"]),
        ]))
        .await
        .unwrap();

    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.output("a"), Some("out(a)<-[]"));
    assert_eq!(report.output("b"), Some("out(b)<-[a]"));
    // d sees its direct dependencies only, never `a`.
    assert_eq!(report.output("d"), Some("out(d)<-[b,c]"));
    assert!(report.steps.iter().all(|s| s.attempts == 1));
    assert_eq!(probe.max_running(), 2);

    let kinds = log.kinds();
    let names = names(&kinds);
    assert_eq!(names.first(), Some(&"run_started"));
    assert_eq!(names[1], "plan_created");
    assert_eq!(names.last(), Some(&"run_finished"));
    assert_eq!(names.iter().filter(|n| **n == "step_started").count(), 4);
    assert_eq!(names.iter().filter(|n| **n == "step_completed").count(), 4);
    let progress: Vec<(usize, usize)> = kinds
        .iter()
        .filter_map(|k| match k {
            EventKind::Progress { done, total, .. } => Some((*done, *total)),
            _ => None,
        })
        .collect();
    assert_eq!(progress, vec![(1, 4), (2, 4), (3, 4), (4, 4)]);
    assert!(matches!(
        kinds.last(),
        Some(EventKind::RunFinished {
            status: RunStatus::Succeeded,
            ..
        })
    ));
    assert!(log.events().iter().all(|e| e.run == report.run_id));
}

#[tokio::test(start_paused = true)]
async fn a_step_starts_when_its_last_dependency_completes_not_per_wave() {
    // a (fast) -> c ; b (slow) is independent. c must start long before b ends.
    let probe = Probe::default();
    let log = EventLog::new();
    let runner = Runner::parallel(probe.executor(|id| if id == "b" { ms(1000) } else { ms(100) }))
        .with_event_sink(log.clone());
    let report = runner
        .run(plan(&[
            ("a", &[]),
            ("b", &[]),
            ("c", &["a"]),
            ("d", &["c"]),
        ]))
        .await
        .unwrap();
    assert!(report.is_success());
    let kinds = log.kinds();
    assert!(position(&kinds, started("c")) < position(&kinds, completed("b")));
    assert!(position(&kinds, completed("d")) < position(&kinds, completed("b")));
    // Under the paused clock the makespan is exactly the critical path.
    assert_eq!(report.duration_ms, 1000);
}

#[tokio::test(start_paused = true)]
async fn concurrency_bound_is_respected() {
    let probe = Probe::default();
    let steps: Vec<(String, Vec<&str>)> = (0..10).map(|i| (format!("s{i}"), vec![])).collect();
    let refs: Vec<(&str, &[&str])> = steps
        .iter()
        .map(|(id, d)| (id.as_str(), d.as_slice()))
        .collect();
    let runner = Runner::parallel(probe.executor(|_| ms(50)))
        .with_options(RunOptions::default().with_concurrency(3));
    let report = runner.run(plan(&refs)).await.unwrap();
    assert!(report.is_success());
    assert_eq!(probe.max_running(), 3);
    assert_eq!(probe.total_calls(), 10);
}

#[tokio::test(start_paused = true)]
async fn sequential_runs_one_step_at_a_time_in_plan_order() {
    let probe = Probe::default();
    let runner = Runner::sequential(probe.executor(|_| ms(10)))
        .with_options(RunOptions::default().with_concurrency(8));
    let report = runner
        .run(plan(&[
            ("z", &["x"]),
            ("x", &[]),
            ("y", &[]),
            ("w", &["z"]),
        ]))
        .await
        .unwrap();
    assert!(report.is_success());
    assert_eq!(probe.max_running(), 1);
    // Ready steps start in plan order: `z` (first in the plan) as soon as `x` is done.
    assert_eq!(probe.order(), ["x", "z", "y", "w"]);
}

#[tokio::test(start_paused = true)]
async fn streamed_plan_starts_steps_before_the_plan_is_complete() {
    let probe = Probe::default();
    let log = EventLog::new();
    let runner = Runner::parallel(probe.executor(|_| ms(100))).with_event_sink(log.clone());
    let (tx, rx) = futures::channel::mpsc::unbounded::<Step>();
    let feeder = {
        let log = log.clone();
        tokio::spawn(async move {
            // `b` arrives before `a`, which it depends on.
            tx.unbounded_send(Step::new("b", "do b").depends_on(["a"]))
                .unwrap();
            tx.unbounded_send(Step::new("a", "do a")).unwrap();
            // Keep the stream open until `a` has completed.
            while !log.kinds().iter().any(completed("a")) {
                tokio::time::sleep(ms(10)).await;
            }
            tx.unbounded_send(Step::new("c", "do c").depends_on(["a", "b"]))
                .unwrap();
        })
    };
    let report = runner
        .run_stream(RunRecord::new("streamed goal"), rx.boxed())
        .await
        .unwrap();
    feeder.await.unwrap();
    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.plan.as_ref().unwrap().steps.len(), 3);
    assert_eq!(report.output("c"), Some("out(c)<-[a,b]"));
    let kinds = log.kinds();
    let plan_created = position(&kinds, |k| matches!(k, EventKind::PlanCreated { .. }));
    assert!(position(&kinds, completed("a")) < plan_created);
}

#[tokio::test(start_paused = true)]
async fn streamed_plan_with_an_unknown_dependency_is_an_error_naming_it() {
    let probe = Probe::default();
    let runner = Runner::parallel(probe.executor(|_| ms(10)));
    let steps = futures::stream::iter(vec![
        Step::new("a", "do a"),
        Step::new("b", "do b").depends_on(["ghost"]),
    ]);
    let err = runner
        .run_stream(RunRecord::new("g"), steps)
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::InvalidPlan(_)));
    assert!(err.to_string().contains("`ghost`"), "{err}");
    assert_eq!(probe.calls("b"), 0);
}

#[tokio::test]
async fn invalid_plans_are_rejected_before_anything_runs() {
    let probe = Probe::default();
    let runner = Runner::parallel(probe.executor(|_| ms(1)));
    let err = runner
        .run(plan(&[("a", &["b"]), ("b", &["a"]), ("c", &["zz"])]))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("cycle"), "{text}");
    assert!(text.contains("`zz`"), "{text}");
    assert_eq!(probe.total_calls(), 0);
}

#[tokio::test]
async fn dependency_outputs_are_capped_with_a_visible_marker() {
    let runner = Runner::parallel(executor_fn(|ctx: StepContext| async move {
        if ctx.step().id.as_str() == "big" {
            return Ok("x".repeat(500));
        }
        let dep = &ctx.dependencies()[0];
        Ok(format!("{}|{}", dep.truncated, dep.output))
    }))
    .with_options(RunOptions::default().with_max_dependency_chars(100));
    let report = runner
        .run(plan(&[("big", &[]), ("use", &["big"])]))
        .await
        .unwrap();
    let seen = report.output("use").unwrap();
    assert!(
        seen.starts_with(&format!("true|{}\n", "x".repeat(100))),
        "{seen}"
    );
    assert!(
        seen.ends_with("[... truncated: 400 more characters not shown]"),
        "{seen}"
    );
    // The full output is kept in the report.
    assert_eq!(report.output("big").unwrap().len(), 500);
}

#[tokio::test]
async fn router_routes_by_agent_and_kind_with_a_default() {
    let tag = |t: &'static str| executor_fn(move |_: StepContext| async move { Ok(t.to_owned()) });
    let router = Router::default()
        .with_default(tag("default"))
        .route_agent("analyst", tag("analyst"))
        .route_kind(StepKind::Search, tag("search"))
        .route("analyst", StepKind::Verify, tag("analyst-verify"))
        .route_programs(tag("program"));
    let p = plan_core::Plan::new(
        "g",
        vec![
            Step::new("plain", "p"),
            Step::new("ana", "p").with_agent("analyst"),
            Step::new("find", "p").with_kind(StepKind::Search),
            Step::new("ana-find", "p")
                .with_agent("analyst")
                .with_kind(StepKind::Search),
            Step::new("check", "p")
                .with_agent("analyst")
                .with_kind(StepKind::Verify),
            Step::new("other", "p").with_agent("nobody"),
            // A step with its own program goes to the program route, whatever else it is.
            Step::new("checked", "p")
                .with_agent("analyst")
                .with_kind(StepKind::Verify)
                .with_code(plan_core::CodeLang::Bash, "true"),
        ],
    );
    let report = Runner::parallel(router).run(p).await.unwrap();
    let out = |id| report.output(id).unwrap().to_owned();
    assert_eq!(out("plain"), "default");
    assert_eq!(out("ana"), "analyst");
    assert_eq!(out("find"), "search");
    assert_eq!(out("ana-find"), "analyst");
    assert_eq!(out("check"), "analyst-verify");
    assert_eq!(out("other"), "default");
    assert_eq!(out("checked"), "program");

    let no_default = Router::default().route_agent("analyst", tag("analyst"));
    let report = Runner::parallel(no_default)
        .run(plan(&[("lonely", &[])]))
        .await
        .unwrap();
    let step = report.step("lonely").unwrap();
    assert_eq!(step.status, StepStatus::Failed);
    assert!(
        step.error
            .as_deref()
            .unwrap()
            .contains("no executor for step `lonely`")
    );
}
