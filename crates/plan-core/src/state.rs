//! [`RunState`]: where each step of a run stands — the one step-state model that runners,
//! reports, stores and the CLI share.
//!
//! A [`StepState`] is a step's record (status, attempts, output, error, timing); a
//! [`RunState`] holds one per step of the current plan, in plan order. It changes in two
//! ways: through the checked transitions ([`RunState::start`], [`RunState::complete`], ...)
//! that a runner makes, and by replaying a run's journal ([`RunState::apply`]), which is
//! how a stored run becomes a report.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventKind, RunId, RunStatus, Timestamp};
use crate::model::{Plan, StepId};

/// Where one step stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepStatus {
    /// Not started yet.
    Pending,
    /// An attempt is under way.
    Running,
    /// Done, with its output recorded.
    Completed,
    /// Failed for good (retries and fallback spent).
    Failed,
    /// Not run because a dependency failed or was skipped.
    Skipped,
    /// Stopped, or never started, because the run was cancelled or stopped; resuming the
    /// run runs it.
    Cancelled,
}

impl StepStatus {
    /// The status name as it appears in JSON (`"completed"`).
    pub fn name(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Completed => "completed",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
        }
    }

    /// The same as [`name`](Self::name).
    pub fn as_str(self) -> &'static str {
        self.name()
    }

    /// Completed, failed or skipped: nothing more will happen to it in this run.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            StepStatus::Completed | StepStatus::Failed | StepStatus::Skipped
        )
    }

    /// Completed.
    pub fn is_completed(self) -> bool {
        self == StepStatus::Completed
    }
}

impl std::fmt::Display for StepStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One step's record: its status, attempts, output or error, and timing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StepState {
    /// The step.
    pub id: StepId,
    /// Where it stands.
    pub status: StepStatus,
    /// Attempts started so far, the fallback's included (0 before the first).
    pub attempts: u32,
    /// The output, once completed.
    pub output: Option<String>,
    /// The last error (failed), or why it was skipped.
    pub error: Option<String>,
    /// Whether the output (or the last error) came from the step's fallback.
    #[serde(default)]
    pub fallback: bool,
    /// Whether the output was taken from earlier work (an earlier session of the run, or a
    /// finished step kept across a replan) instead of being produced again.
    #[serde(default)]
    pub reused: bool,
    /// The earlier run whose output it reuses, for a step a re-run did not run again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<RunId>,
    /// When its first attempt started, in milliseconds after the run (session) started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    /// How long the step took, from its first attempt's start to its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The fleet worker running it now, for a running step of a fleet run (as the store
    /// knows it; see `plan show`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

impl StepState {
    /// A pending step with no attempts.
    pub fn pending(id: impl Into<StepId>) -> Self {
        Self {
            id: id.into(),
            status: StepStatus::Pending,
            attempts: 0,
            output: None,
            error: None,
            fallback: false,
            reused: false,
            reused_from: None,
            started_ms: None,
            duration_ms: None,
            worker: None,
        }
    }

    /// A step completed with `output` (for instance one finished in an earlier session).
    pub fn completed(id: impl Into<StepId>, output: impl Into<String>) -> Self {
        Self {
            status: StepStatus::Completed,
            output: Some(output.into()),
            ..Self::pending(id)
        }
    }
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

/// The state of every step of a run's current plan, in plan order.
///
/// Checked transitions: pending → running → completed | failed; pending → skipped;
/// failed → running (a retry or a fallback); pending | running → cancelled; running |
/// failed | skipped | cancelled → pending ([`reset`](Self::reset), for resume and
/// replanning). A completed step stays completed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<StepState>", into = "Vec<StepState>")]
pub struct RunState {
    steps: Vec<StepState>,
    #[serde(skip)]
    index: HashMap<StepId, usize>,
    /// When the current session of the run started (for `started_ms`).
    #[serde(skip)]
    origin: Option<Timestamp>,
}

impl From<Vec<StepState>> for RunState {
    fn from(steps: Vec<StepState>) -> Self {
        let index = steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        Self {
            steps,
            index,
            origin: None,
        }
    }
}

impl From<RunState> for Vec<StepState> {
    fn from(state: RunState) -> Self {
        state.steps
    }
}

impl RunState {
    /// Every step of `plan`, pending.
    pub fn new(plan: &Plan) -> Self {
        let mut state = Self::default();
        state.sync_with_plan(plan);
        state
    }

