//! The mechanical repair pass applied when re-prompting did not give a valid plan.

use std::collections::{HashMap, HashSet};

use plan_core::{Plan, PlanGraph, PlanProblem, Step, StepId};

/// Fixes what can be fixed without the model: empty ids, duplicate ids, self and unknown
/// dependencies, cycles (the dependency closing each cycle is removed) and too many steps.
/// Returns the plan and the changes made, in words.
pub(crate) fn repair_plan(plan: Plan, max_steps: usize) -> (Plan, Vec<String>) {
    let mut changes = Vec::new();
    let goal = plan.goal.clone();
    let mut steps: Vec<Step> = Vec::new();
    let mut ids = HashSet::new();
    for (i, mut s) in plan.steps.into_iter().enumerate() {
        if s.description.trim().is_empty() {
            changes.push(format!("dropped step #{} with an empty description", i + 1));
            continue;
        }
        if s.id.as_str().trim().is_empty() {
            let id = unique(&ids, &format!("step_{}", i + 1));
            changes.push(format!("gave step #{} the id `{id}`", i + 1));
            s.id = StepId::new(id);
        }
        if ids.contains(&s.id) {
            let id = unique(&ids, s.id.as_str());
            changes.push(format!("renamed a second step `{}` to `{id}`", s.id));
            s.id = StepId::new(id);
        }
        ids.insert(s.id.clone());
        steps.push(s);
    }
    if steps.len() > max_steps {
        changes.push(format!(
            "dropped the last {} steps to stay within {max_steps}",
            steps.len() - max_steps
        ));
        steps.truncate(max_steps);
        let ids: HashSet<StepId> = steps.iter().map(|s| s.id.clone()).collect();
        for s in &mut steps {
            s.dependencies.retain(|d| ids.contains(d));
        }
    }
    let ids: HashSet<StepId> = steps.iter().map(|s| s.id.clone()).collect();
    for s in &mut steps {
        let before = s.dependencies.len();
        let own = s.id.clone();
        let mut seen = HashSet::new();
        s.dependencies
            .retain(|d| d != &own && ids.contains(d) && seen.insert(d.clone()));
        if s.dependencies.len() != before {
            changes.push(format!(
                "removed self, unknown or repeated dependencies of `{}`",
                s.id
            ));
        }
    }
    // Break cycles: remove the dependency that closes each cycle reported, until none is.
    for _ in 0..steps.len().max(1) {
        let plan = Plan::new(goal.clone(), steps.clone());
        let Err(errors) = PlanGraph::with_limits(plan, &plan_core::Limits::with_max_steps(usize::MAX)) else {
            break;
        };
        let mut cut = false;
        for p in &errors.problems {
            if let PlanProblem::Cycle { path } = p {
                if let [from, to, ..] = path.as_slice() {
                    let index: HashMap<&StepId, usize> =
                        steps.iter().enumerate().map(|(i, s)| (&s.id, i)).collect();
                    if let Some(&i) = index.get(from) {
                        let to = to.clone();
                        steps[i].dependencies.retain(|d| d != &to);
                        changes.push(format!(
                            "removed the dependency of `{from}` on `{to}` to break a cycle"
                        ));
                        cut = true;
                        break;
                    }
                }
            }
        }
        if !cut {
            break;
        }
    }
    (Plan::new(goal, steps), changes)
}

fn unique(ids: &HashSet<StepId>, base: &str) -> String {
    (2..)
        .map(|n| format!("{base}_{n}"))
        .find(|c| !ids.contains(c.as_str()))
        .unwrap_or_else(|| base.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repairs_cycles_duplicates_and_unknown_dependencies() {
        let plan = Plan::new(
            "g",
            vec![
                Step::new("a", "a").depends_on(["c"]),
                Step::new("b", "b").depends_on(["a", "zz", "b"]),
                Step::new("c", "c").depends_on(["b"]),
                Step::new("a", "again"),
            ],
        );
        let (plan, changes) = repair_plan(plan, 10);
        assert!(PlanGraph::new(plan.clone()).is_ok(), "{changes:?}");
        assert_eq!(plan.steps[3].id.as_str(), "a_2");
        assert!(changes.iter().any(|c| c.contains("cycle")));
    }
}
