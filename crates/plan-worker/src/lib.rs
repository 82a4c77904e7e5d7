//! The fleet worker of plan: any number of [`Worker`]s, on any machines, share the runs
//! of one PostgreSQL store ([`plan_postgres::PostgresStore`]).
//!
//! Two kinds of work are claimed, each under a lease the worker renews while it works:
//! - a run (queued by `plan submit`, or left by a worker whose lease expired): the worker
//!   drives it to its end with the run's own strategy, model and settings (planning,
//!   replanning, synthesis), queueing each step attempt as a task ([`FleetExecutor`]);
//! - a step task, of any run: the worker runs it with its own executor (model, tools,
//!   sandbox) and records the result. Tasks are claimed from the run with the fewest in
//!   hand first, so one huge run does not starve the others, and the run's concurrency
//!   holds across the fleet because only its driver queues its steps. A thread of the
//!   worker's own claims them as soon as they are announced (`NOTIFY plan_steps`), as
//!   many as it has room for in one statement; the results of steps that finish
//!   together are recorded, and the leases of all its steps renewed, in one statement.
//!   The driving worker runs the steps it has room for itself, claimed in the statement
//!   that queues them (no announcement, no claim, no read of the result); the others are
//!   the fleet's. Either way a step runs under its task's lease and its result is
//!   recorded under it, so a takeover finds every finished step.
//!
//! Everything a driven run writes goes through a store
//! [fenced](plan_postgres::PostgresStore::fenced) by the run's lease, and a step's result
//! is recorded only under the step task's lease: a worker that was paused or cut off past
//! its lease finds its writes refused and stops, and the worker that took the work over
//! continues it (a run from its journal), so a step that had finished is never run again
//! and no output is committed twice.
//!
//! A run's trace continues across the fleet: each driver's run span continues the trace
//! context kept with the run, and a step task carries its step span's context to the
//! worker that runs it (an `execute_step` span there). A cancellation asked through the
//! store ([`PostgresStore::request_cancel`](plan_postgres::PostgresStore::request_cancel))
//! reaches the run's driver when it next renews its lease.
//!
//! A run's budget (tokens, dollars) holds for the run as a whole: every agent a worker
//! builds for a run, the one driving it and those running its steps, meters its model
//! calls against the run's usage ledger in the store
//! ([`PostgresStore::budget_ledger`](plan_postgres::PostgresStore::budget_ledger)), so
//! steps running at once on several workers cannot spend the budget more than once.
//!
//! The worker knows nothing about models or keys: it reads each run's [`RunSpec`] from
//! its record, and the caller's [`AgentFactory`] (a
//! [`Runtime`](plan_strategies::Runtime) with this machine's providers and keys) turns it
//! into an agent, or says why it cannot, and the worker then leaves that run to others,
//! saying so once. A run whose spec needs what only the process that started it has
//! (documents, tools, agent profiles) is left to that process.
//!
//! ```no_run
//! use std::sync::Arc;
//! use plan_exec::context::CancelToken;
//! use plan_llm::{ProviderConfig, ProviderRegistry};
//! use plan_strategies::Runtime;
//! use plan_worker::{Worker, WorkerConfig};
//!
//! # async fn demo(store: plan_postgres::PostgresStore) -> Result<(), plan_exec::error::StoreError> {
//! let runtime = Runtime::new(ProviderRegistry::builtin(), ProviderConfig::from_env());
//! let worker = Worker::new(
//!     store,
//!     WorkerConfig::new("worker-1").with_concurrency(2),
//!     Arc::new(runtime),
//! );
//! worker.run(CancelToken::new()).await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod batch;
mod claimer;
mod steps;

pub use steps::FleetExecutor;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use plan_core::RunStatus;
use plan_exec::context::CancelToken;
use plan_exec::error::StoreError;
use plan_exec::executor::StepExecutor;
use plan_exec::store::{RunStore, StoredRun};
use plan_postgres::{Claim, Lease, PostgresStore, StepListener};
use plan_strategies::{AgentBuilder, AgentFactory, Approval, RunSpec};
use tokio::task::JoinSet;

/// Step executors kept for the runs whose steps this worker ran lately.
const EXECUTOR_CACHE: usize = 256;

/// How a worker works.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// Its name, in leases, logs and `plan show`.
    pub name: String,
    /// Runs it holds at once at most (default 4).
    pub concurrency: usize,
    /// How long a lease lasts without renewal (default 5 s); it is renewed every third
    /// of that. A worker that dies loses its runs to others after this long.
    pub lease: Duration,
    /// How long it waits for a notification before looking for work anyway (default 1 s).
    pub poll: Duration,
    /// On shutdown, how long runs in hand may take to finish before their leases are
    /// given up for others to continue (default 10 s).
    pub grace: Duration,
}