    /// Makes the state cover exactly the steps of `plan`, in its order: new steps are
    /// added as pending, steps no longer in the plan are dropped, the rest keep their
    /// state. Used after a replan.
    pub fn sync_with_plan(&mut self, plan: &Plan) {
        let mut old: HashMap<StepId, StepState> =
            self.steps.drain(..).map(|s| (s.id.clone(), s)).collect();
        self.index.clear();
        for step in &plan.steps {
            if self.index.contains_key(&step.id) {
                continue;
            }
            let state = old
                .remove(&step.id)
                .unwrap_or_else(|| StepState::pending(step.id.clone()));
            self.index.insert(step.id.clone(), self.steps.len());
            self.steps.push(state);
        }
    }

    /// The state of a step.
    pub fn get(&self, id: &str) -> Option<&StepState> {
        self.index.get(id).map(|&i| &self.steps[i])
    }

    /// The status of a step.
    pub fn status(&self, id: &str) -> Option<StepStatus> {
        self.get(id).map(|s| s.status)
    }

    /// The output of a completed step.
    pub fn output(&self, id: &str) -> Option<&str> {
        self.get(id)
            .filter(|s| s.status == StepStatus::Completed)
            .and_then(|s| s.output.as_deref())
    }

    /// All steps and their states, in plan order.
    pub fn iter(&self) -> impl Iterator<Item = &StepState> {
        self.steps.iter()
    }

    /// The steps' states, in plan order.
    pub fn steps(&self) -> &[StepState] {
        &self.steps
    }

    /// The steps' states, in plan order.
    pub fn into_steps(self) -> Vec<StepState> {
        self.steps
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
        self.steps.iter().filter(|s| s.status.is_finished()).count()
    }

    /// Whether every step is completed, failed or skipped.
    pub fn is_finished(&self) -> bool {
        self.steps.iter().all(|s| s.status.is_finished())
    }

