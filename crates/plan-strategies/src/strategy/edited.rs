//! An edited plan approved in place of a stored run's latest one: what the run has done
//! stays done.
//!
//! A run stopped for approval may have finished steps already (an adaptive run whose
//! replan waits). A step of the edited plan is **unchanged** when the run has committed
//! an output for its id and the step is the one that produced it: the same description,
//! kind, agent, fallback, expected output, program (`code`, `lang`) and dependencies (in
//! any order, each one itself kept). An unchanged step keeps its output and is never run
//! again. A changed step whose id already has an output runs again under a fresh id
//! (`b_v2`), since a run commits one output per step id; the steps that depend on it follow
//! the new id, so they are changed too and run again after it. Every rename is reported.

use std::collections::{HashMap, HashSet};

use plan_core::{Limits, Plan, PlanGraph, Step, StepId};
use plan_exec::session::ResumePoint;
use plan_exec::store::StoredRun;

use super::PlanStart;

/// Where an approved, edited plan starts: the plan to run (changed steps renamed), the
/// outputs kept, and each change made to the edit, in words.
#[derive(Debug)]
pub(crate) struct EditedStart {
    /// The start, not yet recorded in the session.
    pub(crate) start: PlanStart,
    /// Each step renamed because it changed after it had completed.
    pub(crate) changes: Vec<String>,
}

/// Starts `plan`, approved in place of the latest plan of `stored`, as revision
/// `revision`, keeping the outputs of its unchanged steps (see the module docs).
pub(crate) fn edited_start(
    stored: &StoredRun,
    point: &ResumePoint,
    plan: Plan,
    revision: u32,
) -> EditedStart {
    carried_start(stored, point, plan, revision, "the approved plan")
}

/// Starts `plan`, which replaces whatever `stored` ran before (an approved edit, or a
/// plan made again because planning had not finished), as revision `revision`, keeping
/// the outputs of its unchanged steps (see the module docs). `by` names the new plan in
/// the changes reported (`the approved plan changed it`).
pub(crate) fn carried_start(
    stored: &StoredRun,
    point: &ResumePoint,
    plan: Plan,
    revision: u32,
    by: &str,
) -> EditedStart {
    let done = done_steps(stored);
    let mut taken: HashSet<StepId> = done.keys().cloned().collect();
    taken.extend(plan.steps.iter().map(|s| s.id.clone()));
    let mut renames: HashMap<StepId, StepId> = HashMap::new();
    let mut completed = HashMap::new();
    let mut changes = Vec::new();
    let mut steps = plan.steps.clone();
    for i in running_order(&plan) {
        let as_edited = &plan.steps[i];
        let step = &mut steps[i];
        for d in &mut step.dependencies {
            if let Some(new) = renames.get(d) {
                d.clone_from(new);
            }
        }
        let Some((ran, output)) = done.get(&step.id) else {
            continue;
        };
        if ran.as_ref().is_some_and(|ran| unchanged(ran, step)) {
            completed.insert(step.id.clone(), output.clone());
            continue;
        }
        let new = fresh_id(&step.id, &taken);
        taken.insert(new.clone());
        let why = if ran.as_ref().is_some_and(|ran| unchanged(ran, as_edited)) {
            "a step it depends on runs again".to_owned()
        } else {
            format!("{by} changed it")
        };
        changes.push(format!(
            "step `{}` had completed, but {why}: it runs again as `{new}`, since a run keeps one output per step id",
            step.id
        ));
        renames.insert(step.id.clone(), new.clone());
        step.id = new;
    }
    let prior_attempts = steps
        .iter()
        .filter(|s| !completed.contains_key(&s.id))
        .filter_map(|s| {
            let n = stored.attempts(s.id.as_str());
            (n > 0).then(|| (s.id.clone(), n))
        })
        .collect();
    let start = PlanStart {
        revision,
        completed,
        prior_attempts,
        replans: point.replans,
        ..PlanStart::new(Plan::new(plan.goal, steps))
    };
    EditedStart { start, changes }
}

