//! [`PostgresStore`]: the [`RunStore`] in a PostgreSQL database.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use plan_core::{Event, Plan, RunId, RunStatus, StepId, Timestamp};
use plan_exec::error::StoreError;
use plan_exec::store::{
    JournalEntry, PlanRevision, Prune, Pruned, PrunedRun, RunEnd, RunRecord, RunStore, RunSummary,
    StepOutputRecord, StoredRun,
};
use tokio_postgres::Transaction;
use tokio_postgres::types::ToSql;

use crate::address::PgAddress;
use crate::error::{PgErrors, is_unique_violation};
use crate::schema::{self, MIGRATIONS};

/// The channel every event append notifies, with the run id as the payload.
pub const EVENTS_CHANNEL: &str = "plan_events";

/// Connections a store keeps open at most.
const MAX_CONNECTIONS: usize = 16;

/// The run store in a PostgreSQL database: every process and every person pointed at the
/// same database sees the same runs.
///
/// Opening it ([`PostgresStore::connect`]) creates its tables in the schema `plan`, or
/// migrates them when this build is newer, and refuses a store written by a newer
/// build. Events are numbered per run with no gaps even when several writers append at
/// once (each append takes the run's row lock); each append notifies the channel
/// [`EVENTS_CHANNEL`] with the run id, which [`PostgresStore::follow`] listens on.
///
/// It rides out a database outage (a restart, a failover, a terminated connection, no
/// connection slot free) of up to [`with_outage_bound`](PostgresStore::with_outage_bound)
/// (60 s by default): each call is retried with backoff and jitter, idempotently, and
/// fails with [`Unreachable`](crate::Unreachable) as its error's source once the
/// database has been unreachable for longer.
///
/// Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct PostgresStore {
    pub(crate) inner: Arc<Inner>,
    /// The leases writes are fenced by ([`PostgresStore::fenced`],
    /// [`PostgresStore::driving`]).
    pub(crate) fence: Option<Arc<crate::driving::Fences>>,
    /// How long a call rides out a database outage ([`PostgresStore::with_outage_bound`]).
    pub(crate) outage_bound: Duration,
}

