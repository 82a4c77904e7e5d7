//! Riding out a database outage: a store call that fails on a transient error (the
//! server restarting or failing over, a connection refused, reset or terminated, too
//! many connections, the pool timing out) is tried again with exponential backoff and
//! jitter until the database answers, or until it has been unreachable for the store's
//! bound ([`PostgresStore::with_outage_bound`], 60 s by default). Past the bound the call
//! fails with an error whose source is [`Unreachable`], so a front end can tell an
//! outage from a store that is wrongly chosen.
//!
//! Each retried call is idempotent: the writes are keyed (a run's id, a step's output, a
//! plan revision), fenced by a lease, or checked on a retry (a batch of events whose
//! commit was lost with the connection is found at the journal's tail).

use std::cell::RefCell;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder as _, ExponentialBuilder};
use deadpool_postgres::PoolError;
use plan_exec::error::StoreError;
use tokio_postgres::error::SqlState;

use crate::store::PostgresStore;

/// How long a store rides out an outage by default.
pub const DEFAULT_OUTAGE_BOUND: Duration = Duration::from_secs(60);

/// The first retry's delay; each next one doubles, up to [`MAX_DELAY`], with jitter.
const MIN_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(2);

/// While an outage goes on, a try that gets no answer for the rest of the bound (but at
/// least this long) is given up: a host that stopped answering would otherwise hang it.
const TRY_AT_LEAST: Duration = Duration::from_secs(5);

/// Tries each call makes even past the bound: the database may be back, and the first
/// tries may meet connections the outage broke.
const MIN_TRIES: u32 = 3;

/// The source of a store error when the database stayed unreachable for longer than the
/// store's outage bound ([`PostgresStore::with_outage_bound`]): the run can be continued
/// once the database is back.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Unreachable {
    /// How long the database had been unreachable when the store gave up.
    pub down_for: Duration,
    /// The server (`host:port`), never with a password.
    pub server: String,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PostgreSQL at {} was unreachable for {} s",
            self.server,
            self.down_for.as_secs()
        )
    }
}

impl std::error::Error for Unreachable {}

impl Unreachable {
    /// The [`Unreachable`] in `error`'s chain of sources, if the store gave up on an
    /// outage.
    pub fn find<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e Unreachable> {
        let mut next = Some(error);
        while let Some(e) = next {
            if let Some(u) = e.downcast_ref::<Unreachable>() {
                return Some(u);
            }
            next = e.source();
        }
        None
    }
}

/// When the current outage began, shared by every clone of a store.
#[derive(Debug, Default)]
pub(crate) struct OutageClock {
    since: Mutex<Option<Instant>>,
}

impl OutageClock {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.since.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the outage began (now, if this is its first failure).
    fn began(&self) -> (Instant, bool) {
        let mut since = self.lock();
        match *since {
            Some(t) => (t, false),
            None => {
                let now = Instant::now();
                *since = Some(now);
                (now, true)
            }
        }
    }

    /// The database answered: the outage (if any) is over; returns how long it lasted.
    fn over(&self) -> Option<Duration> {
        self.lock().take().map(|t| t.elapsed())
    }

    fn ongoing(&self) -> Option<Instant> {
        *self.lock()
    }
}

tokio::task_local! {
    /// The message of the last transient error made into a [`StoreError`] during the
    /// current attempt (set by [`mark_transient`]).
    static TRANSIENT: RefCell<Option<String>>;
}

/// Notes that the store error with `message` came from a transient failure, for the
/// attempt being made (nothing outside a retried call).
pub(crate) fn mark_transient(message: &str) {
    let _ = TRANSIENT.try_with(|t| *t.borrow_mut() = Some(message.to_owned()));
}

/// Whether a statement's failure is transient: the connection failed or was closed, the
/// server is shutting down or starting, or it has no connection slot free.
pub(crate) fn is_transient(e: &tokio_postgres::Error) -> bool {
    if let Some(code) = e.code() {
        return code.code().starts_with("08")
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::TOO_MANY_CONNECTIONS,
            ]
            .contains(code);
    }
    if e.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Whether failing to get a connection from the pool is transient.
pub(crate) fn is_transient_pool(e: &PoolError) -> bool {
    match e {
        PoolError::Timeout(_) => true,
        PoolError::Backend(e) => is_transient(e),
        _ => false,
    }
}

/// Which try of a retried call this is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Attempt(u32);

impl Attempt {
    /// Whether an earlier try may have committed before its connection failed.
    pub(crate) fn is_retry(self) -> bool {
        self.0 > 1
    }
}

impl PostgresStore {
    /// This store (and its clones made from now on) riding out database outages of up
    /// to `bound`: a call that fails because the database cannot be reached is retried
    /// with backoff until it answers, and fails once it has been unreachable for longer
    /// than `bound` (with [`Unreachable`] as its error's source); each call still makes
    /// a few quick tries (a connection broken by the outage is replaced), so
    /// `Duration::ZERO` leaves only those. The default is 60 s.
    pub fn with_outage_bound(mut self, bound: Duration) -> Self {
        self.outage_bound = bound;
        self
    }

    /// How long this store rides out an outage.
    pub fn outage_bound(&self) -> Duration {
        self.outage_bound
    }

