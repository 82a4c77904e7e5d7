//! [`PostgresFleet`]: the [`Fleet`] of `plan worker`s behind a PostgreSQL store.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use plan_core::RunId;
use plan_exec::context::CancelToken;
use plan_exec::session::SessionBuilder;
use plan_exec::store::RunRecord;
use plan_postgres::{EventsListener, PostgresStore};

use crate::{Fleet, Held};

/// How long the server's lease on a run it continues itself (an approval) lasts.
const HOLD_LEASE: Duration = Duration::from_secs(5);

/// The fleet behind a PostgreSQL store: runs are queued for its workers, cancelled and
/// resumed through the store, held under a lease when the server runs an approved plan
/// itself, and followed through one shared `LISTEN` connection.
pub struct PostgresFleet {
    store: PostgresStore,
    events: EventsListener,
    name: String,
}

impl std::fmt::Debug for PostgresFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresFleet")
            .field("store", &self.store)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PostgresFleet {
    /// The fleet of `store`. The server is `name` in the leases it takes.
    ///
    /// # Errors
    /// When the store cannot be listened to.
    pub async fn new(
        store: PostgresStore,
        name: impl Into<String>,
    ) -> Result<PostgresFleet, plan_exec::error::StoreError> {
        let events = store.events_listener().await?;
        Ok(PostgresFleet {
            store,
            events,
            name: name.into(),
        })
    }
}

#[async_trait]
impl Fleet for PostgresFleet {
    async fn submit(&self, record: RunRecord) -> Result<RunId, String> {
        SessionBuilder::new()
            .store(Arc::new(self.store.clone()))
            .enqueue(record)
            .await
            .map_err(|e| format!("cannot queue the run: {e}"))
    }

    async fn cancel(&self, run: &RunId) -> Result<bool, String> {
        self.store
            .request_cancel(run)
            .await
            .map_err(|e| e.to_string())
    }

    async fn requeue(&self, run: &RunId) -> Result<bool, String> {
        self.store.requeue(run).await.map_err(|e| e.to_string())
    }

    async fn hold(&self, run: &RunId, cancel: CancelToken) -> Result<Held, String> {
        let driving = self.store.driving(&self.name, HOLD_LEASE);
        match driving.claim_run(run).await.map_err(|e| e.to_string())? {
            Ok(_) => {
                let keeper = driving.keep_leases(HOLD_LEASE, cancel);
                Ok(Held {
                    store: Arc::new(driving.clone()),
                    guard: Box::new(Holding {
                        store: driving,
                        _keeper: keeper,
                    }),
                })
            }
            Err(holder) => Err(format!(
                "run `{run}` is being run by `{}` (it holds the run's lease)",
                holder.worker
            )),
        }
    }

    async fn wait_for_events(&self, run: &RunId, at_most: Duration) {
        self.events.wait(run, at_most).await;
    }
}

/// A run the server holds: its lease is renewed while this lives, and given up when it
/// is dropped (a run that stopped here without ending is then claimable at once).
struct Holding {
    store: PostgresStore,
    _keeper: plan_postgres::LeaseKeeper,
}

impl Drop for Holding {
    fn drop(&mut self) {
        let store = self.store.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = store.release_held().await;
            });
        }
    }
}
