//! Run events: what a run reports as it goes (the events contract in DESIGN.md).
//!
//! An [`Event`] serialises to one flat JSON object: `ts`, `run`, `event` and the fields of
//! its [`EventKind`] at the top level.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::{Plan, StepId};

/// A point in time, serialised as RFC 3339 with milliseconds (`2026-11-25T20:00:00.123Z`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self(SystemTime::now())
    }

    /// A timestamp from milliseconds since the Unix epoch.
    pub fn from_unix_millis(ms: u64) -> Self {
        Self(UNIX_EPOCH + Duration::from_millis(ms))
    }

    /// Milliseconds since the Unix epoch (0 for times before it).
    pub fn unix_millis(self) -> u64 {
        self.0
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    /// The wrapped system time.
    pub fn system_time(self) -> SystemTime {
        self.0
    }

    /// Parses RFC 3339 (`2026-11-25T20:00:00Z`, fractional seconds allowed).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        humantime::parse_rfc3339_weak(text).ok().map(Self)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        Self(t)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_millis(self.0))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse_rfc3339(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {text}")))
    }
}

/// The identifier of a run, as listed by `plan runs`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    /// Wraps a string as a run id.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a run ended (or that it has not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunStatus {
    /// Submitted to a fleet store, waiting for a worker to claim it.
    Queued,
    /// Still going, or interrupted by a crash before it could say otherwise.
    Running,
    /// Stopped until a person approves (or edits) its plan, or rejects it. Not an end.
    AwaitingApproval,
    /// Every step needed for the answer completed and the answer was written.
    Succeeded,
    /// The run gave up; the report names the failed steps.
    Failed,
    /// Cancelled by the user (Ctrl-C); it can be resumed.
    Cancelled,
    /// A person rejected its plan; it ends there.
    Rejected,
}

impl RunStatus {
    /// The status as it appears in JSON (`"succeeded"`).
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::AwaitingApproval => "awaiting_approval",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Rejected => "rejected",
        }
    }

    /// Every status.
    pub const ALL: [RunStatus; 7] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::AwaitingApproval,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::Rejected,
    ];

    /// Whether the run has ended: succeeded, failed, cancelled or rejected. A cancelled
    /// run can still be resumed.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled | RunStatus::Rejected
        )
    }

    /// Parses a status name (`"awaiting_approval"`).
    pub fn parse(name: &str) -> Option<RunStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing that happened in a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Event {
    /// When it happened.
    pub ts: Timestamp,
    /// The run it belongs to.
    pub run: RunId,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// An event of `run`, stamped now.
    pub fn now(run: RunId, kind: EventKind) -> Self {
        Self {
            ts: Timestamp::now(),
            run,
            kind,
        }
    }

    /// An event with an explicit timestamp.
    pub fn at(ts: Timestamp, run: RunId, kind: EventKind) -> Self {
        Self { ts, run, kind }
    }

    /// The event as one line of JSON (no trailing newline), as `--events FILE` writes it.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What happened, with its fields; the `event` field of the JSON names the variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The run began.
    RunStarted {
        /// The run's goal.
        goal: String,
    },
    /// A plan (or a revision of it) was made.
    PlanCreated {
        /// The plan.
        plan: Plan,
        /// 0 for the first plan, then 1, 2, ... for revisions.
        revision: u32,
    },
    /// A step attempt began.
    StepStarted {
        /// The step.
        step: StepId,
        /// 1 for the first attempt.
        attempt: u32,
    },
    /// A step completed and its output was recorded.
    StepCompleted {
        /// The step.
        step: StepId,
        /// How long the successful attempt took.
        duration_ms: u64,
    },
    /// A step attempt failed.
    StepFailed {
        /// The step.
        step: StepId,
        /// What went wrong.
        error: String,
        /// Whether another attempt follows.
        retrying: bool,
    },
    /// A step's output was taken from an earlier run instead of being produced again (a
    /// re-run: the step and everything it reads are unchanged).
    StepReused {
        /// The step.
        step: StepId,
        /// The run whose output it reuses.
        from: RunId,
    },
    /// A step was not run because a step it depends on failed.
    StepSkipped {
        /// The step.
        step: StepId,
        /// Why, naming the failed dependency.
        reason: String,
    },
    /// A failed step's fallback is being run in its place.
    FallbackUsed {
        /// The step.
        step: StepId,
        /// The error that exhausted the step's retries.
        error: String,
    },
    /// The model's plan was changed on its way to running: re-prompted with its
    /// problems, repaired, or streamed steps cancelled because the final plan dropped
    /// them. Every change is listed, so a run never does less than it says silently.
    PlanAdjusted {
        /// Each change, in words.
        changes: Vec<String>,
    },
    /// The `auto` strategy chose how to meet the goal: `direct` (answered in one call, no
    /// plan) or `planned` (the plan then runs like `dag`).
    RouteChosen {
        /// `direct` or `planned`.
        route: String,
    },
    /// The plan was revised after a failure, keeping finished steps.
    Replanned {
        /// The new revision number.
        revision: u32,
        /// Why (the failure that caused it).
        reason: String,
        /// The finished steps kept as they were.
        kept: Vec<StepId>,
        /// The revised plan (kept steps included).
        plan: Plan,
    },
    /// A call to a model finished.
    LlmCall {
        /// What the call was for (`plan`, `step`, `synthesize`, `critique`, ...).
        purpose: String,
        /// The step it served, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<StepId>,
        /// Tokens in the prompt.
        prompt_tokens: u64,
        /// Tokens generated.
        completion_tokens: u64,
        /// Wall-clock time of the call.
        duration_ms: u64,
    },
    /// A step called a tool.
    ToolCall {
        /// The step.
        step: StepId,
        /// The tool's name.
        tool: String,
        /// Whether the call succeeded.
        ok: bool,
        /// Wall-clock time of the call.
        duration_ms: u64,
    },
    /// How far the run is.
    Progress {
        /// Steps finished (completed, failed or skipped).
        done: usize,
        /// Steps in the current plan.
        total: usize,
        /// `done / total` as a percentage, 0 to 100.
        percent: f64,
    },
    /// A call the run made to something outside it (a model, a tool, a program) and
    /// what came back, kept so the run can be replayed without making the call again.
    /// Journaled only: it never reaches event sinks (`--events`, live views) and is not
    /// part of the events contract.
    CallRecorded {
        /// The call and its reply.
        call: RecordedCall,
    },
    /// The run ended.
    RunFinished {
        /// How it ended.
        status: RunStatus,
        /// The synthesised answer, when there is one.
        answer: Option<String>,
    },
}

