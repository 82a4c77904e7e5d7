//! The store's tables, in the `plan` schema, and their migrations: SQL embedded in the
//! crate, applied in order under an advisory lock when a store is opened.

use plan_exec::error::{Hint, StoreError};
use tokio_postgres::Client;

use crate::error::PgErrors;

/// The schema version this build writes. A store at an older version is migrated when
/// opened; one at a newer version is refused.
pub const SCHEMA_VERSION: i32 = 4;

/// One step of the schema, from `version - 1` to `version`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Migration {
    pub version: i32,
    pub description: &'static str,
    pub sql: &'static str,
}

/// Every migration, oldest first; the last one's version is [`SCHEMA_VERSION`].
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "runs, plans, events and outputs",
        sql: include_str!("../migrations/0001_runs.sql"),
    },
    Migration {
        version: 2,
        description: "leases of a fleet of workers",
        sql: include_str!("../migrations/0002_leases.sql"),
    },
    Migration {
        version: 3,
        description: "cancellation asked of a run's holder",
        sql: include_str!("../migrations/0003_cancel.sql"),
    },
    Migration {
        version: 4,
        description: "a ledger of each run's model usage",
        sql: include_str!("../migrations/0004_usage.sql"),
    },
];

/// The advisory lock that serialises migrations across every process opening the store
/// ("plan_mig" in ASCII).
const MIGRATION_LOCK: i64 = 0x706c_616e_5f6d_6967;

const VERSION_TABLE: &str = "CREATE SCHEMA IF NOT EXISTS plan;
CREATE TABLE IF NOT EXISTS plan.schema_migrations (
    version     integer PRIMARY KEY,
    description text NOT NULL,
    applied     timestamptz NOT NULL DEFAULT now()
);";

