//! Reports: [`Execution`] (one plan revision run by a [`Runner`](crate::runner::Runner)) and
//! [`RunReport`] (a whole run, the CLI's `--json` contract), built from the run's journal
//! by [`RunReport::from_stored`] whether the run is live, finished or read back later.

use std::collections::HashMap;

use plan_core::{
    Event, EventKind, Plan, RunId, RunState, RunStatus, StepId, StepState, StepStatus, Timestamp,
};
use plan_llm::{Usage, UsageTotals};
use serde::{Deserialize, Serialize};

use crate::store::StoredRun;

/// A run's model usage, derived from its journal: one call per `llm_call` event (every
/// model call a run makes is journaled as one, by
/// [`llm_call_event`](crate::context::llm_call_event)). The report's usage, the budget
/// carried into a continuation and a replay's check that no model was called all read it
/// here.
pub fn usage_of(events: &[Event]) -> UsageTotals {
    let mut totals = UsageTotals::default();
    for e in events {
        if let EventKind::LlmCall {
            prompt_tokens,
            completion_tokens,
            ..
        } = &e.kind
        {
            totals.add_call(Usage::new(*prompt_tokens, *completion_tokens));
        }
    }
    totals
}

/// What one execution of a plan revision did ([`Runner::execute`](crate::runner::Runner::execute)):
/// what a strategy looks at to decide what comes next.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Execution {
    /// The run's id.
    pub run_id: RunId,
    /// How it ended: `succeeded` when every step completed, `failed` when a step failed or
    /// was skipped, `cancelled` when cancelled.
    pub status: RunStatus,
    /// The plan that ran (for a streamed plan: every step received).
    pub plan: Plan,
    /// The plan revision that ran.
    pub revision: u32,
    /// Every step of the plan, in plan order.
    pub steps: Vec<StepState>,
    /// Model usage of the steps.
    pub usage: UsageTotals,
    /// How long it took.
    pub duration_ms: u64,
}

impl Execution {
    /// The state of a step.
    pub fn step(&self, id: &str) -> Option<&StepState> {
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
            .filter(|s| s.status == StepStatus::Completed)
            .filter_map(|s| Some((s.id.clone(), s.output.clone()?)))
            .collect()
    }

    /// The steps that failed, with their errors.
    pub fn failures(&self) -> impl Iterator<Item = &StepState> {
        self.steps.iter().filter(|s| s.status == StepStatus::Failed)
    }

    /// Steps with each status.
    pub fn count(&self, status: StepStatus) -> usize {
        self.steps.iter().filter(|s| s.status == status).count()
    }
}

/// One replan of a run.
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

/// What a run did, in the shape of the CLI's `--json` contract: `run_id`, `status`,
/// `goal`, `strategy`, `model`, `plan`, `steps`, `answer`, `usage`, `replans`,
/// `duration_ms`, `warnings`, then `failure` and `replan_log` when there are any, and the extras a
/// strategy added (`tree`, `critiques`, `repairs`, ...) as top-level keys.
///
/// Built from the run's journal by [`from_stored`](Self::from_stored): `plan run --json`,
/// `plan show --json` and a server print the same object for the same run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunReport {
    /// The run's id (for `show` and `resume`).
    pub run_id: RunId,
    /// Where it stands or how it ended.
    pub status: RunStatus,
    /// The goal.
    pub goal: String,
    /// The strategy (`dag`, `adaptive`, ...), when one ran it.
    pub strategy: Option<String>,
    /// The model (its `provider:model` spec or provider name; never a key).
    pub model: Option<String>,
    /// The latest plan revision (every revision is in the events and the store); `null`
    /// before planning.
    pub plan: Option<Plan>,
    /// Every step of that plan, in plan order.
    pub steps: Vec<StepState>,
    /// The answer, when the run succeeded.
    pub answer: Option<String>,
    /// Model usage.
    pub usage: UsageTotals,
    /// How many times the plan was revised after a failure.
    pub replans: u32,
    /// Wall-clock time of the latest session of the run (until now while it runs).
    pub duration_ms: u64,
    /// Why the run failed, in words (what failed and what to try).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Each replan, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replan_log: Vec<Replan>,
    /// Every change made to the model's plans (re-prompts, repairs, cancelled streamed
    /// steps), from the run's `plan_adjusted` events.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Parts a strategy added (`tree`, `critiques`, `repairs`, ...), as top-level keys.
    #[serde(flatten)]
    pub extras: serde_json::Map<String, serde_json::Value>,
    /// Every event of the run, in order (not serialised: `--events FILE` has them).
    #[serde(skip)]
    pub events: Vec<Event>,
}

