//! [`SqliteStore`]: plan's run store in one SQLite file (WAL mode, bundled SQLite), the
//! store the CLI uses by default.
//!
//! It implements plan-exec's `RunStore`, so a `RunSession` journals a run's events and
//! step outputs into it and `plan resume` reads them back. plan-postgres is the other
//! store; both pass plan-exec's conformance suite (`plan_exec::conformance::check_store`).
//!
//! ```
//! use plan_exec::store::RunStore;
//! use plan_sqlite::SqliteStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), plan_exec::error::StoreError> {
//! let store = SqliteStore::in_memory()?;
//! assert!(store.list_runs().await?.is_empty());
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use plan_core::{Event, Plan, RunId, RunStatus, StepId, Timestamp};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use plan_exec::error::{Hint, StoreError};
use plan_exec::store::{
    JournalEntry, PlanRevision, Prune, Pruned, PrunedRun, RunEnd, RunRecord, RunStore, RunSummary,
    StepOutputRecord, StoredRun,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id          TEXT PRIMARY KEY,
    goal        TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL,
    strategy    TEXT,
    model       TEXT,
    base_url    TEXT,
    options     TEXT NOT NULL,
    status      TEXT NOT NULL,
    answer      TEXT
);
CREATE TABLE IF NOT EXISTS plans (
    run         TEXT NOT NULL REFERENCES runs(id),
    revision    INTEGER NOT NULL,
    plan        TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (run, revision)
);
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    run         TEXT NOT NULL REFERENCES runs(id),
    ts_ms       INTEGER NOT NULL,
    event       TEXT NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_run ON events (run, seq);
CREATE TABLE IF NOT EXISTS outputs (
    run         TEXT NOT NULL REFERENCES runs(id),
    step        TEXT NOT NULL,
    output      TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    fallback    INTEGER NOT NULL,
    revision    INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    ts_ms       INTEGER NOT NULL,
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    UNIQUE (run, step)
);
";

/// The schema version this build writes; older stores are migrated when opened.
const SCHEMA_VERSION: i64 = 2;

/// Migrations from version N-1 to N, for N = 2, 3, ...
const MIGRATIONS: &[&str] = &["ALTER TABLE runs ADD COLUMN failure TEXT;
     ALTER TABLE runs ADD COLUMN extras TEXT;"];

/// The run store in a SQLite file, in WAL mode: a committed step output survives the
/// process being killed at any point.
///
/// Calls run on tokio's blocking pool, so they need a tokio runtime.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    label: Arc<str>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.label)
            .finish()
    }
}

fn db_err(what: &str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::with_source(format!("{what}: {e}"), e)
}

fn json_err(what: &str) -> impl FnOnce(serde_json::Error) -> StoreError + '_ {
    move |e| StoreError::with_source(format!("{what}: {e}"), e)
}

fn ms(t: Timestamp) -> i64 {
    i64::try_from(t.unix_millis()).unwrap_or(i64::MAX)
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(u64::try_from(ms).unwrap_or(0))
}

fn parse_status(s: &str) -> RunStatus {
    RunStatus::parse(s).unwrap_or(RunStatus::Running)
}

