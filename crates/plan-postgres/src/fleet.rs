//! Leases: how a fleet of workers shares the runs of one store. The database is the
//! coordinator: a worker claims a run with `FOR UPDATE SKIP LOCKED`, holds it under a lease
//! it renews, and writes to it only while the lease is its own ([`PostgresStore::fenced`]).
//! A worker that dies loses its lease when it expires, and another worker claims the run
//! and continues it from its journal.

use std::sync::Arc;
use std::time::Duration;

use plan_core::{RunId, RunStatus};
use plan_exec::StoreError;

use crate::follow::Listener;
use crate::store::PostgresStore;

/// The channel a run becoming claimable is announced on (the run id as the payload).
pub const WORK_CHANNEL: &str = "plan_work";

/// A worker's claim on a run. `token` grows with every claim of the run, so a lease that
/// was taken over no longer matches.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// The run.
    pub run: RunId,
    /// The worker holding it.
    pub worker: String,
    /// Which claim of the run this is.
    pub token: i64,
}

/// A claimed run: the lease, and the status the run had (`queued` for a new run,
/// `running` for one taken over from a worker that stopped renewing).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Claim {
    /// The lease now held.
    pub lease: Lease,
    /// The run's status when it was claimed.
    pub status: RunStatus,
}

/// Who holds a run's lease.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseHolder {
    /// The worker's name.
    pub worker: String,
    /// Whether the lease is still live (not expired).
    pub live: bool,
}

/// Wakes a worker when work may have appeared (`NOTIFY plan_work`).
pub struct WorkListener {
    listener: Listener,
}

impl WorkListener {
    /// Waits until a run is announced claimable, or `at_most` passes.
    pub async fn wait(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.listener.wake.notified()).await;
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PostgresStore {
    /// This store with every write to `lease.run` fenced by the lease: each write checks,
    /// in its own transaction, that the lease is still held by the same worker and claim,
    /// and is refused otherwise. A worker gives its run session this store, so a worker
    /// that was paused or cut off past its lease can never overwrite the work of the
    /// worker that took the run over.
    pub fn fenced(&self, lease: Lease) -> PostgresStore {
        let mut store = self.clone();
        store.fence = Some(Arc::new(lease));
        store
    }

    /// Claims the oldest claimable run for `worker` under a lease of `ttl`: a queued run,
    /// or one whose lease expired. Runs in `skip` (those this worker cannot serve) are
    /// passed over. Concurrent claims never get the same run.
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn claim(
        &self,
        worker: &str,
        ttl: Duration,
        skip: &[RunId],
    ) -> Result<Option<Claim>, StoreError> {
        let what = "cannot claim a run";
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.inner.errors.store(what, &e))?;
        let skip: Vec<&str> = skip.iter().map(RunId::as_str).collect();
        let row = tx
            .query_opt(
                "SELECT r.id, r.status FROM plan.runs r
                 LEFT JOIN plan.leases l ON l.run = r.id
                 WHERE ((r.status = 'queued' AND l.run IS NULL)
                        OR (r.status IN ('queued', 'running') AND l.expires < now()))
                   AND NOT (r.id = ANY($1))
                 ORDER BY r.created, r.id
                 LIMIT 1
                 FOR UPDATE OF r SKIP LOCKED",
                &[&skip],
            )
            .await
            .map_err(|e| self.inner.errors.store(what, &e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let run: String = row.get(0);
        let status: String = row.get(1);
        let token: i64 = tx
            .query_one(
                "INSERT INTO plan.leases (run, worker, token, expires)
                 VALUES ($1, $2, 1, now() + $3::bigint * interval '1 millisecond')
                 ON CONFLICT (run) DO UPDATE SET worker = EXCLUDED.worker,
                     token = plan.leases.token + 1, expires = EXCLUDED.expires
                 RETURNING token",
                &[&run, &worker, &millis(ttl)],
            )
            .await
            .map_err(|e| self.inner.errors.store(what, &e))?
            .get(0);
        tx.commit()
            .await
            .map_err(|e| self.inner.errors.store(what, &e))?;
        Ok(Some(Claim {
            lease: Lease {
                run: RunId::new(run),
                worker: worker.to_owned(),
                token,
            },
            status: RunStatus::parse(&status).unwrap_or(RunStatus::Queued),
        }))
    }

    /// Extends a lease by `ttl` from now; `false` when it is no longer held (it expired
    /// and another worker claimed the run).
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE plan.leases SET expires = now() + $4::bigint * interval '1 millisecond'
                 WHERE run = $1 AND worker = $2 AND token = $3 AND expires > now()",
                &[
                    &lease.run.as_str(),
                    &lease.worker,
                    &lease.token,
                    &millis(ttl),
                ],
            )
            .await
            .map_err(|e| self.inner.errors.store("cannot renew a lease", &e))?;
        Ok(n == 1)
    }

    /// Gives a lease up. A run that has not ended becomes claimable at once, and the
    /// workers are woken.
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE plan.leases SET expires = now() - interval '1 millisecond'
                 WHERE run = $1 AND worker = $2 AND token = $3",
                &[&lease.run.as_str(), &lease.worker, &lease.token],
            )
            .await
            .map_err(|e| self.inner.errors.store("cannot release a lease", &e))?;
        if n == 1 {
            client
                .execute(
                    "SELECT pg_notify($1, $2)",
                    &[&WORK_CHANNEL, &lease.run.as_str()],
                )
                .await
                .map_err(|e| self.inner.errors.store("cannot release a lease", &e))?;
        }
        Ok(())
    }

    /// Who holds the run's lease, if anyone ever claimed it.
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn lease_holder(&self, run: &RunId) -> Result<Option<LeaseHolder>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT worker, expires > now() FROM plan.leases WHERE run = $1",
                &[&run.as_str()],
            )
            .await
            .map_err(|e| self.inner.errors.store("cannot read a lease", &e))?;
        Ok(row.map(|r| LeaseHolder {
            worker: r.get(0),
            live: r.get(1),
        }))
    }

    /// A connection listening for claimable work ([`WORK_CHANNEL`]).
    ///
    /// # Errors
    /// [`StoreError`] when the connection cannot be opened.
    pub async fn work_listener(&self) -> Result<WorkListener, StoreError> {
        Ok(WorkListener {
            listener: self
                .listen_on(WORK_CHANNEL, None, "listen for work")
                .await?,
        })
    }
}
