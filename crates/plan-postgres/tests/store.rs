//! `PostgresStore` against a real PostgreSQL server: one throwaway cluster for this test
//! binary, a database of its own for each test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use plan_core::{Event, EventKind, RunId, RunStatus};
use plan_exec::store::{RunRecord, RunStore, StepOutputRecord};
use plan_postgres::testing::TempCluster;
use plan_postgres::{PostgresStore, SCHEMA_VERSION};

/// A fresh database's URL, or `None` when PostgreSQL tests are skipped.
fn database() -> Option<String> {
    TempCluster::shared_or_skip().map(TempCluster::create_database)
}

async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

async fn new_run(store: &PostgresStore) -> RunId {
    let record = RunRecord::new("g");
    store.create_run(&record).await.unwrap();
    record.id
}

fn progress(run: &RunId, i: usize) -> Event {
    Event::now(run.clone(), EventKind::progress(i, 100))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_store_conformance_suite() {
    let Some(url) = database() else { return };
    let store = PostgresStore::connect(&url).await.unwrap();
    plan_exec::conformance::check_store(Arc::new(store))
        .await
        .assert_passed();
}

#[tokio::test]
async fn an_empty_database_is_migrated_and_reopening_changes_nothing() {
    let Some(url) = database() else { return };
    let store = PostgresStore::connect(&url).await.unwrap();
    let run = new_run(&store).await;
    let client = raw(&url).await;
    let versions =
        |rows: Vec<tokio_postgres::Row>| -> Vec<i32> { rows.iter().map(|r| r.get(0)).collect() };
    let q = "SELECT version FROM plan.schema_migrations ORDER BY version";
    let first = versions(client.query(q, &[]).await.unwrap());
    assert_eq!(first, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    for table in ["runs", "plans", "events", "outputs", "run_usage"] {
        let row = client
            .query_one("SELECT to_regclass($1)::text", &[&format!("plan.{table}")])
            .await
            .unwrap();
        assert!(
            row.get::<_, Option<String>>(0).is_some(),
            "no table {table}"
        );
    }
    drop(store);
    let again = PostgresStore::connect(&url).await.unwrap();
    assert_eq!(versions(client.query(q, &[]).await.unwrap()), first);
    assert!(again.load_run(&run).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_openers_migrate_once() {
    let Some(url) = database() else { return };
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PostgresStore::connect(&url).await })
        })
        .collect();
    for open in opens {
        open.await.unwrap().unwrap();
    }
    let rows = raw(&url)
        .await
        .query("SELECT version FROM plan.schema_migrations", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), SCHEMA_VERSION as usize);
}

