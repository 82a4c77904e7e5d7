//! Errors: [`StepError`] (one step attempt), [`ExecError`] (a run) and [`StoreError`]
//! (the run store).

use std::time::Duration;

use plan_core::{PlanErrors, RunId};

/// How a step attempt failed; decides what the runner does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StepErrorKind {
    /// Trying again may succeed (a rate limit, a server error, a flaky tool).
    Retryable,
    /// Trying again will not help; the fallback (if any) runs at once.
    Fatal,
    /// The attempt took longer than the step's timeout (retried like `Retryable`).
    Timeout,
    /// The step was cancelled; it is neither retried nor failed, and resume runs it again.
    Cancelled,
}

impl StepErrorKind {
    /// `retryable`, `fatal`, `timeout` or `cancelled` (for traces' `error.type`).
    pub fn as_str(self) -> &'static str {
        match self {
            StepErrorKind::Retryable => "retryable",
            StepErrorKind::Fatal => "fatal",
            StepErrorKind::Timeout => "timeout",
            StepErrorKind::Cancelled => "cancelled",
        }
    }
}

/// Why a step attempt failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct StepError {
    /// What kind of failure.
    pub kind: StepErrorKind,
    /// What went wrong, for the report and the `step_failed` event.
    pub message: String,
    /// How long the failing service asked to be left alone (a 429's `Retry-After`): the
    /// runner waits at least this long, at most [`MAX_RETRY_AFTER`], before the next
    /// attempt.
    pub retry_after: Option<Duration>,
}

/// The longest server-requested wait the runner honours before a retry.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

impl StepError {
    /// A failure that may go away if the step is tried again.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            kind: StepErrorKind::Retryable,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A failure that retrying will not fix.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            kind: StepErrorKind::Fatal,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The step was cancelled.
    pub fn cancelled() -> Self {
        Self {
            kind: StepErrorKind::Cancelled,
            message: "cancelled".to_owned(),
            retry_after: None,
        }
    }

    /// The attempt ran out of time.
    pub fn timeout(after: Duration) -> Self {
        Self {
            kind: StepErrorKind::Timeout,
            message: format!(
                "timed out after {}: the step took longer than its timeout; raise the timeout or split the step",
                humanize(after)
            ),
            retry_after: None,
        }
    }

    /// Sets the wait the failing service asked for before the next attempt.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Whether another attempt may succeed (retryable errors and timeouts).
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, StepErrorKind::Retryable | StepErrorKind::Timeout)
    }

    /// Whether the step was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.kind == StepErrorKind::Cancelled
    }
}

/// A model call's error as a step error. Provider errors are retried in one place, the
/// provider's retry layer (`plan_llm::ProviderExt::with_retry`; the `Agent` adds it by
/// default), so a step does not retry them again: by the time one reaches a step the
/// provider has given up, and the step's fallback (or a replan) is what comes next.
impl From<plan_llm::LlmError> for StepError {
    fn from(e: plan_llm::LlmError) -> Self {
        match e {
            plan_llm::LlmError::Cancelled => StepError::cancelled(),
            e => StepError::fatal(e.to_string()),
        }
    }
}

fn humanize(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// A failure of the run store.
#[derive(Debug, thiserror::Error)]
#[error("run store: {message}")]
#[non_exhaustive]
pub struct StoreError {
    /// What went wrong and what to do.
    pub message: String,
    /// The underlying cause, if any.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
    /// What the user can change to fix it, for a front end to name its own setting.
    pub hint: Option<Hint>,
}

impl StoreError {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
            hint: None,
        }
    }

    /// Adds the setting that fixes it.
    pub fn with_hint(mut self, hint: Hint) -> Self {
        self.hint = Some(hint);
        self
    }

    /// An error with a message and a cause.
    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(Box::new(source)),
            hint: None,
        }
    }
}

/// The setting or action that fixes an error, as a value: the library's messages say it
/// in words, and a front end (the CLI, a server) names its own flag, field or command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Hint {
    /// Allow more steps per plan.
    MaxSteps,
    /// Allow more replans.
    MaxReplans,
    /// List the runs in the store to find the right id.
    ListRuns,
    /// Point at another run store, or fix the path's permissions.
    StorePath,
    /// Continue the run where it stopped.
    Resume,
    /// Choose another sandbox backend.
    Sandbox,
}

/// Why a run could not be carried out (step failures are not errors: they are in the
/// [`RunReport`](crate::report::RunReport)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// The plan is invalid (for a streamed plan: found when the stream ended).
    #[error(transparent)]
    InvalidPlan(#[from] PlanErrors),
    /// A streamed step was rejected as it arrived (an empty or duplicate id, a
    /// self-dependency).
    #[error("invalid step in the streamed plan: {0}")]
    InvalidStep(plan_core::PlanProblem),
    /// The run store failed; finished work up to the failure is saved.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No run with this id in the store.
    #[error("no run `{0}` in the run store: list the runs to find its id")]
    UnknownRun(RunId),
    /// The operation needs a run store and the runner has none.
    #[error("this needs a run store: give the runner one with `with_store`")]
    NoStore,
    /// The run has no complete plan saved, so there is nothing to resume without a
    /// planner.
    #[error(
        "run `{0}` has no complete plan saved: it stopped before planning finished; resume it with a planner (`plan resume`) or start it again"
    )]
    NoPlan(RunId),
    /// The run awaits approval of its plan: it continues when approved, or ends when
    /// rejected, not by resuming.
    #[error("run `{0}` awaits approval of its plan: approve it to run it, or reject it")]
    AwaitsApproval(RunId),
    /// The run does not await approval, so it cannot be approved or rejected.
    #[error(
        "run `{run}` is {status}, not awaiting approval: only a run that stopped for approval can be approved or rejected"
    )]
    NotAwaitingApproval {
        /// The run.
        run: RunId,
        /// Its status.
        status: plan_core::RunStatus,
    },
    /// A step task panicked (a bug in an executor).
    #[error("step `{step}` panicked: {message}")]
    StepPanicked {
        /// The step.
        step: String,
        /// The panic message.
        message: String,
    },
}

impl ExecError {
    /// The setting or action that fixes it, if one does.
    pub fn hint(&self) -> Option<Hint> {
        match self {
            ExecError::UnknownRun(_) => Some(Hint::ListRuns),
            ExecError::Store(e) => e.hint,
            _ => None,
        }
    }
}
