//! Re-running a stored run, running again only what changed.
//!
//! A re-run is a new run of the same goal, linked to its parent (the report's `rerun`:
//! `parent`, `reused`, `executed`), with the parent's plan or an edited one. Each step's
//! content key ([`plan_core::step_keys`]: its text, kind, agent, fallback, program, the
//! model, and its dependencies' keys) is compared with the keys of the parent's plan: a
//! step whose key matches a step the parent finished reuses that output (a `step_reused`
//! event, `reused_from` in its state) and is not run; every other step runs, and so does
//! everything downstream of it, whose keys changed with it. `from` forces steps and their
//! downstream closure to run whatever the keys say, and so does a step with effects
//! beyond its output (marked `always_run`, a program run unisolated, a step that may call
//! MCP or agent tools; see `has_effects`): its output may differ each time, so what reads
//! it runs too. The answer is written again only when a step ran; when nothing did, the parent's
//! answer is the answer, and no model is called at all.

use std::collections::HashMap;

use plan_core::{PlanGraph, RunId, StepId, StepKind, downstream_of, step_keys};
use plan_exec::report::RunReport;
use plan_exec::session::RunSession;
use plan_exec::store::StoredRun;
use plan_sandbox::SandboxChoice;
use serde_json::json;
use tracing::Instrument as _;

use crate::agent::{Agent, RunHandle};
use crate::error::StrategyError;
use crate::forecast::PlanSource;
use crate::strategy::PlanStart;

/// What to change in a re-run.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Rerun {
    /// The plan to run instead of the parent's latest (an edited copy of it).
    pub plan: Option<plan_core::Plan>,
    /// Steps to run again whatever their keys say, with everything downstream of them.
    pub from: Vec<StepId>,
}

impl Rerun {
    /// A re-run of the parent's plan as it is.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `plan` in place of the parent's.
    pub fn with_plan(mut self, plan: plan_core::Plan) -> Self {
        self.plan = Some(plan);
        self
    }

    /// Runs `step` and its downstream closure again.
    pub fn from_step(mut self, step: impl Into<StepId>) -> Self {
        self.from.push(step.into());
        self
    }
}

/// A re-run worked out before it starts: the plan and the outputs it reuses.
struct Prepared {
    plan: plan_core::Plan,
    reused: HashMap<StepId, String>,
    parent: RunId,
    parent_answer: Option<String>,
}

impl Agent {
    /// Re-runs `parent` (a stored run with a plan) as a new run of this agent: the steps
    /// whose content keys match steps the parent finished reuse their outputs; the rest run
    /// (see the module docs). The agent should be built for the parent's spec (its
    /// strategy, limits, tools), with the model changed if the re-run is to use another;
    /// a changed model changes every key, so every step runs.
    ///
    /// # Errors
    /// [`StrategyError::Config`] when the parent has no plan (or only the part streamed
    /// before planning stopped) or `from` names a step the plan does not have; [`StrategyError::Plan`] for an invalid edited plan; as
    /// [`execute`](Self::execute) for the run.
    pub async fn rerun(
        &self,
        parent: &StoredRun,
        rerun: Rerun,
    ) -> Result<RunReport, StrategyError> {
        let prepared = self.prepare_rerun(parent, rerun)?;
        let session = self.open(&parent.record.goal).await?;
        self.run_rerun(session, prepared).await
    }

    /// As [`rerun`](Self::rerun), in the background: the handle has the new run's id at
    /// once (see [`start`](Self::start)).
    ///
    /// # Errors
    /// As [`rerun`](Self::rerun), for what is known before the run starts.
    pub async fn start_rerun(
        &self,
        parent: &StoredRun,
        rerun: Rerun,
    ) -> Result<RunHandle, StrategyError> {
        let prepared = self.prepare_rerun(parent, rerun)?;
        self.spawn_run(&parent.record.goal, move |agent, session| async move {
            agent.run_rerun(session, prepared).await
        })
        .await
    }