    /// The completed steps and their outputs.
    pub fn completed(&self) -> impl Iterator<Item = (&StepId, &str)> {
        self.steps.iter().filter_map(|s| match s.status {
            StepStatus::Completed => Some((&s.id, s.output.as_deref().unwrap_or(""))),
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
            StepStatus::Pending | StepStatus::Failed => {
                s.status = StepStatus::Running;
                s.attempts += 1;
                Ok(s.attempts)
            }
            from => Err(illegal(id, from, "running")),
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
                s.status = StepStatus::Completed;
                s.output = Some(output);
                s.error = None;
                Ok(())
            }
            from => Err(illegal(id, from, "completed")),
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
                s.status = StepStatus::Failed;
                s.error = Some(error);
                Ok(())
            }
            from => Err(illegal(id, from, "failed")),
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
                s.status = StepStatus::Skipped;
                s.error = Some(reason);
                Ok(())
            }
            from => Err(illegal(id, from, "skipped")),
        }
    }

    /// Cancels a step that is pending or running: → cancelled.
    ///
    /// # Errors
    /// [`TransitionError`] when the step is unknown or already finished.
    pub fn cancel(&mut self, id: &StepId) -> Result<(), TransitionError> {
        let s = self.entry(id)?;
        match s.status {
            StepStatus::Pending | StepStatus::Running => {
                s.status = StepStatus::Cancelled;
                Ok(())
            }
            from => Err(illegal(id, from, "cancelled")),
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
            StepStatus::Completed => Err(illegal(id, StepStatus::Completed, "pending")),
            _ => {
                s.status = StepStatus::Pending;
                Ok(())
            }
        }
    }

    /// Marks a completed step's output as committed: completed with `output`, whatever the
    /// events said (the committed output is the truth a resume relies on).
    pub fn record_output(&mut self, id: &StepId, output: String, fallback: bool) {
        if let Some(&i) = self.index.get(id) {
            let s = &mut self.steps[i];
            s.status = StepStatus::Completed;
            s.output = Some(output);
            s.error = None;
            s.fallback |= fallback;
        }
    }

    /// Replays one event of the run's journal. Plans (`plan_created`, `replanned`) set the
    /// steps; step events move them; `run_started` opens a new session, putting steps that
    /// were in flight back to pending and marking completed ones as reused; `run_finished`
    /// of a run that did not succeed cancels the steps that never finished.
    ///
    /// Replay is lenient: an event that does not fit the state (an unknown step) is
    /// ignored, as a journal is history, not a request.
    pub fn apply(&mut self, event: &Event) {
        let since = |origin: Option<Timestamp>| {
            origin.map(|o| event.ts.unix_millis().saturating_sub(o.unix_millis()))
        };
        match &event.kind {
            EventKind::RunStarted { .. } => {
                self.origin = Some(event.ts);
                for s in &mut self.steps {
                    match s.status {
                        StepStatus::Completed => s.reused = true,
                        StepStatus::Running | StepStatus::Cancelled => {
                            s.status = StepStatus::Pending;
                        }
                        _ => {}
                    }
                }
            }
            EventKind::PlanCreated { plan, .. } => self.sync_with_plan(plan),
            EventKind::Replanned { plan, kept, .. } => {
                self.sync_with_plan(plan);
                for id in kept {
                    if let Some(&i) = self.index.get(id) {
                        self.steps[i].reused = true;
                    }
                }
            }
            EventKind::StepStarted { step, attempt } => {
                let started = since(self.origin);
                if !self.index.contains_key(step) {
                    // A streamed plan's steps start before the plan is complete.
                    self.index.insert(step.clone(), self.steps.len());
                    self.steps.push(StepState::pending(step.clone()));
                }
                if let Some(s) = self.get_mut(step) {
                    s.status = StepStatus::Running;
                    s.attempts = s.attempts.max(*attempt);
                    if s.started_ms.is_none() {
                        s.started_ms = started;
                    }
                }
            }
            EventKind::StepReused { step, from } => {
                if let Some(s) = self.get_mut(step) {
                    s.status = StepStatus::Completed;
                    s.error = None;
                    s.reused = true;
                    s.reused_from = Some(from.clone());
                }
            }
            EventKind::StepCompleted { step, .. } => {
                let now = since(self.origin);
                if let Some(s) = self.get_mut(step) {
                    s.status = StepStatus::Completed;
                    s.error = None;
                    s.duration_ms = duration(s.started_ms, now);
                }
            }
            EventKind::StepFailed {
                step,
                error,
                retrying,
            } => {
                let now = since(self.origin);
                if let Some(s) = self.get_mut(step) {
                    s.error = Some(error.clone());
                    if !retrying {
                        s.status = StepStatus::Failed;
                        s.duration_ms = duration(s.started_ms, now);
                    }
                }
            }
            EventKind::StepSkipped { step, reason } => {
                if let Some(s) = self.get_mut(step) {
                    s.status = StepStatus::Skipped;
                    s.error = Some(reason.clone());
                }
            }
            EventKind::FallbackUsed { step, .. } => {
                if let Some(s) = self.get_mut(step) {
                    s.fallback = true;
                }
            }
            EventKind::RunFinished { status, .. } if *status != RunStatus::Succeeded => {
                for s in &mut self.steps {
                    if matches!(s.status, StepStatus::Pending | StepStatus::Running) {
                        s.status = StepStatus::Cancelled;
                    }
                }
            }
            _ => {}
        }
    }

    fn get_mut(&mut self, id: &StepId) -> Option<&mut StepState> {
        self.index.get(id).map(|&i| &mut self.steps[i])
    }

    fn entry(&mut self, id: &StepId) -> Result<&mut StepState, TransitionError> {
        self.get_mut(id)
            .ok_or_else(|| TransitionError::UnknownStep(id.clone()))
    }
}

