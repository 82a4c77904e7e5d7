//! A PostgreSQL run store for plan: [`PostgresStore`] implements
//! [`plan_exec::store::RunStore`], so runs, their plan revisions, journals and step outputs live
//! in a database that every process and every person can reach.
//!
//! - Connect with a URL, `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (or
//!   `postgresql://`), with libpq's `sslmode` (`disable`, `prefer`, `require`,
//!   `verify-full`, ...) and `sslrootcert`; without a password in the URL, `PGPASSWORD`
//!   is used. The password never appears in errors, logs or `Debug` output.
//! - The tables live in the schema `plan`. Opening a store applies the migrations
//!   embedded in this crate when its schema is older than [`SCHEMA_VERSION`], under an
//!   advisory lock so concurrent openers do not race, and refuses a schema newer than
//!   this build.
//! - Events are numbered per run from 1 with no gaps, even with several writers; each
//!   append sends `NOTIFY plan_events` with the run id, and [`PostgresStore::follow`]
//!   wakes on it. An append, or a step's output with its events, is one statement (the
//!   lease check of a fenced store, the numbering, the rows and the notification);
//!   only when it writes nothing (a lease to take back, an unknown run) does a
//!   transaction follow to say why.
//! - A step's output is committed once: a second commit is an error and changes nothing.
//! - A fleet of workers shares the runs through leases ([`PostgresStore::claim`],
//!   [`PostgresStore::renew`], [`PostgresStore::release`]): claims use `FOR UPDATE SKIP
//!   LOCKED`, a run becoming claimable sends `NOTIFY plan_work`, and a worker's writes go
//!   through [`PostgresStore::fenced`], which refuses them once its lease is lost. Step
//!   tasks go in batches, one statement each: queued ([`PostgresStore::enqueue_steps`],
//!   `NOTIFY plan_steps`), claimed ([`PostgresStore::claim_steps`]), renewed, recorded
//!   under their claims ([`PostgresStore::complete_steps`], one `NOTIFY plan_step_done`
//!   naming them all) and read ([`PostgresStore::step_results`]).
//! - A process that runs its own runs on the shared store (`plan run`) drives them
//!   through a [`Driver`] (built on [`PostgresStore::driving`]): each run it creates is
//!   leased to it in the same transaction, the leases are renewed while it lives
//!   ([`PostgresStore::keep_leases`]) and given up when it is dropped, a lost lease or a
//!   cancellation asked through the store cancels its runs, and a worker continues the
//!   run if the process dies. [`PostgresStore::request_cancel`] reaches whoever holds
//!   a run; [`PostgresStore::events_listener`] wakes any number of followers through one
//!   connection.
//! - A database outage of up to a bound (60 s by default,
//!   [`PostgresStore::with_outage_bound`]) is ridden out: every call is retried with
//!   backoff and jitter (each write is idempotent: keyed, fenced by a lease, or checked
//!   on a retry), a lease that expired meanwhile is taken back unless another process
//!   claimed the run, and `LISTEN` connections are opened again (their waiters read the
//!   store to catch up). Past the bound a call fails with [`Unreachable`] as its error's
//!   source.
//! - Each run has a usage ledger ([`PostgresStore::budget_ledger`], a [`RunLedger`]):
//!   every process working on the run charges its model calls to it in one atomic
//!   statement, and the budget meters of their agents check the run's total there, so a
//!   run's token and dollar budgets hold across the fleet.
//!
//! ```no_run
//! use std::sync::Arc;
//! use plan_core::{Plan, Step};
//! use plan_exec::executor::executor_fn;
//! use plan_exec::runner::Runner;
//! use plan_exec::store::RunStore;
//! use plan_exec::session::SessionBuilder;
//! use plan_exec::context::StepContext;
//! use plan_postgres::PostgresStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PostgresStore::connect("postgres://plan@db.internal:5432/plan").await?;
//! let executor = executor_fn(|ctx: StepContext| async move {
//!     Ok(format!("did {}", ctx.step().id))
//! });
//! let runner = Runner::parallel(executor)
//!     .with_sessions(SessionBuilder::new().store(Arc::new(store.clone())));
//! let plan = Plan::new("Say hello", vec![Step::new("greet", "Say hello")]);
//! let report = runner.run(plan).await?;
//! let stored = store.load_run(&report.run_id).await?.expect("the run was journaled");
//! assert_eq!(stored.outputs.len(), 1);
//! # Ok(()) }
//! ```
//!
//! # Features
//! - `test-support`: [`testing::TempCluster`], a throwaway PostgreSQL cluster (`initdb`
//!   and `pg_ctl` in a temporary directory, as the `postgres` user when run as root) for
//!   this crate's tests and other crates'.
#![deny(missing_docs)]

mod address;
mod cached;
mod driver;
mod driving;
mod error;
mod fleet;
mod follow;
mod ledger;
mod outage;
mod schema;
mod store;
#[cfg(feature = "test-support")]
pub mod testing;
mod tls;

pub use address::{PgAddress, TlsMode, is_postgres_url, redact};
pub use driver::{ClaimError, Driver, StoreStop};
pub use driving::{LeaseKeeper, Renewal};
pub use fleet::{
    Claim, Lease, LeaseHolder, STEP_DONE_CHANNEL, STEPS_CHANNEL, StepClaim, StepListener, StepTask,
    StepWatch, StepsListener, TaskClaimed, WORK_CHANNEL, WorkListener,
};
pub use follow::EventsListener;
pub use ledger::RunLedger;
pub use outage::{DEFAULT_OUTAGE_BOUND, Unreachable};
pub use schema::SCHEMA_VERSION;
pub use store::{EVENTS_CHANNEL, PostgresStore};