    fn prepare_rerun(&self, parent: &StoredRun, rerun: Rerun) -> Result<Prepared, StrategyError> {
        let parent_id = parent.record.id.clone();
        let Some(latest) = parent.latest_plan() else {
            return Err(StrategyError::Config(format!(
                "run `{parent_id}` has no plan to re-run: it stopped before planning finished (resume it instead)"
            )));
        };
        if rerun.plan.is_none() && plan_exec::session::ResumePoint::of(parent).planning_unfinished {
            return Err(StrategyError::Config(format!(
                "run `{parent_id}` has only part of a plan: planning stopped before it was complete (resume it instead, or give a whole plan to re-run)"
            )));
        }
        let plan = rerun.plan.unwrap_or_else(|| latest.plan.clone());
        PlanGraph::with_limits(plan.clone(), &plan_core::Limits::with_max_steps(usize::MAX))?;
        if let Some(unknown) = rerun.from.iter().find(|s| plan.step(s.as_str()).is_none()) {
            return Err(StrategyError::Config(format!(
                "step `{unknown}`, to run again, is not in the plan; its steps are {}",
                plan.steps
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let parent_model = parent.record.model.clone().unwrap_or_default();
        let parent_keys = step_keys(&latest.plan, &parent_model);
        let finished: HashMap<&str, &str> = parent
            .outputs
            .iter()
            .filter_map(|o| {
                let key = parent_keys.get(&o.step)?;
                Some((key.as_str(), o.output.as_str()))
            })
            .collect();
        let keys = step_keys(&plan, &self.inner.model);
        // Steps asked for and steps with effects beyond their output are run, and
        // whatever reads them.
        let mut from = rerun.from.clone();
        from.extend(
            plan.steps
                .iter()
                .filter(|s| self.has_effects(s))
                .map(|s| s.id.clone()),
        );
        let forced = downstream_of(&plan, &from);
        let reused = plan
            .steps
            .iter()
            .filter(|s| !forced.contains(&s.id))
            .filter_map(|s| {
                let output = finished.get(keys[&s.id].as_str())?;
                Some((s.id.clone(), (*output).to_owned()))
            })
            .collect();
        Ok(Prepared {
            plan,
            reused,
            parent: parent_id,
            parent_answer: parent.answer.clone(),
        })
    }

    /// Whether `step` may do more than produce its output, so that a re-run must run it
    /// again: marked `always_run`; a program run unisolated (the `process` sandbox, where
    /// it can write anywhere); a model step of a run whose steps may call MCP servers'
    /// tools or agent profiles' (which may change things: only the built-in tools are
    /// known to be read-only or sandboxed).
    fn has_effects(&self, step: &plan_core::Step) -> bool {
        let spec = &self.inner.spec;
        let program = step.kind == StepKind::Code || step.code.is_some();
        step.always_run
            || (program && spec.sandbox == SandboxChoice::Process)
            || (!program && (!spec.needs.mcp.is_empty() || spec.needs.agents))
    }

    async fn run_rerun(
        &self,
        session: RunSession,
        prepared: Prepared,
    ) -> Result<RunReport, StrategyError> {
        let Prepared {
            plan,
            reused,
            parent,
            parent_answer,
        } = prepared;
        let cx = &self.inner.cx;
        let nothing_to_run = reused.len() == plan.steps.len();
        let (kept, executed): (Vec<&StepId>, Vec<&StepId>) = plan
            .steps
            .iter()
            .map(|s| &s.id)
            .partition(|id| reused.contains_key(*id));
        session.set_extra(
            "rerun",
            json!({ "parent": parent, "reused": kept, "executed": executed }),
        );
        let run = async {
            let started = async {
                cx.plan_created(&session, &plan, 0).await?;
                for s in &plan.steps {
                    if let Some(output) = reused.get(&s.id) {
                        session
                            .reuse_output(&s.id, output.clone(), &parent, 0)
                            .await?;
                    }
                }
                let start = PlanStart {
                    completed: reused.clone(),
                    announced: true,
                    ..PlanStart::new(plan.clone())
                };
                let mut outcome = self.inner.strategy.execute(cx, &session, start).await?;
                // Nothing ran, so nothing the answer reads changed: the parent's answer.
                if nothing_to_run && outcome.status == plan_core::RunStatus::Succeeded {
                    outcome.answer.clone_from(&parent_answer);
                }
                Ok::<_, StrategyError>(outcome)
            }
            .await;
            crate::answer::finish(cx, &session, started, self.ending(PlanSource::Given)).await
        }
        .instrument(session.span().clone());
        plan_exec::replay::recording(&session, self.inner.spec.record_requests, run).await
    }
}
