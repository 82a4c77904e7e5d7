//! [`Runs`]: the operations on stored runs that need no model — read a run's report,
//! reject a run that awaits approval, wait for a run to end, cancel a run, and check
//! that a run can be continued — in one place for every door (the CLI, the HTTP server,
//! the MCP server).
//!
//! Continuing a run (resume, approve) needs a model, so it is the [`Agent`]'s
//! ([`Agent::resume`], [`Agent::approve`]); [`Runs::check_continuable`] says beforehand
//! whether it can, with an error that names the run, its status and what to do.
//!
//! [`Agent`]: crate::Agent
//! [`Agent::resume`]: crate::Agent::resume
//! [`Agent::approve`]: crate::Agent::approve

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use plan_core::{RunId, RunStatus, StepStatus};
use plan_exec::context::CancelToken;
use plan_exec::error::{ExecError, StoreError};
use plan_exec::events::EventSink;
use plan_exec::report::RunReport;
use plan_exec::session::SessionBuilder;
use plan_exec::store::{RunStore, StoredRun};

use crate::error::StrategyError;
use crate::spec::{RunSpec, SpecError};

/// The failure recorded when a run is rejected without a reason.
pub const DEFAULT_REJECTION: &str = "the plan was rejected: nothing was run";

/// How often a waiter reads the store while nothing new is journaled.
const POLL: Duration = Duration::from_millis(100);

/// How often a waiter for [`WaitFor::EndOrApproval`] reads the run's status again: a run
/// that stops for approval journals no event for it.
const STATUS_CHECK: Duration = Duration::from_millis(250);

/// Why an operation of [`Runs`] could not be carried out. Each message names the run and
/// says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunsError {
    /// No run with this id in the store.
    #[error("no run `{0}` in the run store: list the runs to find its id")]
    NotFound(RunId),
    /// The run does not await approval, so it cannot be approved or rejected.
    #[error(
        "run `{run}` is {status}, not awaiting approval: only a run that stopped for approval can be approved or rejected"
    )]
    NotAwaitingApproval {
        /// The run.
        run: RunId,
        /// Its status.
        status: RunStatus,
    },
    /// The run awaits approval of its plan: it continues when approved, not by resuming.
    #[error("run `{0}` awaits approval of its plan: approve it to run it, or reject it")]
    AwaitsApproval(RunId),
    /// The run succeeded: there is nothing to resume.
    #[error("run `{0}` already succeeded; nothing to resume")]
    AlreadySucceeded(RunId),
    /// The run is running in this process.
    #[error("run `{0}` is running in this process: wait for it to end, or cancel it first")]
    Running(RunId),
    /// The run's stored settings cannot be read, so it cannot be continued.
    #[error("cannot continue run `{run}`: {source}")]
    Spec {
        /// The run.
        run: RunId,
        /// What is wrong with its stored spec.
        #[source]
        source: SpecError,
    },
    /// The wait ended before the run did.
    #[error(
        "run `{run}` is still {status} after {} s: wait again, or look at it later",
        waited.as_secs()
    )]
    StillWaiting {
        /// The run.
        run: RunId,
        /// Its status when the wait ended.
        status: RunStatus,
        /// How long it was waited for.
        waited: Duration,
    },
    /// Nothing can cancel the run: it is neither queued nor running.
    #[error("run `{run}` is {status}: only a queued or running run can be cancelled")]
    NotCancellable {
        /// The run.
        run: RunId,
        /// Its status.
        status: RunStatus,
    },
    /// The run is not running in this process, and there is no shared store through
    /// which to ask whoever runs it.
    #[error("run `{run}` is {status} and not running in this process: cancel it where it runs")]
    NotRunningHere {
        /// The run.
        run: RunId,
        /// Its status.
        status: RunStatus,
    },
    /// The run store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RunsError {
    /// The run the error is about, when it is about one.
    pub fn run(&self) -> Option<&RunId> {
        match self {
            RunsError::NotFound(run)
            | RunsError::AwaitsApproval(run)
            | RunsError::AlreadySucceeded(run)
            | RunsError::Running(run)
            | RunsError::NotAwaitingApproval { run, .. }
            | RunsError::Spec { run, .. }
            | RunsError::StillWaiting { run, .. }
            | RunsError::NotCancellable { run, .. }
            | RunsError::NotRunningHere { run, .. } => Some(run),
            RunsError::Store(_) => None,
        }
    }

    /// The error as the [`Agent`](crate::Agent)'s methods report it.
    pub(crate) fn into_strategy_error(self) -> StrategyError {
        let exec = match self {
            RunsError::NotFound(run) => ExecError::UnknownRun(run),
            RunsError::NotAwaitingApproval { run, status } => {
                ExecError::NotAwaitingApproval { run, status }
            }
            RunsError::AwaitsApproval(run) => ExecError::AwaitsApproval(run),
            RunsError::Store(e) => ExecError::Store(e),
            other => return StrategyError::Config(other.to_string()),
        };
        StrategyError::Exec(exec)
    }
}