impl WorkerConfig {
    /// The defaults, with this name.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            concurrency: 4,
            lease: Duration::from_secs(5),
            poll: Duration::from_secs(1),
            grace: Duration::from_secs(10),
        }
    }

    /// Sets the most runs held at once (at least 1).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Sets the lease length (at least 300 ms).
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(300));
        self
    }

    /// Sets the shutdown grace period.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }
}

/// A fleet worker over a shared store.
pub struct Worker {
    store: PostgresStore,
    config: WorkerConfig,
    factory: Arc<dyn AgentFactory>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker claiming runs from `store`, building their agents with `factory`.
    pub fn new(store: PostgresStore, config: WorkerConfig, factory: Arc<dyn AgentFactory>) -> Self {
        Self {
            store,
            config,
            factory,
        }
    }

    /// Claims and runs work until `stop` is cancelled; then it claims nothing more, lets
    /// the runs in hand finish within the grace period, gives up the leases of those that
    /// did not (another worker continues them), and returns.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be listened to at start.
    pub async fn run(&self, stop: CancelToken) -> Result<(), StoreError> {
        let listener = self.store.work_listener().await?;
        let results = Arc::new(self.store.step_listener().await?);
        let work = steps::StepWork::new(self.store.clone(), self.config.lease);
        let name = &self.config.name;
        let mut claimer = claimer::Claimer::start(
            &self.store,
            name,
            self.config.concurrency,
            self.config.lease,
            self.config.poll,
        )?;
        tracing::info!(worker = %name, concurrency = self.config.concurrency, "worker started");
        let mut held: JoinSet<()> = JoinSet::new();
        let mut leases: Vec<(tokio::task::Id, Lease)> = Vec::new();
        let mut tasks: JoinSet<()> = JoinSet::new();
        let agents = Agents {
            store: self.store.clone(),
            factory: self.factory.clone(),
        };
        let mut executors: HashMap<plan_core::RunId, Arc<ExecutorCell>> = HashMap::new();
        // Runs whose executor cannot be made here, as the step tasks find them.
        let (refused_tx, mut refused_rx) =
            tokio::sync::mpsc::unbounded_channel::<(plan_core::RunId, String)>();
        let mut cannot: Vec<plan_core::RunId> = Vec::new();
        let mut told: HashSet<String> = HashSet::new();
        // Claims are not retried through an outage (the loop looks again after `poll`,
        // and a stop must not wait for the database); the work in hand rides it out.
        let claims = self.store.clone().with_outage_bound(Duration::ZERO);
        let mut unreachable = false;
        // Runs are looked for when one was announced, a slot for runs freed, or `poll`
        // passed; step tasks are claimed by the claimer's thread.
        let mut look_runs = true;
        while !stop.is_cancelled() {
            while look_runs && held.len() < self.config.concurrency && !stop.is_cancelled() {
                let claim = match claims.claim(name, self.config.lease, &cannot).await {
                    Ok(claim) => {
                        back_again(name, &mut unreachable);
                        match claim {
                            Some(claim) => claim,
                            None => {
                                look_runs = false;
                                break;
                            }
                        }
                    }
                    Err(e) => {
                        cannot_claim(name, &e, &mut unreachable);
                        break;
                    }
                };
                let run = claim.lease.run.clone();
                match agents.agent_for(&claim).await {
                    Ok((builder, approval)) => {
                        tracing::info!(worker = %name, run = %run, status = %claim.status, "claimed a run");
                        let lease = claim.lease.clone();
                        // The driver runs the steps it has room for here, with the
                        // executor the run's tasks claimed here use.
                        let local = steps::Local::new(
                            &self.store,
                            name,
                            self.config.lease,
                            claimer.slots(),
                            executors.entry(run.clone()).or_default().clone(),
                            agents.clone(),
                            work.clone(),
                        );
                        let handle = held.spawn(drive(
                            self.store.clone(),
                            claim,
                            builder,
                            approval,
                            self.config.lease,
                            (results.clone(), local),
                        ));
                        leases.push((handle.id(), lease));
                    }
                    Err(why) => {
                        if told.insert(why.clone()) {
                            tracing::warn!(worker = %name, run = %run, "leaving runs to other workers: {why}");
                        }
                        claimer.skip(run.clone());
                        cannot.push(run);
                        let _ = self.store.release(&claim.lease).await;
                    }
                }
            }
            tokio::select! {
                () = listener.wait(self.config.poll) => look_runs = true,
                Some(claimed) = claimer.next() => {
                    for claim in claimed {
                        let run = claim.task.run.clone();
                        if executors.len() >= EXECUTOR_CACHE && !executors.contains_key(&run) {
                            executors.clear();
                        }
                        // The run's executor is made once, by its first task, off this
                        // loop.
                        let executor = executors.entry(run.clone()).or_default().clone();
                        let (agents, refused, work) =
                            (agents.clone(), refused_tx.clone(), work.clone());
                        let slot = claimer.slot();
                        tracing::debug!(worker = %name, run = %claim.task.run, step = %claim.task.step, "claimed a step");
                        tasks.spawn(async move {
                            match executor.get_or_init(|| agents.executor_for(run.clone())).await {
                                Ok(executor) => {
                                    steps::run_task(claim, executor.clone(), work, slot).await;
                                }
                                // Its lease runs out, and another worker claims it.
                                Err(why) => {
                                    let _ = refused.send((run, why.clone()));
                                }
                            }
                        });
                    }
                }
                Some(done) = held.join_next_with_id(), if !held.is_empty() => {
                    leases.retain(|(task, _)| *task != task_id(&done));
                    look_runs = true;
                }
                Some((run, why)) = refused_rx.recv() => {
                    if told.insert(why.clone()) {
                        tracing::warn!(worker = %name, run = %run, "leaving runs to other workers: {why}");
                    }
                    executors.remove(&run);
                    claimer.skip(run.clone());
                    if !cannot.contains(&run) {
                        cannot.push(run);
                    }
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                () = stop.cancelled() => {}
            }
        }
        drop(claimer);
        tracing::info!(worker = %name, runs = held.len(), steps = tasks.len(), "stopping: no more claims; finishing the work in hand");
        let deadline = tokio::time::Instant::now() + self.config.grace;
        // Steps in hand may finish within the grace period; those that do not are
        // dropped, and their leases run out for another worker to redo them.
        while !tasks.is_empty() {
            match tokio::time::timeout_at(deadline, tasks.join_next()).await {
                Ok(_) => {}
                Err(_) => {
                    tracing::info!(worker = %name, steps = tasks.len(), "left unfinished steps to other workers");
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                }
            }
        }
        while !held.is_empty() {
            match tokio::time::timeout_at(deadline, held.join_next_with_id()).await {
                Ok(Some(done)) => {
                    leases.retain(|(task, _)| *task != task_id(&done));
                }
                Ok(None) => break,
                Err(_) => {
                    held.abort_all();
                    while held.join_next().await.is_some() {}
                    for (_, lease) in &leases {
                        tracing::info!(worker = %name, run = %lease.run, "gave up the lease of an unfinished run");
                        let _ = self.store.release(lease).await;
                    }
                    break;
                }
            }
        }
        tracing::info!(worker = %name, "worker stopped");
        Ok(())
    }
}

/// A run's step executor on this worker, made once by the first of its tasks here, or
/// why this worker cannot run its steps.
type ExecutorCell = tokio::sync::OnceCell<Result<Arc<dyn StepExecutor>, String>>;

/// What a worker makes agents and executors from.
#[derive(Clone)]
struct Agents {
    store: PostgresStore,
    factory: Arc<dyn AgentFactory>,
}

impl Agents {
    /// The step executor for a run's steps on this worker, from the run's record.
    async fn executor_for(&self, run: plan_core::RunId) -> Result<Arc<dyn StepExecutor>, String> {
        let run = &run;
        let stored = self
            .store
            .load_run(run)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("run `{run}` is gone from the store"))?;
        let agent = self
            .builder_for(&stored)
            .await?
            .build()
            .map_err(|e| e.to_string())?;
        Ok(agent.step_executor())
    }