/// Brings an older store up to [`SCHEMA_VERSION`]; refuses a newer one.
fn migrate(conn: &mut Connection, label: &str) -> Result<(), StoreError> {
    let what = format!("cannot migrate the run store {label}");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db_err(&what))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::new(format!(
            "the run store {label} has schema version {version}, newer than this build \
             understands ({SCHEMA_VERSION}): use a newer plan, or another store"
        )));
    }
    let tx = conn.transaction().map_err(db_err(&what))?;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let to = i as i64 + 2;
        if version < to {
            tx.execute_batch(sql).map_err(db_err(&what))?;
        }
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(db_err(&what))?;
    tx.commit().map_err(db_err(&what))
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`, and its parent directory.
    ///
    /// # Errors
    /// [`StoreError`] naming the path when the file cannot be opened or is not a run store.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::with_source(
                    format!("cannot create the directory {}: {e}", dir.display()),
                    e,
                )
            })?;
        }
        let what = format!(
            "cannot open the run store {}; check the path and its permissions, or use another store",
            path.display()
        );
        let opened = Connection::open(path).and_then(|conn| {
            conn.pragma_update(None, "journal_mode", "WAL")?;
            Ok(conn)
        });
        let conn = opened.map_err(|e| db_err(&what)(e).with_hint(Hint::StorePath))?;
        Self::init(conn, path.display().to_string()).map_err(|e| e.with_hint(Hint::StorePath))
    }

    /// A store in memory, gone when dropped (tests).
    ///
    /// # Errors
    /// [`StoreError`] if SQLite cannot start.
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(db_err("cannot open SQLite in memory"))?;
        Self::init(conn, ":memory:".to_owned())
    }

    fn init(conn: Connection, label: String) -> Result<Self, StoreError> {
        let what = format!("cannot set up the run store {label}");
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db_err(&what))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_err(&what))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db_err(&what))?;
        conn.execute_batch(SCHEMA).map_err(db_err(&what))?;
        let mut conn = conn;
        migrate(&mut conn, &label)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            label: Arc::from(label),
        })
    }

    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::new("the run store is unusable after a panic"))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::with_source("a run store task failed", e))?
    }
}

fn insert_events(
    tx: &rusqlite::Transaction<'_>,
    run: &RunId,
    events: &[Event],
) -> Result<(), StoreError> {
    let mut stmt = tx
        .prepare_cached("INSERT INTO events (run, ts_ms, event, body) VALUES (?1, ?2, ?3, ?4)")
        .map_err(db_err("cannot save events"))?;
    for e in events {
        stmt.execute(params![
            run.as_str(),
            ms(e.ts),
            e.kind.name(),
            e.to_json_line()
        ])
        .map_err(db_err("cannot save events"))?;
    }
    Ok(())
}

fn touch(tx: &rusqlite::Transaction<'_>, run: &RunId) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE runs SET updated_ms = ?2 WHERE id = ?1",
        params![run.as_str(), ms(Timestamp::now())],
    )
    .map_err(db_err("cannot update the run"))?;
    Ok(())
}

/// The tables holding rows of a run, by the column naming it; `runs` itself goes last.
const RUN_TABLES: [&str; 3] = ["events", "outputs", "plans"];

/// [`RunStore::prune`] in one write transaction: the candidates are read and deleted
/// under SQLite's write lock, so no other process changes their status in between.
fn prune(c: &mut Connection, rule: &Prune) -> Result<Pruned, StoreError> {
    let what = "cannot prune runs";
    let behavior = if rule.dry_run {
        TransactionBehavior::Deferred
    } else {
        TransactionBehavior::Immediate
    };
    let tx = c
        .transaction_with_behavior(behavior)
        .map_err(db_err(what))?;
    let mut runs = Vec::new();
    {
        let mut stmt = tx
            .prepare(
                "SELECT r.id, r.status, r.updated_ms,
                        (SELECT count(*) FROM events e WHERE e.run = r.id)
                 FROM runs r WHERE r.updated_ms < ?1
                 ORDER BY r.updated_ms, r.id",
            )
            .map_err(db_err(what))?;
        let rows = stmt
            .query_map(params![ms(rule.older_than)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(db_err(what))?;
        for row in rows {
            let (id, status, updated, events) = row.map_err(db_err(what))?;
            // An unknown status reads as `running`, which is kept.
            let status = parse_status(&status);
            if rule.allows(status) {
                runs.push(PrunedRun::new(
                    RunId::new(id),
                    status,
                    ts(updated),
                    u64::try_from(events).unwrap_or(0),
                ));
            }
        }
    }
    if rule.dry_run {
        return Ok(Pruned::new(runs, true));
    }
    for table in RUN_TABLES {
        let mut stmt = tx
            .prepare(&format!("DELETE FROM {table} WHERE run = ?1"))
            .map_err(db_err(what))?;
        for run in &runs {
            stmt.execute(params![run.id.as_str()])
                .map_err(db_err(what))?;
        }
    }
    {
        let mut stmt = tx
            .prepare("DELETE FROM runs WHERE id = ?1")
            .map_err(db_err(what))?;
        for run in &runs {
            stmt.execute(params![run.id.as_str()])
                .map_err(db_err(what))?;
        }
    }
    tx.commit().map_err(db_err(what))?;
    Ok(Pruned::new(runs, false))
}

#[async_trait]
impl RunStore for SqliteStore {
    async fn prune(&self, rule: &Prune) -> Result<Pruned, StoreError> {
        let rule = rule.clone();
        self.with_conn(move |c| prune(c, &rule)).await
    }

    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let run = run.clone();
        self.with_conn(move |c| {
            let options = serde_json::to_string(&run.options).map_err(json_err("bad options"))?;
            c.execute(
                "INSERT INTO runs (id, goal, created_ms, updated_ms, strategy, model, base_url, options, status)
                 VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, ?7, 'running')",
                params![
                    run.id.as_str(),
                    run.goal,
                    ms(run.created),
                    run.strategy,
                    run.model,
                    run.base_url,
                    options
                ],
            )
            .map_err(db_err(&format!("cannot record run `{}`", run.id)))?;
            Ok(())
        })
        .await
    }

    async fn save_plan(&self, run: &RunId, revision: u32, plan: &Plan) -> Result<(), StoreError> {
        let run = run.clone();
        let body = serde_json::to_string(plan).map_err(json_err("cannot encode the plan"))?;
        self.with_conn(move |c| {
            let tx = c.transaction().map_err(db_err("cannot save the plan"))?;
            tx.execute(
                "INSERT OR REPLACE INTO plans (run, revision, plan, created_ms) VALUES (?1, ?2, ?3, ?4)",
                params![run.as_str(), revision, body, ms(Timestamp::now())],
            )
            .map_err(db_err(&format!("cannot save plan revision {revision} of run `{run}`")))?;
            touch(&tx, &run)?;
            tx.commit().map_err(db_err("cannot save the plan"))
        })
        .await
    }

    async fn append_events(&self, run: &RunId, events: &[Event]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let run = run.clone();
        let events = events.to_vec();
        self.with_conn(move |c| {
            let tx = c.transaction().map_err(db_err("cannot save events"))?;
            insert_events(&tx, &run, &events)?;
            tx.commit().map_err(db_err("cannot save events"))
        })
        .await
    }

    async fn commit_output(
        &self,
        run: &RunId,
        output: &StepOutputRecord,
        events: &[Event],
    ) -> Result<(), StoreError> {
        let run = run.clone();
        let output = output.clone();
        let events = events.to_vec();
        self.with_conn(move |c| {
            let what = format!("cannot save the output of step `{}`", output.step);
            let tx = c.transaction().map_err(db_err(&what))?;
            insert_events(&tx, &run, &events)?;
            tx.execute(
                "INSERT INTO outputs (run, step, output, attempts, fallback, revision, duration_ms, ts_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    run.as_str(),
                    output.step.as_str(),
                    output.output,
                    output.attempts,
                    output.fallback,
                    output.revision,
                    i64::try_from(output.duration_ms).unwrap_or(i64::MAX),
                    ms(output.ts)
                ],
            )
            .map_err(db_err(&what))?;
            touch(&tx, &run)?;
            tx.commit().map_err(db_err(&what))
        })
        .await
    }

    async fn set_status(&self, run: &RunId, status: RunStatus) -> Result<(), StoreError> {
        let run = run.clone();
        self.with_conn(move |c| {
            let n = c
                .execute(
                    "UPDATE runs SET status = ?2, updated_ms = ?3 WHERE id = ?1",
                    params![run.as_str(), status.as_str(), ms(Timestamp::now())],
                )
                .map_err(db_err("cannot update the run status"))?;
            if n == 0 {
                return Err(StoreError::new(format!("no run `{run}` in the run store")));
            }
            Ok(())
        })
        .await
    }

    async fn change_status(
        &self,
        run: &RunId,
        from: RunStatus,
        to: RunStatus,
    ) -> Result<bool, StoreError> {
        let run = run.clone();
        self.with_conn(move |c| {
            let n = c
                .execute(
                    "UPDATE runs SET status = ?3, updated_ms = ?4 WHERE id = ?1 AND status = ?2",
                    params![
                        run.as_str(),
                        from.as_str(),
                        to.as_str(),
                        ms(Timestamp::now())
                    ],
                )
                .map_err(db_err("cannot update the run status"))?;
            if n == 1 {
                return Ok(true);
            }
            let known: bool = c
                .query_row(
                    "SELECT 1 FROM runs WHERE id = ?1",
                    params![run.as_str()],
                    |_| Ok(true),
                )
                .optional()
                .map_err(db_err("cannot read the run"))?
                .unwrap_or(false);
            if known {
                Ok(false)
            } else {
                Err(StoreError::new(format!("no run `{run}` in the run store")))
            }
        })
        .await
    }

    async fn finish_run(&self, run: &RunId, end: &RunEnd) -> Result<(), StoreError> {
        let run = run.clone();
        let end = end.clone();
        let extras = if end.extras.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&end.extras).map_err(json_err("cannot encode extras"))?)
        };
        self.with_conn(move |c| {
            let n = c
                .execute(
                    "UPDATE runs SET status = ?2, answer = ?3, failure = ?4, extras = ?5, updated_ms = ?6
                     WHERE id = ?1",
                    params![
                        run.as_str(),
                        end.status.as_str(),
                        end.answer,
                        end.failure,
                        extras,
                        ms(Timestamp::now())
                    ],
                )
                .map_err(db_err("cannot record the end of the run"))?;
            if n == 0 {
                return Err(StoreError::new(format!("no run `{run}` in the run store")));
            }
            Ok(())
        })
        .await
    }

    async fn events_after(
        &self,
        run: &RunId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let run = run.clone();
        self.with_conn(move |c| {
            let what = format!("cannot read the events of run `{run}`");
            let mut stmt = c
                .prepare_cached(
                    "SELECT body FROM events WHERE run = ?1 ORDER BY seq LIMIT ?2 OFFSET ?3",
                )
                .map_err(db_err(&what))?;
            let rows = stmt
                .query_map(
                    params![
                        run.as_str(),
                        i64::try_from(limit).unwrap_or(i64::MAX),
                        i64::try_from(after).unwrap_or(i64::MAX)
                    ],
                    |r| r.get::<_, String>(0),
                )
                .map_err(db_err(&what))?;
            let mut out = Vec::new();
            for (i, row) in rows.enumerate() {
                let body = row.map_err(db_err(&what))?;
                let event = serde_json::from_str::<Event>(&body).map_err(json_err(&what))?;
                out.push(JournalEntry::new(after + i as u64 + 1, event));
            }
            Ok(out)
        })
        .await
    }

    async fn list_runs(&self) -> Result<Vec<RunSummary>, StoreError> {
        self.with_conn(|c| {
            let what = "cannot list runs";
            let mut stmt = c
                .prepare(
                    "SELECT r.id, r.goal, r.status, r.created_ms, r.updated_ms, r.strategy, r.model,
                        (SELECT p.plan FROM plans p WHERE p.run = r.id ORDER BY p.revision DESC LIMIT 1),
                        (SELECT GROUP_CONCAT(o.step, char(31)) FROM outputs o WHERE o.run = r.id)
                     FROM runs r ORDER BY r.created_ms DESC, r.id DESC",
                )
                .map_err(db_err(what))?;
            let rows = stmt
                .query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, i64>(3)?,
                        row.get::<_, i64>(4)?,
                        row.get::<_, Option<String>>(5)?,
                        row.get::<_, Option<String>>(6)?,
                        row.get::<_, Option<String>>(7)?,
                        row.get::<_, Option<String>>(8)?,
                    ))
                })
                .map_err(db_err(what))?;
            let mut out = Vec::new();
            for row in rows {
                let (id, goal, status, created, updated, strategy, model, plan, done) =
                    row.map_err(db_err(what))?;
                let plan = plan.and_then(|p| serde_json::from_str::<Plan>(&p).ok());
                let steps_total = plan.as_ref().map_or(0, |p| p.steps.len());
                // Outputs of steps in the latest plan (a replan may drop a finished step).
                let done = match (&plan, done) {
                    (Some(plan), Some(done)) => done
                        .split('\u{1f}')
                        .filter(|id| plan.step(id).is_some())
                        .count(),
                    _ => 0,
                };
                let mut summary =
                    RunSummary::new(RunId::new(id), goal, parse_status(&status), ts(created));
                summary.updated = ts(updated);
                summary.strategy = strategy;
                summary.model = model;
                summary.steps_total = steps_total;
                summary.steps_done = done;
                out.push(summary);
            }
            Ok(out)
        })
        .await
    }

    async fn load_run(&self, run: &RunId) -> Result<Option<StoredRun>, StoreError> {
        let run = run.clone();
        self.with_conn(move |c| {
            let what = format!("cannot load run `{run}`");
            let head = c
                .query_row(
                    "SELECT goal, created_ms, strategy, model, base_url, options, status, answer, updated_ms,
                            failure, extras
                     FROM runs WHERE id = ?1",
                    params![run.as_str()],
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, Option<String>>(2)?,
                            row.get::<_, Option<String>>(3)?,
                            row.get::<_, Option<String>>(4)?,
                            row.get::<_, String>(5)?,
                            row.get::<_, String>(6)?,
                            row.get::<_, Option<String>>(7)?,
                            row.get::<_, i64>(8)?,
                            row.get::<_, Option<String>>(9)?,
                            row.get::<_, Option<String>>(10)?,
                        ))
                    },
                )
                .optional()
                .map_err(db_err(&what))?;
            let Some((
                goal,
                created,
                strategy,
                model,
                base_url,
                options,
                status,
                answer,
                updated,
                failure,
                extras,
            )) = head
            else {
                return Ok(None);
            };
            let extras = match extras {
                Some(e) => serde_json::from_str(&e).map_err(json_err(&what))?,
                None => serde_json::Map::new(),
            };
            let mut record = RunRecord::new(goal).with_id(run.clone());
            record.created = ts(created);
            record.strategy = strategy;
            record.model = model;
            record.base_url = base_url;
            record.options = serde_json::from_str(&options).map_err(json_err(&what))?;

            let mut plans = Vec::new();
            let mut stmt = c
                .prepare("SELECT revision, plan FROM plans WHERE run = ?1 ORDER BY revision")
                .map_err(db_err(&what))?;
            let rows = stmt
                .query_map(params![run.as_str()], |r| {
                    Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(db_err(&what))?;
            for row in rows {
                let (revision, plan) = row.map_err(db_err(&what))?;
                plans.push(PlanRevision::new(
                    revision,
                    serde_json::from_str(&plan).map_err(json_err(&what))?,
                ));
            }

            let mut outputs = Vec::new();
            let mut stmt = c
                .prepare(
                    "SELECT step, output, attempts, fallback, revision, duration_ms, ts_ms
                     FROM outputs WHERE run = ?1 ORDER BY seq",
                )
                .map_err(db_err(&what))?;
            let rows = stmt
                .query_map(params![run.as_str()], |r| {
                    let mut output =
                        StepOutputRecord::new(StepId::new(r.get::<_, String>(0)?), r.get::<_, String>(1)?);
                    output.attempts = r.get(2)?;
                    output.fallback = r.get(3)?;
                    output.revision = r.get(4)?;
                    output.duration_ms = u64::try_from(r.get::<_, i64>(5)?).unwrap_or(0);
                    output.ts = ts(r.get(6)?);
                    Ok(output)
                })
                .map_err(db_err(&what))?;
            for row in rows {
                outputs.push(row.map_err(db_err(&what))?);
            }

            let mut events = Vec::new();
            let mut stmt = c
                .prepare("SELECT body FROM events WHERE run = ?1 ORDER BY seq")
                .map_err(db_err(&what))?;
            let rows = stmt
                .query_map(params![run.as_str()], |r| r.get::<_, String>(0))
                .map_err(db_err(&what))?;
            for row in rows {
                let body = row.map_err(db_err(&what))?;
                events.push(serde_json::from_str::<Event>(&body).map_err(json_err(&what))?);
            }

            let mut stored = StoredRun::new(record);
            stored.status = parse_status(&status);
            stored.answer = answer;
            stored.failure = failure;
            stored.extras = extras;
            stored.updated = ts(updated);
            stored.plans = plans;
            stored.outputs = outputs;
            stored.events = events;
            Ok(Some(stored))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plan_core::EventKind;

    /// A store as the first released schema (version 1) wrote it: no `failure` or
    /// `extras` columns.
    fn version_1_store(path: &Path) -> RunId {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        let id = plan_exec::store::new_run_id();
        conn.execute(
            "INSERT INTO runs (id, goal, created_ms, updated_ms, options, status, answer)
             VALUES (?1, 'old goal', 1, 2, '{}', 'succeeded', 'old answer')",
            params![id.as_str()],
        )
        .unwrap();
        id
    }

    #[tokio::test]
    async fn an_older_store_is_migrated_and_keeps_its_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.db");
        let id = version_1_store(&path);
        let store = SqliteStore::open(&path).unwrap();
        let run = store.load_run(&id).await.unwrap().unwrap();
        assert_eq!(run.answer.as_deref(), Some("old answer"));
        assert_eq!(run.failure, None);
        let end = RunEnd::new(RunStatus::Failed).with_failure(Some("why".into()));
        store.finish_run(&id, &end).await.unwrap();
        let run = store.load_run(&id).await.unwrap().unwrap();
        assert_eq!(run.failure.as_deref(), Some("why"));
        // Opening it again does not migrate twice.
        drop(store);
        let version: i64 = Connection::open(&path)
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        SqliteStore::open(&path).unwrap();
    }

    #[test]
    fn a_newer_store_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        let err = SqliteStore::open(&path).unwrap_err().to_string();
        assert!(err.contains("newer than this build"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    /// Waits until the clock has passed `t` (at the stores' millisecond precision).
    fn after(t: Timestamp) -> Timestamp {
        loop {
            let now = Timestamp::now();
            if now.unix_millis() > t.unix_millis() {
                return now;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// A run that got as far as `status`, with a plan, an output and two events.
    async fn run_with(store: &SqliteStore, status: RunStatus) -> RunId {
        let record = RunRecord::new(format!("a {status} run"));
        let id = record.id.clone();
        store.create_run(&record).await.unwrap();
        let plan = Plan::new("g", vec![plan_core::Step::new("a", "do a")]);
        store.save_plan(&id, 0, &plan).await.unwrap();
        let started = Event::now(id.clone(), EventKind::RunStarted { goal: "g".into() });
        store.append_events(&id, &[started]).await.unwrap();
        let done = Event::now(id.clone(), EventKind::progress(1, 1));
        store
            .commit_output(&id, &StepOutputRecord::new("a", "out"), &[done])
            .await
            .unwrap();
        if status.is_terminal() {
            store.finish_run(&id, &RunEnd::new(status)).await.unwrap();
        } else {
            store.set_status(&id, status).await.unwrap();
        }
        id
    }

    /// Rows naming `run` in every table that has a `run` column, and its `runs` row.
    fn rows_of(path: &Path, run: &RunId) -> i64 {
        let conn = Connection::open(path).unwrap();
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut rows = 0;
        for table in tables {
            let columns: Vec<String> = conn
                .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let column = if table == "runs" { "id" } else { "run" };
            if columns.iter().any(|c| c == column) {
                rows += conn
                    .query_row(
                        &format!("SELECT count(*) FROM {table} WHERE {column} = ?1"),
                        params![run.as_str()],
                        |r| r.get::<_, i64>(0),
                    )
                    .unwrap();
            }
        }
        rows
    }

    #[tokio::test]
    async fn prune_deletes_old_ended_runs_with_every_row_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.db");
        let store = SqliteStore::open(&path).unwrap();
        let mut old = Vec::new();
        for status in RunStatus::ALL {
            old.push((status, run_with(&store, status).await));
        }
        let last_old = store.list_runs().await.unwrap()[0].updated;
        let cutoff = after(last_old);
        after(cutoff);
        let young = run_with(&store, RunStatus::Succeeded).await;
        let ended = |keep_failed: bool| -> Vec<RunId> {
            old.iter()
                .filter(|(s, _)| {
                    s.is_terminal()
                        && !(keep_failed && matches!(s, RunStatus::Failed | RunStatus::Cancelled))
                })
                .map(|(_, id)| id.clone())
                .collect()
        };
        let ids = |p: &Pruned| {
            let mut ids: Vec<RunId> = p.runs.iter().map(|r| r.id.clone()).collect();
            ids.sort();
            ids
        };

        // A dry run lists them and deletes nothing.
        let rule = Prune::before(cutoff).dry_run(true);
        let listed = store.prune(&rule).await.unwrap();
        assert!(listed.dry_run);
        assert_eq!(ids(&listed), ended(false));
        assert_eq!(listed.events(), 4 * 2);
        assert_eq!(store.list_runs().await.unwrap().len(), 8);

        // keep_failed keeps failed and cancelled runs.
        let pruned = store
            .prune(&Prune::before(cutoff).keep_failed(true))
            .await
            .unwrap();
        assert!(!pruned.dry_run);
        assert_eq!(ids(&pruned), ended(true));
        for id in ended(true) {
            assert_eq!(rows_of(&path, &id), 0, "rows of {id} left");
            assert_eq!(store.load_run(&id).await.unwrap(), None);
        }
        let pruned = store.prune(&Prune::before(cutoff)).await.unwrap();
        let mut failed: Vec<RunId> = old
            .iter()
            .filter(|(s, _)| matches!(s, RunStatus::Failed | RunStatus::Cancelled))
            .map(|(_, id)| id.clone())
            .collect();
        failed.sort();
        assert_eq!(ids(&pruned), failed);

        // What has not ended, and what is younger, is all there.
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
                // 1 run, 1 plan, 2 events, 1 output.
                assert_eq!(rows_of(&path, id), 5);
            }
        }
        let everything = Prune::before(after(Timestamp::now()));
        assert_eq!(ids(&store.prune(&everything).await.unwrap()), [young]);
    }

    #[tokio::test]
    async fn events_are_followed_from_a_position_until_the_run_finishes() {
        use futures::StreamExt as _;
        let store = SqliteStore::in_memory().unwrap();
        let record = RunRecord::new("g");
        let id = record.id.clone();
        store.create_run(&record).await.unwrap();
        let ev = |kind| Event::now(id.clone(), kind);
        store
            .append_events(
                &id,
                &[
                    ev(EventKind::RunStarted { goal: "g".into() }),
                    ev(EventKind::progress(0, 1)),
                ],
            )
            .await
            .unwrap();
        let page = store.events_after(&id, 1, 10).await.unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].seq, 2);
        // A follower started now sees the rest as it is written, and stops at the end.
        let writer = {
            let store = store.clone();
            let id = id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                let finished = Event::now(
                    id.clone(),
                    EventKind::RunFinished {
                        status: RunStatus::Succeeded,
                        answer: None,
                    },
                );
                store.append_events(&id, &[finished]).await.unwrap();
            })
        };
        let seen: Vec<JournalEntry> =
            plan_exec::store::follow(&store, &id, 0, std::time::Duration::from_millis(5))
                .map(Result::unwrap)
                .collect()
                .await;
        writer.await.unwrap();
        let seqs: Vec<u64> = seen.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(seen[2].event.kind.name(), "run_finished");
    }
}