/// What [`Runs::wait`] waits for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitFor {
    /// The run's end: succeeded, failed, cancelled or rejected (a run awaiting approval
    /// has not ended).
    #[default]
    End,
    /// The run's end, or its stop to await approval.
    EndOrApproval,
}

impl WaitFor {
    fn reached(self, status: RunStatus) -> bool {
        status.is_terminal()
            || (self == WaitFor::EndOrApproval && status == RunStatus::AwaitingApproval)
    }
}

/// How a stored run is to be continued ([`Runs::check_continuable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Continuation {
    /// Resumed after a crash, a cancellation or a failure ([`Agent::resume`](crate::Agent::resume)).
    Resume,
    /// Approved, with its plan or an edited one ([`Agent::approve`](crate::Agent::approve)).
    Approve,
}

/// A stored run that can be continued, and the spec it continues with.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Continuable {
    /// The run as stored.
    pub stored: StoredRun,
    /// The settings it was started with (the agent that continues it is built from
    /// them, through [`AgentFactory::continuing`](crate::AgentFactory::continuing)).
    pub spec: RunSpec,
}

impl Continuable {
    /// What the run has used so far, wherever it ran (its budget's spent part).
    pub fn used(&self) -> plan_llm::UsageTotals {
        plan_exec::report::usage_of(&self.stored.events)
    }
}

/// How a cancellation was delivered ([`Runs::cancel`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cancelling {
    /// The run runs in this process and was told to stop.
    Here,
    /// The request is recorded in the shared store; whoever holds the run stops it.
    Requested,
}

/// Asking for a run to be cancelled through a shared store, so that whichever process
/// holds the run stops it (a fleet on PostgreSQL records the request in the run's row,
/// and the holder's lease keeper sees it).
#[async_trait]
pub trait CancelRequests: Send + Sync {
    /// Asks whoever holds `run` to cancel it; `false` when it is neither queued nor
    /// running.
    ///
    /// # Errors
    /// When the store failed.
    async fn request_cancel(&self, run: &RunId) -> Result<bool, StoreError>;
}

/// The model-free operations on the runs of one store, shared by every door.
///
/// Cheap to clone: clones share the runs registered as running in this process
/// ([`track`](Self::track)), which [`cancel`](Self::cancel) stops and
/// [`check_continuable`](Self::check_continuable) refuses to continue twice.
///
/// ```no_run
/// # async fn f(store: std::sync::Arc<dyn plan_exec::store::RunStore>) -> Result<(), plan_strategies::RunsError> {
/// use std::time::Duration;
/// use plan_core::RunId;
/// use plan_strategies::{Runs, WaitFor};
///
/// let runs = Runs::new(store);
/// let id = RunId::new("20250101-120000-abcd");
/// let stored = runs.wait(&id, WaitFor::End, Some(Duration::from_secs(60))).await?;
/// println!("{}", stored.status);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Runs {
    store: Arc<dyn RunStore>,
    sink: Option<Arc<dyn EventSink>>,
    remote: Option<Arc<dyn CancelRequests>>,
    live: Arc<Live>,
}

