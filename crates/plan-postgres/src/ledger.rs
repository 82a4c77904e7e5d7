//! The run's usage ledger: one row per run in `plan.run_usage` (migration 4) that every
//! process working on the run charges its model calls to, so the run's budget holds for
//! its total wherever its calls are made.

use async_trait::async_trait;
use plan_core::RunId;
use plan_exec::error::StoreError;
use plan_llm::{BudgetLedger, LedgerError, LedgerTotals, Usage};
use tokio_postgres::Row;

use crate::store::PostgresStore;

/// A run's usage ledger in a [`PostgresStore`], as a [`BudgetLedger`] for the meter of
/// any agent working on the run: [`PostgresStore::budget_ledger`] opens it.
#[derive(Clone, Debug)]
pub struct RunLedger {
    store: PostgresStore,
    run: RunId,
}

impl RunLedger {
    /// The run it keeps the usage of.
    pub fn run(&self) -> &RunId {
        &self.run
    }
}

#[async_trait]
impl BudgetLedger for RunLedger {
    async fn used(&self) -> Result<LedgerTotals, LedgerError> {
        Ok(self.store.ledger_usage(&self.run).await?)
    }

    async fn charge(&self, usage: Usage, usd: f64) -> Result<LedgerTotals, LedgerError> {
        Ok(self.store.charge_usage(&self.run, usage, usd).await?)
    }
}

/// Tokens as the database keeps them (bigint).
fn tokens(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn totals(row: &Row) -> LedgerTotals {
    let count = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
    LedgerTotals::new(count(0), count(1), row.get::<_, f64>(2))
}

impl PostgresStore {
    /// Opens the usage ledger of `run`, for the budget meter of an agent working on it.
    ///
    /// The run's ledger row is created if need be and raised to the usage its journal
    /// shows (the `llm_call` events), in one statement: a run that started before the
    /// ledger existed, or whose calls were made by a process that does not charge the
    /// ledger, starts from what its journal recorded. The ledger is never lowered (calls
    /// charged but not yet journaled keep counting), and each count is the larger of the
    /// two, so no call is counted twice.
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached or the run is not in it.
    pub async fn budget_ledger(&self, run: &RunId) -> Result<RunLedger, StoreError> {
        self.retrying("cannot open a usage ledger", move |_| async move {
            let client = self.client().await?;
            let what = format!("cannot open the usage ledger of run `{run}`");
            client
                .execute(
                    "INSERT INTO plan.run_usage AS u (run, prompt_tokens, completion_tokens)
                     SELECT $1,
                            coalesce(sum((body->>'prompt_tokens')::bigint), 0),
                            coalesce(sum((body->>'completion_tokens')::bigint), 0)
                     FROM plan.events WHERE run = $1 AND event = 'llm_call'
                     ON CONFLICT (run) DO UPDATE SET
                         prompt_tokens = greatest(u.prompt_tokens, EXCLUDED.prompt_tokens),
                         completion_tokens = greatest(u.completion_tokens, EXCLUDED.completion_tokens)",
                    &[&run.as_str()],
                )
                .await
                .map_err(|e| self.inner.errors.store(&what, &e))?;
            Ok(RunLedger {
                store: self.clone(),
                run: run.clone(),
            })
        })
        .await
    }

    /// Adds one model call's usage (its tokens, and its cost in dollars: 0 when unpriced)
    /// to the ledger of `run`, atomically (one `INSERT ... ON CONFLICT DO UPDATE`
    /// statement: concurrent charges all count), and returns the run's totals after it.
    /// Not fenced by a lease: tokens spent by a worker that lost its lease were spent.
    /// Retried through a database outage; a charge whose commit was lost with its
    /// connection may then count twice (an over-count: the safe side for a budget).
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached or the run is not in it.
    pub async fn charge_usage(
        &self,
        run: &RunId,
        usage: Usage,
        usd: f64,
    ) -> Result<LedgerTotals, StoreError> {
        self.retrying(
            "cannot charge the usage of a model call",
            move |_| async move {
                let client = self.client().await?;
                let usd = if usd.is_finite() { usd.max(0.0) } else { 0.0 };
                let row = client
                    .query_one(
                        "INSERT INTO plan.run_usage AS u
                             (run, prompt_tokens, completion_tokens, usd, calls)
                         VALUES ($1, $2, $3, $4, 1)
                         ON CONFLICT (run) DO UPDATE SET
                             prompt_tokens = u.prompt_tokens + EXCLUDED.prompt_tokens,
                             completion_tokens = u.completion_tokens + EXCLUDED.completion_tokens,
                             usd = u.usd + EXCLUDED.usd,
                             calls = u.calls + 1
                         RETURNING prompt_tokens, completion_tokens, usd",
                        &[
                            &run.as_str(),
                            &tokens(usage.prompt_tokens),
                            &tokens(usage.completion_tokens),
                            &usd,
                        ],
                    )
                    .await
                    .map_err(|e| {
                        self.inner.errors.store(
                            &format!("cannot charge the usage of a model call to run `{run}`"),
                            &e,
                        )
                    })?;
                Ok(totals(&row))
            },
        )
        .await
    }

    /// The usage of `run` in its ledger so far (zero when nothing was charged or seeded).
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn ledger_usage(&self, run: &RunId) -> Result<LedgerTotals, StoreError> {
        self.retrying("cannot read a usage ledger", move |_| async move {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT prompt_tokens, completion_tokens, usd FROM plan.run_usage WHERE run = $1",
                    &[&run.as_str()],
                )
                .await
                .map_err(|e| {
                    self.inner
                        .errors
                        .store(&format!("cannot read the usage ledger of run `{run}`"), &e)
                })?;
            Ok(row.as_ref().map(totals).unwrap_or_default())
        })
        .await
    }
}