impl RunReport {
    /// The report of a stored run: the journal's events replayed into each step's state
    /// ([`RunState::apply`]), with the committed outputs as the truth for completed steps.
    pub fn from_stored(run: &StoredRun) -> Self {
        let mut state = RunState::default();
        let mut replan_log = Vec::new();
        let mut warnings = Vec::new();
        let mut session_start: Option<Timestamp> = None;
        let mut session_end: Option<Timestamp> = None;
        for e in &run.events {
            state.apply(e);
            match &e.kind {
                EventKind::RunStarted { .. } => {
                    session_start = Some(e.ts);
                    session_end = None;
                }
                EventKind::RunFinished { .. } => session_end = Some(e.ts),
                EventKind::PlanAdjusted { changes } => warnings.extend(changes.iter().cloned()),
                EventKind::Replanned {
                    revision,
                    reason,
                    kept,
                    ..
                } => replan_log.push(Replan {
                    revision: *revision,
                    reason: reason.clone(),
                    kept: kept.clone(),
                }),
                _ => {}
            }
        }
        let plan = run.latest_plan().map(|p| p.plan.clone());
        if let Some(plan) = &plan {
            state.sync_with_plan(plan);
        }
        for out in &run.outputs {
            state.record_output(&out.step, out.output.clone(), out.fallback);
        }
        let duration_ms = match session_start {
            Some(start) => session_end
                .unwrap_or_else(Timestamp::now)
                .unix_millis()
                .saturating_sub(start.unix_millis()),
            None => 0,
        };
        RunReport {
            run_id: run.record.id.clone(),
            status: run.status,
            goal: run.record.goal.clone(),
            strategy: run.record.strategy.clone(),
            model: run.record.model.clone(),
            plan,
            steps: state.into_steps(),
            answer: run.answer.clone(),
            usage: usage_of(&run.events),
            replans: replan_log.len() as u32,
            duration_ms,
            failure: run.failure.clone(),
            replan_log,
            warnings,
            extras: run.extras.clone(),
            events: run
                .events
                .iter()
                .filter(|e| !e.kind.is_journal_only())
                .cloned()
                .collect(),
        }
    }

    /// The state of a step.
    pub fn step(&self, id: &str) -> Option<&StepState> {
        self.steps.iter().find(|s| s.id.as_str() == id)
    }

    /// The output of a completed step.
    pub fn output(&self, id: &str) -> Option<&str> {
        self.step(id).and_then(|s| s.output.as_deref())
    }

    /// Whether the run succeeded.
    pub fn is_success(&self) -> bool {
        self.status == RunStatus::Succeeded
    }

    /// Steps with each status.
    pub fn count(&self, status: StepStatus) -> usize {
        self.steps.iter().filter(|s| s.status == status).count()
    }

    /// The steps that failed, with their errors.
    pub fn failures(&self) -> impl Iterator<Item = &StepState> {
        self.steps.iter().filter(|s| s.status == StepStatus::Failed)
    }

    /// An extra a strategy added, decoded (`report.extra::<Vec<Critique>>("critiques")`).
    pub fn extra<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.extras
            .get(key)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }

    /// The report as pretty JSON (the CLI's `--json` output).
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
