//! [`repair`]: turns a weak model's almost-valid plan into one that validates, reporting
//! every change.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;

use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};

use crate::model::{Plan, Step, StepId};

/// One change [`repair`] made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RepairChange {
    /// A step had an empty id and was given one.
    GeneratedId {
        /// Position of the step in the original plan (0-based).
        index: usize,
        /// The new id.
        id: StepId,
    },
    /// A step repeated an earlier step's id and was renamed; dependencies on the id keep
    /// naming the first step.
    RenamedDuplicateId {
        /// Position of the step in the original plan (0-based).
        index: usize,
        /// The id it had.
        from: StepId,
        /// The id it has now.
        to: StepId,
    },
    /// A step had an empty description and was dropped; its dependents now depend on its
    /// dependencies.
    DroppedEmptyStep {
        /// The step.
        step: StepId,
    },
    /// A step said the same as an earlier one and was merged into it: the kept step also
    /// waits for the removed step's dependencies, and dependents of the removed step depend
    /// on the kept one.
    MergedDuplicate {
        /// The step removed.
        removed: StepId,
        /// The step kept.
        kept: StepId,
    },
    /// A dependency of a step on itself was dropped.
    DroppedSelfDependency {
        /// The step.
        step: StepId,
    },
    /// A dependency on an id that is not a step was dropped.
    DroppedUnknownDependency {
        /// The step.
        step: StepId,
        /// The missing id.
        dependency: StepId,
    },
    /// A dependency listed twice was listed once.
    DroppedRepeatedDependency {
        /// The step.
        step: StepId,
        /// The dependency.
        dependency: StepId,
    },
    /// A dependency on a later step (in plan order) that closed a cycle was dropped.
    BrokeCycle {
        /// The step that lost a dependency.
        step: StepId,
        /// The dependency dropped.
        dependency: StepId,
        /// The cycle it closed, starting and ending with `step`: each depends on the next.
        cycle: Vec<StepId>,
    },
}

impl fmt::Display for RepairChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepairChange::GeneratedId { index, id } => {
                write!(f, "step #{} had no id: named it `{id}`", index + 1)
            }
            RepairChange::RenamedDuplicateId { index, from, to } => write!(
                f,
                "step #{} reused the id `{from}`: renamed it `{to}` (dependencies on `{from}` mean the first step)",
                index + 1
            ),
            RepairChange::DroppedEmptyStep { step } => write!(
                f,
                "step `{step}` had no description: dropped it, its dependents now wait for its dependencies"
            ),
            RepairChange::MergedDuplicate { removed, kept } => write!(
                f,
                "step `{removed}` repeated step `{kept}`: merged it into `{kept}`"
            ),
            RepairChange::DroppedSelfDependency { step } => {
                write!(
                    f,
                    "step `{step}` depended on itself: dropped that dependency"
                )
            }
            RepairChange::DroppedUnknownDependency { step, dependency } => write!(
                f,
                "step `{step}` depended on `{dependency}`, which is not a step: dropped that dependency"
            ),
            RepairChange::DroppedRepeatedDependency { step, dependency } => write!(
                f,
                "step `{step}` listed `{dependency}` more than once: kept one"
            ),
            RepairChange::BrokeCycle {
                step,
                dependency,
                cycle,
            } => {
                let cycle: Vec<&str> = cycle.iter().map(StepId::as_str).collect();
                write!(
                    f,
                    "dropped the dependency of `{step}` on the later step `{dependency}` to break the cycle {}",
                    cycle.join(" -> ")
                )
            }
        }
    }
}

/// Everything [`repair`] changed, in the order it changed it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RepairReport {
    /// The changes.
    pub changes: Vec<RepairChange>,
}

impl RepairReport {
    /// Whether the plan was left as it was.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Number of changes.
    pub fn len(&self) -> usize {
        self.changes.len()
    }
}

impl fmt::Display for RepairReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes.is_empty() {
            return write!(f, "the plan needed no repair");
        }
        let n = self.changes.len();
        write!(
            f,
            "repaired the plan ({n} change{})",
            if n == 1 { "" } else { "s" }
        )?;
        for c in &self.changes {
            write!(f, "\n  - {c}")?;
        }
        Ok(())
    }
}

