//! Property tests: random DAGs with random failures through the parallel runner.

use std::collections::HashSet;
use std::time::Duration;

use plan_core::{Plan, Step, StepStatus};
use plan_exec::context::StepContext;
use plan_exec::error::StepError;
use plan_exec::executor::executor_fn;
use plan_exec::policy::{Backoff, RunOptions, StepPolicy};
use plan_exec::runner::Runner;
use proptest::prelude::*;

/// A random DAG: step i may depend on any earlier step.
fn dag() -> impl Strategy<Value = (Vec<Vec<usize>>, Vec<bool>, usize)> {
    (1usize..25).prop_flat_map(|n| {
        let deps = (0..n)
            .map(|i| {
                proptest::collection::vec(0..i.max(1), 0..=i.min(3))
                    .prop_map(move |d| if i == 0 { vec![] } else { d })
            })
            .collect::<Vec<_>>();
        (
            deps,
            proptest::collection::vec(proptest::bool::weighted(0.2), n),
            1usize..6,
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn outcomes_are_consistent_with_the_graph((deps, fails, concurrency) in dag()) {
        let n = deps.len();
        let steps: Vec<Step> = (0..n)
            .map(|i| Step::new(format!("s{i}"), "work").depends_on(deps[i].iter().map(|d| format!("s{d}"))))
            .collect();
        let failing: HashSet<String> = (0..n).filter(|&i| fails[i]).map(|i| format!("s{i}")).collect();
        let runner = Runner::parallel(executor_fn(move |ctx: StepContext| {
            let fail = failing.contains(ctx.step().id.as_str());
            async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                if fail { Err(StepError::fatal("planned failure")) } else { Ok("ok".to_owned()) }
            }
        }))
        .with_options(RunOptions::default().with_concurrency(concurrency)
            .with_policy(StepPolicy::default().with_backoff(Backoff::none())));
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        let report = rt.block_on(runner.run(Plan::new("g", steps))).unwrap();
        for i in 0..n {
            let s = &report.steps[i];
            let dep_ok = deps[i].iter().all(|&d| report.steps[d].status == StepStatus::Completed);
            match s.status {
                StepStatus::Completed => prop_assert!(dep_ok && !fails[i]),
                StepStatus::Failed => prop_assert!(dep_ok && fails[i] && s.attempts == 1),
                StepStatus::Skipped => prop_assert!(!dep_ok && s.attempts == 0),
                other => prop_assert!(false, "unexpected outcome {:?}", other),
            }
        }
        prop_assert_eq!(report.is_success(), !fails.iter().any(|&f| f) );
    }
}

#[test]
fn key_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Runner>();
    check::<plan_exec::context::StepContext>();
    check::<plan_sqlite::SqliteStore>();
    check::<plan_exec::router::Router>();
    check::<plan_exec::report::RunReport>();
    check::<plan_exec::events::EventLog>();
    check::<plan_exec::error::ExecError>();
    check::<Box<dyn plan_exec::executor::StepExecutor>>();
    check::<Box<dyn plan_exec::store::RunStore>>();
}