pub(crate) struct Inner {
    pub(crate) pool: Pool,
    pub(crate) address: PgAddress,
    pub(crate) errors: PgErrors,
    pub(crate) tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// When the current outage began, if the database cannot be reached.
    pub(crate) outage: crate::outage::OutageClock,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.inner.address.redacted())
            .finish()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`,
    /// see [`PgAddress::parse`] for the parameters), creating or migrating the store's
    /// tables. Needs a tokio runtime.
    ///
    /// # Errors
    /// [`StoreError`] when the URL is invalid, the server cannot be reached or refuses
    /// the user, or the store's schema is newer than this build; the message names the
    /// host and says what to check, and never contains the password.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_address(PgAddress::parse(url)?).await
    }

    /// Connects to a parsed address; see [`PostgresStore::connect`].
    ///
    /// # Errors
    /// As [`PostgresStore::connect`].
    pub async fn connect_address(address: PgAddress) -> Result<Self, StoreError> {
        let store = Self::open_unmigrated(address)?;
        let mut client = store.client().await?;
        schema::migrate(
            &mut client,
            MIGRATIONS,
            store.inner.address.redacted(),
            &store.inner.errors,
        )
        .await?;
        drop(client);
        Ok(store)
    }

    /// The pool, without touching the server yet.
    pub(crate) fn open_unmigrated(address: PgAddress) -> Result<Self, StoreError> {
        let errors = PgErrors::new(&address);
        let tls = crate::tls::connector(&address)?;
        let manager = Manager::from_config(
            address.config().clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(MAX_CONNECTIONS)
            .wait_timeout(Some(Duration::from_secs(60)))
            .create_timeout(address.config().get_connect_timeout().copied())
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::new(format!("cannot set up the connection pool: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                address,
                errors,
                tls,
                outage: crate::outage::OutageClock::default(),
            }),
            fence: None,
            outage_bound: crate::outage::DEFAULT_OUTAGE_BOUND,
        })
    }

    /// This store with a connection pool of its own (its tables are not checked again),
    /// for calls that must not wait behind the others' for a connection, or that are made
    /// on another tokio runtime: a pool's connections are driven by the runtime that
    /// opened them. Not fenced; the outage bound is kept.
    ///
    /// # Errors
    /// [`StoreError`] when the pool cannot be set up.
    pub fn with_own_pool(&self) -> Result<PostgresStore, StoreError> {
        Ok(Self::open_unmigrated(self.inner.address.clone())?.with_outage_bound(self.outage_bound))
    }

    /// The address it is connected to (its `Display` hides the password).
    pub fn address(&self) -> &PgAddress {
        &self.inner.address
    }

    pub(crate) async fn client(&self) -> Result<Object, StoreError> {
        self.inner
            .pool
            .get()
            .await
            .map_err(|e| self.inner.errors.connect(&e))
    }

    /// Begins a write transaction on `run`. In a store [fenced](PostgresStore::fenced) by
    /// a lease on that run (or [driving](PostgresStore::driving) it), it first checks, in
    /// the same transaction, that the lease is still held (taking a share lock on it, so
    /// a takeover waits for the write to commit): a process whose lease was taken over
    /// cannot write. A lease that expired while nobody took the run over (the database
    /// was unreachable) is taken back in the same transaction.
    pub(crate) async fn write_tx<'c>(
        &self,
        client: &'c mut Object,
        run: &RunId,
        what: &str,
    ) -> Result<deadpool_postgres::Transaction<'c>, StoreError> {
        let tx = client.transaction().await.map_err(self.err(what))?;
        if let Some(fences) = &self.fence
            && let Some(token) = fences.token(run)
        {
            let worker = fences.worker();
            let held = tx
                .query_opt(
                    "SELECT 1 FROM plan.leases
                     WHERE run = $1 AND worker = $2 AND token = $3 AND expires > now()
                     FOR SHARE",
                    &[&run.as_str(), &worker, &token],
                )
                .await
                .map_err(self.err(what))?;
            if held.is_none()
                && !crate::driving::retake(&tx, self, run, fences, token, what).await?
            {
                return Err(StoreError::new(format!(
                    "{what}: `{worker}` no longer holds the lease on run `{run}` (it expired \
                     and another process took the run over), so this write was refused"
                )));
            }
        }
        Ok(tx)
    }

    fn err(&self, what: &str) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
        let what = what.to_owned();
        move |e| self.inner.errors.store(&what, &e)
    }
}

/// A timestamp at millisecond precision (what every store keeps).
fn to_sql_time(t: Timestamp) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(t.unix_millis())
}

fn from_sql_time(t: SystemTime) -> Timestamp {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Timestamp::from_unix_millis(ms)
}

fn json_err(what: &str) -> impl FnOnce(serde_json::Error) -> StoreError + '_ {
    move |e| StoreError::with_source(format!("{what}: {e}"), e)
}

fn no_run(run: &RunId) -> StoreError {
    StoreError::new(format!("no run `{run}` in the run store"))
}

fn already_committed(run: &RunId, output: &StepOutputRecord) -> StoreError {
    StoreError::new(format!(
        "step `{}` of run `{run}` already has a committed output: a completed step is never \
         redone, and its output is kept",
        output.step
    ))
}

fn parse_status(s: &str) -> RunStatus {
    RunStatus::parse(s).unwrap_or(RunStatus::Running)
}

/// Takes the run's row lock and reserves `n` event positions; returns the first. An
/// unknown run is an error.
async fn reserve_seq(
    tx: &Transaction<'_>,
    store: &PostgresStore,
    run: &RunId,
    n: usize,
) -> Result<i64, StoreError> {
    let row = tx
        .query_opt(
            "UPDATE plan.runs SET last_seq = last_seq + $2, updated = $3 WHERE id = $1
             RETURNING last_seq",
            &[&run.as_str(), &(n as i64), &to_sql_time(Timestamp::now())],
        )
        .await
        .map_err(store.err(&format!("cannot save the events of run `{run}`")))?
        .ok_or_else(|| no_run(run))?;
    Ok(row.get::<_, i64>(0) - n as i64 + 1)
}

/// Inserts `events` at positions `first`, `first + 1`, ... and notifies followers.
async fn insert_events(
    tx: &Transaction<'_>,
    store: &PostgresStore,
    run: &RunId,
    first: i64,
    events: &[Event],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let times: Vec<SystemTime> = events.iter().map(|e| to_sql_time(e.ts)).collect();
    let names: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    let bodies: Vec<String> = events.iter().map(Event::to_json_line).collect();
    let what = format!("cannot save the events of run `{run}`");
    tx.execute(
        "INSERT INTO plan.events (run, seq, ts, event, body)
         SELECT $1, $2 + t.ord - 1, t.ts, t.event, t.body::json
         FROM unnest($3::timestamptz[], $4::text[], $5::text[])
              WITH ORDINALITY AS t(ts, event, body, ord)",
        &[&run.as_str(), &first, &times, &names, &bodies],
    )
    .await
    .map_err(store.err(&what))?;
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&EVENTS_CHANNEL, &run.as_str()],
    )
    .await
    .map_err(store.err(&what))?;
    Ok(())
}

/// The events of one journal write as the arrays its statement takes.
struct EventColumns {
    times: Vec<SystemTime>,
    names: Vec<&'static str>,
    bodies: Vec<String>,
}

impl EventColumns {
    fn of(events: &[Event]) -> Self {
        Self {
            times: events.iter().map(|e| to_sql_time(e.ts)).collect(),
            names: events.iter().map(|e| e.kind.name()).collect(),
            bodies: events.iter().map(Event::to_json_line).collect(),
        }
    }
}

/// The lease check of a fenced journal write, as the first part of its one statement
/// (`$2` worker, `$3` token): the lease row is share-locked, so a takeover waits for the
/// write to commit, and a write under a lease that is no longer held changes nothing.
const FENCE_CTE: &str = "fence AS (
         SELECT 1 FROM plan.leases
         WHERE run = $1 AND worker = $2 AND token = $3 AND expires > now()
         FOR SHARE),";

/// Reserves the event positions (`$4` events, `$5` the time) on the run's row, which
/// orders the writes to one run; `base` is the position before the first.
const SEQ_CTE: &str = "seq AS (
         UPDATE plan.runs SET last_seq = last_seq + $4, updated = $5
         WHERE id = $1 AND EXISTS (SELECT 1 FROM fence)
         RETURNING last_seq - $4 AS base),
     events AS (
         INSERT INTO plan.events (run, seq, ts, event, body)
         SELECT $1, seq.base + t.ord, t.ts, t.event, t.body::json
         FROM seq, unnest($6::timestamptz[], $7::text[], $8::text[])
              WITH ORDINALITY AS t(ts, event, body, ord)
         RETURNING 1)";

/// The same without a lease: `fence` always holds (`$2` and `$3` unused).
const NO_FENCE_CTE: &str = "fence AS (SELECT $2::text, $3::bigint),";

impl PostgresStore {
    /// The lease a write to `run` is fenced by in this store, if any: (worker, token).
    fn fence_of(&self, run: &RunId) -> Option<(&str, i64)> {
        let fences = self.fence.as_ref()?;
        Some((fences.worker(), fences.token(run)?))
    }

    /// Appends `events` to the journal of `run` (and commits `output` with them) in one
    /// statement: the lease check of a fenced store, the event positions, the rows and
    /// the notification. `Ok(false)` when it wrote nothing: the lease check failed (it
    /// may have expired while nobody took the run over) or the run is not in the store;
    /// the caller then takes the transactional path, which tells these apart. The
    /// statement returns one row, with the notification sent, only when it wrote.
    async fn write_journal_fast(
        &self,
        client: &Object,
        run: &RunId,
        output: Option<&StepOutputRecord>,
        events: &[Event],
    ) -> Result<bool, tokio_postgres::Error> {
        let columns = EventColumns::of(events);
        let (worker, token) = self.fence_of(run).unwrap_or(("", 0));
        let fence = if self.fence_of(run).is_some() {
            FENCE_CTE
        } else {
            NO_FENCE_CTE
        };
        let n = events.len() as i64;
        let now = to_sql_time(Timestamp::now());
        let id = run.as_str();
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![
            &id,
            &worker,
            &token,
            &n,
            &now,
            &columns.times,
            &columns.names,
            &columns.bodies,
        ];
        let output_cte;
        let (step, attempts, revision, duration, ts);
        if let Some(o) = output {
            output_cte = ",
     output AS (
         INSERT INTO plan.outputs
             (run, step, output, attempts, fallback, revision, duration_ms, ts)
         SELECT $1, $9::text, $10::text, $11::int, $12::boolean, $13::int, $14::bigint,
                $15::timestamptz
         FROM seq
         RETURNING 1)";
            step = o.step.as_str();
            attempts = o.attempts as i32;
            revision = o.revision as i32;
            duration = i64::try_from(o.duration_ms).unwrap_or(i64::MAX);
            ts = to_sql_time(o.ts);
            params.extend_from_slice(&[
                &step as &(dyn ToSql + Sync),
                &o.output,
                &attempts,
                &o.fallback,
                &revision,
                &duration,
                &ts,
            ]);
        } else {
            output_cte = "";
        }
        let sql = format!(
            "WITH {fence}\n     {SEQ_CTE}{output_cte}\nSELECT pg_notify('{EVENTS_CHANNEL}', $1) FROM seq"
        );
        let rows = crate::cached::query(client, &sql, &params).await?;
        Ok(!rows.is_empty())
    }
}

impl PostgresStore {
    /// [`RunStore::prune`]: one transaction. The candidates' rows are locked first,
    /// skipping those another transaction is writing (a run being written is active);
    /// then, in a new statement that sees leases committed meanwhile, a run whose lease
    /// or a step task's lease is live is dropped from them, whatever its status says.
    /// Deleting a run's row deletes the rest of it (plans, events, outputs, leases, step
    /// tasks, usage ledger: their foreign keys cascade).
    async fn prune_runs(&self, rule: &Prune) -> Result<Pruned, StoreError> {
        let what = "cannot prune runs";
        let statuses: Vec<&str> = rule.statuses().iter().map(|s| s.as_str()).collect();
        let cutoff = to_sql_time(rule.older_than);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(self.err(what))?;
        let locked: Vec<String> = tx
            .query(
                "SELECT id FROM plan.runs
                 WHERE updated < $1 AND status = ANY($2)
                 FOR UPDATE SKIP LOCKED",
                &[&cutoff, &statuses],
            )
            .await
            .map_err(self.err(what))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let rows = tx
            .query(
                "SELECT r.id, r.status, r.updated, r.last_seq FROM plan.runs r
                 WHERE r.id = ANY($1) AND r.updated < $2 AND r.status = ANY($3)
                   AND NOT EXISTS (SELECT 1 FROM plan.leases l
                                   WHERE l.run = r.id AND l.expires > now())
                   AND NOT EXISTS (SELECT 1 FROM plan.step_tasks t
                                   WHERE t.run = r.id AND t.state = 'claimed'
                                     AND t.expires > now())
                 ORDER BY r.updated, r.id",
                &[&locked, &cutoff, &statuses],
            )
            .await
            .map_err(self.err(what))?;
        let runs: Vec<PrunedRun> = rows
            .iter()
            .map(|r| {
                PrunedRun::new(
                    RunId::new(r.get::<_, String>(0)),
                    parse_status(r.get(1)),
                    from_sql_time(r.get(2)),
                    u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
                )
            })
            .collect();
        if rule.dry_run {
            tx.rollback().await.map_err(self.err(what))?;
            return Ok(Pruned::new(runs, true));
        }
        let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        tx.execute("DELETE FROM plan.runs WHERE id = ANY($1)", &[&ids])
            .await
            .map_err(self.err(what))?;
        tx.commit().await.map_err(self.err(what))?;
        Ok(Pruned::new(runs, false))
    }
}

/// For a retried append: whether `events` are the journal's last ones already (their
/// first try committed, and only its answer was lost with the connection).
pub(crate) async fn journaled_already(
    client: &Object,
    store: &PostgresStore,
    run: &RunId,
    events: &[Event],
    what: &str,
) -> Result<bool, StoreError> {
    let rows = client
        .query(
            "SELECT body::text FROM plan.events WHERE run = $1 ORDER BY seq DESC LIMIT $2",
            &[&run.as_str(), &(events.len() as i64)],
        )
        .await
        .map_err(store.err(what))?;
    Ok(rows.len() == events.len()
        && rows
            .iter()
            .rev()
            .zip(events)
            .all(|(row, e)| row.get::<_, &str>(0) == e.to_json_line()))
}

/// For a retried commit that found the step's output committed: whether it is this one.
pub(crate) async fn committed_already(
    client: &Object,
    store: &PostgresStore,
    run: &RunId,
    output: &StepOutputRecord,
    what: &str,
) -> Result<bool, StoreError> {
    let row = client
        .query_opt(
            "SELECT output, attempts, revision FROM plan.outputs WHERE run = $1 AND step = $2",
            &[&run.as_str(), &output.step.as_str()],
        )
        .await
        .map_err(store.err(what))?;
    Ok(row.is_some_and(|r| {
        r.get::<_, &str>(0) == output.output
            && r.get::<_, i32>(1) == output.attempts as i32
            && r.get::<_, i32>(2) == output.revision as i32
    }))
}

impl PostgresStore {
    /// Notes a saved write to `run` in a driving store's copy of the run's journal, for
    /// a report when the database cannot be read.
    fn note(&self, run: &RunId, f: impl FnOnce(&mut StoredRun)) {
        if let Some(fences) = &self.fence {
            fences.note(run, f);
        }
    }

    /// For a retried create that found the run's id taken: `Ok` when the run is this one
    /// (its first try committed, and only its answer was lost with the connection).
    pub(crate) async fn created_already(
        &self,
        client: &Object,
        run: &RunRecord,
        what: &str,
    ) -> Result<(), StoreError> {
        let row = client
            .query_opt(
                "SELECT r.goal, r.created, l.worker FROM plan.runs r
                 LEFT JOIN plan.leases l ON l.run = r.id WHERE r.id = $1",
                &[&run.id.as_str()],
            )
            .await
            .map_err(self.err(what))?;
        let ours = row.is_some_and(|r| {
            let holder: Option<&str> = r.get(2);
            r.get::<_, &str>(0) == run.goal
                && from_sql_time(r.get(1)).unix_millis() == run.created.unix_millis()
                && match self.fence.as_ref().filter(|f| f.claims_created().is_some()) {
                    Some(fences) => holder == Some(fences.worker()),
                    None => true,
                }
        });
        if ours {
            Ok(())
        } else {
            Err(StoreError::new(format!(
                "{what}: a run with this id is in the store already"
            )))
        }
    }
}

#[async_trait]
impl RunStore for PostgresStore {
    async fn prune(&self, rule: &Prune) -> Result<Pruned, StoreError> {
        self.prune_runs(rule).await
    }

    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let what = format!("cannot record run `{}`", run.id);
        let options = serde_json::to_string(&run.options).map_err(json_err("bad options"))?;
        let created = to_sql_time(run.created);
        let (what, options) = (&what, &options);
        self.retrying(what, move |attempt| async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(self.err(what))?;
            let inserted = tx
                .execute(
                    "INSERT INTO plan.runs
                        (id, goal, created, updated, strategy, model, base_url, options, status)
                     VALUES ($1, $2, $3, $3, $4, $5, $6, $7::text::json, 'running')",
                    &[
                        &run.id.as_str(),
                        &run.goal,
                        &created,
                        &run.strategy,
                        &run.model,
                        &run.base_url,
                        options,
                    ],
                )
                .await;
            if let Err(e) = inserted {
                // A retry of a create whose commit was lost with its connection.
                if attempt.is_retry() && is_unique_violation(&e) {
                    drop(tx);
                    return self.created_already(&client, run, what).await;
                }
                return Err(self.err(what)(e));
            }
            // A driving store holds the runs it creates from their first moment.
            if let Some(fences) = &self.fence
                && let Some(ttl) = fences.claims_created()
            {
                crate::driving::lease_created(&tx, self, &run.id, fences.worker(), ttl, what)
                    .await?;
            }
            tx.commit().await.map_err(self.err(what))
        })
        .await?;
        if let Some(fences) = &self.fence
            && fences.claims_created().is_some()
        {
            fences.hold(&run.id, 1);
            fences.start_journal(&StoredRun::new(run.clone()));
        }
        Ok(())
    }

    async fn save_plan(&self, run: &RunId, revision: u32, plan: &Plan) -> Result<(), StoreError> {
        let body = serde_json::to_string(plan).map_err(json_err("cannot encode the plan"))?;
        let what = format!("cannot save plan revision {revision} of run `{run}`");
        let now = to_sql_time(Timestamp::now());
        let (what, body) = (&what, &body);
        // Saving a revision again replaces it: a retry is harmless.
        let saved = self
            .retrying(what, move |_| async move {
                let mut client = self.client().await?;
                let tx = self.write_tx(&mut client, run, what).await?;
                tx.execute(
                    "INSERT INTO plan.plans (run, revision, plan, created)
                 VALUES ($1, $2, $3::text::json, $4)
                 ON CONFLICT (run, revision) DO UPDATE SET plan = EXCLUDED.plan,
                                                          created = EXCLUDED.created",
                    &[&run.as_str(), &(revision as i32), body, &now],
                )
                .await
                .map_err(self.err(what))?;
                tx.execute(
                    "UPDATE plan.runs SET updated = $2 WHERE id = $1",
                    &[&run.as_str(), &now],
                )
                .await
                .map_err(self.err(what))?;
                tx.commit().await.map_err(self.err(what))
            })
            .await;
        if saved.is_ok() {
            self.note(run, |m| {
                m.plans.retain(|p| p.revision != revision);
                m.plans.push(PlanRevision::new(revision, plan.clone()));
                m.plans.sort_by_key(|p| p.revision);
            });
        }
        saved
    }

    async fn append_events(&self, run: &RunId, events: &[Event]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let what = format!("cannot save the events of run `{run}`");
        let what = &what;
        let saved = self
            .retrying(what, move |attempt| async move {
                let mut client = self.client().await?;
                // A retry of an append whose commit was lost with its connection: the
                // events are at the journal's tail already (only the run's holder appends).
                if attempt.is_retry() && journaled_already(&client, self, run, events, what).await?
                {
                    return Ok(());
                }
                // One statement; the transaction below only when it wrote nothing.
                if self
                    .write_journal_fast(&client, run, None, events)
                    .await
                    .map_err(self.err(what))?
                {
                    return Ok(());
                }
                let tx = self.write_tx(&mut client, run, what).await?;
                let first = reserve_seq(&tx, self, run, events.len()).await?;
                insert_events(&tx, self, run, first, events).await?;
                tx.commit().await.map_err(self.err(what))
            })
            .await;
        if saved.is_ok() {
            self.note(run, |m| m.events.extend_from_slice(events));
        }
        saved
    }

    async fn commit_output(
        &self,
        run: &RunId,
        output: &StepOutputRecord,
        events: &[Event],
    ) -> Result<(), StoreError> {
        let what = format!("cannot save the output of step `{}`", output.step);
        let what = &what;
        let saved = self
            .retrying(what, move |attempt| async move {
                let mut client = self.client().await?;
                // One statement; the transaction below only when it wrote nothing (the
                // lease check failed, or no such run), to tell why.
                let fast = match self
                    .write_journal_fast(&client, run, Some(output), events)
                    .await
                {
                    Ok(wrote) => Ok(wrote),
                    Err(e) if is_unique_violation(&e) => Err(e),
                    Err(e) => return Err(self.err(what)(e)),
                };
                match fast {
                    Ok(true) => return Ok(()),
                    Ok(false) => {}
                    Err(_) => {
                        // A retry of this very commit, whose commit was lost with its
                        // connection: done (its events were in the same statement).
                        if attempt.is_retry()
                            && committed_already(&client, self, run, output, what).await?
                        {
                            return Ok(());
                        }
                        return Err(already_committed(run, output));
                    }
                }
                let tx = self.write_tx(&mut client, run, what).await?;
                // The row lock first: commits to one run are ordered, and numbered in order.
                let first = reserve_seq(&tx, self, run, events.len()).await?;
                let inserted = tx
                    .execute(
                        "INSERT INTO plan.outputs
                        (run, step, output, attempts, fallback, revision, duration_ms, ts)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        &[
                            &run.as_str(),
                            &output.step.as_str(),
                            &output.output,
                            &(output.attempts as i32),
                            &output.fallback,
                            &(output.revision as i32),
                            &i64::try_from(output.duration_ms).unwrap_or(i64::MAX),
                            &to_sql_time(output.ts),
                        ],
                    )
                    .await;
                if let Err(e) = inserted {
                    if is_unique_violation(&e) {
                        drop(tx);
                        // A retry of this very commit, whose commit was lost with its
                        // connection: done (its events were in the same transaction).
                        if attempt.is_retry()
                            && committed_already(&client, self, run, output, what).await?
                        {
                            return Ok(());
                        }
                        return Err(already_committed(run, output));
                    }
                    return Err(self.err(what)(e));
                }
                insert_events(&tx, self, run, first, events).await?;
                tx.commit().await.map_err(self.err(what))
            })
            .await;
        if saved.is_ok() {
            self.note(run, |m| {
                if !m.outputs.iter().any(|o| o.step == output.step) {
                    m.outputs.push(output.clone());
                    m.events.extend_from_slice(events);
                }
            });
        }
        saved
    }

    async fn set_status(&self, run: &RunId, status: RunStatus) -> Result<(), StoreError> {
        let what = "cannot update the run status";
        let saved = self
            .retrying(what, move |_| async move {
                let mut client = self.client().await?;
                let tx = self.write_tx(&mut client, run, what).await?;
                let n = tx
                    .execute(
                        "UPDATE plan.runs SET status = $2, updated = $3 WHERE id = $1",
                        &[
                            &run.as_str(),
                            &status.as_str(),
                            &to_sql_time(Timestamp::now()),
                        ],
                    )
                    .await
                    .map_err(self.err(what))?;
                if n == 0 {
                    return Err(no_run(run));
                }
                tx.commit().await.map_err(self.err(what))
            })
            .await;
        if saved.is_ok() {
            self.note(run, |m| m.status = status);
        }
        saved
    }

    async fn change_status(
        &self,
        run: &RunId,
        from: RunStatus,
        to: RunStatus,
    ) -> Result<bool, StoreError> {
        let what = "cannot update the run status";
        let changed = self
            .retrying(what, move |attempt| async move {
                let mut client = self.client().await?;
                let tx = self.write_tx(&mut client, run, what).await?;
                let n = tx
                .execute(
                    "UPDATE plan.runs SET status = $3, updated = $4 WHERE id = $1 AND status = $2",
                    &[
                        &run.as_str(),
                        &from.as_str(),
                        &to.as_str(),
                        &to_sql_time(Timestamp::now()),
                    ],
                )
                .await
                .map_err(self.err(what))?;
                if n == 1 {
                    tx.commit().await.map_err(self.err(what))?;
                    return Ok(true);
                }
                let known = tx
                    .query_opt(
                        "SELECT status FROM plan.runs WHERE id = $1",
                        &[&run.as_str()],
                    )
                    .await
                    .map_err(self.err("cannot read the run"))?;
                match known {
                    // A retry of a change whose commit was lost with its connection.
                    Some(row) if attempt.is_retry() => Ok(row.get::<_, &str>(0) == to.as_str()),
                    Some(_) => Ok(false),
                    None => Err(no_run(run)),
                }
            })
            .await?;
        if changed {
            self.note(run, |m| m.status = to);
        }
        Ok(changed)
    }

    async fn finish_run(&self, run: &RunId, end: &RunEnd) -> Result<(), StoreError> {
        let extras = if end.extras.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&end.extras).map_err(json_err("cannot encode extras"))?)
        };
        let what = "cannot record the end of the run";
        let extras = &extras;
        let saved = self
            .retrying(what, move |_| async move {
                let mut client = self.client().await?;
                let tx = self.write_tx(&mut client, run, what).await?;
                let n = tx
                    .execute(
                        "UPDATE plan.runs SET status = $2, answer = $3, failure = $4,
                            extras = $5::text::json, updated = $6
                     WHERE id = $1",
                        &[
                            &run.as_str(),
                            &end.status.as_str(),
                            &end.answer,
                            &end.failure,
                            extras,
                            &to_sql_time(Timestamp::now()),
                        ],
                    )
                    .await
                    .map_err(self.err(what))?;
                if n == 0 {
                    return Err(no_run(run));
                }
                tx.commit().await.map_err(self.err(what))
            })
            .await;
        if saved.is_ok() {
            self.note(run, |m| {
                m.status = end.status;
                m.answer.clone_from(&end.answer);
                m.failure.clone_from(&end.failure);
                m.extras.clone_from(&end.extras);
            });
        }
        saved
    }

    async fn step_holders(
        &self,
        run: &RunId,
    ) -> Result<std::collections::HashMap<StepId, String>, StoreError> {
        self.retrying("cannot read the step leases", move |_| {
            self.read_step_holders(run)
        })
        .await
    }

    async fn list_runs(&self) -> Result<Vec<RunSummary>, StoreError> {
        self.retrying("cannot list runs", move |_| self.read_runs())
            .await
    }

    async fn load_run(&self, run: &RunId) -> Result<Option<StoredRun>, StoreError> {
        let loaded = self
            .retrying(&format!("cannot load run `{run}`"), move |_| {
                self.read_run(run)
            })
            .await?;
        // A driving store's copy of a run it holds starts from the run as loaded.
        if let (Some(fences), Some(stored)) = (&self.fence, &loaded)
            && fences.token(run).is_some()
        {
            fences.start_journal(stored);
        }
        Ok(loaded)
    }

    async fn events_after(
        &self,
        run: &RunId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        self.retrying(
            &format!("cannot read the events of run `{run}`"),
            move |_| self.read_events_after(run, after, limit),
        )
        .await
    }
}

/// The reads of [`RunStore`], each one try (the trait's methods retry them).
impl PostgresStore {
    async fn read_step_holders(
        &self,
        run: &RunId,
    ) -> Result<std::collections::HashMap<StepId, String>, StoreError> {
        let client = self.client().await?;
        let what = "cannot read the step leases";
        let rows = client
            .query(
                "SELECT split_part(step, '@', 1), worker FROM plan.step_tasks
                 WHERE run = $1 AND state = 'claimed' AND expires > now()",
                &[&run.as_str()],
            )
            .await
            .map_err(self.err(what))?;
        if !rows.is_empty() {
            return Ok(rows
                .iter()
                .map(|r| (StepId::new(r.get::<_, String>(0)), r.get::<_, String>(1)))
                .collect());
        }
        // A run whose driver runs its steps itself (`plan run` on a shared store) queues
        // no step tasks: the holder of the run's lease runs every step of its plan.
        let rows = client
            .query(
                "SELECT l.worker, s->>'id'
                 FROM plan.leases l
                 JOIN LATERAL (SELECT p.plan FROM plan.plans p WHERE p.run = l.run
                               ORDER BY p.revision DESC LIMIT 1) latest ON true
                 CROSS JOIN LATERAL json_array_elements(latest.plan->'steps') s
                 WHERE l.run = $1 AND l.expires > now() AND l.worker <> ''
                   AND NOT EXISTS (SELECT 1 FROM plan.step_tasks t WHERE t.run = $1)",
                &[&run.as_str()],
            )
            .await
            .map_err(self.err(what))?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let step: Option<String> = r.get(1);
                step.map(|s| (StepId::new(s), r.get::<_, String>(0)))
            })
            .collect())
    }

    async fn read_runs(&self) -> Result<Vec<RunSummary>, StoreError> {
        let client = self.client().await?;
        // Steps done: outputs of steps in the latest plan (a replan may drop a finished
        // step).
        let rows = client
            .query(
                "SELECT r.id, r.goal, r.status, r.created, r.updated, r.strategy, r.model,
                        coalesce(json_array_length(lp.plan -> 'steps'), 0)::bigint,
                        (SELECT count(*) FROM plan.outputs o
                          WHERE o.run = r.id
                            AND o.step IN (SELECT s ->> 'id'
                                           FROM json_array_elements(lp.plan -> 'steps') s))
                 FROM plan.runs r
                 LEFT JOIN LATERAL (SELECT p.plan FROM plan.plans p WHERE p.run = r.id
                                    ORDER BY p.revision DESC LIMIT 1) lp ON true
                 ORDER BY r.created DESC, r.id DESC",
                &[],
            )
            .await
            .map_err(self.err("cannot list runs"))?;
        Ok(rows
            .iter()
            .map(|row| {
                let mut s = RunSummary::new(
                    RunId::new(row.get::<_, String>(0)),
                    row.get::<_, String>(1),
                    parse_status(row.get(2)),
                    from_sql_time(row.get(3)),
                );
                s.updated = from_sql_time(row.get(4));
                s.strategy = row.get(5);
                s.model = row.get(6);
                s.steps_total = row.get::<_, i64>(7) as usize;
                s.steps_done = row.get::<_, i64>(8) as usize;
                s
            })
            .collect())
    }

    async fn read_run(&self, run: &RunId) -> Result<Option<StoredRun>, StoreError> {
        let what = format!("cannot load run `{run}`");
        let mut client = self.client().await?;
        // One snapshot, so the run, its plans, outputs and events agree.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(self.err(&what))?;
        let id: &(dyn ToSql + Sync) = &run.as_str();
        let params = [id];
        let (head, plans, outputs, events) = futures::try_join!(
            tx.query_opt(
                "SELECT goal, created, strategy, model, base_url, options::text, status,
                        answer, updated, failure, extras::text
                 FROM plan.runs WHERE id = $1",
                &params,
            ),
            tx.query(
                "SELECT revision, plan::text FROM plan.plans WHERE run = $1 ORDER BY revision",
                &params,
            ),
            tx.query(
                "SELECT step, output, attempts, fallback, revision, duration_ms, ts
                 FROM plan.outputs WHERE run = $1 ORDER BY committed",
                &params,
            ),
            tx.query(
                "SELECT body::text FROM plan.events WHERE run = $1 ORDER BY seq",
                &params,
            ),
        )
        .map_err(self.err(&what))?;
        tx.commit().await.map_err(self.err(&what))?;
        let Some(head) = head else {
            return Ok(None);
        };
        let mut record = RunRecord::new(head.get::<_, String>(0)).with_id(run.clone());
        record.created = from_sql_time(head.get(1));
        record.strategy = head.get(2);
        record.model = head.get(3);
        record.base_url = head.get(4);
        record.options = serde_json::from_str(head.get(5)).map_err(json_err(&what))?;
        let mut stored = StoredRun::new(record);
        stored.status = parse_status(head.get(6));
        stored.answer = head.get(7);
        stored.updated = from_sql_time(head.get(8));
        stored.failure = head.get(9);
        if let Some(extras) = head.get::<_, Option<&str>>(10) {
            stored.extras = serde_json::from_str(extras).map_err(json_err(&what))?;
        }
        for row in &plans {
            let plan: Plan = serde_json::from_str(row.get(1)).map_err(json_err(&what))?;
            stored
                .plans
                .push(PlanRevision::new(row.get::<_, i32>(0) as u32, plan));
        }
        for row in &outputs {
            let mut o = StepOutputRecord::new(StepId::new(row.get::<_, String>(0)), "");
            o.output = row.get(1);
            o.attempts = row.get::<_, i32>(2) as u32;
            o.fallback = row.get(3);
            o.revision = row.get::<_, i32>(4) as u32;
            o.duration_ms = u64::try_from(row.get::<_, i64>(5)).unwrap_or(0);
            o.ts = from_sql_time(row.get(6));
            stored.outputs.push(o);
        }
        for row in &events {
            stored
                .events
                .push(serde_json::from_str(row.get(0)).map_err(json_err(&what))?);
        }
        Ok(Some(stored))
    }

    async fn read_events_after(
        &self,
        run: &RunId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let what = format!("cannot read the events of run `{run}`");
        let client = self.client().await?;
        let rows = crate::cached::query(
            &client,
            "SELECT seq, body::text FROM plan.events
             WHERE run = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            &[
                &run.as_str(),
                &i64::try_from(after).unwrap_or(i64::MAX),
                &i64::try_from(limit).unwrap_or(i64::MAX),
            ],
        )
        .await
        .map_err(self.err(&what))?;
        rows.iter()
            .map(|row| {
                let event: Event = serde_json::from_str(row.get(1)).map_err(json_err(&what))?;
                Ok(JournalEntry::new(row.get::<_, i64>(0) as u64, event))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StepTask;
    use plan_core::{EventKind, Step};

    /// A store on a fresh database, or `None` when PostgreSQL tests are skipped.
    async fn store() -> Option<PostgresStore> {
        let cluster = crate::testing::TempCluster::shared_or_skip()?;
        Some(
            PostgresStore::connect(&cluster.create_database())
                .await
                .unwrap(),
        )
    }

    /// A time after `t` (at the store's millisecond precision), waiting for the clock.
    async fn after(t: Timestamp) -> Timestamp {
        loop {
            let now = Timestamp::now();
            if now.unix_millis() > t.unix_millis() {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// A run that got as far as `status`, with a plan, two events, an output and a
    /// usage ledger.
    async fn run_with(store: &PostgresStore, status: RunStatus) -> RunId {
        let record = RunRecord::new(format!("a {status} run"));
        let id = record.id.clone();
        store.create_run(&record).await.unwrap();
        let plan = Plan::new("g", vec![Step::new("a", "do a")]);
        store.save_plan(&id, 0, &plan).await.unwrap();
        let started = Event::now(id.clone(), EventKind::RunStarted { goal: "g".into() });
        store.append_events(&id, &[started]).await.unwrap();
        let done = Event::now(id.clone(), EventKind::progress(1, 1));
        store
            .commit_output(&id, &StepOutputRecord::new("a", "out"), &[done])
            .await
            .unwrap();
        store.budget_ledger(&id).await.unwrap();
        if status.is_terminal() {
            store.finish_run(&id, &RunEnd::new(status)).await.unwrap();
        } else {
            store.set_status(&id, status).await.unwrap();
        }
        id
    }

    /// Rows naming `run` in every table of the schema `plan` with a `run` column, and its
    /// `runs` row.
    async fn rows_of(store: &PostgresStore, run: &RunId) -> i64 {
        let client = store.client().await.unwrap();
        let tables = client
            .query(
                "SELECT table_name::text FROM information_schema.columns
                 WHERE table_schema = 'plan' AND column_name = 'run'",
                &[],
            )
            .await
            .unwrap();
        assert!(
            tables.len() >= 6,
            "{} tables with a run column",
            tables.len()
        );
        let mut rows = client
            .query_one(
                "SELECT count(*) FROM plan.runs WHERE id = $1",
                &[&run.as_str()],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        for table in tables {
            let table: String = table.get(0);
            rows += client
                .query_one(
                    &format!("SELECT count(*) FROM plan.{table} WHERE run = $1"),
                    &[&run.as_str()],
                )
                .await
                .unwrap()
                .get::<_, i64>(0);
        }
        rows
    }

    fn ids(pruned: &Pruned) -> Vec<RunId> {
        let mut ids: Vec<RunId> = pruned.runs.iter().map(|r| r.id.clone()).collect();
        ids.sort();
        ids
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prune_deletes_old_ended_runs_with_every_row_in_one_go() {
        let Some(store) = store().await else { return };
        let mut old = Vec::new();
        for status in RunStatus::ALL {
            old.push((status, run_with(&store, status).await));
        }
        // A lease and a step task that are over, on an ended run: they go with it.
        let (_, succeeded) = old[3].clone();
        store
            .enqueue_step(&StepTask::new(
                succeeded.clone(),
                "a",
                1,
                serde_json::json!({}),
            ))
            .await
            .unwrap();
        let client = store.client().await.unwrap();
        client
            .execute(
                "INSERT INTO plan.leases (run, worker, token, expires)
                 VALUES ($1, 'gone', 1, now() - interval '1 minute')",
                &[&succeeded.as_str()],
            )
            .await
            .unwrap();
        // 1 run, 1 plan, 2 events, 1 output, 1 ledger; + 1 step task, 1 lease.
        assert_eq!(rows_of(&store, &succeeded).await, 8);
        let last_old = store.list_runs().await.unwrap()[0].updated;
        let cutoff = after(last_old).await;
        after(cutoff).await;
        let young = run_with(&store, RunStatus::Failed).await;
        let ended = |keep_failed: bool| -> Vec<RunId> {
            let mut ids: Vec<RunId> = old
                .iter()
                .filter(|(s, _)| {
                    s.is_terminal()
                        && !(keep_failed && matches!(s, RunStatus::Failed | RunStatus::Cancelled))
                })
                .map(|(_, id)| id.clone())
                .collect();
            ids.sort();
            ids
        };

        let listed = store
            .prune(&Prune::before(cutoff).dry_run(true))
            .await
            .unwrap();
        assert!(listed.dry_run);
        assert_eq!(ids(&listed), ended(false));
        assert_eq!(listed.events(), 4 * 2);
        assert_eq!(store.list_runs().await.unwrap().len(), 8);
        assert_eq!(rows_of(&store, &succeeded).await, 8);

        let pruned = store
            .prune(&Prune::before(cutoff).keep_failed(true))
            .await
            .unwrap();
        assert_eq!(ids(&pruned), ended(true));
        for id in ended(true) {
            assert_eq!(rows_of(&store, &id).await, 0, "rows of {id} left");
        }
        let pruned = store.prune(&Prune::before(cutoff)).await.unwrap();
        assert_eq!(pruned.runs.len(), 2, "the failed and cancelled ones");
        let left: Vec<RunId> = store
            .list_runs()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(left.len(), 4, "{left:?}");
        assert!(left.contains(&young));
        for (status, id) in &old {
            if !status.is_terminal() {
                assert!(left.contains(id), "{status} run pruned");
                assert_eq!(rows_of(&store, id).await, 6);
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_whose_lease_or_step_task_is_live_is_kept_whatever_its_status() {
        let Some(store) = store().await else { return };
        // A run that ended while its worker still holds the lease.
        let leased = run_with(&store, RunStatus::Queued).await;
        let ttl = Duration::from_secs(600);
        let claim = store.claim("w1", ttl, &[]).await.unwrap().unwrap();
        assert_eq!(claim.lease.run, leased);
        store
            .fenced(claim.lease.clone())
            .finish_run(&leased, &RunEnd::new(RunStatus::Succeeded))
            .await
            .unwrap();
        // A run cancelled while another worker still runs one of its steps.
        let stepping = run_with(&store, RunStatus::Running).await;
        store
            .enqueue_step(&StepTask::new(
                stepping.clone(),
                "b",
                1,
                serde_json::json!({}),
            ))
            .await
            .unwrap();
        let step = store.claim_step("w2", ttl, &[]).await.unwrap().unwrap();
        assert_eq!(step.task.run, stepping);
        store
            .finish_run(&stepping, &RunEnd::new(RunStatus::Cancelled))
            .await
            .unwrap();

        let everything = Prune::before(after(Timestamp::now()).await);
        let pruned = store.prune(&everything).await.unwrap();
        assert!(pruned.runs.is_empty(), "{pruned:?}");
        assert_eq!(store.list_runs().await.unwrap().len(), 2);

        // Once the leases are given up (or expire), the runs go.
        store.release(&claim.lease).await.unwrap();
        let client = store.client().await.unwrap();
        client
            .execute(
                "UPDATE plan.step_tasks SET expires = now() - interval '1 minute'
                 WHERE run = $1",
                &[&stepping.as_str()],
            )
            .await
            .unwrap();
        let pruned = store.prune(&everything).await.unwrap();
        let mut both = vec![leased.clone(), stepping.clone()];
        both.sort();
        assert_eq!(ids(&pruned), both);
        assert_eq!(rows_of(&store, &leased).await, 0);
        assert_eq!(rows_of(&store, &stepping).await, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_being_written_is_skipped_not_waited_for() {
        let Some(store) = store().await else { return };
        let busy = run_with(&store, RunStatus::Succeeded).await;
        let idle = run_with(&store, RunStatus::Succeeded).await;
        let everything = Prune::before(after(Timestamp::now()).await);
        // Another transaction holds the busy run's row lock, as a writer does.
        let mut client = store.client().await.unwrap();
        let writer = client.transaction().await.unwrap();
        writer
            .execute(
                "SELECT 1 FROM plan.runs WHERE id = $1 FOR UPDATE",
                &[&busy.as_str()],
            )
            .await
            .unwrap();
        let pruned = tokio::time::timeout(Duration::from_secs(30), store.prune(&everything))
            .await
            .expect("prune waited for the writer")
            .unwrap();
        assert_eq!(ids(&pruned), [idle]);
        writer.rollback().await.unwrap();
        let pruned = store.prune(&everything).await.unwrap();
        assert_eq!(ids(&pruned), [busy]);
    }
}