fn duration(started: Option<u64>, now: Option<u64>) -> Option<u64> {
    Some(now?.saturating_sub(started?))
}

fn illegal(id: &StepId, from: StepStatus, to: &'static str) -> TransitionError {
    TransitionError::Illegal {
        step: id.clone(),
        from: from.name(),
        to,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::RunId;
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
    fn serialises_in_plan_order() {
        let mut st = RunState::new(&plan());
        st.start(&StepId::new("a")).unwrap();
        st.complete(&StepId::new("a"), "out".into()).unwrap();
        let json = serde_json::to_string(&st).unwrap();
        assert_eq!(
            json,
            r#"[{"id":"a","status":"completed","attempts":1,"output":"out","error":null,"fallback":false,"reused":false},{"id":"b","status":"pending","attempts":0,"output":null,"error":null,"fallback":false,"reused":false}]"#
        );
        let back: RunState = serde_json::from_str(&json).unwrap();
        assert_eq!(back.output("a"), Some("out"));
        assert_eq!(back.status("b"), Some(StepStatus::Pending));
    }

    fn ev(kind: EventKind) -> Event {
        Event::now(RunId::new("r"), kind)
    }

    #[test]
    fn replaying_a_journal_gives_each_step_its_record() {
        let mut st = RunState::default();
        let a = StepId::new("a");
        let b = StepId::new("b");
        for kind in [
            EventKind::RunStarted { goal: "g".into() },
            EventKind::PlanCreated {
                plan: plan(),
                revision: 0,
            },
            EventKind::StepStarted {
                step: a.clone(),
                attempt: 1,
            },
            EventKind::StepFailed {
                step: a.clone(),
                error: "flaky".into(),
                retrying: true,
            },
            EventKind::StepStarted {
                step: a.clone(),
                attempt: 2,
            },
            EventKind::StepCompleted {
                step: a.clone(),
                duration_ms: 3,
            },
            EventKind::StepStarted {
                step: b.clone(),
                attempt: 1,
            },
        ] {
            st.apply(&ev(kind));
        }
        st.record_output(&a, "out".into(), false);
        assert_eq!(st.get("a").unwrap().attempts, 2);
        assert_eq!(st.output("a"), Some("out"));
        assert_eq!(st.status("b"), Some(StepStatus::Running));

        // The process died; a new session starts: b is pending again, a is reused.
        st.apply(&ev(EventKind::RunStarted { goal: "g".into() }));
        assert_eq!(st.status("b"), Some(StepStatus::Pending));
        assert!(st.get("a").unwrap().reused);

        st.apply(&ev(EventKind::RunFinished {
            status: RunStatus::Cancelled,
            answer: None,
        }));
        assert_eq!(st.status("b"), Some(StepStatus::Cancelled));
        assert_eq!(st.status("a"), Some(StepStatus::Completed));
    }

    #[test]
    fn a_replan_keeps_finished_steps_and_drops_the_rest() {
        let mut st = RunState::new(&plan());
        let a = StepId::new("a");
        st.start(&a).unwrap();
        st.complete(&a, "out".into()).unwrap();
        let revised = Plan::new(
            "g",
            vec![Step::new("a", "a"), Step::new("c", "c").depends_on(["a"])],
        );
        st.apply(&ev(EventKind::Replanned {
            revision: 1,
            reason: "b failed".into(),
            kept: vec![a.clone()],
            plan: revised,
        }));
        let ids: Vec<&str> = st.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert!(st.get("a").unwrap().reused);
        assert_eq!(st.status("c"), Some(StepStatus::Pending));
    }
}