impl std::fmt::Debug for Runs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runs")
            .field("remote_cancel", &self.remote.is_some())
            .finish_non_exhaustive()
    }
}

/// How long an operation waits for a run that ended in the store to be unregistered
/// here (its task is letting go: the status is stored before the run's task returns).
const TEARDOWN: Duration = Duration::from_secs(2);

/// The runs running in this process, each with its cancel token and the ticket of the
/// [`Tracked`] guard that registered it.
#[derive(Default)]
struct Live {
    runs: Mutex<HashMap<RunId, (u64, CancelToken)>>,
    next: std::sync::atomic::AtomicU64,
    /// Woken whenever a run is unregistered.
    released: tokio::sync::Notify,
}

impl Live {
    fn get(&self, run: &RunId) -> Option<CancelToken> {
        let runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        runs.get(run).map(|(_, token)| token.clone())
    }
}

/// A run registered as running in this process ([`Runs::track`]); dropping it
/// unregisters the run.
#[must_use = "the run is unregistered when this is dropped"]
pub struct Tracked {
    live: Arc<Live>,
    run: RunId,
    ticket: u64,
}

impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked").field("run", &self.run).finish()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut runs = self
            .live
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if runs.get(&self.run).is_some_and(|(t, _)| *t == self.ticket) {
            runs.remove(&self.run);
        }
        drop(runs);
        self.live.released.notify_waiters();
    }
}

impl Runs {
    /// The operations on the runs of `store`.
    pub fn new(store: Arc<dyn RunStore>) -> Self {
        Self {
            store,
            sink: None,
            remote: None,
            live: Arc::default(),
        }
    }

    /// Sends the events of the runs it ends ([`reject`](Self::reject)) to `sink` too.
    #[must_use]
    pub fn event_sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Cancels runs this process does not run by asking through the shared store.
    #[must_use]
    pub fn cancel_requests(mut self, remote: Arc<dyn CancelRequests>) -> Self {
        self.remote = Some(remote);
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn RunStore> {
        &self.store
    }

    /// The stored run.
    ///
    /// # Errors
    /// [`RunsError::NotFound`]; [`RunsError::Store`].
    pub async fn load(&self, run: &RunId) -> Result<StoredRun, RunsError> {
        self.store
            .load_run(run)
            .await?
            .ok_or_else(|| RunsError::NotFound(run.clone()))
    }

    /// The run's report (the object `plan run --json` prints), with the worker running
    /// each running step when the store knows it (a fleet's).
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub async fn report(&self, run: &RunId) -> Result<RunReport, RunsError> {
        let stored = self.load(run).await?;
        Ok(self.report_of(&stored).await)
    }

    /// The report of a run loaded already, as [`report`](Self::report) makes it (the
    /// workers of running steps are left out when the store cannot say them).
    pub async fn report_of(&self, stored: &StoredRun) -> RunReport {
        let mut report = RunReport::from_stored(stored);
        if let Ok(holders) = self.store.step_holders(&stored.record.id).await {
            for step in &mut report.steps {
                if step.status == StepStatus::Running {
                    step.worker = holders.get(&step.id).cloned();
                }
            }
        }
        report
    }

    /// Ends a run that awaits approval as `rejected`, with `reason` (or
    /// [`DEFAULT_REJECTION`]) as its failure; nothing runs. Of two callers answering the
    /// same approval, only one succeeds.
    ///
    /// # Errors
    /// [`RunsError::NotFound`]; [`RunsError::NotAwaitingApproval`] when the run is in
    /// another status (answered already); [`RunsError::Store`].
    pub async fn reject(
        &self,
        run: &RunId,
        reason: Option<String>,
    ) -> Result<RunReport, RunsError> {
        let (session, _) = self
            .sessions()
            .reopen_awaiting(run)
            .await
            .map_err(|e| exec_error(run, e))?;
        let reason = reason
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_REJECTION.to_owned());
        session
            .finish(RunStatus::Rejected, None, Some(reason))
            .await
            .map_err(|e| exec_error(run, e))
    }

