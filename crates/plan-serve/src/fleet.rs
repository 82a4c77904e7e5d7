//! Serving a fleet: with a [`Fleet`], the runs started through the API are queued in a
//! shared store for workers to claim, instead of running in the server.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use plan_core::RunId;
use plan_exec::context::CancelToken;
use plan_exec::store::{RunRecord, RunStore};

/// A fleet of workers behind a shared store (the CLI's is PostgreSQL with `plan worker`s).
/// With one, the server:
/// - queues each run of `POST /api/runs` ([`submit`](Self::submit)), and answers once it
///   is queued; a worker plans it (and parks it if it asks for approval) and runs it;
/// - cancels through the store ([`cancel`](Self::cancel)): whoever holds the run stops it;
/// - resumes by queueing a stopped run again ([`requeue`](Self::requeue)), for a worker to
///   continue from its journal;
/// - runs an approved plan itself, under a lease it takes first ([`hold`](Self::hold)), so
///   no worker runs it too;
/// - wakes event streams when the store announces new events
///   ([`wait_for_events`](Self::wait_for_events)) rather than polling.
#[async_trait]
pub trait Fleet: Send + Sync {
    /// Queues a run for the workers and returns its id; `record` holds its goal and spec
    /// (see [`RunSpec::to_record`](plan_strategies::RunSpec::to_record)).
    ///
    /// # Errors
    /// Why it cannot be queued (the store failed).
    async fn submit(&self, record: RunRecord) -> Result<RunId, String>;

    /// Asks whoever holds `run` to cancel it (a queued run is ended by the first worker to
    /// claim it); `false` when it is neither queued nor running.
    ///
    /// # Errors
    /// When the store failed.
    async fn cancel(&self, run: &RunId) -> Result<bool, String>;

    /// Queues a stopped run (failed, cancelled, or abandoned while running) again; `false`
    /// when it is in another status or a live process holds it.
    ///
    /// # Errors
    /// When the store failed.
    async fn requeue(&self, run: &RunId) -> Result<bool, String>;

    /// Takes `run` for the server to continue: a store whose writes to it are fenced by a
    /// lease now held by the server and renewed until the [`Held`] is dropped; `cancel` is
    /// cancelled when the lease is lost or a cancellation is asked for.
    ///
    /// # Errors
    /// Why it cannot be taken (a live process holds it, or the store failed).
    async fn hold(&self, run: &RunId, cancel: CancelToken) -> Result<Held, String>;

    /// Waits until events of `run` may have been written, or `at_most` passes.
    async fn wait_for_events(&self, run: &RunId, at_most: Duration);
}

/// A run the server holds ([`Fleet::hold`]): the store to continue it through, and what
/// keeps its lease while it is alive.
pub struct Held {
    /// The store, its writes to the run fenced by the lease.
    pub store: Arc<dyn RunStore>,
    /// Keeps the lease renewed until dropped.
    pub guard: Box<dyn Send + Sync>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").finish_non_exhaustive()
    }
}
