//! `PostgresStore` through database faults: a restart, an outage past the store's
//! bound, leases that expired meanwhile, and `LISTEN` connections that were cut. One
//! throwaway cluster for this test binary (it is stopped and started, so it is not the
//! shared one), its tests one at a time.

use std::sync::OnceLock;
use std::time::Duration;

use plan_core::{Event, EventKind, RunId, RunStatus};
use plan_exec::context::CancelToken;
use plan_exec::store::{RunRecord, RunStore, StepOutputRecord};
use plan_postgres::testing::{SKIP_VAR, TempCluster};
use plan_postgres::{Driver, PostgresStore, Renewal, Unreachable};

/// This binary's cluster, and the lock its tests take (a fault hits every database).
async fn cluster() -> Option<(&'static TempCluster, tokio::sync::MutexGuard<'static, ()>)> {
    if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
        eprintln!("{SKIP_VAR}=1: skipping a test that needs PostgreSQL");
        return None;
    }
    static CLUSTER: OnceLock<TempCluster> = OnceLock::new();
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let guard = ONE_AT_A_TIME.lock().await;
    let cluster = CLUSTER.get_or_init(|| TempCluster::start().expect("a cluster starts"));
    Some((cluster, guard))
}

async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

fn progress(run: &RunId, i: usize) -> Event {
    Event::now(run.clone(), EventKind::progress(i, 100))
}

/// The backends of this database listening for events.
async fn listening(admin: &tokio_postgres::Client) -> Vec<i32> {
    admin
        .query(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND query = 'LISTEN plan_events'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, i32>(0))
        .collect()
}