    /// Waits until the run reaches what `until` names, at most `timeout` (none: as long
    /// as it takes), and returns it as stored then. A run that is resumed or approved
    /// after it stopped is followed on to its new end.
    ///
    /// # Errors
    /// [`RunsError::StillWaiting`] after `timeout`, with the run's status then;
    /// [`RunsError::NotFound`]; [`RunsError::Store`].
    pub async fn wait(
        &self,
        run: &RunId,
        until: WaitFor,
        timeout: Option<Duration>,
    ) -> Result<StoredRun, RunsError> {
        let Some(timeout) = timeout else {
            return self.wait_until(run, until).await;
        };
        match tokio::time::timeout(timeout, self.wait_until(run, until)).await {
            Ok(result) => result,
            Err(_) => Err(RunsError::StillWaiting {
                run: run.clone(),
                status: self.load(run).await?.status,
                waited: timeout,
            }),
        }
    }

    async fn wait_until(&self, run: &RunId, until: WaitFor) -> Result<StoredRun, RunsError> {
        let mut seq = 0;
        loop {
            let stored = self.load(run).await?;
            if until.reached(stored.status) {
                return Ok(stored);
            }
            seq = self.follow_to_finish(run, seq, until).await?;
        }
    }

    /// Follows the run's journal after `seq` to its next `run_finished` (the run's status
    /// is stored before it), or, waiting for an approval too, for a while; returns the
    /// position reached.
    async fn follow_to_finish(
        &self,
        run: &RunId,
        mut seq: u64,
        until: WaitFor,
    ) -> Result<u64, RunsError> {
        let mut events = std::pin::pin!(plan_exec::store::follow(
            self.store.as_ref(),
            run,
            seq,
            POLL
        ));
        let recheck = async {
            match until {
                WaitFor::EndOrApproval => tokio::time::sleep(STATUS_CHECK).await,
                WaitFor::End => std::future::pending().await,
            }
        };
        let mut recheck = std::pin::pin!(recheck);
        loop {
            tokio::select! {
                entry = events.next() => match entry {
                    Some(entry) => seq = entry?.seq,
                    None => return Ok(seq),
                },
                () = &mut recheck => return Ok(seq),
            }
        }
    }

    /// Registers `run` as running in this process under `cancel`, until the returned
    /// guard is dropped: [`cancel`](Self::cancel) then cancels the token, and
    /// [`check_continuable`](Self::check_continuable) refuses to continue the run again.
    ///
    /// # Errors
    /// [`RunsError::Running`] when the run is registered already (of two callers
    /// continuing the same run, only one may).
    pub fn track(&self, run: &RunId, cancel: CancelToken) -> Result<Tracked, RunsError> {
        let mut runs = self
            .live
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if runs.contains_key(run) {
            return Err(RunsError::Running(run.clone()));
        }
        let ticket = self
            .live
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        runs.insert(run.clone(), (ticket, cancel));
        Ok(Tracked {
            live: self.live.clone(),
            run: run.clone(),
            ticket,
        })
    }