#[tokio::test]
async fn a_newer_schema_is_refused_naming_both_versions() {
    let Some(url) = database() else { return };
    drop(PostgresStore::connect(&url).await.unwrap());
    let newer = SCHEMA_VERSION + 1;
    raw(&url)
        .await
        .execute(
            "INSERT INTO plan.schema_migrations (version, description) VALUES ($1, 'future')",
            &[&newer],
        )
        .await
        .unwrap();
    let err = PostgresStore::connect(&url).await.unwrap_err().to_string();
    assert!(err.contains(&format!("schema version {newer}")), "{err}");
    assert!(err.contains(&format!("({SCHEMA_VERSION})")), "{err}");
    assert!(err.contains("upgrade plan"), "{err}");
    assert!(err.contains("127.0.0.1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_get_unique_gapless_positions() {
    let Some(url) = database() else { return };
    // Two handles with pools of their own, as two processes would have.
    let a = PostgresStore::connect(&url).await.unwrap();
    let b = PostgresStore::connect(&url).await.unwrap();
    let run = new_run(&a).await;
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let store = if writer % 2 == 0 {
            a.clone()
        } else {
            b.clone()
        };
        let run = run.clone();
        tasks.push(tokio::spawn(async move {
            let mut written = 0;
            for round in 0..20 {
                let n = 1 + (writer + round) % 3;
                let events: Vec<Event> = (0..n).map(|i| progress(&run, i)).collect();
                if round % 5 == 0 {
                    let step = format!("w{writer}r{round}");
                    let out = StepOutputRecord::new(step.as_str(), "done");
                    store.commit_output(&run, &out, &events).await.unwrap();
                } else {
                    store.append_events(&run, &events).await.unwrap();
                }
                written += n;
            }
            written
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let entries = a.events_after(&run, 0, 10_000).await.unwrap();
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>());
    let stored = b.load_run(&run).await.unwrap().unwrap();
    assert_eq!(stored.events.len(), total);
    assert_eq!(stored.outputs.len(), 8 * 4);
}

#[tokio::test]
async fn a_second_commit_of_a_step_keeps_the_first_and_says_why() {
    let Some(url) = database() else { return };
    let store = PostgresStore::connect(&url).await.unwrap();
    let run = new_run(&store).await;
    let first = StepOutputRecord::new("a", "first");
    store.commit_output(&run, &first, &[]).await.unwrap();
    let err = store
        .commit_output(
            &run,
            &StepOutputRecord::new("a", "second"),
            &[progress(&run, 1)],
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("already has a committed output"), "{err}");
    let stored = store.load_run(&run).await.unwrap().unwrap();
    assert_eq!(stored.outputs[0].output, "first");
    assert!(stored.events.is_empty());
}

#[tokio::test]
async fn the_password_never_shows() {
    let Some(cluster) = TempCluster::shared_or_skip() else {
        return;
    };
    let secret = "hunter2-very-secret";
    // Trust authentication accepts any password: a working store with one in its URL.
    let url = cluster
        .create_database()
        .replace("postgres@", &format!("postgres:{secret}@"));
    let store = PostgresStore::connect(&url).await.unwrap();
    let shown = format!("{store:?} {} {:?}", store.address(), store.address());
    assert!(!shown.contains(secret), "{shown}");
    assert!(shown.contains("postgres:***@127.0.0.1"), "{shown}");

    // A database that does not exist: the error names it and the server, not the secret.
    let missing = format!(
        "postgres://postgres:{secret}@127.0.0.1:{}/no_such_db",
        cluster.port()
    );
    let err = PostgresStore::connect(&missing).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains(secret), "{text}");
    assert!(text.contains("no_such_db"), "{text}");
    assert!(text.contains("createdb"), "{text}");

    // Nobody listening: the error names the host and port and what to check.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = format!("postgres://postgres:{secret}@127.0.0.1:{port}/db");
    let err = PostgresStore::connect(&closed).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains(secret), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("check that the server is running"), "{text}");
}

#[tokio::test]
async fn tls_required_of_a_server_without_it_is_refused_clearly() {
    let Some(cluster) = TempCluster::shared_or_skip() else {
        return;
    };
    let url = format!("{}?sslmode=require", cluster.create_database());
    let err = PostgresStore::connect(&url).await.unwrap_err().to_string();
    assert!(err.contains("TLS"), "{err}");
    // prefer (the default) falls back to plain TCP.
    let url = format!("{}?sslmode=prefer", cluster.create_database());
    PostgresStore::connect(&url).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_wakes_on_events_written_by_another_handle() {
    let Some(url) = database() else { return };
    let reader = PostgresStore::connect(&url).await.unwrap();
    let writer = PostgresStore::connect(&url).await.unwrap();
    let run = new_run(&writer).await;
    writer
        .append_events(&run, &[progress(&run, 0)])
        .await
        .unwrap();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let follower = {
        let (reader, run) = (reader.clone(), run.clone());
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(reader.follow(&run, 0));
            let mut seqs = Vec::new();
            while let Some(entry) = stream.next().await {
                let entry = entry.unwrap();
                let _ = tx.send((entry.seq, Instant::now()));
                seqs.push(entry.seq);
            }
            seqs
        })
    };
    // The backlog first.
    assert_eq!(rx.recv().await.unwrap().0, 1);
    // Then each new event, well within the fallback poll (2 s): woken by NOTIFY.
    for i in 1..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = Instant::now();
        writer
            .append_events(&run, &[progress(&run, i)])
            .await
            .unwrap();
        let (seq, seen) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seq, i as u64 + 1);
        let latency = seen.duration_since(sent);
        assert!(
            latency < Duration::from_millis(1000),
            "event {seq} reached the follower after {latency:?}: not woken by NOTIFY"
        );
    }
    let finished = Event::now(
        run.clone(),
        EventKind::RunFinished {
            status: RunStatus::Succeeded,
            answer: None,
        },
    );
    writer.append_events(&run, &[finished]).await.unwrap();
    let seqs = tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn tls_modes_against_a_server_whose_certificate_a_test_ca_signed() {
    if TempCluster::shared_or_skip().is_none() {
        return;
    }
    let cluster = TempCluster::start_with_tls().unwrap();
    let url = cluster.create_database();
    let ca = cluster.ca_cert().unwrap().display().to_string();
    let encrypted = |store: PostgresStore| async move {
        // The store's pooled connection is open: count the encrypted ones.
        let record = RunRecord::new("tls");
        store.create_run(&record).await.unwrap();
        let client = raw(&url_of(&store)).await;
        client
            .query_one("SELECT count(*) FROM pg_stat_ssl WHERE ssl", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    // require: encrypted, the certificate not checked (libpq's meaning).
    let store = PostgresStore::connect(&format!("{url}?sslmode=require"))
        .await
        .unwrap();
    assert!(encrypted(store).await >= 1);
    // verify-full against the server's own certificate as the CA.
    let verified = format!("{url}?sslmode=verify-full&sslrootcert={ca}");
    let store = PostgresStore::connect(&verified).await.unwrap();
    assert!(encrypted(store).await >= 1);
    // verify-full with the system's CAs: this certificate is not trusted.
    let err = PostgresStore::connect(&format!("{url}?sslmode=verify-full"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("certificate") || err.contains("CA certificates"),
        "{err}"
    );
    // A CA file that does not exist is named.
    let err = PostgresStore::connect(&format!(
        "{url}?sslmode=verify-full&sslrootcert=/nonexistent.pem"
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("/nonexistent.pem"), "{err}");
}

/// The store's database, for a side connection without TLS.
fn url_of(store: &PostgresStore) -> String {
    let a = store.address();
    format!("postgres://{}@{}/{}", a.user(), a.host_port(), a.database())
}

async fn queued_run(store: &PostgresStore) -> RunId {
    let id = new_run(store).await;
    store.set_status(&id, RunStatus::Queued).await.unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_never_get_the_same_run_and_leases_fence_writes() {
    let Some(url) = database() else { return };
    let store = PostgresStore::connect(&url).await.unwrap();
    let listener = store.work_listener().await.unwrap();
    let mut runs = Vec::new();
    for _ in 0..6 {
        runs.push(queued_run(&store).await);
    }
    // A run becoming queued wakes the listener at once.
    let woke = Instant::now();
    listener.wait(Duration::from_secs(5)).await;
    assert!(woke.elapsed() < Duration::from_secs(4));

    let ttl = Duration::from_secs(30);
    let claims = futures::future::join_all((0..8).map(|i| {
        let store = store.clone();
        async move { store.claim(&format!("w{i}"), ttl, &[]).await.unwrap() }
    }))
    .await;
    let mut got: Vec<RunId> = claims
        .iter()
        .flatten()
        .map(|c| c.lease.run.clone())
        .collect();
    assert_eq!(got.len(), 6, "six runs, six claims, two empty-handed");
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 6, "no run was claimed twice");
    assert!(
        claims
            .iter()
            .flatten()
            .all(|c| c.status == RunStatus::Queued)
    );

    // The oldest run first; a skipped run is passed over.
    let store2 = PostgresStore::connect(&url).await.unwrap();
    let a = queued_run(&store2).await;
    let b = queued_run(&store2).await;
    let first = store2
        .claim("x", ttl, std::slice::from_ref(&a))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.lease.run, b);
    let lease = store2.claim("x", ttl, &[]).await.unwrap().unwrap().lease;
    assert_eq!(lease.run, a);

    // Writes through the fenced store work while the lease is held...
    let fenced = store.fenced(lease.clone());
    fenced.set_status(&a, RunStatus::Running).await.unwrap();
    assert!(store.renew(&lease, ttl).await.unwrap());
    let holder = store.lease_holder(&a).await.unwrap().unwrap();
    assert_eq!((holder.worker.as_str(), holder.live), ("x", true));
    // ...and are refused once another worker took the run over after expiry.
    store.renew(&lease, Duration::from_millis(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let takeover = store.claim("y", ttl, &[]).await.unwrap().unwrap();
    assert_eq!(takeover.lease.run, a);
    assert_eq!(takeover.status, RunStatus::Running);
    assert_eq!(takeover.lease.token, lease.token + 1);
    assert!(
        !store.renew(&lease, ttl).await.unwrap(),
        "the old lease is gone"
    );
    let refused = fenced
        .append_events(&a, &[progress(&a, 1)])
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("no longer holds the lease"),
        "{refused}"
    );
    let out = StepOutputRecord::new("s", "late");
    assert!(fenced.commit_output(&a, &out, &[]).await.is_err());
    assert!(
        store
            .load_run(&a)
            .await
            .unwrap()
            .unwrap()
            .outputs
            .is_empty()
    );
    // The new holder writes; releasing makes the run claimable again at once.
    let theirs = store.fenced(takeover.lease.clone());
    theirs.commit_output(&a, &out, &[]).await.unwrap();
    store.release(&takeover.lease).await.unwrap();
    let again = store.claim("z", ttl, &[]).await.unwrap().unwrap();
    assert_eq!(again.lease.run, a);
}

/// A driving store leases the runs it creates in the same transaction (no worker can
/// claim them), `claim_run` takes over only a run nobody holds live, cancellation reaches
/// the holder through its lease (and a queued run's first claimer), and `requeue` puts a
/// stopped run back in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driving_stores_hold_their_runs_and_cancellation_goes_through_the_lease() {
    use plan_postgres::Renewal;
    let Some(url) = database() else { return };
    let store = PostgresStore::connect(&url).await.unwrap();
    let ttl = Duration::from_secs(30);
    let driver = store.driving("driver", ttl);
    let run = new_run(&driver).await;
    assert_eq!(driver.held_leases().len(), 1);
    let holder = store.lease_holder(&run).await.unwrap().unwrap();
    assert_eq!((holder.worker.as_str(), holder.live), ("driver", true));
    assert!(
        store.claim("worker", ttl, &[]).await.unwrap().is_none(),
        "a driven run is not claimable"
    );
    driver
        .append_events(&run, &[progress(&run, 1)])
        .await
        .unwrap();
    // Another process cannot take it while the lease is live.
    let other = store.driving("other", ttl);
    let held = other.claim_run(&run).await.unwrap().unwrap_err();
    assert_eq!(held.worker, "driver");
    assert!(
        other
            .append_events(&run, &[progress(&run, 2)])
            .await
            .is_ok(),
        "not fenced: other holds nothing"
    );

    // Cancellation is seen by the holder when it renews.
    let lease = driver.held_leases().remove(0);
    assert_eq!(store.renew_lease(&lease, ttl).await.unwrap(), Renewal::Held);
    assert!(store.request_cancel(&run).await.unwrap());
    assert_eq!(
        store.renew_lease(&lease, ttl).await.unwrap(),
        Renewal::CancelRequested
    );
    // A keeper cancels the run's token on it.
    let cancel = plan_exec::context::CancelToken::new();
    let _keeper = driver.keep_leases(Duration::from_millis(300), cancel.clone());
    tokio::time::timeout(Duration::from_secs(30), cancel.cancelled())
        .await
        .expect("the keeper cancels the run");

    // Once the lease expired, another process may take over; the old holder's writes are
    // refused and a resumed run no longer carries the cancellation.
    drop(_keeper);
    store.renew(&lease, Duration::from_millis(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let taken = other.claim_run(&run).await.unwrap().unwrap();
    assert_eq!(taken.token, lease.token + 1);
    assert_eq!(other.renew_lease(&taken, ttl).await.unwrap(), Renewal::Held);
    assert!(
        driver
            .append_events(&run, &[progress(&run, 3)])
            .await
            .unwrap_err()
            .to_string()
            .contains("no longer holds the lease")
    );

    // A queued run asked to be cancelled is claimed with the request.
    let queued = RunRecord::new("queued");
    store.create_run(&queued).await.unwrap();
    store
        .set_status(&queued.id, RunStatus::Queued)
        .await
        .unwrap();
    assert!(store.request_cancel(&queued.id).await.unwrap());
    let claim = store.claim("w", ttl, &[]).await.unwrap().unwrap();
    assert_eq!(claim.lease.run, queued.id);
    assert!(claim.cancel_requested);
    // An ended run cannot be cancelled, and is queued again only once nobody holds it.
    store
        .set_status(&queued.id, RunStatus::Cancelled)
        .await
        .unwrap();
    assert!(!store.request_cancel(&queued.id).await.unwrap());
    assert!(
        !store.requeue(&queued.id).await.unwrap(),
        "w still holds it"
    );
    store.release(&claim.lease).await.unwrap();
    assert!(store.requeue(&queued.id).await.unwrap());
    let again = store.claim("w2", ttl, &[]).await.unwrap().unwrap();
    assert_eq!(again.lease.run, queued.id);
    assert!(!again.cancel_requested, "a resumed run starts afresh");
}

/// One events listener wakes each follower for its own run only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_events_listener_wakes_the_followers_of_a_run() {
    let Some(url) = database() else { return };
    let store = PostgresStore::connect(&url).await.unwrap();
    let listener = Arc::new(store.events_listener().await.unwrap());
    let run = new_run(&store).await;
    let other = new_run(&store).await;
    let mut waiting = std::pin::pin!(listener.wait(&run, Duration::from_secs(10)));
    // Its first poll registers the follower: from here on it cannot miss its run's events,
    // however late the test gets to write them.
    assert!(futures::poll!(waiting.as_mut()).is_pending());
    store
        .append_events(&other, &[progress(&other, 1)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        futures::poll!(waiting.as_mut()).is_pending(),
        "woken by another run's events"
    );
    store
        .append_events(&run, &[progress(&run, 1)])
        .await
        .unwrap();
    // Woken by its run's events, well before its own 10 s timeout.
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("not woken by its run's events");
}

fn llm_call(run: &RunId, prompt_tokens: u64, completion_tokens: u64) -> Event {
    Event::now(
        run.clone(),
        EventKind::LlmCall {
            purpose: "step".to_owned(),
            step: None,
            prompt_tokens,
            completion_tokens,
            duration_ms: 1,
        },
    )
}

/// Many writers (two store handles, sixteen tasks) charging one run's ledger at once:
/// every charge counts, and each sees a total no other charge saw (the statement is
/// atomic: no lost update, no two charges reading the same total).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_charges_to_a_runs_ledger_sum_exactly() {
    let Some(url) = database() else { return };
    let a = PostgresStore::connect(&url).await.unwrap();
    let b = PostgresStore::connect(&url).await.unwrap();
    let run = new_run(&a).await;
    let (tasks, charges) = (16u64, 25u64);
    let writers: Vec<_> = (0..tasks)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let run = run.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..charges {
                    let after = store
                        .charge_usage(&run, plan_llm::Usage::new(3, 2), 0.25)
                        .await
                        .unwrap();
                    seen.push(after.total_tokens());
                }
                seen
            })
        })
        .collect();
    let mut seen = Vec::new();
    for w in writers {
        seen.extend(w.await.unwrap());
    }
    let n = tasks * charges;
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=n).map(|i| i * 5).collect::<Vec<_>>(),
        "each charge saw its own total"
    );
    let total = b.ledger_usage(&run).await.unwrap();
    assert_eq!(
        (total.prompt_tokens, total.completion_tokens),
        (3 * n, 2 * n)
    );
    assert!((total.usd - 0.25 * n as f64).abs() < 1e-9, "{}", total.usd);
    let calls: i64 = raw(&url)
        .await
        .query_one(
            "SELECT calls FROM plan.run_usage WHERE run = $1",
            &[&run.as_str()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(calls, n as i64);
}

/// Opening a run's ledger seeds it from the journal (a run from before the ledger, or
/// calls made by a process that does not charge it), raises it to the journal's usage
/// when the journal shows more, and never lowers it (charges not yet journaled count).
#[tokio::test]
async fn a_runs_ledger_starts_from_its_journal_and_is_never_lowered() {
    use plan_llm::BudgetLedger as _;
    let Some(url) = database() else { return };
    let store = PostgresStore::connect(&url).await.unwrap();
    let run = new_run(&store).await;
    let other = new_run(&store).await;
    store
        .append_events(
            &run,
            &[
                llm_call(&run, 100, 20),
                progress(&run, 1),
                llm_call(&run, 100, 20),
            ],
        )
        .await
        .unwrap();
    store
        .append_events(&other, &[llm_call(&other, 7, 7)])
        .await
        .unwrap();
    assert_eq!(
        store.ledger_usage(&run).await.unwrap().total_tokens(),
        0,
        "nothing before the ledger is opened"
    );

    let ledger = store.budget_ledger(&run).await.unwrap();
    let used = ledger.used().await.unwrap();
    assert_eq!((used.prompt_tokens, used.completion_tokens), (200, 40));
    let after = ledger
        .charge(plan_llm::Usage::new(10, 5), 0.5)
        .await
        .unwrap();
    assert_eq!((after.prompt_tokens, after.completion_tokens), (210, 45));

    // The call above reaches the journal, and a process without the ledger made one more.
    store
        .append_events(&run, &[llm_call(&run, 10, 5), llm_call(&run, 50, 0)])
        .await
        .unwrap();
    let reopened = store.budget_ledger(&run).await.unwrap();
    let used = reopened.used().await.unwrap();
    assert_eq!((used.prompt_tokens, used.completion_tokens), (260, 45));
    assert!((used.usd - 0.5).abs() < 1e-9, "dollars charged are kept");

    // Charged but not journaled yet: opening the ledger again does not lower it.
    ledger
        .charge(plan_llm::Usage::new(40, 0), 0.0)
        .await
        .unwrap();
    store.budget_ledger(&run).await.unwrap();
    assert_eq!(store.ledger_usage(&run).await.unwrap().total_tokens(), 345);
    assert_eq!(
        store.ledger_usage(&other).await.unwrap().total_tokens(),
        0,
        "another run's ledger is its own"
    );

    let e = store
        .budget_ledger(&RunId::new("no-such-run"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot open the usage ledger of run"), "{e}");
}