    /// Runs `attempt` until it succeeds, fails for a reason that is not transient, or the
    /// database has been unreachable for longer than the bound. `what` names the call in
    /// the logs and the final error.
    pub(crate) async fn retrying<T, F, Fut>(
        &self,
        what: &str,
        mut attempt: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let clock = &self.inner.outage;
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(MIN_DELAY)
            .with_max_delay(MAX_DELAY)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build();
        let mut n = 0;
        loop {
            n += 1;
            // While an outage goes on, no try may outlast the bound by much (a connection
            // to a host that stopped answering would otherwise hang).
            let limit = clock
                .ongoing()
                .map(|since| (since + self.outage_bound).saturating_duration_since(Instant::now()));
            let tried = TRANSIENT.scope(RefCell::new(None), async {
                let result = match limit {
                    Some(limit) => {
                        tokio::time::timeout(limit.max(TRY_AT_LEAST), attempt(Attempt(n)))
                            .await
                            .unwrap_or_else(|_| {
                                let e =
                                    StoreError::new(format!("{what}: no answer from the database"));
                                mark_transient(&e.message);
                                Err(e)
                            })
                    }
                    None => attempt(Attempt(n)).await,
                };
                let transient = TRANSIENT.with(|t| t.borrow_mut().take());
                (result, transient)
            });
            let (result, transient) = tried.await;
            let error = match result {
                Ok(value) => {
                    if let Some(lasted) = clock.over() {
                        tracing::info!(
                            server = %self.inner.address.host_port(),
                            "the database answers again after {:.1} s",
                            lasted.as_secs_f64()
                        );
                    }
                    return Ok(value);
                }
                Err(e) => e,
            };
            if transient.as_deref() != Some(error.message.as_str()) {
                return Err(error);
            }
            let (since, first) = clock.began();
            if first {
                tracing::warn!(
                    server = %self.inner.address.host_port(),
                    error = %error,
                    "the database cannot be reached; retrying for up to {} s",
                    self.outage_bound.as_secs()
                );
            }
            let down = since.elapsed();
            let left = self.outage_bound.saturating_sub(down);
            if left.is_zero() && n >= MIN_TRIES {
                return Err(self.unreachable(what, down, &error));
            }
            let delay = delays.next().unwrap_or(MAX_DELAY).min(left.max(MIN_DELAY));
            tracing::debug!(error = %error, attempt = n, "retrying {what} in {} ms", delay.as_millis());
            tokio::time::sleep(delay).await;
        }
    }

    /// The error of a call given up on an outage of `down`.
    fn unreachable(&self, what: &str, down: Duration, last: &StoreError) -> StoreError {
        let cause = Unreachable {
            down_for: down,
            server: self.inner.address.host_port(),
        };
        StoreError::with_source(
            format!(
                "{what}: the database was unreachable for {} s, longer than this store waits \
                 for it (last error: {})",
                down.as_secs(),
                last.message
            ),
            cause,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_is_found_among_the_sources() {
        let e = StoreError::with_source(
            "x",
            Unreachable {
                down_for: Duration::from_secs(61),
                server: "db:5432".into(),
            },
        );
        let outer: &(dyn std::error::Error + 'static) = &e;
        let found = Unreachable::find(outer).expect("found");
        assert_eq!(found.down_for.as_secs(), 61);
        assert_eq!(
            found.to_string(),
            "PostgreSQL at db:5432 was unreachable for 61 s"
        );
        assert!(Unreachable::find(&StoreError::new("y")).is_none());
    }

    /// What a retry checks when its first try may have committed before the connection
    /// dropped: the run, the events at the journal's tail, the step's output.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retry_recognises_what_its_first_try_committed() {
        use crate::store::{committed_already, journaled_already};
        use plan_core::{Event, EventKind};
        use plan_exec::store::{RunRecord, RunStore as _, StepOutputRecord};

        let Some(cluster) = crate::testing::TempCluster::shared_or_skip() else {
            return;
        };
        let store = PostgresStore::connect(&cluster.create_database())
            .await
            .unwrap();
        let record = RunRecord::new("g");
        store.create_run(&record).await.unwrap();
        let client = store.client().await.unwrap();
        store.created_already(&client, &record, "x").await.unwrap();
        let mut other = record.clone();
        other.goal = "another goal".into();
        let err = store
            .created_already(&client, &other, "x")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("in the store already"), "{err}");

        let run = record.id.clone();
        let events = [
            Event::now(run.clone(), EventKind::progress(1, 2)),
            Event::now(run.clone(), EventKind::progress(2, 2)),
        ];
        let at_tail = async |events: &[Event]| {
            journaled_already(&client, &store, &run, events, "x")
                .await
                .unwrap()
        };
        assert!(!at_tail(&events).await, "not appended yet");
        store.append_events(&run, &events).await.unwrap();
        assert!(at_tail(&events).await);
        assert!(at_tail(&events[1..]).await);
        assert!(!at_tail(&events[..1]).await, "not the tail");

        let out = StepOutputRecord::new("s", "out");
        store.commit_output(&run, &out, &[]).await.unwrap();
        assert!(
            committed_already(&client, &store, &run, &out, "x")
                .await
                .unwrap()
        );
        let another = StepOutputRecord::new("s", "another output");
        assert!(
            !committed_already(&client, &store, &run, &another, "x")
                .await
                .unwrap()
        );
    }

    #[test]
    fn only_marked_errors_of_an_attempt_are_transient() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let seen = TRANSIENT
                .scope(RefCell::new(None), async {
                    mark_transient("boom");
                    TRANSIENT.with(|t| t.borrow_mut().take())
                })
                .await;
            assert_eq!(seen.as_deref(), Some("boom"));
            // Outside a retried call, marking does nothing (and does not panic).
            mark_transient("ignored");
        });
    }
}
