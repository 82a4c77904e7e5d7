//! `Driver` against a real PostgreSQL server: a process driving its own runs under
//! leases (what `plan run` does on a shared store), one throwaway database per test.

use std::time::{Duration, Instant};

use plan_core::RunId;
use plan_exec::context::CancelToken;
use plan_exec::store::{RunRecord, RunStore};
use plan_postgres::testing::TempCluster;
use plan_postgres::{ClaimError, Driver, PostgresStore, StoreStop};

/// A fresh database's URL, or `None` when PostgreSQL tests are skipped.
fn database() -> Option<String> {
    TempCluster::shared_or_skip().map(TempCluster::create_database)
}

/// Leases renewed every second: a lost lease or a cancel request is seen within one.
const TTL: Duration = Duration::from_secs(3);

/// A run created through the driver, so leased to it.
async fn driven_run(driver: &Driver) -> RunId {
    let record = RunRecord::new("g");
    driver.store().create_run(&record).await.unwrap();
    record.id
}

async fn cancelled(cancel: &CancelToken) {
    tokio::time::timeout(Duration::from_secs(30), cancel.cancelled())
        .await
        .expect("the driver's cancel token was cancelled");
}

/// Waits until nobody holds `run`'s lease live.
async fn until_free(store: &PostgresStore, run: &RunId) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while store
        .lease_holder(run)
        .await
        .unwrap()
        .is_some_and(|h| h.live)
    {
        assert!(
            Instant::now() < deadline,
            "the lease on {run} was never given up"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_cancels_the_driven_run_and_says_so() {
    let Some(url) = database() else { return };
    let shared = PostgresStore::connect(&url).await.unwrap();
    let cancel = CancelToken::new();
    let driver = Driver::open(&shared, "first", TTL, &cancel);
    let run = driven_run(&driver).await;
    assert_eq!(driver.stopped_by_store(), None);
    // The process "paused" past its lease, and another took the run over (before the
    // driver's renewal took the expired lease back, which it does when nobody took it).
    let lease = driver.store().held_leases().remove(0);
    let other = Driver::open(&shared, "second", TTL, &CancelToken::new());
    loop {
        shared.renew(&lease, Duration::ZERO).await.unwrap();
        match other.claim(&run).await {
            Ok(()) => break,
            Err(ClaimError::Held { .. }) => continue,
            Err(e) => panic!("an expired lease is taken: {e}"),
        }
    }
    cancelled(&cancel).await;
    assert_eq!(
        driver.stopped_by_store(),
        Some(StoreStop::LeaseLost { ttl: TTL })
    );
    let said = driver.stopped_by_store().unwrap().to_string();
    assert!(said.contains("lost its lease"), "{said}");
    assert!(
        !said.contains("--"),
        "no CLI flag in a library's words: {said}"
    );
    // Its writes are refused from now on.
    assert!(
        driver
            .store()
            .set_status(&run, plan_core::RunStatus::Failed)
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_asked_through_the_store_reaches_the_driver() {
    let Some(url) = database() else { return };
    let shared = PostgresStore::connect(&url).await.unwrap();
    let cancel = CancelToken::new();
    let driver = Driver::open(&shared, "first", TTL, &cancel);
    let run = driven_run(&driver).await;
    assert!(shared.request_cancel(&run).await.unwrap());
    cancelled(&cancel).await;
    assert_eq!(driver.stopped_by_store(), Some(StoreStop::CancelRequested));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_run_is_not_claimed_and_a_dropped_driver_gives_its_runs_up_at_once() {
    let Some(url) = database() else { return };
    let shared = PostgresStore::connect(&url).await.unwrap();
    // A long lease: only the release frees the run within the test.
    let ttl = Duration::from_secs(600);
    let first = Driver::open(&shared, "first", ttl, &CancelToken::new());
    let run = driven_run(&first).await;
    let second = Driver::open(&shared, "second", ttl, &CancelToken::new());
    match second.claim(&run).await {
        Err(ClaimError::Held { holder, .. }) => assert_eq!(holder.worker, "first"),
        other => panic!("a live lease must refuse the claim: {other:?}"),
    }
    drop(first);
    let holder = shared.lease_holder(&run).await.unwrap().unwrap();
    assert!(!holder.live, "the drop gave the lease up before returning");
    second.claim(&run).await.expect("claimable at once");
    assert!(matches!(
        second.claim(&RunId::new("nope")).await,
        Err(ClaimError::Store(_))
    ));
}

#[tokio::test]
async fn dropping_a_driver_on_a_current_thread_runtime_or_off_it_does_not_panic() {
    let Some(url) = database() else { return };
    let shared = PostgresStore::connect(&url).await.unwrap();
    let ttl = Duration::from_secs(600);
    let driver = Driver::open(&shared, "first", ttl, &CancelToken::new());
    let run = driven_run(&driver).await;
    drop(driver);
    // Given up in the background.
    until_free(&shared, &run).await;
    // Off the runtime, the leases are left to expire.
    let driver = Driver::open(&shared, "second", ttl, &CancelToken::new());
    let kept = driven_run(&driver).await;
    std::thread::spawn(move || drop(driver)).join().unwrap();
    let holder = shared.lease_holder(&kept).await.unwrap().unwrap();
    assert!(holder.live, "nothing could give it up");
}
