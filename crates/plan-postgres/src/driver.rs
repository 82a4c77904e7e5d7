//! [`Driver`]: a process driving its own runs on a shared store, under leases, the way
//! `plan run`, `plan exec`, `plan resume` and `plan approve` do. Built from
//! [`PostgresStore::driving`], [`PostgresStore::keep_leases`] and
//! [`PostgresStore::claim_run`], and giving the leases up when dropped.

use std::time::Duration;

use plan_core::RunId;
use plan_exec::context::CancelToken;
use plan_exec::error::StoreError;

use crate::driving::LeaseKeeper;
use crate::fleet::LeaseHolder;
use crate::store::PostgresStore;

/// How long [`Driver`] waits for the database when it gives its leases up on drop.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// The runs one process drives itself on a shared store. Every run created through
/// [`store`](Self::store) is leased to the process in the transaction that creates it,
/// and every write to it is fenced by that lease; a run it continues is
/// [claimed](Self::claim) first. The leases are renewed every third of `ttl` while the
/// driver lives, so fleet workers leave the runs alone; if the process dies, the leases
/// expire and a worker continues its runs from their journals. A lease lost meanwhile
/// (the process was paused or cut off for longer than `ttl` and someone took the run
/// over), or a cancellation asked through the store ([`PostgresStore::request_cancel`],
/// `POST /api/runs/ID/cancel`), cancels the driver's cancel token: the run stops here,
/// and [`stopped_by_store`](Self::stopped_by_store) says why.
///
/// Dropping the driver gives its leases up, so a run that stopped here can be continued
/// elsewhere at once rather than when its lease expires. That waits on the database (at
/// most 2 s) on a multi-threaded tokio runtime; on a current-thread runtime it is started
/// in the background (best effort), and outside a runtime the leases simply expire.
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use plan_exec::context::CancelToken;
/// use plan_postgres::{Driver, PostgresStore};
///
/// # async fn f() -> Result<(), plan_exec::error::StoreError> {
/// let shared = PostgresStore::connect("postgres://plan@db.internal:5432/plan").await?;
/// let cancel = CancelToken::new();
/// let driver = Driver::open(&shared, "my-app@host-42", Duration::from_secs(5), &cancel);
/// // Build the agent with `.store(driver.store().clone())` and `.cancel_token(cancel)`,
/// // run it, then:
/// if let Some(stop) = driver.stopped_by_store() {
///     eprintln!("the run stopped: {stop}");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Driver {
    store: PostgresStore,
    keeper: Option<LeaseKeeper>,
    ttl: Duration,
    /// Set once the leases were given up by [`release`](Driver::release).
    released: bool,
}

/// Why a driven run was stopped by its store rather than by its driver
/// ([`Driver::stopped_by_store`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreStop {
    /// The driver lost a run's lease (it was paused or cut off for longer than the
    /// lease) and another process continues the run.
    LeaseLost {
        /// How long the lease lasted without renewal.
        ttl: Duration,
    },
    /// Someone asked for the run to be cancelled through the store.
    CancelRequested,
}

impl std::fmt::Display for StoreStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreStop::LeaseLost { ttl } => write!(
                f,
                "this process lost its lease on the run (it was paused or cut off for longer than {} s) and another process continues the run",
                ttl.as_secs_f64()
            ),
            StoreStop::CancelRequested => {
                f.write_str("the run was cancelled through the store (a cancel request)")
            }
        }
    }
}

/// Why a driver could not take a run over ([`Driver::claim`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum ClaimError {
    /// A live process holds the run's lease: it runs the run, and nothing was started
    /// here.
    Held {
        /// The run.
        run: RunId,
        /// Who holds it.
        holder: LeaseHolder,
    },
    /// The store could not be read or written, or the run is not in it.
    Store(StoreError),
}

impl std::fmt::Display for ClaimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClaimError::Held { run, holder } => write!(
                f,
                "run `{run}` is being run by `{}` (it holds the run's lease): nothing was started here; wait for it to end",
                holder.worker
            ),
            ClaimError::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ClaimError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClaimError::Store(e) => Some(e),
            ClaimError::Held { .. } => None,
        }
    }
}

impl From<StoreError> for ClaimError {
    fn from(e: StoreError) -> Self {
        ClaimError::Store(e)
    }
}

impl Driver {
    /// Drives runs on `shared` as `name` (this process in the leases and logs, e.g.
    /// `plan-run@HOST-PID`), with leases of `ttl` renewed every third of it; a lost lease
    /// or a cancellation asked through the store cancels `cancel`. Needs a tokio runtime
    /// (the renewal is a task on it).
    pub fn open(shared: &PostgresStore, name: &str, ttl: Duration, cancel: &CancelToken) -> Self {
        let store = shared.driving(name, ttl);
        let keeper = store.keep_leases(ttl, cancel.clone());
        Driver {
            store,
            keeper: Some(keeper),
            ttl,
            released: false,
        }
    }

    /// The store to journal the driven runs in (give it to the agent): its writes are
    /// fenced by the driver's leases.
    pub fn store(&self) -> &PostgresStore {
        &self.store
    }

    /// How long a lease lasts without renewal.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Why the runs stopped, when the store stopped them rather than this process: a lease
    /// was lost to another process, or a cancellation was asked through the store.
    pub fn stopped_by_store(&self) -> Option<StoreStop> {
        let keeper = self.keeper.as_ref()?;
        if keeper.lost() {
            Some(StoreStop::LeaseLost { ttl: self.ttl })
        } else if keeper.cancel_requested() {
            Some(StoreStop::CancelRequested)
        } else {
            None
        }
    }

    /// Takes `run` over for this process before continuing it: it must not be held by a
    /// live process (a worker, another driver), or two would run it. A request to cancel
    /// it made earlier is cleared (continuing it is a new decision).
    ///
    /// # Errors
    /// [`ClaimError::Held`] naming the holder; [`ClaimError::Store`] when the database
    /// cannot be reached or the run is not in the store.
    pub async fn claim(&self, run: &RunId) -> Result<(), ClaimError> {
        match self.store.claim_run(run).await? {
            Ok(_) => Ok(()),
            Err(holder) => Err(ClaimError::Held {
                run: run.clone(),
                holder,
            }),
        }
    }

    /// Gives up every lease this driver holds now, waiting for the database: runs that
    /// have not ended become claimable at once. The leases are no longer renewed.
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached (the leases then expire).
    pub async fn release(mut self) -> Result<(), StoreError> {
        drop(self.keeper.take());
        self.released = true;
        self.store.release_held().await
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Stop renewing first, so a lease given up is not renewed again.
        drop(self.keeper.take());
        if self.released || self.store.held_leases().is_empty() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.store.clone();
        let release = async move {
            if let Err(e) = tokio::time::timeout(RELEASE_TIMEOUT, store.release_held())
                .await
                .unwrap_or_else(|_| Err(StoreError::new("timed out")))
            {
                tracing::debug!(error = %e, "cannot give the leases up; they expire");
            }
        };
        match handle.runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| handle.block_on(release));
            }
            // block_in_place would panic here: the release goes on in the background.
            _ => {
                handle.spawn(release);
            }
        }
    }
}
