//! What the strategies add to a run's [`RunReport`]: the goal tree ([`GoalResult`]),
//! critiques and repairs ([`ReportExt`]).

use plan_exec::report::RunReport;
use serde::{Deserialize, Serialize};

use crate::calls::Critique;
use crate::planner::RepairNote;

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

/// Typed access to the parts of a [`RunReport`] the built-in strategies add.
pub trait ReportExt {
    /// The goal tree with rolled-up results (hierarchical).
    fn tree(&self) -> Option<GoalResult>;
    /// The reviews of the plan, one per round (reflective).
    fn critiques(&self) -> Vec<Critique>;
    /// What the repair pass changed in plans the model could not get right.
    fn repairs(&self) -> Vec<RepairNote>;
}

impl ReportExt for RunReport {
    fn tree(&self) -> Option<GoalResult> {
        self.extra("tree")
    }
    fn critiques(&self) -> Vec<Critique> {
        self.extra("critiques").unwrap_or_default()
    }
    fn repairs(&self) -> Vec<RepairNote> {
        self.extra("repairs").unwrap_or_default()
    }
}
