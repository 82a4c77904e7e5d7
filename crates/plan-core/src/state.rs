//! [`RunState`]: where each step of a run stands, with only legal transitions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Plan, StepId};

/// Where one step stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepStatus {
    /// Not started yet.
    Pending,
    /// An attempt is under way.
    Running,
    /// Done, with its output recorded.
    Completed {
        /// The step's output.
        output: String,
    },
    /// Failed for good (retries and fallback spent).
    Failed {
        /// The last error.
        error: String,
    },
    /// Not run because a dependency failed or was skipped.
    Skipped {
        /// Why.
        reason: String,
    },
}

impl StepStatus {
    /// The status name (`"completed"`).
    pub fn name(&self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Completed { .. } => "completed",
            StepStatus::Failed { .. } => "failed",
            StepStatus::Skipped { .. } => "skipped",
        }
    }

    /// Completed, failed or skipped.
    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            StepStatus::Completed { .. } | StepStatus::Failed { .. } | StepStatus::Skipped { .. }
        )
    }

    /// Completed.
    pub fn is_completed(&self) -> bool {
        matches!(self, StepStatus::Completed { .. })
    }
}

/// A step's status and how many attempts it has had.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StepState {
    /// Where the step stands.
    #[serde(flatten)]
    pub status: StepStatus,
    /// Attempts started so far (0 before the first).
    pub attempts: u32,
}

/// A transition that the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransitionError {
    /// The step is not in the run state.
    #[error("unknown step `{0}`: it is not part of the current plan")]
    UnknownStep(StepId),
    /// The step is not in a status the transition starts from.
    #[error("step `{step}` cannot go from {from} to {to}")]
    Illegal {
        /// The step.
        step: StepId,
        /// Its current status.
        from: &'static str,
        /// The status asked for.
        to: &'static str,
    },
}

/// The status of every step of a run. Serialisable for the run store.
///
/// Legal transitions: pending → running → completed | failed; pending → skipped;
/// failed → running (a retry or a fallback); running | failed | skipped → pending
/// ([`reset`](Self::reset), for resume and replanning). A completed step stays completed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    steps: BTreeMap<StepId, StepState>,
}

impl RunState {
    /// Every step of `plan`, pending.
    pub fn new(plan: &Plan) -> Self {
        let mut state = Self::default();
        state.sync_with_plan(plan);
        state
    }

    /// Makes the state cover exactly the steps of `plan`: new steps are added as pending,
    /// steps no longer in the plan are dropped, the rest keep their status. Used after a
    /// replan.
    pub fn sync_with_plan(&mut self, plan: &Plan) {
        let ids: std::collections::BTreeSet<&StepId> = plan.steps.iter().map(|s| &s.id).collect();
        self.steps.retain(|id, _| ids.contains(id));
        for id in ids {
            self.steps.entry(id.clone()).or_insert(StepState {
                status: StepStatus::Pending,
                attempts: 0,
            });
        }
    }

    /// The state of a step.
    pub fn get(&self, id: &str) -> Option<&StepState> {
        self.steps.get(id)
    }

    /// The status of a step.
    pub fn status(&self, id: &str) -> Option<&StepStatus> {
        self.steps.get(id).map(|s| &s.status)
    }

    /// The output of a completed step.
    pub fn output(&self, id: &str) -> Option<&str> {
        match self.status(id) {
            Some(StepStatus::Completed { output }) => Some(output),
            _ => None,
        }
    }

    /// All steps and their states, ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = (&StepId, &StepState)> {
        self.steps.iter()
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether there are no steps.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Steps that are completed, failed or skipped.
    pub fn finished_count(&self) -> usize {
        self.steps
            .values()
            .filter(|s| s.status.is_finished())
            .count()
    }

    /// Whether every step is completed, failed or skipped.
    pub fn is_finished(&self) -> bool {
        self.steps.values().all(|s| s.status.is_finished())
    }

    /// The completed steps and their outputs.
    pub fn completed(&self) -> impl Iterator<Item = (&StepId, &str)> {
        self.steps.iter().filter_map(|(id, s)| match &s.status {
            StepStatus::Completed { output } => Some((id, output.as_str())),
            _ => None,
        })
    }

