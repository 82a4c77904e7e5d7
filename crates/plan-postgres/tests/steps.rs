//! Step tasks in batches against a real PostgreSQL server: several queued, claimed,
//! renewed, recorded and read in one statement each, with the guarantees of one at a
//! time (a task is claimed once, a result recorded only under its live claim, and each
//! waiter woken for its own task).

use std::collections::HashSet;
use std::time::Duration;

use futures::FutureExt as _;
use plan_core::RunId;
use plan_exec::store::{RunRecord, RunStore};
use plan_postgres::testing::{StatementStats, TempCluster};
use plan_postgres::{PostgresStore, StepTask};
use serde_json::json;

async fn new_run(store: &PostgresStore) -> RunId {
    let record = RunRecord::new("g");
    store.create_run(&record).await.unwrap();
    record.id
}

fn tasks(run: &RunId, n: usize) -> Vec<StepTask> {
    (0..n)
        .map(|i| StepTask::new(run.clone(), format!("s{i}@0"), 1, json!({"i": i})))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_claim_each_task_once_and_record_only_live_claims() {
    let Some(cluster) = TempCluster::shared_or_skip() else {
        return;
    };
    let store = PostgresStore::connect(&cluster.create_database())
        .await
        .unwrap();
    let run = new_run(&store).await;
    let new_steps = store.steps_listener().await.unwrap();
    let queued = store.enqueue_steps(&tasks(&run, 40)).await.unwrap();
    assert_eq!(queued, vec![true; 40]);
    // Queueing again changes nothing, and says so task by task.
    let mut again = tasks(&run, 41);
    again.rotate_right(1);
    let queued = store.enqueue_steps(&again).await.unwrap();
    assert_eq!(queued.iter().filter(|q| **q).count(), 1, "{queued:?}");
    assert!(queued[0], "the one new task is the first given");
    tokio::time::timeout(
        Duration::from_secs(30),
        new_steps.wait(Duration::from_secs(60)),
    )
    .await
    .expect("the workers are woken when tasks are queued");

    // Five claimers at once, twelve tasks each at most: 41 tasks, each claimed once.
    let ttl = Duration::from_secs(60);
    let claims = futures::future::join_all((0..5).map(|i| {
        let store = store.clone();
        async move {
            store
                .claim_steps(&format!("w{i}"), ttl, &[], 12)
                .await
                .unwrap()
        }
    }))
    .await;
    let all: Vec<_> = claims.iter().flatten().cloned().collect();
    assert_eq!(all.len(), 41);
    let keys: HashSet<&str> = all.iter().map(|c| c.task.step.as_str()).collect();
    assert_eq!(keys.len(), 41, "no task was claimed twice");
    assert!(claims.iter().all(|c| c.len() <= 12));
    assert!(
        store
            .claim_steps("late", ttl, &[], 5)
            .await
            .unwrap()
            .is_empty(),
        "nothing left to claim"
    );

    // One claim is stale (taken over): its renewal and its result are refused, the
    // others' go through, and their waiters, watching before, are woken.
    let mut stale = all[0].clone();
    stale.token += 7;
    let mut batch: Vec<_> = all[1..4].to_vec();
    batch.push(stale.clone());
    let renewed = store.renew_steps(&batch, ttl).await.unwrap();
    assert_eq!(renewed, vec![true, true, true, false]);
    let results = store.step_listener().await.unwrap();
    let watches: Vec<_> = all[1..4]
        .iter()
        .map(|c| results.watch(&run, &c.task.step))
        .collect();
    let woken = async {
        for w in &watches {
            w.wait(Duration::from_secs(60)).await;
        }
    };
    let done: Vec<_> = batch
        .iter()
        .map(|c| (c.clone(), json!({"ok": format!("did {}", c.task.step)})))
        .collect();
    let (recorded, ()) = tokio::join!(
        async { store.complete_steps(&done).await.unwrap() },
        tokio::time::timeout(Duration::from_secs(20), woken).map(|r| r.expect("woken"))
    );
    assert_eq!(recorded, vec![true, true, true, false]);
    // Recording again is refused: the tasks are done.
    assert_eq!(store.complete_steps(&done[..1]).await.unwrap(), vec![false]);

    let wanted: Vec<_> = batch
        .iter()
        .map(|c| (run.clone(), c.task.step.clone(), 1))
        .collect();
    let read = store.step_results(&wanted).await.unwrap();
    for (i, c) in batch.iter().enumerate().take(3) {
        assert_eq!(read[i], Some(json!({"ok": format!("did {}", c.task.step)})));
    }
    assert_eq!(read[3], None, "the stale claim's result was not recorded");
    assert!(RunStore::load_run(&store, &run).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_results_is_one_statement_with_its_notification() {
    let Ok(cluster) = TempCluster::start_with_statement_stats() else {
        assert!(
            std::env::var(plan_postgres::testing::SKIP_VAR).is_ok_and(|v| v == "1"),
            "a cluster with pg_stat_statements"
        );
        return;
    };
    let url = cluster.create_database();
    let store = PostgresStore::connect(&url).await.unwrap();
    let run = new_run(&store).await;
    let stats = tokio::task::spawn_blocking({
        let url = url.clone();
        move || StatementStats::enable(&url).unwrap()
    })
    .await
    .unwrap();
    let stats = std::sync::Arc::new(stats);
    let reset = stats.clone();
    tokio::task::spawn_blocking(move || reset.reset().unwrap())
        .await
        .unwrap();
    store.enqueue_steps(&tasks(&run, 30)).await.unwrap();
    let claims = store
        .claim_steps("w", Duration::from_secs(60), &[], 30)
        .await
        .unwrap();
    let done: Vec<_> = claims
        .iter()
        .map(|c| (c.clone(), json!({"ok": "x"})))
        .collect();
    assert_eq!(store.complete_steps(&done).await.unwrap(), vec![true; 30]);
    let wanted: Vec<_> = claims
        .iter()
        .map(|c| (run.clone(), c.task.step.clone(), 1))
        .collect();
    assert!(
        store
            .step_results(&wanted)
            .await
            .unwrap()
            .iter()
            .all(Option::is_some)
    );
    let counts = tokio::task::spawn_blocking(move || stats.counts().unwrap())
        .await
        .unwrap();
    let total: i64 = counts.iter().map(|c| c.calls).sum();
    assert_eq!(total, 4, "queue, claim, record, read: {counts:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_queued_claimed_are_nobody_elses_until_their_lease_runs_out() {
    let Some(cluster) = TempCluster::shared_or_skip() else {
        return;
    };
    let store = PostgresStore::connect(&cluster.create_database())
        .await
        .unwrap();
    let run = new_run(&store).await;
    let short = Duration::from_millis(300);
    let claimed = store
        .enqueue_claimed_steps("driver", short, &tasks(&run, 3))
        .await
        .unwrap();
    assert!(
        claimed.iter().all(|c| c
            .as_ref()
            .is_some_and(|c| c.worker == "driver" && c.token == 1)),
        "{claimed:?}"
    );
    let claimed: Vec<_> = claimed.into_iter().flatten().collect();
    // Queued again, by a driver that took the run over: nothing new is claimed.
    let mut again = tasks(&run, 4);
    again.rotate_right(1);
    let queued = store
        .enqueue_claimed_steps("other", short, &again)
        .await
        .unwrap();
    assert_eq!(
        queued[0].as_ref().map(|c| c.task.step.as_str()),
        Some("s3@0")
    );
    assert!(queued[1..].iter().all(Option::is_none), "{queued:?}");
    // The first is recorded at once; the others' leases run out and the fleet claims
    // them, and then the late results of the first claims are refused.
    let first = (claimed[0].clone(), json!({"ok": "did s0"}));
    assert_eq!(store.complete_steps(&[first]).await.unwrap(), vec![true]);
    let mut taken = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while taken.len() < 2 && tokio::time::Instant::now() < deadline {
        taken.extend(
            store
                .claim_steps("w", Duration::from_secs(60), &[], 5)
                .await
                .unwrap()
                .into_iter()
                .filter(|c| c.task.step != "s3@0"),
        );
        // The leases lapse on the database's clock: looked at again shortly.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut keys: Vec<_> = taken
        .iter()
        .map(|c| (c.task.step.as_str(), c.token))
        .collect();
    keys.sort();
    assert_eq!(keys, [("s1@0", 2), ("s2@0", 2)]);
    let late: Vec<_> = claimed[1..]
        .iter()
        .map(|c| (c.clone(), json!({"ok": "late"})))
        .collect();
    assert_eq!(
        store.complete_steps(&late).await.unwrap(),
        vec![false, false]
    );
    let read = store
        .step_results(&[(run.clone(), "s0@0".to_owned(), 1)])
        .await
        .unwrap();
    assert_eq!(read, [Some(json!({"ok": "did s0"}))]);
}
