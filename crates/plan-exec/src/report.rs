//! [`RunReport`]: what a run did, step by step.

use std::collections::HashMap;

use plan_core::{Plan, RunId, RunStatus, StepId, Timestamp};
use serde::{Deserialize, Serialize};

/// How a step ended in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepOutcome {
    /// Completed; its output is in the report (and committed, with a store).
    Completed,
    /// Failed for good: attempts and fallback spent, or a fatal error.
    Failed,
    /// Not run because a step it depends on failed or was skipped.
    Skipped,
    /// Cancelled while running, or never started because the run was cancelled; resume
    /// runs it.
    Cancelled,
}

impl StepOutcome {
    /// The name as it appears in JSON (`"completed"`).
    pub fn as_str(self) -> &'static str {
        match self {
            StepOutcome::Completed => "completed",
            StepOutcome::Failed => "failed",
            StepOutcome::Skipped => "skipped",
            StepOutcome::Cancelled => "cancelled",
        }
    }
}

/// One step of a [`RunReport`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StepReport {
    /// The step.
    pub id: StepId,
    /// How it ended.
    pub status: StepOutcome,
    /// Attempts made, the fallback's included (0 for a step done in an earlier session).
    pub attempts: u32,
    /// The output, when completed.
    pub output: Option<String>,
    /// The last error (failed), or why it was skipped.
    pub error: Option<String>,
    /// Whether the output (or the last error) came from the step's fallback.
    pub fallback: bool,
    /// Whether the output was taken from earlier work (resume, kept steps) instead of
    /// being produced in this run.
    pub reused: bool,
    /// When the step started, in milliseconds after the run started.
    pub started_ms: Option<u64>,
    /// How long the step took, all attempts included.
    pub duration_ms: Option<u64>,
}

/// Model usage over a run, counted from its `llm_call` events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunUsage {
    /// Model calls.
    pub llm_calls: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
}

/// What a run (or one execution of a plan revision) did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunReport {
    /// The run's id.
    pub run_id: RunId,
    /// How it ended: `succeeded` when every step completed, `failed` when a step failed or
    /// was skipped, `cancelled` when cancelled.
    pub status: RunStatus,
    /// The goal.
    pub goal: String,
    /// The plan that ran (for a streamed plan: every step received).
    pub plan: Plan,
    /// The plan revision that ran.
    pub revision: u32,
    /// Every step of the plan, in plan order.
    pub steps: Vec<StepReport>,
    /// Model usage.
    pub usage: RunUsage,
    /// When the execution started.
    pub started: Timestamp,
    /// How long it took.
    pub duration_ms: u64,
}

impl RunReport {
    /// The report of a step.
    pub fn step(&self, id: &str) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.id.as_str() == id)
    }

    /// The output of a completed step.
    pub fn output(&self, id: &str) -> Option<&str> {
        self.step(id).and_then(|s| s.output.as_deref())
    }

    /// Whether every step completed.
    pub fn is_success(&self) -> bool {
        self.status == RunStatus::Succeeded
    }

    /// The outputs of the completed steps (what a replan keeps).
    pub fn completed_outputs(&self) -> HashMap<StepId, String> {
        self.steps
            .iter()
            .filter_map(|s| Some((s.id.clone(), s.output.clone()?)))
            .collect()
    }

    /// The steps that failed, with their errors.
    pub fn failures(&self) -> impl Iterator<Item = &StepReport> {
        self.steps
            .iter()
            .filter(|s| s.status == StepOutcome::Failed)
    }

    /// Steps with each outcome.
    pub fn count(&self, outcome: StepOutcome) -> usize {
        self.steps.iter().filter(|s| s.status == outcome).count()
    }
}
