//! [`PostgresStore`]: the [`RunStore`] in a PostgreSQL database.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use plan_core::{Event, Plan, RunId, RunStatus, StepId, Timestamp};
use plan_exec::{
    JournalEntry, PlanRevision, RunEnd, RunRecord, RunStore, RunSummary, StepOutputRecord,
    StoreError, StoredRun,
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
/// Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct PostgresStore {
    pub(crate) inner: Arc<Inner>,
    /// The leases writes are fenced by ([`PostgresStore::fenced`],
    /// [`PostgresStore::driving`]).
    pub(crate) fence: Option<Arc<crate::driving::Fences>>,
}

pub(crate) struct Inner {
    pub(crate) pool: Pool,
    pub(crate) address: PgAddress,
    pub(crate) errors: PgErrors,
    pub(crate) tls: tokio_postgres_rustls::MakeRustlsConnect,
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
            }),
            fence: None,
        })
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
    /// a takeover waits for the write to commit): a process whose lease expired or was
    /// taken over cannot write.
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
            if held.is_none() {
                return Err(StoreError::new(format!(
                    "{what}: `{worker}` no longer holds the lease on run `{run}` (it expired \
                     or another process took the run over), so this write was refused"
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

#[async_trait]
impl RunStore for PostgresStore {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let what = format!("cannot record run `{}`", run.id);
        let options = serde_json::to_string(&run.options).map_err(json_err("bad options"))?;
        let created = to_sql_time(run.created);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(self.err(&what))?;
        tx.execute(
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
                &options,
            ],
        )
        .await
        .map_err(self.err(&what))?;
        // A driving store holds the runs it creates from their first moment.
        if let Some(fences) = &self.fence
            && let Some(ttl) = fences.claims_created()
        {
            crate::driving::lease_created(&tx, self, &run.id, fences.worker(), ttl, &what).await?;
        }
        tx.commit().await.map_err(self.err(&what))?;
        if let Some(fences) = &self.fence
            && fences.claims_created().is_some()
        {
            fences.hold(&run.id, 1);
        }
        Ok(())
    }

    async fn save_plan(&self, run: &RunId, revision: u32, plan: &Plan) -> Result<(), StoreError> {
        let body = serde_json::to_string(plan).map_err(json_err("cannot encode the plan"))?;
        let what = format!("cannot save plan revision {revision} of run `{run}`");
        let now = to_sql_time(Timestamp::now());
        let mut client = self.client().await?;
        let tx = self.write_tx(&mut client, run, &what).await?;
        tx.execute(
            "INSERT INTO plan.plans (run, revision, plan, created)
             VALUES ($1, $2, $3::text::json, $4)
             ON CONFLICT (run, revision) DO UPDATE SET plan = EXCLUDED.plan,
                                                      created = EXCLUDED.created",
            &[&run.as_str(), &(revision as i32), &body, &now],
        )
        .await
        .map_err(self.err(&what))?;
        tx.execute(
            "UPDATE plan.runs SET updated = $2 WHERE id = $1",
            &[&run.as_str(), &now],
        )
        .await
        .map_err(self.err(&what))?;
        tx.commit().await.map_err(self.err(&what))
    }

    async fn append_events(&self, run: &RunId, events: &[Event]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let what = format!("cannot save the events of run `{run}`");
        let mut client = self.client().await?;
        let tx = self.write_tx(&mut client, run, &what).await?;
        let first = reserve_seq(&tx, self, run, events.len()).await?;
        insert_events(&tx, self, run, first, events).await?;
        tx.commit().await.map_err(self.err(&what))
    }

    async fn commit_output(
        &self,
        run: &RunId,
        output: &StepOutputRecord,
        events: &[Event],
    ) -> Result<(), StoreError> {
        let what = format!("cannot save the output of step `{}`", output.step);
        let mut client = self.client().await?;
        let tx = self.write_tx(&mut client, run, &what).await?;
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
                return Err(StoreError::new(format!(
                    "step `{}` of run `{run}` already has a committed output: a completed \
                     step is never redone, and its output is kept",
                    output.step
                )));
            }
            return Err(self.err(&what)(e));
        }
        insert_events(&tx, self, run, first, events).await?;
        tx.commit().await.map_err(self.err(&what))
    }

    async fn set_status(&self, run: &RunId, status: RunStatus) -> Result<(), StoreError> {
        let what = "cannot update the run status";
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
    }

    async fn change_status(
        &self,
        run: &RunId,
        from: RunStatus,
        to: RunStatus,
    ) -> Result<bool, StoreError> {
        let what = "cannot update the run status";
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
            .query_opt("SELECT 1 FROM plan.runs WHERE id = $1", &[&run.as_str()])
            .await
            .map_err(self.err("cannot read the run"))?;
        match known {
            Some(_) => Ok(false),
            None => Err(no_run(run)),
        }
    }

    async fn finish_run(&self, run: &RunId, end: &RunEnd) -> Result<(), StoreError> {
        let extras = if end.extras.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&end.extras).map_err(json_err("cannot encode extras"))?)
        };
        let what = "cannot record the end of the run";
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
                    &extras,
                    &to_sql_time(Timestamp::now()),
                ],
            )
            .await
            .map_err(self.err(what))?;
        if n == 0 {
            return Err(no_run(run));
        }
        tx.commit().await.map_err(self.err(what))
    }

    async fn step_holders(
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

    async fn list_runs(&self) -> Result<Vec<RunSummary>, StoreError> {
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

    async fn load_run(&self, run: &RunId) -> Result<Option<StoredRun>, StoreError> {
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

    async fn events_after(
        &self,
        run: &RunId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let what = format!("cannot read the events of run `{run}`");
        let client = self.client().await?;
        let rows = client
            .query(
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