    /// Starts an attempt: pending or failed → running. Returns the attempt number (1-based).
    ///
    /// # Errors
    /// [`TransitionError`] when the step is unknown or not pending or failed.
    pub fn start(&mut self, id: &StepId) -> Result<u32, TransitionError> {
        let s = self.entry(id)?;
        match s.status {
            StepStatus::Pending | StepStatus::Failed { .. } => {
                s.status = StepStatus::Running;
                s.attempts += 1;
                Ok(s.attempts)
            }
            _ => Err(illegal(id, &s.status, "running")),
        }
    }

    /// Records the output: running → completed.
    ///
    /// # Errors
    /// [`TransitionError`] when the step is unknown or not running.
    pub fn complete(&mut self, id: &StepId, output: String) -> Result<(), TransitionError> {
        let s = self.entry(id)?;
        match s.status {
            StepStatus::Running => {
                s.status = StepStatus::Completed { output };
                Ok(())
            }
            _ => Err(illegal(id, &s.status, "completed")),
        }
    }

    /// Records a failure: running → failed.
    ///
    /// # Errors
    /// [`TransitionError`] when the step is unknown or not running.
    pub fn fail(&mut self, id: &StepId, error: String) -> Result<(), TransitionError> {
        let s = self.entry(id)?;
        match s.status {
            StepStatus::Running => {
                s.status = StepStatus::Failed { error };
                Ok(())
            }
            _ => Err(illegal(id, &s.status, "failed")),
        }
    }

    /// Skips a step that has not started: pending → skipped.
    ///
    /// # Errors
    /// [`TransitionError`] when the step is unknown or not pending.
    pub fn skip(&mut self, id: &StepId, reason: String) -> Result<(), TransitionError> {
        let s = self.entry(id)?;
        match s.status {
            StepStatus::Pending => {
                s.status = StepStatus::Skipped { reason };
                Ok(())
            }
            _ => Err(illegal(id, &s.status, "skipped")),
        }
    }

    /// Puts a step back to pending (a step in flight at a crash, or one to replan).
    /// Attempts are kept. A completed step cannot be reset: finished work is never redone.
    ///
    /// # Errors
    /// [`TransitionError`] when the step is unknown or completed.
    pub fn reset(&mut self, id: &StepId) -> Result<(), TransitionError> {
        let s = self.entry(id)?;
        match s.status {
            StepStatus::Completed { .. } => Err(illegal(id, &s.status, "pending")),
            _ => {
                s.status = StepStatus::Pending;
                Ok(())
            }
        }
    }

    fn entry(&mut self, id: &StepId) -> Result<&mut StepState, TransitionError> {
        self.steps
            .get_mut(id)
            .ok_or_else(|| TransitionError::UnknownStep(id.clone()))
    }
}

fn illegal(id: &StepId, from: &StepStatus, to: &'static str) -> TransitionError {
    TransitionError::Illegal {
        step: id.clone(),
        from: from.name(),
        to,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Step;

    fn plan() -> Plan {
        Plan::new(
            "g",
            vec![Step::new("a", "a"), Step::new("b", "b").depends_on(["a"])],
        )
    }

    #[test]
    fn legal_path() {
        let mut st = RunState::new(&plan());
        let a = StepId::new("a");
        assert_eq!(st.start(&a).unwrap(), 1);
        st.fail(&a, "boom".into()).unwrap();
        assert_eq!(st.start(&a).unwrap(), 2);
        st.complete(&a, "out".into()).unwrap();
        assert_eq!(st.output("a"), Some("out"));
        assert!(st.reset(&a).is_err());
        assert!(st.start(&a).is_err());
        st.skip(&StepId::new("b"), "a failed".into()).unwrap();
        assert!(st.is_finished());
        assert_eq!(st.finished_count(), 2);
    }

    #[test]
    fn illegal_transitions_are_named() {
        let mut st = RunState::new(&plan());
        let err = st.complete(&StepId::new("a"), "x".into()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "step `a` cannot go from pending to completed"
        );
        assert!(matches!(
            st.start(&StepId::new("zz")),
            Err(TransitionError::UnknownStep(_))
        ));
    }

    #[test]
    fn serialises() {
        let mut st = RunState::new(&plan());
        st.start(&StepId::new("a")).unwrap();
        st.complete(&StepId::new("a"), "out".into()).unwrap();
        let json = serde_json::to_string(&st).unwrap();
        assert_eq!(
            json,
            r#"{"steps":{"a":{"status":"completed","output":"out","attempts":1},"b":{"status":"pending","attempts":0}}}"#
        );
        assert_eq!(serde_json::from_str::<RunState>(&json).unwrap(), st);
    }
}
