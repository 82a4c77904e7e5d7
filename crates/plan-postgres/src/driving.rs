//! Runs driven by one process under leases: a worker's claimed run
//! ([`PostgresStore::fenced`]), and the runs `plan run`, `plan resume` and `plan approve`
//! drive in their own process on a shared store ([`PostgresStore::driving`]). Either way
//! the process writes to a run only while it holds the run's lease, renews the lease
//! while it works ([`PostgresStore::keep_leases`]), and stops when the lease is lost or
//! someone asks for the run to be cancelled ([`PostgresStore::request_cancel`]). A driver
//! that dies loses its leases when they expire, and a worker continues its runs from
//! their journals.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plan_core::RunId;
use plan_exec::context::CancelToken;
use plan_exec::error::StoreError;
use plan_exec::store::StoredRun;

use crate::fleet::{Lease, LeaseHolder, WORK_CHANNEL, millis};
use crate::store::PostgresStore;

/// The leases a store's writes are fenced by: the runs it holds, by claim token.
pub(crate) struct Fences {
    worker: String,
    /// Set for a driving store: the runs it creates are leased to it, for this long.
    claim_created: Option<Duration>,
    held: Mutex<HashMap<RunId, i64>>,
    /// How long the leases last, in milliseconds (0 until known: see [`Fences::ttl`]).
    ttl_ms: AtomicU64,
    /// For a driving store: what it saved of the runs it drives, so its process can
    /// still report a run when the database is unreachable.
    journals: Mutex<HashMap<RunId, StoredRun>>,
}

impl Fences {
    /// The fences of one claimed lease.
    pub(crate) fn of(lease: Lease) -> Self {
        Self {
            worker: lease.worker,
            claim_created: None,
            held: Mutex::new(HashMap::from([(lease.run, lease.token)])),
            ttl_ms: AtomicU64::new(0),
            journals: Mutex::new(HashMap::new()),
        }
    }

    /// How long a lease lasts: as renewed by [`PostgresStore::keep_leases`], else as
    /// created, else 5 s.
    pub(crate) fn ttl(&self) -> Duration {
        match self.ttl_ms.load(Ordering::Relaxed) {
            0 => self.claim_created.unwrap_or(Duration::from_secs(5)),
            ms => Duration::from_millis(ms),
        }
    }

    pub(crate) fn worker(&self) -> &str {
        &self.worker
    }

    /// The token of the lease held on `run`, if this store holds it.
    pub(crate) fn token(&self, run: &RunId) -> Option<i64> {
        self.lock().get(run).copied()
    }

    /// How long the lease of a run this store creates lasts, for a driving store.
    pub(crate) fn claims_created(&self) -> Option<Duration> {
        self.claim_created
    }

    pub(crate) fn hold(&self, run: &RunId, token: i64) {
        self.lock().insert(run.clone(), token);
    }