    /// The agent builder for a claimed run, from its record, the approval it asks for
    /// (the `approve` option `plan submit --approve` records: `plan` or `replans`), and
    /// whether it has a plan already.
    async fn agent_for(&self, claim: &Claim) -> Result<(AgentBuilder, (Approval, bool)), String> {
        let stored = self
            .store
            .load_run(&claim.lease.run)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("run `{}` is gone from the store", claim.lease.run))?;
        let approve = RunSpec::from_record(&stored.record)
            .ok()
            .map(|spec| spec.approve)
            .unwrap_or_default();
        let planned = !stored.plans.is_empty();
        Ok((self.builder_for(&stored).await?, (approve, planned)))
    }

    /// The agent builder of a stored run's spec, or why this worker cannot run it. Its
    /// budget, if it has one, is metered against the run's usage ledger in the store,
    /// which every worker working on the run charges (the driver's calls and every step
    /// task's), opened here and so raised to what the run's journal shows it used.
    async fn builder_for(&self, stored: &StoredRun) -> Result<AgentBuilder, String> {
        let record = &stored.record;
        let spec = RunSpec::from_record(record).map_err(|e| e.to_string())?;
        if let Some(needs) = spec.needs.local_only() {
            return Err(format!(
                "run {id} was started by `plan run` with {needs}, which a worker does not have: continue it where it started, with `plan resume {id}` and the same flags",
                id = record.id
            ));
        }
        let used = plan_exec::report::usage_of(&stored.events);
        // A run without a budget charges no ledger (a statement per model call): a budget
        // given later (`plan resume`) opens the ledger raised to the journal's usage.
        if spec.budget.tokens.is_none() && spec.budget.usd.is_none() {
            return self
                .factory
                .continuing(&spec, used)
                .map_err(|e| e.to_string());
        }
        let ledger = self
            .store
            .budget_ledger(&record.id)
            .await
            .map_err(|e| e.to_string())?;
        self.factory
            .continuing_with_ledger(&spec, used, Arc::new(ledger))
            .map_err(|e| e.to_string())
    }
}