/// Runs a blocking cluster command off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_ride_out_a_restart_and_fail_past_the_bound_saying_so() {
    let Some((cluster, _one)) = cluster().await else {
        return;
    };
    let url = cluster.create_database();
    let store = PostgresStore::connect(&url).await.unwrap();
    let record = RunRecord::new("g");
    store.create_run(&record).await.unwrap();
    let run = record.id.clone();
    store
        .append_events(&run, &[progress(&run, 1)])
        .await
        .unwrap();

    // Down for two seconds: the writes made meanwhile wait for it, and land once each.
    blocking(|| cluster.stop().unwrap()).await;
    let writer = store.clone();
    let writes = tokio::spawn({
        let run = run.clone();
        async move {
            writer.append_events(&run, &[progress(&run, 2)]).await?;
            writer
                .commit_output(
                    &run,
                    &StepOutputRecord::new("s", "out"),
                    &[progress(&run, 3)],
                )
                .await?;
            writer.set_status(&run, RunStatus::Succeeded).await
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !writes.is_finished(),
        "nothing can be written while it is down"
    );
    blocking(|| cluster.start_again().unwrap()).await;
    writes
        .await
        .unwrap()
        .expect("the writes rode the outage out");
    let stored = store.load_run(&run).await.unwrap().unwrap();
    assert_eq!(
        stored.events.len(),
        3,
        "each event once: {:?}",
        stored.events
    );
    assert_eq!(stored.outputs.len(), 1);
    assert_eq!(stored.status, RunStatus::Succeeded);

    // Past the bound, a call fails, saying the database was unreachable and for how long,
    // without blaming the store's address.
    let impatient = store.clone().with_outage_bound(Duration::from_secs(1));
    assert_eq!(impatient.outage_bound(), Duration::from_secs(1));
    blocking(|| cluster.stop().unwrap()).await;
    let err = impatient
        .set_status(&run, RunStatus::Failed)
        .await
        .unwrap_err();
    let down = Unreachable::find(&err).expect("the error says the database was unreachable");
    assert!(down.down_for >= Duration::from_secs(1), "{down:?}");
    assert!(err.to_string().contains("unreachable for"), "{err}");
    assert_eq!(err.hint, None, "no advice to choose another store: {err}");
    blocking(|| cluster.start_again().unwrap()).await;
    // Once it is back, the next call goes through.
    impatient.set_status(&run, RunStatus::Failed).await.unwrap();
    assert_eq!(
        store.load_run(&run).await.unwrap().unwrap().status,
        RunStatus::Failed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_expired_unclaimed_is_taken_back_and_a_claimed_one_stays_lost() {
    let Some((cluster, _one)) = cluster().await else {
        return;
    };
    let url = cluster.create_database();
    let shared = PostgresStore::connect(&url).await.unwrap();
    let cancel = CancelToken::new();
    // A long lease: only the test lets it expire.
    let ttl = Duration::from_secs(600);
    let driver = Driver::open(&shared, "first", ttl, &cancel);
    let record = RunRecord::new("g");
    driver.store().create_run(&record).await.unwrap();
    let run = record.id.clone();
    let lease = driver.store().held_leases().remove(0);

    // Expired, and nobody claimed the run: the next write takes the lease back...
    shared.renew(&lease, Duration::ZERO).await.unwrap();
    assert!(!shared.lease_holder(&run).await.unwrap().unwrap().live);
    driver
        .store()
        .append_events(&run, &[progress(&run, 1)])
        .await
        .expect("an expired lease nobody took is taken back by a write");
    let holder = shared.lease_holder(&run).await.unwrap().unwrap();
    assert_eq!((holder.worker.as_str(), holder.live), ("first", true));
    // ...and so does a renewal, which says so.
    shared.renew(&lease, Duration::ZERO).await.unwrap();
    assert_eq!(
        shared.renew_lease(&lease, ttl).await.unwrap(),
        Renewal::Retaken
    );
    assert_eq!(
        shared.renew_lease(&lease, ttl).await.unwrap(),
        Renewal::Held
    );

    // Expired and claimed by another process: lost, and the writes are refused.
    shared.renew(&lease, Duration::ZERO).await.unwrap();
    let other = Driver::open(&shared, "second", ttl, &CancelToken::new());
    other
        .claim(&run)
        .await
        .expect("an expired lease is claimable");
    assert_eq!(
        shared.renew_lease(&lease, ttl).await.unwrap(),
        Renewal::Lost
    );
    let refused = driver
        .store()
        .append_events(&run, &[progress(&run, 2)])
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("no longer holds the lease"),
        "{refused}"
    );
    assert_eq!(
        shared.load_run(&run).await.unwrap().unwrap().events.len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_whose_connection_was_terminated_listens_again() {
    let Some((cluster, _one)) = cluster().await else {
        return;
    };
    let url = cluster.create_database();
    let store = PostgresStore::connect(&url).await.unwrap();
    let record = RunRecord::new("g");
    store.create_run(&record).await.unwrap();
    let run = record.id.clone();
    let listener = store.events_listener().await.unwrap();
    let admin = raw(&url).await;
    let before = listening(&admin).await;
    assert_eq!(before.len(), 1, "one listening connection");
    // Every other backend of this database is terminated (an administrator, a failover).
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    // It listens again, on a new connection.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = listening(&admin).await;
        if now.len() == 1 && now != before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener never listened again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A notification reaches it: the waiter wakes long before its fallback would.
    let waiter = tokio::spawn(async move {
        listener.wait(&run, Duration::from_secs(600)).await;
    });
    tokio::task::yield_now().await;
    let writer = PostgresStore::connect(&url).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    while !waiter.is_finished() {
        // Appends until one lands after the waiter began waiting.
        i += 1;
        writer
            .append_events(&record.id, &[progress(&record.id, i)])
            .await
            .unwrap();
        assert!(
            tokio::time::Instant::now() < deadline,
            "no notification reached the listener"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    waiter.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_bound_a_driven_run_keeps_what_it_wrote_for_its_report() {
    let Some((cluster, _one)) = cluster().await else {
        return;
    };
    let url = cluster.create_database();
    let shared = PostgresStore::connect(&url)
        .await
        .unwrap()
        .with_outage_bound(Duration::from_secs(1));
    let driver = Driver::open(
        &shared,
        "first",
        Duration::from_secs(5),
        &CancelToken::new(),
    );
    let record = RunRecord::new("g");
    let store = driver.store();
    store.create_run(&record).await.unwrap();
    let run = record.id.clone();
    let plan = plan_core::Plan::new("g", vec![plan_core::Step::new("s1", "do it")]);
    store.save_plan(&run, 1, &plan).await.unwrap();
    store
        .append_events(&run, &[progress(&run, 1)])
        .await
        .unwrap();

    blocking(|| cluster.stop().unwrap()).await;
    let err = store
        .commit_output(
            &run,
            &StepOutputRecord::new("s1", "out"),
            &[progress(&run, 2)],
        )
        .await
        .unwrap_err();
    assert!(Unreachable::find(&err).is_some(), "{err}");
    // The process still knows the run as it was saved (the failed commit is not in it).
    let copy = store.journal_copy(&run).expect("a driven run's copy");
    assert_eq!(copy.plans.len(), 1);
    assert!(copy.outputs.is_empty());
    assert_eq!(copy.events.len(), 1);
    assert!(
        shared.journal_copy(&run).is_none(),
        "only the driver keeps one"
    );
    blocking(|| cluster.start_again().unwrap()).await;
    // The database has the run as it was before the outage, still running (resumable).
    let stored = shared.load_run(&run).await.unwrap().unwrap();
    assert_eq!(stored.status, RunStatus::Running);
    assert!(stored.outputs.is_empty());
    assert_eq!(stored.events.len(), 1);
}