/// Repairs the usual faults of model-written plans and reports every change.
///
/// In order: steps without an id get one (`step-3`); a repeated id is renamed (`fetch-2`);
/// steps without a description are dropped (their dependents inherit their
/// dependencies); a step whose kind, code and description (ignoring case and spacing) repeat
/// an earlier step's is merged into it; self-dependencies, dependencies on unknown ids and
/// repeated dependencies are dropped; and each cycle is broken by dropping the dependencies
/// inside it that point to a later step in plan order, so the plan order of the cycle's
/// steps becomes their running order.
///
/// The result validates with [`PlanGraph::new`](crate::PlanGraph::new) unless it is empty
/// or longer than the limit. Nothing else is changed: steps keep their order and fields.
///
/// ```
/// use plan_core::{Plan, PlanGraph, Step, repair};
///
/// let plan = Plan::new("g", vec![
///     Step::new("a", "search the web").depends_on(["a", "b"]),
///     Step::new("b", "summarise").depends_on(["a", "ghost"]),
///     Step::new("c", "Search  the web"),
/// ]);
/// let (plan, report) = repair(plan);
/// assert!(PlanGraph::new(plan.clone()).is_ok());
/// assert_eq!(plan.steps.len(), 2);
/// assert_eq!(report.len(), 4, "{report}");
/// ```
pub fn repair(plan: Plan) -> (Plan, RepairReport) {
    let mut changes = Vec::new();
    let Plan { goal, steps } = plan;
    let mut steps = fix_ids(steps, &mut changes);
    drop_empty_steps(&mut steps, &mut changes);
    merge_duplicates(&mut steps, &mut changes);
    clean_dependencies(&mut steps, &mut changes);
    break_cycles(&mut steps, &mut changes);
    (Plan::new(goal, steps), RepairReport { changes })
}

/// Gives empty ids a name and renames repeated ids. Dependencies are untouched: a repeated
/// id keeps naming the first step that has it.
fn fix_ids(mut steps: Vec<Step>, changes: &mut Vec<RepairChange>) -> Vec<Step> {
    let mut taken: HashSet<String> = steps
        .iter()
        .map(|s| s.id.as_str().to_owned())
        .filter(|id| !id.trim().is_empty())
        .collect();
    let mut first_seen: HashSet<StepId> = HashSet::new();
    for (index, step) in steps.iter_mut().enumerate() {
        if step.id.as_str().trim().is_empty() {
            let id = fresh_id(&mut taken, |k| match k {
                1 => format!("step-{}", index + 1),
                k => format!("step-{}-{k}", index + 1),
            });
            changes.push(RepairChange::GeneratedId {
                index,
                id: id.clone(),
            });
            step.id = id;
        } else if !first_seen.insert(step.id.clone()) {
            let base = step.id.as_str().to_owned();
            let to = fresh_id(&mut taken, |k| format!("{base}-{}", k + 1));
            changes.push(RepairChange::RenamedDuplicateId {
                index,
                from: step.id.clone(),
                to: to.clone(),
            });
            step.id = to;
        }
    }
    steps
}

/// The first of `candidate(1)`, `candidate(2)`, ... that is free; marks it taken.
fn fresh_id(taken: &mut HashSet<String>, candidate: impl Fn(usize) -> String) -> StepId {
    let mut k = 1;
    let mut id = candidate(k);
    while taken.contains(&id) {
        k += 1;
        id = candidate(k);
    }
    taken.insert(id.clone());
    StepId::new(id)
}

/// Drops steps with a blank description, passing their dependencies on to their
/// dependents.
fn drop_empty_steps(steps: &mut Vec<Step>, changes: &mut Vec<RepairChange>) {
    // Resolve chains of empty steps in plan order of removal: each removal rewrites the
    // dependents that remain, so later removals see the inherited dependencies.
    while let Some(pos) = steps.iter().position(|s| s.description.trim().is_empty()) {
        let removed = steps.remove(pos);
        for step in steps.iter_mut() {
            if let Some(k) = step.dependencies.iter().position(|d| *d == removed.id) {
                step.dependencies.remove(k);
                step.dependencies.retain(|d| *d != removed.id);
                for d in &removed.dependencies {
                    if *d != removed.id && !step.dependencies.contains(d) {
                        step.dependencies.push(d.clone());
                    }
                }
            }
        }
        changes.push(RepairChange::DroppedEmptyStep { step: removed.id });
    }
}