    fn leases(&self) -> Vec<Lease> {
        self.lock()
            .iter()
            .map(|(run, token)| Lease {
                run: run.clone(),
                worker: self.worker.clone(),
                token: *token,
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, i64>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// For a driving store, notes a write to `run` that was saved in its copy of the
    /// run's journal (started by `create_run`, or by the first load of a run it holds).
    pub(crate) fn note(&self, run: &RunId, f: impl FnOnce(&mut StoredRun)) {
        if self.claim_created.is_none() {
            return;
        }
        let mut journals = self.journals.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(journal) = journals.get_mut(run) {
            f(journal);
        }
    }

    /// For a driving store, starts its copy of a run's journal (a run it creates, or a
    /// held run as loaded), unless it has one.
    pub(crate) fn start_journal(&self, run: &StoredRun) {
        if self.claim_created.is_none() {
            return;
        }
        let mut journals = self.journals.lock().unwrap_or_else(|e| e.into_inner());
        journals
            .entry(run.record.id.clone())
            .or_insert_with(|| run.clone());
    }

    fn journal(&self, run: &RunId) -> Option<StoredRun> {
        let journals = self.journals.lock().unwrap_or_else(|e| e.into_inner());
        journals.get(run).cloned()
    }
}

/// Leases a run being created to its creator, in the transaction that creates it (so no
/// worker can claim it in between).
pub(crate) async fn lease_created(
    tx: &deadpool_postgres::Transaction<'_>,
    store: &PostgresStore,
    run: &RunId,
    worker: &str,
    ttl: Duration,
    what: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO plan.leases (run, worker, token, expires)
         VALUES ($1, $2, 1, now() + $3::bigint * interval '1 millisecond')",
        &[&run.as_str(), &worker, &millis(ttl)],
    )
    .await
    .map_err(|e| store.inner.errors.store(what, &e))?;
    Ok(())
}

/// Takes back, in the write transaction `tx`, the lease on `run` this store held under
/// claim `token` and let expire (the database was unreachable, or the process paused),
/// if nobody took the run over meanwhile: a takeover changes the lease's worker and
/// token. `false` when it was taken.
pub(crate) async fn retake(
    tx: &deadpool_postgres::Transaction<'_>,
    store: &PostgresStore,
    run: &RunId,
    fences: &Fences,
    token: i64,
    what: &str,
) -> Result<bool, StoreError> {
    let row = tx
        .query_opt(
            "UPDATE plan.leases SET expires = now() + $4::bigint * interval '1 millisecond'
             WHERE run = $1 AND worker = $2 AND token = $3
             RETURNING 1",
            &[
                &run.as_str(),
                &fences.worker(),
                &token,
                &millis(fences.ttl()),
            ],
        )
        .await
        .map_err(|e| store.inner.errors.store(what, &e))?;
    if row.is_some() {
        tracing::info!(worker = %fences.worker(), run = %run, "took back the lease on the run: it had expired and nobody took the run over");
    }
    Ok(row.is_some())
}

/// What renewing a lease found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Renewal {
    /// Still held, and renewed.
    Held,
    /// Still held and renewed, and someone asked for the run to be cancelled.
    CancelRequested,
    /// Lost: it expired and another process claimed the run.
    Lost,
    /// It had expired, and nobody had claimed the run: taken back, and renewed.
    Retaken,
}

/// Renews the leases of a store until dropped ([`PostgresStore::keep_leases`]).
#[derive(Debug)]
pub struct LeaseKeeper {
    task: tokio::task::JoinHandle<()>,
    seen: Arc<Seen>,
}

/// What the keeper saw, for its owner to explain why its run stopped.
#[derive(Debug, Default)]
struct Seen {
    lost: std::sync::atomic::AtomicBool,
    cancel_requested: std::sync::atomic::AtomicBool,
}

impl LeaseKeeper {
    /// Whether a lease was lost: another process took its run over.
    pub fn lost(&self) -> bool {
        self.seen.lost.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether someone asked for a held run to be cancelled.
    pub fn cancel_requested(&self) -> bool {
        self.seen
            .cancel_requested
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PostgresStore {
    /// This store as the driver of the runs it creates: each run it creates is leased to
    /// `worker` for `ttl` in the same transaction, so no fleet worker claims it, and every
    /// write to it is fenced by that lease. Keep the leases with
    /// [`keep_leases`](Self::keep_leases); take over an existing run with
    /// [`claim_run`](Self::claim_run). When this process dies, its leases expire and a
    /// worker continues its runs from their journals.
    pub fn driving(&self, worker: &str, ttl: Duration) -> PostgresStore {
        let mut store = self.clone();
        store.fence = Some(Arc::new(Fences {
            worker: worker.to_owned(),
            claim_created: Some(ttl),
            held: Mutex::new(HashMap::new()),
            ttl_ms: AtomicU64::new(0),
            journals: Mutex::new(HashMap::new()),
        }));
        store
    }

    /// Claims an existing run for this [driving](Self::driving) store's process, to
    /// continue it here (`plan resume`, `plan approve`): it succeeds when nobody holds the
    /// run's lease, or its lease expired, and then fences this store's writes to the run.
    /// A request to cancel the run made earlier is cleared: continuing it is a new
    /// decision. `Ok(Err(holder))` names whoever holds it now.
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached, or this store does not drive
    /// runs, or the run is not in the store.
    pub async fn claim_run(&self, run: &RunId) -> Result<Result<Lease, LeaseHolder>, StoreError> {
        let what = format!("cannot claim run `{run}`");
        let Some(fences) = self.fence.clone() else {
            return Err(StoreError::new(format!(
                "{what}: this store does not drive runs (use PostgresStore::driving)"
            )));
        };
        let ttl = fences.claim_created.unwrap_or(Duration::from_secs(5));
        let (what, worker) = (&what, &fences.worker);
        // (A retry whose first try took the lease, its answer lost with the connection,
        // finds the run held, by this worker's name: rare, and refused like any claim
        // of a held run, for one process may hold several stores under one name.)
        let row = self
            .retrying(what, move |_| async move {
                let client = self.client().await?;
                client
                    .query_opt(
                        "INSERT INTO plan.leases (run, worker, token, expires)
                         SELECT id, $2, 1, now() + $3::bigint * interval '1 millisecond'
                         FROM plan.runs WHERE id = $1
                         ON CONFLICT (run) DO UPDATE SET worker = EXCLUDED.worker,
                             token = plan.leases.token + 1, expires = EXCLUDED.expires,
                             cancel = false
                         WHERE plan.leases.expires < now()
                         RETURNING token",
                        &[&run.as_str(), worker, &millis(ttl)],
                    )
                    .await
                    .map_err(|e| self.inner.errors.store(what, &e))
            })
            .await?;
        if let Some(row) = row {
            let token: i64 = row.get(0);
            fences.hold(run, token);
            return Ok(Ok(Lease {
                run: run.clone(),
                worker: fences.worker.clone(),
                token,
            }));
        }
        match self.lease_holder(run).await? {
            Some(holder) => Ok(Err(holder)),
            None => Err(StoreError::new(format!(
                "{what}: no run `{run}` in the run store"
            ))),
        }
    }

    /// What this [driving](Self::driving) store saved of `run` (a run it created, or held
    /// and loaded), as the database had it when last written: for a report when the
    /// database cannot be read. `None` for a run it does not drive.
    pub fn journal_copy(&self, run: &RunId) -> Option<StoredRun> {
        self.fence.as_ref()?.journal(run)
    }

    /// The leases this store holds (it [drives](Self::driving) or is
    /// [fenced](Self::fenced) by).
    pub fn held_leases(&self) -> Vec<Lease> {
        self.fence.as_ref().map(|f| f.leases()).unwrap_or_default()
    }

    /// Renews `lease` for `ttl` from now, and says whether someone asked for its run to be
    /// cancelled. A lease that expired while nobody claimed the run (the database was
    /// unreachable, or the process paused) is taken back ([`Renewal::Retaken`]); one that
    /// another process claimed is [`Renewal::Lost`]. One try: its callers renew again.
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Renewal, StoreError> {
        let client = self.client().await?;
        // A lease that expired while nobody claimed the run (the database was unreachable,
        // or this process paused) is still this claim's: a takeover changes the worker
        // and the token.
        let row = client
            .query_opt(
                "UPDATE plan.leases SET expires = now() + $4::bigint * interval '1 millisecond'
                 WHERE run = $1 AND worker = $2 AND token = $3
                 RETURNING cancel, (SELECT expires <= now() FROM plan.leases
                                    WHERE run = $1)",
                &[
                    &lease.run.as_str(),
                    &lease.worker,
                    &lease.token,
                    &millis(ttl),
                ],
            )
            .await
            .map_err(|e| self.inner.errors.store("cannot renew a lease", &e))?;
        Ok(match row {
            None => Renewal::Lost,
            Some(r) if r.get::<_, bool>(0) => Renewal::CancelRequested,
            Some(r) if r.get::<_, Option<bool>>(1) == Some(true) => Renewal::Retaken,
            Some(_) => Renewal::Held,
        })
    }

    /// Renews every lease this store holds (now and later) every third of `ttl` until the
    /// keeper is dropped. A lost lease, or a request to cancel a held run, cancels
    /// `cancel`: the run stops here (a lost run is continued by whoever took it over; a
    /// cancelled one still holds its lease, so its driver can record the cancellation).
    /// While the database cannot be reached the renewals go on failing quietly; a lease
    /// that expired meanwhile is taken back once it answers, unless another process
    /// claimed the run.
    pub fn keep_leases(&self, ttl: Duration, cancel: CancelToken) -> LeaseKeeper {
        if let Some(fences) = &self.fence {
            fences
                .ttl_ms
                .store(millis(ttl).max(1) as u64, Ordering::Relaxed);
        }
        let store = self.clone();
        let seen = Arc::new(Seen::default());
        let saw = seen.clone();
        let task = tokio::spawn(async move {
            let mut lost: Vec<Lease> = Vec::new();
            let mut told = false;
            let mut failing = false;
            loop {
                tokio::time::sleep(ttl / 3).await;
                for lease in store.held_leases() {
                    if lost.contains(&lease) {
                        continue;
                    }
                    let renewed = store.renew_lease(&lease, ttl).await;
                    if renewed.is_ok() && std::mem::take(&mut failing) {
                        tracing::info!(worker = %lease.worker, run = %lease.run, "the lease is renewed again");
                    }
                    match renewed {
                        Ok(Renewal::Held) => {}
                        Ok(Renewal::Retaken) => {
                            tracing::info!(worker = %lease.worker, run = %lease.run, "took back the lease on the run: it had expired and nobody took the run over");
                        }
                        Ok(Renewal::CancelRequested) => {
                            saw.cancel_requested
                                .store(true, std::sync::atomic::Ordering::Relaxed);
                            if !told {
                                tracing::info!(worker = %lease.worker, run = %lease.run, "cancellation asked for: cancelling the run");
                                told = true;
                            }
                            cancel.cancel();
                        }
                        Ok(Renewal::Lost) => {
                            saw.lost.store(true, std::sync::atomic::Ordering::Relaxed);
                            tracing::warn!(worker = %lease.worker, run = %lease.run, "lost the lease (it expired and another process took the run over); stopping the run here");
                            lost.push(lease);
                            cancel.cancel();
                        }
                        // The database is unreachable: tried again in a third of the lease,
                        // and taken back once it answers if nobody took the run meanwhile.
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!(worker = %lease.worker, run = %lease.run, error = %e, "cannot renew the lease; trying again");
                        }
                        Err(e) => {
                            tracing::debug!(worker = %lease.worker, run = %lease.run, error = %e, "cannot renew the lease");
                        }
                    }
                }
            }
        });
        LeaseKeeper { task, seen }
    }

    /// Gives up every lease this store holds (see [`release`](Self::release)): runs that
    /// have not ended become claimable by workers at once.
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn release_held(&self) -> Result<(), StoreError> {
        for lease in self.held_leases() {
            self.release(&lease).await?;
        }
        Ok(())
    }

    /// Asks whoever holds `run` to cancel it: its driver sees the request when it next
    /// renews the lease (within a third of the lease), and a queued run is ended as
    /// cancelled by the first worker to claim it. `false` when the run is neither queued
    /// nor running (or not in the store).
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn request_cancel(&self, run: &RunId) -> Result<bool, StoreError> {
        self.retrying("cannot cancel a run", move |_| async move {
            let what = format!("cannot cancel run `{run}`");
            let client = self.client().await?;
            let n = client
                .execute(
                    "INSERT INTO plan.leases (run, worker, token, expires, cancel)
                     SELECT id, '', 0, now() - interval '1 millisecond', true
                     FROM plan.runs WHERE id = $1 AND status IN ('queued', 'running')
                     ON CONFLICT (run) DO UPDATE SET cancel = true",
                    &[&run.as_str()],
                )
                .await
                .map_err(|e| self.inner.errors.store(&what, &e))?;
            if n == 1 {
                client
                    .execute("SELECT pg_notify($1, $2)", &[&WORK_CHANNEL, &run.as_str()])
                    .await
                    .map_err(|e| self.inner.errors.store(&what, &e))?;
            }
            Ok(n == 1)
        })
        .await
    }

    /// Puts a run that stopped (failed, cancelled, or left `running` by a process that
    /// held no lease) back in the queue, for a worker to continue from its journal
    /// (completed steps are kept). `false` when the run is in another status, or a live
    /// lease holds it.
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn requeue(&self, run: &RunId) -> Result<bool, StoreError> {
        self.retrying("cannot queue a run again", move |_| async move {
            let what = format!("cannot queue run `{run}` again");
            let mut client = self.client().await?;
            let tx = client
                .transaction()
                .await
                .map_err(|e| self.inner.errors.store(&what, &e))?;
            let n = tx
                .execute(
                    "UPDATE plan.runs SET status = 'queued', updated = now()
                     WHERE id = $1 AND status IN ('failed', 'cancelled', 'running')
                       AND NOT EXISTS (SELECT 1 FROM plan.leases
                                       WHERE run = $1 AND expires > now())",
                    &[&run.as_str()],
                )
                .await
                .map_err(|e| self.inner.errors.store(&what, &e))?;
            if n == 1 {
                tx.execute(
                    "UPDATE plan.leases SET cancel = false WHERE run = $1",
                    &[&run.as_str()],
                )
                .await
                .map_err(|e| self.inner.errors.store(&what, &e))?;
            }
            tx.commit()
                .await
                .map_err(|e| self.inner.errors.store(&what, &e))?;
            Ok(n == 1)
        })
        .await
    }
}