    /// Cancels every run registered as running in this process (a server shutting
    /// down), and waits up to `within` for each to stop and unregister: each is saved
    /// as `cancelled` by its own task, and can be resumed. Returns how many were still
    /// registered at the deadline.
    pub async fn cancel_all_here(&self, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        let registered = || {
            self.live
                .runs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len()
        };
        {
            let runs = self
                .live
                .runs
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for (_, token) in runs.values() {
                token.cancel();
            }
        }
        loop {
            let released = self.live.released.notified();
            let mut released = std::pin::pin!(released);
            released.as_mut().enable();
            let left = registered();
            if left == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return registered();
            }
        }
    }

    /// Whether `run` is registered as running in this process.
    pub fn is_running_here(&self, run: &RunId) -> bool {
        self.live.get(run).is_some()
    }

    /// Whether `run`, with `status` in the store, still runs in this process. A run that
    /// ended in the store (`status` terminal) but is still registered is letting go: it
    /// is given a moment to unregister.
    async fn still_running_here(&self, run: &RunId, status: RunStatus) -> bool {
        if !status.is_terminal() {
            return self.is_running_here(run);
        }
        let deadline = tokio::time::Instant::now() + TEARDOWN;
        loop {
            let released = self.live.released.notified();
            let mut released = std::pin::pin!(released);
            released.as_mut().enable();
            if !self.is_running_here(run) {
                return false;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return self.is_running_here(run);
            }
        }
    }

    /// Cancels a run: one running in this process ([`track`](Self::track)) is told to
    /// stop at once; any other is asked to stop through the shared store, when there is
    /// one ([`cancel_requests`](Self::cancel_requests)). A cancelled run is recorded as
    /// `cancelled` by whoever runs it, and can be resumed.
    ///
    /// # Errors
    /// [`RunsError::NotFound`]; [`RunsError::NotCancellable`] when the shared store says
    /// the run is neither queued nor running; [`RunsError::NotRunningHere`] without a
    /// shared store; [`RunsError::Store`].
    pub async fn cancel(&self, run: &RunId) -> Result<Cancelling, RunsError> {
        let status = self.load(run).await?.status;
        if self.still_running_here(run, status).await
            && let Some(token) = self.live.get(run)
        {
            token.cancel();
            return Ok(Cancelling::Here);
        }
        match &self.remote {
            Some(remote) if remote.request_cancel(run).await? => Ok(Cancelling::Requested),
            Some(_) => Err(RunsError::NotCancellable {
                run: run.clone(),
                status,
            }),
            None => Err(RunsError::NotRunningHere {
                run: run.clone(),
                status,
            }),
        }
    }

    /// Whether the run can be continued as `how` says, and the spec it continues with:
    /// it exists, is not running in this process, its status allows it (a resume needs
    /// a run that stopped without succeeding and does not await approval; an approval
    /// needs a run awaiting approval), and its stored spec loads.
    ///
    /// # Errors
    /// [`RunsError::NotFound`], [`RunsError::Running`], [`RunsError::AwaitsApproval`],
    /// [`RunsError::AlreadySucceeded`], [`RunsError::NotAwaitingApproval`],
    /// [`RunsError::Spec`], [`RunsError::Store`].
    pub async fn check_continuable(
        &self,
        run: &RunId,
        how: Continuation,
    ) -> Result<Continuable, RunsError> {
        let stored = self.load(run).await?;
        if self.still_running_here(run, stored.status).await {
            return Err(RunsError::Running(run.clone()));
        }
        let run = run.clone();
        match (how, stored.status) {
            (Continuation::Resume, RunStatus::AwaitingApproval) => {
                return Err(RunsError::AwaitsApproval(run));
            }
            (Continuation::Resume, RunStatus::Succeeded) => {
                return Err(RunsError::AlreadySucceeded(run));
            }
            (Continuation::Approve, status) if status != RunStatus::AwaitingApproval => {
                return Err(RunsError::NotAwaitingApproval { run, status });
            }
            _ => {}
        }
        let spec = RunSpec::from_record(&stored.record)
            .map_err(|source| RunsError::Spec { run, source })?;
        Ok(Continuable { stored, spec })
    }

    fn sessions(&self) -> SessionBuilder {
        let sessions = SessionBuilder::new().store(self.store.clone());
        match &self.sink {
            Some(sink) => sessions.event_sink(sink.clone()),
            None => sessions,
        }
    }
}

/// A session's error as the error of an operation on `run`.
fn exec_error(run: &RunId, e: ExecError) -> RunsError {
    match e {
        ExecError::UnknownRun(_) => RunsError::NotFound(run.clone()),
        ExecError::NotAwaitingApproval { run, status } => {
            RunsError::NotAwaitingApproval { run, status }
        }
        ExecError::AwaitsApproval(run) => RunsError::AwaitsApproval(run),
        ExecError::Store(e) => RunsError::Store(e),
        other => RunsError::Store(StoreError::with_source(
            format!("cannot update run `{run}`"),
            other,
        )),
    }
}