/// Every step of the run with a committed output: the step as it ran (from the plan
/// revision the output was committed under, else the latest revision holding it) and its
/// output.
fn done_steps(stored: &StoredRun) -> HashMap<StepId, (Option<Step>, String)> {
    stored
        .outputs
        .iter()
        .map(|out| {
            let id = out.step.as_str();
            let in_revision = stored
                .plans
                .iter()
                .find(|p| p.revision == out.revision)
                .and_then(|p| p.plan.step(id));
            let latest_holding = || {
                stored
                    .plans
                    .iter()
                    .filter_map(|p| p.plan.step(id).map(|s| (p.revision, s)))
                    .max_by_key(|(revision, _)| *revision)
                    .map(|(_, s)| s)
            };
            let ran = in_revision.or_else(latest_holding).cloned();
            (out.step.clone(), (ran, out.output.clone()))
        })
        .collect()
}

/// Whether `now` is the step `ran` was: every field the same, dependencies in any order.
fn unchanged(ran: &Step, now: &Step) -> bool {
    let mut ran = ran.clone();
    let mut now = now.clone();
    ran.dependencies.sort();
    now.dependencies.sort();
    ran == now
}

/// The plan's steps, dependencies first (plan order if the plan is invalid).
fn running_order(plan: &Plan) -> Vec<usize> {
    match PlanGraph::with_limits(plan.clone(), &Limits::with_max_steps(usize::MAX)) {
        Ok(graph) => graph.topological_order(),
        Err(_) => (0..plan.steps.len()).collect(),
    }
}

/// `id_v2`, `id_v3`, ...: the first not `taken`.
fn fresh_id(id: &StepId, taken: &HashSet<StepId>) -> StepId {
    (2u32..)
        .map(|n| StepId::new(format!("{id}_v{n}")))
        .find(|candidate| !taken.contains(candidate))
        .unwrap_or_else(|| id.clone())
}

#[cfg(test)]
mod tests {
    use plan_exec::store::{PlanRevision, RunRecord, StepOutputRecord};

    use super::*;

    fn stored(plan: &Plan, outputs: &[(&str, &str)]) -> StoredRun {
        let mut run = StoredRun::new(RunRecord::new(plan.goal.clone()));
        run.plans.push(PlanRevision::new(0, plan.clone()));
        run.outputs = outputs
            .iter()
            .map(|(id, out)| StepOutputRecord::new(*id, *out))
            .collect();
        run
    }

    fn diamond() -> Plan {
        Plan::new(
            "g",
            vec![
                Step::new("a", "Do a"),
                Step::new("b", "Do b"),
                Step::new("c", "Join").depends_on(["a", "b"]),
            ],
        )
    }

    #[test]
    fn unchanged_steps_keep_their_outputs_and_changed_ones_get_fresh_ids() {
        let run = stored(&diamond(), &[("a", "A"), ("b", "B"), ("c", "C")]);
        let mut edited = diamond();
        edited.steps[1].description = "Do b better".into();
        // The same dependencies in another order are no change.
        edited.steps[2].dependencies.reverse();
        let out = edited_start(&run, &ResumePoint::default(), edited, 1);
        let ids: Vec<&str> = out.start.plan.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["a", "b_v2", "c_v2"]);
        assert_eq!(
            out.start.plan.steps[2].dependencies,
            [StepId::new("b_v2"), StepId::new("a")]
        );
        assert_eq!(out.start.completed.len(), 1);
        assert_eq!(out.start.completed[&StepId::new("a")], "A");
        assert_eq!(
            out.changes,
            [
                "step `b` had completed, but the approved plan changed it: it runs again as `b_v2`, since a run keeps one output per step id",
                "step `c` had completed, but a step it depends on runs again: it runs again as `c_v2`, since a run keeps one output per step id",
            ]
        );
        assert_eq!(out.start.revision, 1);
    }

    #[test]
    fn a_fresh_id_skips_ids_already_used() {
        let mut plan = diamond();
        plan.steps.push(Step::new("b_v2", "Another"));
        let run = stored(&plan, &[("b", "B"), ("b_v2", "B2")]);
        let mut edited = plan.clone();
        edited.steps[1].kind = plan_core::StepKind::Verify;
        let out = edited_start(&run, &ResumePoint::default(), edited, 1);
        assert_eq!(out.start.plan.steps[1].id.as_str(), "b_v3");
        assert!(out.start.completed.contains_key(&StepId::new("b_v2")));
    }

    #[test]
    fn nothing_done_keeps_the_plan_as_it_is() {
        let run = stored(&diamond(), &[]);
        let out = edited_start(&run, &ResumePoint::default(), diamond(), 1);
        assert_eq!(out.start.plan, diamond());
        assert!(out.start.completed.is_empty() && out.changes.is_empty());
    }
}