/// The store's schema version, 0 when it has none yet.
async fn current_version(client: &Client, errors: &PgErrors) -> Result<i32, StoreError> {
    let what = "cannot read the schema version of the run store";
    let row = client
        .query_one(
            "SELECT to_regclass('plan.schema_migrations') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| errors.store(what, &e))?;
    if !row.get::<_, bool>(0) {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM plan.schema_migrations",
            &[],
        )
        .await
        .map_err(|e| errors.store(what, &e))?;
    Ok(row.get(0))
}

fn newer(found: i32, known: i32, label: &str) -> StoreError {
    StoreError::new(format!(
        "the run store {label} has schema version {found}, newer than this build of plan \
         understands ({known}): upgrade plan to a release that knows schema version {found}, \
         or use another store"
    ))
    .with_hint(Hint::StorePath)
}

/// Brings the store up to the last of `migrations`, and refuses a newer one. Concurrent
/// callers are serialised by an advisory transaction lock, so each migration runs once.
/// Returns the versions it applied.
pub(crate) async fn migrate(
    client: &mut Client,
    migrations: &[Migration],
    label: &str,
    errors: &PgErrors,
) -> Result<Vec<i32>, StoreError> {
    let latest = migrations.last().map_or(0, |m| m.version);
    // The common case, with no lock and no write: the store is up to date.
    let found = current_version(client, errors).await?;
    if found > latest {
        return Err(newer(found, latest, label));
    }
    if found == latest {
        return Ok(Vec::new());
    }
    let what = format!("cannot migrate the run store {label}");
    let tx = client
        .transaction()
        .await
        .map_err(|e| errors.store(&what, &e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| errors.store(&what, &e))?;
    tx.batch_execute(VERSION_TABLE).await.map_err(|e| {
        errors
            .store(
                &format!("{what} (the user needs the CREATE privilege on the database)"),
                &e,
            )
            .with_hint(Hint::StorePath)
    })?;
    // Read again under the lock: another process may have migrated meanwhile.
    let row = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM plan.schema_migrations",
            &[],
        )
        .await
        .map_err(|e| errors.store(&what, &e))?;
    let found: i32 = row.get(0);
    if found > latest {
        return Err(newer(found, latest, label));
    }
    let mut applied = Vec::new();
    for m in migrations.iter().filter(|m| m.version > found) {
        let step = format!("{what} to version {} ({})", m.version, m.description);
        tx.batch_execute(m.sql)
            .await
            .map_err(|e| errors.store(&step, &e))?;
        tx.execute(
            "INSERT INTO plan.schema_migrations (version, description) VALUES ($1, $2)",
            &[&m.version, &m.description],
        )
        .await
        .map_err(|e| errors.store(&step, &e))?;
        applied.push(m.version);
    }
    tx.commit().await.map_err(|e| errors.store(&what, &e))?;
    if !applied.is_empty() {
        tracing::info!(
            store = label,
            from = found,
            to = latest,
            "migrated the run store"
        );
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_and_end_at_the_schema_version() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "{}", m.description);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(SCHEMA_VERSION));
    }

    /// A store at version 1 opened by a build that knows version 2: the second migration
    /// runs once, the data is kept, and the older build then refuses the store.
    #[tokio::test]
    async fn an_older_store_is_migrated_in_order_and_once() {
        let Some(cluster) = crate::testing::TempCluster::shared_or_skip() else {
            return;
        };
        let address = crate::PgAddress::parse(&cluster.create_database()).unwrap();
        let errors = PgErrors::new(&address);
        let (mut client, conn) = address
            .config()
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let v1 = [Migration {
            version: 1,
            description: "a table",
            sql: "CREATE TABLE plan.things (id integer PRIMARY KEY);
                  INSERT INTO plan.things VALUES (1);",
        }];
        let v2 = [
            v1[0],
            Migration {
                version: 2,
                description: "a column",
                sql: "ALTER TABLE plan.things ADD COLUMN name text NOT NULL DEFAULT 'one';",
            },
        ];
        assert_eq!(
            migrate(&mut client, &v1, "test", &errors).await.unwrap(),
            [1]
        );
        assert!(
            migrate(&mut client, &v1, "test", &errors)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            migrate(&mut client, &v2, "test", &errors).await.unwrap(),
            [2]
        );
        assert!(
            migrate(&mut client, &v2, "test", &errors)
                .await
                .unwrap()
                .is_empty()
        );
        let row = client
            .query_one("SELECT id, name FROM plan.things", &[])
            .await
            .unwrap();
        assert_eq!(
            (row.get::<_, i32>(0), row.get::<_, String>(1)),
            (1, "one".into())
        );
        let err = migrate(&mut client, &v1, "test", &errors)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("schema version 2, newer than this build of plan understands (1)"),
            "{err}"
        );
    }

    /// A store of version 3 with a run in it, opened by this build: migration 4 adds the
    /// usage ledger, and the old run's ledger starts from what its journal recorded.
    #[tokio::test]
    async fn a_version_3_store_gets_the_ledger_and_old_runs_start_from_their_journal() {
        let Some(cluster) = crate::testing::TempCluster::shared_or_skip() else {
            return;
        };
        let url = cluster.create_database();
        let address = crate::PgAddress::parse(&url).unwrap();
        let errors = PgErrors::new(&address);
        let (mut client, conn) = address
            .config()
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        migrate(&mut client, &MIGRATIONS[..3], "test", &errors)
            .await
            .unwrap();
        client
            .batch_execute(
                "INSERT INTO plan.runs (id, goal, created, updated, options, status)
                 VALUES ('old', 'g', now(), now(), '{}', 'running');
                 INSERT INTO plan.events (run, seq, ts, event, body) VALUES
                 ('old', 1, now(), 'llm_call',
                  '{\"event\":\"llm_call\",\"purpose\":\"plan\",\"prompt_tokens\":30,\"completion_tokens\":12,\"duration_ms\":5}');",
            )
            .await
            .unwrap();
        let store = crate::PostgresStore::connect(&url).await.unwrap();
        assert_eq!(current_version(&client, &errors).await.unwrap(), 4);
        let run = plan_core::RunId::new("old");
        store.budget_ledger(&run).await.unwrap();
        let used = store.ledger_usage(&run).await.unwrap();
        assert_eq!((used.prompt_tokens, used.completion_tokens), (30, 12));
    }
}