/// What kind of thing a [`RecordedCall`] called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CallKind {
    /// A model (planning, a step, synthesis, ...).
    Model,
    /// A tool a step called.
    Tool,
    /// A program a code step ran in the sandbox.
    Program,
}

impl CallKind {
    /// `model`, `tool` or `program`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Model => "model",
            CallKind::Tool => "tool",
            CallKind::Program => "program",
        }
    }
}

/// One call a run made outside itself, with its reply: what replay serves instead of
/// making the call (see [`EventKind::CallRecorded`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RecordedCall {
    /// A model, a tool or a program.
    pub kind: CallKind,
    /// What it was for: a model call's purpose (`plan`, `step`, ...), a tool's name, a
    /// program's language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// The step it served, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepId>,
    /// A hash of the whole request (SHA-256, hex): replay serves the reply to the request
    /// with the same hash.
    pub key: String,
    /// The request in full, when the run recorded requests (for a readable diff when a
    /// replay's request differs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<serde_json::Value>,
    /// The reply: `{"ok": ...}` or `{"err": ...}`, in the caller's own form.
    pub reply: serde_json::Value,
}

impl RecordedCall {
    /// A recorded call of `kind` with request hash `key` and `reply`.
    pub fn new(kind: CallKind, key: impl Into<String>, reply: serde_json::Value) -> Self {
        Self {
            kind,
            purpose: None,
            step: None,
            key: key.into(),
            request: None,
            reply,
        }
    }

    /// Sets what the call was for.
    pub fn with_purpose(mut self, purpose: impl Into<String>) -> Self {
        self.purpose = Some(purpose.into());
        self
    }

    /// Sets the step it served.
    pub fn with_step(mut self, step: Option<StepId>) -> Self {
        self.step = step;
        self
    }

    /// Keeps the request in full.
    pub fn with_request(mut self, request: serde_json::Value) -> Self {
        self.request = Some(request);
        self
    }
}

impl EventKind {
    /// Whether the event is kept in the journal only and never sent to event sinks or
    /// followers ([`EventKind::CallRecorded`]).
    pub fn is_journal_only(&self) -> bool {
        matches!(self, EventKind::CallRecorded { .. })
    }

    /// A progress event with the percentage filled in.
    pub fn progress(done: usize, total: usize) -> Self {
        let percent = if total == 0 {
            100.0
        } else {
            (done as f64 * 100.0 / total as f64).clamp(0.0, 100.0)
        };
        EventKind::Progress {
            done,
            total,
            percent,
        }
    }

    /// The name in the `event` field (`"step_started"`).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::RunStarted { .. } => "run_started",
            EventKind::PlanCreated { .. } => "plan_created",
            EventKind::StepStarted { .. } => "step_started",
            EventKind::StepCompleted { .. } => "step_completed",
            EventKind::StepFailed { .. } => "step_failed",
            EventKind::StepReused { .. } => "step_reused",
            EventKind::StepSkipped { .. } => "step_skipped",
            EventKind::FallbackUsed { .. } => "fallback_used",
            EventKind::PlanAdjusted { .. } => "plan_adjusted",
            EventKind::RouteChosen { .. } => "route_chosen",
            EventKind::Replanned { .. } => "replanned",
            EventKind::LlmCall { .. } => "llm_call",
            EventKind::ToolCall { .. } => "tool_call",
            EventKind::Progress { .. } => "progress",
            EventKind::CallRecorded { .. } => "call_recorded",
            EventKind::RunFinished { .. } => "run_finished",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_flat() {
        let ev = Event::at(
            Timestamp::from_unix_millis(1_764_100_800_123),
            RunId::new("r1"),
            EventKind::StepStarted {
                step: StepId::new("a"),
                attempt: 1,
            },
        );
        let line = ev.to_json_line();
        assert_eq!(
            line,
            r#"{"ts":"2025-11-25T20:00:00.123Z","run":"r1","event":"step_started","step":"a","attempt":1}"#
        );
        let back: Event = serde_json::from_str(&line).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn progress_percent() {
        assert_eq!(
            EventKind::progress(1, 4),
            EventKind::Progress {
                done: 1,
                total: 4,
                percent: 25.0
            }
        );
        assert_eq!(EventKind::progress(0, 0).name(), "progress");
    }
}