fn normalise(description: &str) -> String {
    description
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Merges steps that repeat an earlier step into it.
fn merge_duplicates(steps: &mut Vec<Step>, changes: &mut Vec<RepairChange>) {
    let mut first: HashMap<(String, &'static str, Option<String>), usize> = HashMap::new();
    let mut merged_into: HashMap<StepId, StepId> = HashMap::new();
    let mut keep = vec![true; steps.len()];
    for i in 0..steps.len() {
        let key = (
            normalise(&steps[i].description),
            steps[i].kind.as_str(),
            steps[i].code.clone(),
        );
        match first.get(&key) {
            Some(&k) => {
                let removed_deps = steps[i].dependencies.clone();
                for d in removed_deps {
                    if d != steps[k].id && !steps[k].dependencies.contains(&d) {
                        steps[k].dependencies.push(d);
                    }
                }
                keep[i] = false;
                merged_into.insert(steps[i].id.clone(), steps[k].id.clone());
                changes.push(RepairChange::MergedDuplicate {
                    removed: steps[i].id.clone(),
                    kept: steps[k].id.clone(),
                });
            }
            None => {
                first.insert(key, i);
            }
        }
    }
    if merged_into.is_empty() {
        return;
    }
    let mut k = 0;
    steps.retain(|_| {
        k += 1;
        keep[k - 1]
    });
    for step in steps.iter_mut() {
        let mut deps: Vec<StepId> = Vec::with_capacity(step.dependencies.len());
        for d in step.dependencies.drain(..) {
            match merged_into.get(&d) {
                // Depending on a step merged into this one: the merge made it a
                // self-dependency, not the model.
                Some(kept) if *kept == step.id => {}
                // Depending on both copies: keep one.
                Some(kept) if deps.contains(kept) => {}
                Some(kept) => deps.push(kept.clone()),
                None => deps.push(d),
            }
        }
        step.dependencies = deps;
    }
}

/// Drops self, unknown and repeated dependencies.
fn clean_dependencies(steps: &mut [Step], changes: &mut Vec<RepairChange>) {
    let ids: HashSet<StepId> = steps.iter().map(|s| s.id.clone()).collect();
    for step in steps.iter_mut() {
        let mut deps: Vec<StepId> = Vec::with_capacity(step.dependencies.len());
        for d in std::mem::take(&mut step.dependencies) {
            if d == step.id {
                changes.push(RepairChange::DroppedSelfDependency {
                    step: step.id.clone(),
                });
            } else if !ids.contains(&d) {
                changes.push(RepairChange::DroppedUnknownDependency {
                    step: step.id.clone(),
                    dependency: d,
                });
            } else if deps.contains(&d) {
                changes.push(RepairChange::DroppedRepeatedDependency {
                    step: step.id.clone(),
                    dependency: d,
                });
            } else {
                deps.push(d);
            }
        }
        step.dependencies = deps;
    }
}

/// Within each strongly connected group of steps, drops the dependencies that point to a
/// later step; what is left of the group follows plan order, so no cycle remains.
fn break_cycles(steps: &mut [Step], changes: &mut Vec<RepairChange>) {
    let index: HashMap<&StepId, usize> =
        steps.iter().enumerate().map(|(i, s)| (&s.id, i)).collect();
    let deps: Vec<Vec<usize>> = steps
        .iter()
        .map(|s| {
            s.dependencies
                .iter()
                .filter_map(|d| index.get(d).copied())
                .collect()
        })
        .collect();
    let mut graph = DiGraph::<(), ()>::with_capacity(steps.len(), steps.len());
    for _ in 0..steps.len() {
        graph.add_node(());
    }
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            graph.add_edge(NodeIndex::new(d), NodeIndex::new(i), ());
        }
    }
    let mut component = vec![usize::MAX; steps.len()];
    let mut drops: Vec<(usize, usize, Vec<usize>)> = Vec::new();
    for (c, scc) in petgraph::algo::tarjan_scc(&graph).into_iter().enumerate() {
        if scc.len() < 2 {
            continue;
        }
        for n in &scc {
            component[n.index()] = c;
        }
        let mut members: Vec<usize> = scc.iter().map(|n| n.index()).collect();
        members.sort_unstable();
        for &i in &members {
            for &d in &deps[i] {
                if d > i && component[d] == c {
                    let cycle = path_back(&deps, &component, d, i);
                    drops.push((i, d, cycle));
                }
            }
        }
    }
    drops.sort();
    let ids: Vec<StepId> = steps.iter().map(|s| s.id.clone()).collect();
    for (i, d, cycle) in drops {
        steps[i].dependencies.retain(|x| *x != ids[d]);
        let mut cycle: Vec<StepId> = cycle.into_iter().map(|k| ids[k].clone()).collect();
        cycle.insert(0, ids[i].clone());
        changes.push(RepairChange::BrokeCycle {
            step: ids[i].clone(),
            dependency: ids[d].clone(),
            cycle,
        });
    }
}

