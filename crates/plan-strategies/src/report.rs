//! [`AgentReport`]: what a run of the [`Agent`](crate::Agent) did, in the shape of the
//! CLI's `--json` contract.

use std::fmt;
use std::str::FromStr;

use plan_core::{Event, Plan, RunId, RunStatus, StepId};
use serde::{Deserialize, Serialize};

use crate::calls::Critique;
use crate::planner::RepairNote;

/// How plans are made and revised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Strategy {
    /// An ordered list: each step depends on the one before it.
    Linear,
    /// Explicit dependencies, run in parallel where the graph allows; the plan is streamed
    /// into the runner when the provider streams.
    #[default]
    Dag,
    /// Recursive decomposition into sub-goals, run as a DAG of the leaves.
    Hierarchical,
    /// Replans from the current state when a step fails, keeping finished steps.
    Adaptive,
    /// Critiques and improves the plan before running it.
    Reflective,
}

impl Strategy {
    /// All strategies.
    pub const ALL: [Strategy; 5] = [
        Strategy::Linear,
        Strategy::Dag,
        Strategy::Hierarchical,
        Strategy::Adaptive,
        Strategy::Reflective,
    ];

    /// The name used by the CLI and in reports (`"dag"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Linear => "linear",
            Strategy::Dag => "dag",
            Strategy::Hierarchical => "hierarchical",
            Strategy::Adaptive => "adaptive",
            Strategy::Reflective => "reflective",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A strategy name that is not one of the five.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown strategy `{0}`: use one of linear, dag, hierarchical, adaptive, reflective")]
pub struct UnknownStrategy(pub String);

impl FromStr for Strategy {
    type Err = UnknownStrategy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Strategy::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownStrategy(s.to_owned()))
    }
}

/// One step's result in an [`AgentReport`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StepResult {
    /// The step.
    pub id: StepId,
    /// `completed`, `failed`, `skipped` or `cancelled`.
    pub status: String,
    /// Attempts made (fallback included).
    pub attempts: u32,
    /// The output, when completed.
    pub output: Option<String>,
    /// The last error, or why it was skipped.
    pub error: Option<String>,
    /// Whether the output came from the step's fallback.
    #[serde(default)]
    pub fallback: bool,
    /// Whether the step was kept from an earlier plan revision or session (not run again).
    #[serde(default)]
    pub reused: bool,
}

/// Model usage over a whole run: planning, steps, critique, synthesis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Usage {
    /// Model calls.
    pub llm_calls: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
}

/// A node of the goal tree with its rolled-up result (hierarchical strategy).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GoalResult {
    /// The node's id (the full path for leaves: `research/search`).
    pub id: String,
    /// The (sub-)goal.
    pub goal: String,
    /// `completed` when every leaf under it completed, else the worst leaf status.
    pub status: String,
    /// For a leaf: its output; for a sub-goal: its leaves' outputs, in order.
    pub output: Option<String>,
    /// The nodes under it (empty for a leaf).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<GoalResult>,
}

/// One replan of an adaptive run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Replan {
    /// The new revision.
    pub revision: u32,
    /// The failure that caused it.
    pub reason: String,
    /// Finished steps kept.
    pub kept: Vec<StepId>,
}

/// What a run did. Serialises to the CLI's `--json` report (`run_id`, `status`, `goal`,
/// `strategy`, `model`, `plan`, `steps`, `answer`, `usage`, `replans`, `duration_ms`), with
/// a few optional extras (`failure`, `tree`, `critiques`, `repairs`, `replan_log`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AgentReport {
    /// The run's id (for `plan show` and `plan resume`).
    pub run_id: RunId,
    /// How it ended.
    pub status: RunStatus,
    /// The goal.
    pub goal: String,
    /// The strategy used.
    pub strategy: Strategy,
    /// The model (its `provider:model` spec or provider name; never a key).
    pub model: String,
    /// The plan that ran last (every revision is in the events and the store).
    pub plan: Plan,
    /// Every step of that plan, in plan order.
    pub steps: Vec<StepResult>,
    /// The synthesised answer, when the run succeeded.
    pub answer: Option<String>,
    /// Model usage.
    pub usage: Usage,
    /// How many times the plan was revised after a failure.
    pub replans: u32,
    /// Wall-clock time of the run.
    pub duration_ms: u64,
    /// Why the run failed, in words (what failed and what to try).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The goal tree with rolled-up results (hierarchical).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<GoalResult>,
    /// The reviews of the plan, one per round (reflective).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub critiques: Vec<Critique>,
    /// What the repair pass changed in plans the model could not get right.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repairs: Vec<RepairNote>,
    /// Each replan, in order (adaptive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replan_log: Vec<Replan>,
    /// Every event of the run, in order (not serialised: `--events FILE` has them).
    #[serde(skip)]
    pub events: Vec<Event>,
}

impl AgentReport {
    /// The result of a step.
    pub fn step(&self, id: &str) -> Option<&StepResult> {
        self.steps.iter().find(|s| s.id.as_str() == id)
    }

    /// Whether the run succeeded.
    pub fn is_success(&self) -> bool {
        self.status == RunStatus::Succeeded
    }

    /// The report as pretty JSON (the CLI's `--json` output).
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