/// Says that claiming failed: once per outage at `warn` (then at `debug` until a claim
/// goes through again).
pub(crate) fn cannot_claim(name: &str, e: &StoreError, unreachable: &mut bool) {
    if std::mem::replace(unreachable, true) {
        tracing::debug!(worker = %name, error = %e, "cannot claim work");
    } else {
        tracing::warn!(worker = %name, error = %e, "cannot claim work; trying again while the work in hand rides the outage out");
    }
}

/// Says that claims go through again after they failed.
pub(crate) fn back_again(name: &str, unreachable: &mut bool) {
    if std::mem::take(unreachable) {
        tracing::info!(worker = %name, "the store answers again: claiming work");
    }
}

/// The task a joined driver was, finished or not.
fn task_id(done: &Result<(tokio::task::Id, ()), tokio::task::JoinError>) -> tokio::task::Id {
    match done {
        Ok((id, ())) => *id,
        Err(e) => e.id(),
    }
}

/// Runs a claimed run to its end through a store fenced by its lease, renewing the lease
/// meanwhile; a lost lease cancels the run here (the new holder continues it). The steps
/// this worker has room for run here ([`steps::Local`]); the others are the fleet's.
async fn drive(
    store: PostgresStore,
    claim: Claim,
    builder: AgentBuilder,
    (approve, planned): (Approval, bool),
    ttl: Duration,
    (results, local): (Arc<StepListener>, steps::Local),
) {
    let lease = claim.lease;
    let run = lease.run.clone();
    let cancel = CancelToken::new();
    // One fenced store for the run's writes and the lease's renewal: a write that finds
    // the lease expired (the database was unreachable) takes it back for as long.
    let fenced = store.fenced(lease.clone());
    let agent = match builder
        .executor(FleetExecutor::new(store.clone(), results).with_local(local))
        .store(Arc::new(fenced.clone()))
        .cancel_token(cancel.clone())
        .build()
    {
        Ok(agent) => agent,
        Err(e) => {
            tracing::warn!(worker = %lease.worker, run = %run, error = %e, "cannot run the run");
            let _ = store.release(&lease).await;
            return;
        }
    };
    // The lease is renewed while the run is driven; a lost lease, or a cancellation
    // asked for (`request_cancel`), cancels the run here.
    let keeper = fenced.keep_leases(ttl, cancel.clone());
    if claim.cancel_requested {
        tracing::info!(worker = %lease.worker, run = %run, "cancellation asked for: ending the run as cancelled");
        cancel.cancel();
    }
    // A run submitted with --approve is planned, then waits for someone to approve it
    // (unless it was planned and approved before, and queued again).
    let result = if approve == Approval::Plan && claim.status == RunStatus::Queued && !planned {
        agent.plan_stored_for_approval(&run).await
    } else {
        agent.resume(&run).await
    };
    drop(keeper);
    drop(fenced);
    match result {
        Ok(report) if report.status == RunStatus::AwaitingApproval => {
            // Whoever approves it runs it (`plan approve`); no worker takes it meanwhile.
            tracing::info!(worker = %lease.worker, run = %run, "the run waits for approval");
            let _ = store.forget(&lease).await;
            return;
        }
        Ok(report) => {
            tracing::info!(worker = %lease.worker, run = %run, status = %report.status, "run ended");
        }
        Err(e) => {
            tracing::warn!(worker = %lease.worker, run = %run, error = %e, "run stopped");
        }
    }
    let _ = store.release(&lease).await;
}