/// The shortest chain of dependencies from `from` to `to` inside one component, both ends
/// included.
fn path_back(deps: &[Vec<usize>], component: &[usize], from: usize, to: usize) -> Vec<usize> {
    let mut parent: HashMap<usize, usize> = HashMap::from([(from, from)]);
    let mut queue = VecDeque::from([from]);
    while let Some(x) = queue.pop_front() {
        if x == to {
            break;
        }
        for &d in &deps[x] {
            if component[d] == component[from] && !parent.contains_key(&d) {
                parent.insert(d, x);
                queue.push_back(d);
            }
        }
    }
    let mut path = vec![to];
    let mut cur = to;
    while let Some(&p) = parent.get(&cur) {
        if p == cur {
            break;
        }
        path.push(p);
        cur = p;
    }
    path.reverse();
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::PlanGraph;

    fn ids(plan: &Plan) -> Vec<&str> {
        plan.steps.iter().map(|s| s.id.as_str()).collect()
    }

    #[test]
    fn a_valid_plan_is_left_alone() {
        let plan = Plan::new(
            "g",
            vec![
                Step::new("b", "second").depends_on(["a"]),
                Step::new("a", "first"),
            ],
        );
        let (fixed, report) = repair(plan.clone());
        assert_eq!(fixed, plan);
        assert!(report.is_empty());
        assert_eq!(report.to_string(), "the plan needed no repair");
    }

    #[test]
    fn ids_are_generated_and_made_unique() {
        let plan = Plan::new(
            "g",
            vec![
                Step::new("a", "one"),
                Step::new("a", "two").depends_on(["a"]),
                Step::new("", "three").depends_on(["a"]),
                Step::new("a-2", "four"),
            ],
        );
        let (fixed, report) = repair(plan);
        assert_eq!(ids(&fixed), ["a", "a-3", "step-3", "a-2"]);
        assert_eq!(fixed.steps[1].dependencies, vec![StepId::new("a")]);
        assert!(PlanGraph::new(fixed).is_ok(), "{report}");
        assert_eq!(
            report.changes[0],
            RepairChange::RenamedDuplicateId {
                index: 1,
                from: "a".into(),
                to: "a-3".into()
            }
        );
    }

    #[test]
    fn duplicates_merge_and_dependents_are_rewired() {
        let plan = Plan::new(
            "g",
            vec![
                Step::new("s1", "Search the web"),
                Step::new("x", "fetch"),
                Step::new("s2", "search  the WEB ").depends_on(["x"]),
                Step::new("r", "report").depends_on(["s1", "s2"]),
            ],
        );
        let (fixed, report) = repair(plan);
        assert_eq!(ids(&fixed), ["s1", "x", "r"]);
        assert_eq!(fixed.steps[0].dependencies, vec![StepId::new("x")]);
        assert_eq!(fixed.steps[2].dependencies, vec![StepId::new("s1")]);
        assert_eq!(
            report.changes,
            vec![RepairChange::MergedDuplicate {
                removed: "s2".into(),
                kept: "s1".into()
            }]
        );
    }

    #[test]
    fn empty_steps_pass_their_dependencies_on() {
        let plan = Plan::new(
            "g",
            vec![
                Step::new("a", "a"),
                Step::new("gap", " ").depends_on(["a"]),
                Step::new("gap2", "").depends_on(["gap"]),
                Step::new("c", "c").depends_on(["gap2"]),
            ],
        );
        let (fixed, report) = repair(plan);
        assert_eq!(ids(&fixed), ["a", "c"]);
        assert_eq!(fixed.steps[1].dependencies, vec![StepId::new("a")]);
        assert_eq!(report.len(), 2);
    }

    #[test]
    fn cycles_are_broken_by_plan_order() {
        let plan = Plan::new(
            "g",
            vec![
                Step::new("a", "a").depends_on(["c"]),
                Step::new("b", "b").depends_on(["a"]),
                Step::new("c", "c").depends_on(["b"]),
                Step::new("d", "d").depends_on(["e"]), // a forward reference, no cycle
                Step::new("e", "e"),
            ],
        );
        let (fixed, report) = repair(plan);
        assert!(fixed.steps[0].dependencies.is_empty());
        assert_eq!(fixed.steps[3].dependencies, vec![StepId::new("e")]);
        assert_eq!(
            report.changes,
            vec![RepairChange::BrokeCycle {
                step: "a".into(),
                dependency: "c".into(),
                cycle: vec!["a".into(), "c".into(), "b".into(), "a".into()],
            }]
        );
        assert_eq!(
            report.to_string(),
            "repaired the plan (1 change)\n  - dropped the dependency of `a` on the later step `c` to break the cycle a -> c -> b -> a"
        );
        assert!(PlanGraph::new(fixed).is_ok());
    }

    #[test]
    fn report_serialises() {
        let report = RepairReport {
            changes: vec![RepairChange::DroppedUnknownDependency {
                step: "b".into(),
                dependency: "zz".into(),
            }],
        };
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(
            json,
            r#"{"changes":[{"change":"dropped_unknown_dependency","step":"b","dependency":"zz"}]}"#
        );
        assert_eq!(serde_json::from_str::<RepairReport>(&json).unwrap(), report);
    }
}
