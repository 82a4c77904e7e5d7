//! Policies and faults: timeout, retry, fallback, fatal errors, panics, cancellation and
//! resume.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use plan_core::{EventKind, RunStatus, Step, StepBody, StepStatus};
use plan_exec::context::{CancelToken, StepContext};
use plan_exec::error::StepError;
use plan_exec::events::EventLog;
use plan_exec::executor::executor_fn;
use plan_exec::policy::{Backoff, RunOptions, StepPolicy};
use plan_exec::runner::Runner;
use plan_exec::store::RunStore;
use plan_sqlite::SqliteStore;

use crate::support::*;

fn fast_policy() -> StepPolicy {
    StepPolicy::default().with_backoff(Backoff::none())
}

#[tokio::test(start_paused = true)]
async fn step_timeout_fails_the_step_and_skips_dependents() {
    let log = EventLog::new();
    let runner = Runner::parallel(executor_fn(|ctx: StepContext| async move {
        if ctx.step().id.as_str() == "slow" {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Ok("done".to_owned())
    }))
    .with_options(
        RunOptions::default().with_policy(
            fast_policy()
                .with_timeout(Duration::from_millis(200))
                .with_retries(1),
        ),
    )
    .with_event_sink(log.clone());
    let report = runner
        .run(plan(&[("slow", &[]), ("after", &["slow"]), ("free", &[])]))
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    let slow = report.step("slow").unwrap();
    assert_eq!(slow.status, StepStatus::Failed);
    assert_eq!(
        slow.attempts, 2,
        "a timeout is retried like a retryable error"
    );
    assert!(
        slow.error
            .as_deref()
            .unwrap()
            .starts_with("timed out after 200 ms")
    );
    assert_eq!(report.step("after").unwrap().status, StepStatus::Skipped);
    assert_eq!(report.output("free"), Some("done"));
    let retrying: Vec<bool> = log
        .kinds()
        .iter()
        .filter_map(|k| match k {
            EventKind::StepFailed { retrying, .. } => Some(*retrying),
            _ => None,
        })
        .collect();
    assert_eq!(retrying, vec![true, false]);
}

#[tokio::test(start_paused = true)]
async fn retryable_errors_are_retried_with_backoff_then_succeed() {
    let tries = Arc::new(AtomicU32::new(0));
    let t = tries.clone();
    let log = EventLog::new();
    let runner = Runner::parallel(executor_fn(move |ctx: StepContext| {
        let t = t.clone();
        async move {
            assert_eq!(ctx.attempt(), t.fetch_add(1, Ordering::SeqCst) + 1);
            if ctx.attempt() < 3 {
                Err(StepError::retryable("rate limited"))
            } else {
                Ok(format!("ok on attempt {}", ctx.attempt()))
            }
        }
    }))
    .with_options(
        RunOptions::default().with_policy(
            StepPolicy::default().with_retries(3).with_backoff(
                Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1))
                    .without_jitter(),
            ),
        ),
    )
    .with_event_sink(log.clone());
    let report = runner.run(plan(&[("flaky", &[])])).await.unwrap();
    assert!(report.is_success());
    let step = report.step("flaky").unwrap();
    assert_eq!(step.attempts, 3);
    assert_eq!(step.output.as_deref(), Some("ok on attempt 3"));
    assert!(!step.fallback);
    // Backoff waited 100 ms, then 200 ms (the paused clock may add a millisecond a sleep).
    let took = step.duration_ms.unwrap();
    assert!((300..=303).contains(&took), "{took}");
    let kinds = log.kinds();
    let n = names(&kinds);
    let attempts: Vec<u32> = kinds
        .iter()
        .filter_map(|k| match k {
            EventKind::StepStarted { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    assert_eq!(n.iter().filter(|x| **x == "step_failed").count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_retry_waits_as_long_as_the_server_asked() {
    let tries = Arc::new(AtomicU32::new(0));
    let t = tries.clone();
    let runner = Runner::parallel(executor_fn(move |ctx: StepContext| {
        let t = t.clone();
        async move {
            t.fetch_add(1, Ordering::SeqCst);
            if ctx.attempt() == 1 {
                // A tool's service answered 429 with `Retry-After: 2`.
                Err(StepError::retryable("slow down").with_retry_after(Duration::from_secs(2)))
            } else {
                Ok("ok".to_owned())
            }
        }
    }))
    .with_options(
        RunOptions::default().with_policy(
            StepPolicy::default().with_retries(1).with_backoff(
                Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1))
                    .without_jitter(),
            ),
        ),
    );
    let report = runner.run(plan(&[("limited", &[])])).await.unwrap();
    assert!(report.is_success());
    assert_eq!(tries.load(Ordering::SeqCst), 2);
    // 2 s as asked, not the 100 ms of the backoff.
    let took = report.step("limited").unwrap().duration_ms.unwrap();
    assert!((2000..=2003).contains(&took), "{took}");
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_run_the_fallback() {
    let log = EventLog::new();
    let runner = Runner::parallel(executor_fn(|ctx: StepContext| async move {
        let d = ctx.step().description.clone();
        if d.starts_with("fallback") {
            Ok(format!("fallback output for {}", ctx.step().id))
        } else if ctx.step().id.as_str() == "main" {
            Err(StepError::retryable("server error"))
        } else {
            Ok(format!("saw {}", ctx.dependencies()[0].output))
        }
    }))
    .with_options(RunOptions::default().with_policy(fast_policy().with_retries(2)))
    .with_event_sink(log.clone());
    let p = plan_core::Plan::new(
        "g",
        vec![
            Step::new("main", "the real thing")
                .with_fallback(StepBody::new("fallback: from general knowledge")),
            Step::new("next", "use it").depends_on(["main"]),
        ],
    );
    let report = runner.run(p).await.unwrap();
    assert!(report.is_success(), "{report:?}");
    let main = report.step("main").unwrap();
    assert!(main.fallback);
    assert_eq!(main.attempts, 4, "3 tries, then the fallback");
    assert_eq!(report.output("next"), Some("saw fallback output for main"));
    let kinds = log.kinds();
    let fb = position(
        &kinds,
        |k| matches!(k, EventKind::FallbackUsed { step, error } if step.as_str() == "main" && error == "server error"),
    );
    assert!(fb < position(&kinds, completed("main")));
}

#[tokio::test(start_paused = true)]
async fn fatal_error_fails_at_once_and_skips_dependents() {
    let probe = Probe::default();
    let inner = Arc::new(probe.executor(|_| Duration::from_millis(10)));
    let log = EventLog::new();
    let runner = Runner::parallel(executor_fn(move |ctx: StepContext| {
        let inner = inner.clone();
        async move {
            if ctx.step().id.as_str() == "a" {
                return Err(StepError::fatal("bad request: the prompt is malformed"));
            }
            plan_exec::executor::StepExecutor::execute(&*inner, &ctx).await
        }
    }))
    .with_options(RunOptions::default().with_policy(fast_policy().with_retries(5)))
    .with_event_sink(log.clone());
    let report = runner
        .run(plan(&[
            ("a", &[]),
            ("b", &["a"]),
            ("c", &["b"]),
            ("d", &[]),
        ]))
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    let a = report.step("a").unwrap();
    assert_eq!((a.status, a.attempts), (StepStatus::Failed, 1));
    assert_eq!(
        a.error.as_deref(),
        Some("bad request: the prompt is malformed")
    );
    for id in ["b", "c"] {
        let s = report.step(id).unwrap();
        assert_eq!(s.status, StepStatus::Skipped);
        assert_eq!(s.attempts, 0);
    }
    assert_eq!(
        report.step("b").unwrap().error.as_deref(),
        Some("skipped because `a` did not complete")
    );
    assert_eq!(report.output("d"), Some("out(d)<-[]"));
    assert_eq!(probe.calls("b") + probe.calls("c"), 0);
    let skipped: Vec<String> = log
        .kinds()
        .iter()
        .filter_map(|k| match k {
            EventKind::StepSkipped { step, .. } => Some(step.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(skipped, ["b", "c"]);
    assert_eq!(report.failures().count(), 1);
}

#[tokio::test]
async fn a_panicking_executor_fails_its_step_only() {
    let runner = Runner::parallel(executor_fn(|ctx: StepContext| async move {
        if ctx.step().id.as_str() == "boom" {
            panic!("kaboom");
        }
        Ok("fine".to_owned())
    }));
    let report = runner
        .run(plan(&[("boom", &[]), ("ok", &[])]))
        .await
        .unwrap();
    let boom = report.step("boom").unwrap();
    assert_eq!(boom.status, StepStatus::Failed);
    assert!(boom.error.as_deref().unwrap().contains("kaboom"));
    assert_eq!(report.output("ok"), Some("fine"));
}

#[tokio::test]
async fn cancellation_stops_in_flight_steps_and_resume_finishes_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let store = SqliteStore::open(&path).unwrap();
    let cancel = CancelToken::new();
    let probe = Probe::default();
    let inner = Arc::new(probe.executor(|_| Duration::from_millis(1)));
    let c = cancel.clone();
    let first = Runner::parallel(executor_fn(move |ctx: StepContext| {
        let inner = inner.clone();
        let c = c.clone();
        async move {
            if ctx.step().id.as_str() == "hang" {
                // Cancel the run from inside, then wait to be cancelled.
                c.cancel();
                ctx.cancel_token().cancelled().await;
                return Err(StepError::cancelled());
            }
            plan_exec::executor::StepExecutor::execute(&*inner, &ctx).await
        }
    }))
    .with_store(store.clone())
    .with_cancel(cancel);
    let p = plan(&[
        ("a", &[]),
        ("hang", &["a"]),
        ("c", &["hang"]),
        ("d", &["a"]),
    ]);
    let report = first.run(p).await.unwrap();
    assert_eq!(report.status, RunStatus::Cancelled);
    assert_eq!(report.step("a").unwrap().status, StepStatus::Completed);
    assert_eq!(report.step("hang").unwrap().status, StepStatus::Cancelled);
    assert_eq!(report.step("c").unwrap().status, StepStatus::Cancelled);
    let stored = store.load_run(&report.run_id).await.unwrap().unwrap();
    assert_eq!(stored.status, RunStatus::Cancelled);
    assert!(stored.output("a").is_some());
    assert!(stored.output("hang").is_none());

    // Resume from a fresh store handle, as a new process would.
    let store = SqliteStore::open(&path).unwrap();
    let probe2 = Probe::default();
    let second =
        Runner::parallel(probe2.executor(|_| Duration::from_millis(1))).with_store(store.clone());
    let resumed = second.resume(&report.run_id).await.unwrap();
    assert_eq!(resumed.status, RunStatus::Succeeded);
    assert_eq!(probe2.calls("a"), 0, "a completed step is never run again");
    assert_eq!(probe2.calls("hang"), 1);
    assert_eq!(probe2.calls("c"), 1);
    assert!(resumed.step("a").unwrap().reused);
    assert_eq!(resumed.output("c"), Some("out(c)<-[hang]"));
    let hang = resumed.step("hang").unwrap();
    assert_eq!(hang.attempts, 2, "attempt numbers continue after a resume");
    let stored = store.load_run(&report.run_id).await.unwrap().unwrap();
    assert_eq!(stored.status, RunStatus::Succeeded);
    assert_eq!(stored.outputs.len(), 4);
}
