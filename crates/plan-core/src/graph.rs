//! Validation of a [`Plan`] into a [`PlanGraph`], and queries on the dependency graph.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::index::IdIndex;
use crate::model::{Plan, Step, StepId};
use crate::state::{RunState, StepStatus};

/// Limits applied by validation.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The largest number of steps a plan may have.
    pub max_steps: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_steps: 200 }
    }
}

impl Limits {
    /// Limits with a given step cap.
    pub fn with_max_steps(max_steps: usize) -> Self {
        Self { max_steps }
    }
}

/// One thing wrong with a plan. Each names the steps involved.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanProblem {
    /// The plan has no steps.
    Empty,
    /// More steps than [`Limits::max_steps`].
    TooManySteps {
        /// Steps in the plan.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A step has an empty id (position in `steps`, 0-based).
    EmptyId {
        /// Position of the step.
        index: usize,
    },
    /// A node of a [`GoalTree`](crate::GoalTree) below the top level has an empty id.
    EmptyChildId {
        /// The full id of the parent sub-goal.
        parent: StepId,
        /// Position among the parent's children, 0-based.
        index: usize,
    },
    /// A step has an empty description.
    EmptyDescription {
        /// The step.
        step: StepId,
    },
    /// Two or more steps share an id.
    DuplicateId {
        /// The id.
        step: StepId,
        /// How many steps have it.
        count: usize,
    },
    /// A step depends on itself.
    SelfDependency {
        /// The step.
        step: StepId,
    },
    /// A step depends on an id no step has.
    UnknownDependency {
        /// The step.
        step: StepId,
        /// The missing id.
        dependency: StepId,
    },
    /// Steps depend on each other in a circle; `path` starts and ends with the same id.
    Cycle {
        /// The cycle, e.g. `[a, c, b, a]`: each step depends on the one after it.
        path: Vec<StepId>,
    },
}

impl fmt::Display for PlanProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanProblem::Empty => write!(f, "the plan has no steps: add at least one step"),
            PlanProblem::TooManySteps { count, limit } => write!(
                f,
                "the plan has {count} steps, more than the limit of {limit}: merge steps or raise the limit"
            ),
            PlanProblem::EmptyId { index } => {
                write!(
                    f,
                    "step #{} has an empty id: give it a unique id",
                    index + 1
                )
            }
            PlanProblem::EmptyChildId { parent, index } => write!(
                f,
                "child #{} of `{parent}` has an empty id: give it an id unique among its siblings",
                index + 1
            ),
            PlanProblem::EmptyDescription { step } => write!(
                f,
                "step `{step}` has an empty description: say what the step should do"
            ),
            PlanProblem::DuplicateId { step, count } => write!(
                f,
                "{count} steps have the id `{step}`: ids must be unique, rename all but one"
            ),
            PlanProblem::SelfDependency { step } => write!(
                f,
                "step `{step}` depends on itself: remove `{step}` from its dependencies"
            ),
            PlanProblem::UnknownDependency { step, dependency } => write!(
                f,
                "step `{step}` depends on `{dependency}`, which is not a step of the plan: fix the id or add the step"
            ),
            PlanProblem::Cycle { path } => {
                let path: Vec<&str> = path.iter().map(StepId::as_str).collect();
                write!(
                    f,
                    "dependency cycle {}: each step waits for the next one, so none can start; remove one of these dependencies",
                    path.join(" -> ")
                )
            }
        }
    }
}

impl std::error::Error for PlanProblem {}

/// Every problem found in a plan (never empty).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct PlanErrors {
    /// The problems, in a stable order.
    pub problems: Vec<PlanProblem>,
}

impl fmt::Display for PlanErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "invalid plan ({n} problem{})",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// A validated plan: unique ids, known dependencies, no cycles.
///
/// Steps are addressed by their position in [`Plan::steps`] (`usize`) for speed, or by id.
#[derive(Clone, Debug)]
pub struct PlanGraph {
    plan: Plan,
    pub(crate) index: IdIndex,
    /// Built on first use by [`PlanGraph::graph`].
    graph: OnceLock<DiGraph<usize, ()>>,
    pub(crate) deps: Adjacency,
    pub(crate) dependents: Adjacency,
}

impl PlanGraph {
    /// Validates `plan` with the default [`Limits`].
    ///
    /// # Errors
    /// [`PlanErrors`] listing every problem found.
    pub fn new(plan: Plan) -> Result<Self, PlanErrors> {
        Self::with_limits(plan, &Limits::default())
    }

    /// Validates `plan` with the given limits.
    ///
    /// # Errors
    /// [`PlanErrors`] listing every problem found.
    pub fn with_limits(plan: Plan, limits: &Limits) -> Result<Self, PlanErrors> {
        let mut problems = Vec::new();
        let n = plan.steps.len();
        if n == 0 {
            problems.push(PlanProblem::Empty);
        }
        if n > limits.max_steps {
            problems.push(PlanProblem::TooManySteps {
                count: n,
                limit: limits.max_steps,
            });
        }

        let steps = &plan.steps;
        let id_of = |i: usize| steps[i].id.as_str();
        let mut index = IdIndex::with_capacity(n);
        let mut dup_counts: Vec<(StepId, usize)> = Vec::new();
        // Whether position i holds the step its id resolves to (not empty, not a repeat).
        let mut canonical = vec![false; n];
        for (i, step) in steps.iter().enumerate() {
            if step.id.as_str().trim().is_empty() {
                problems.push(PlanProblem::EmptyId { index: i });
                continue;
            }
            if step.description.trim().is_empty() {
                problems.push(PlanProblem::EmptyDescription {
                    step: step.id.clone(),
                });
            }
            if index.insert(step.id.as_str(), i, id_of) {
                canonical[i] = true;
            } else {
                match dup_counts.iter_mut().find(|(id, _)| *id == step.id) {
                    Some((_, c)) => *c += 1,
                    None => dup_counts.push((step.id.clone(), 2)),
                }
            }
        }
        problems.extend(
            dup_counts
                .into_iter()
                .map(|(step, count)| PlanProblem::DuplicateId { step, count }),
        );

        let edge_guess = steps.iter().map(|s| s.dependencies.len()).sum();
        let mut deps = Adjacency::with_capacity(n, edge_guess);
        for (i, step) in steps.iter().enumerate() {
            let start = deps.targets.len();
            if canonical[i] {
                for dep in &step.dependencies {
                    if *dep == step.id {
                        problems.push(PlanProblem::SelfDependency {
                            step: step.id.clone(),
                        });
                        continue;
                    }
                    match index.get(dep.as_str(), id_of) {
                        // A repeated dependency is harmless: keep one.
                        Some(d) if deps.targets[start..].contains(&d) => {}
                        Some(d) => deps.targets.push(d),
                        None => problems.push(PlanProblem::UnknownDependency {
                            step: step.id.clone(),
                            dependency: dep.clone(),
                        }),
                    }
                }
            }
            deps.starts.push(deps.targets.len());
        }
        let dependents = deps.reversed();

        for path in cycle_paths(|i| &steps[i].id, &deps, &dependents) {
            problems.push(PlanProblem::Cycle { path });
        }

        if problems.is_empty() {
            Ok(Self {
                plan,
                index,
                graph: OnceLock::new(),
                deps,
                dependents,
            })
        } else {
            Err(PlanErrors { problems })
        }
    }

    /// The validated plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Gives the plan back.
    pub fn into_plan(self) -> Plan {
        self.plan
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.plan.steps.len()
    }

    /// Whether the plan has no steps (never true for a validated plan).
    pub fn is_empty(&self) -> bool {
        self.plan.steps.is_empty()
    }

    /// The position of the step with this id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id, |i| self.plan.steps[i].id.as_str())
    }

    /// The step at a position.
    pub fn step(&self, index: usize) -> &Step {
        &self.plan.steps[index]
    }

    /// The step with this id.
    pub fn step_by_id(&self, id: &str) -> Option<&Step> {
        self.index_of(id).map(|i| &self.plan.steps[i])
    }

    /// Positions of the steps that step `index` depends on.
    pub fn dependencies(&self, index: usize) -> &[usize] {
        &self.deps[index]
    }

    /// Positions of the steps that depend directly on step `index`.
    pub fn dependents(&self, index: usize) -> &[usize] {
        &self.dependents[index]
    }

    /// The underlying petgraph graph: node weights are step positions, an edge `a → b`
    /// means `b` depends on `a`.
    pub fn graph(&self) -> &DiGraph<usize, ()> {
        self.graph.get_or_init(|| self.deps.to_petgraph())
    }

    /// A topological order (dependencies before dependents, ties in plan order).
    pub fn topological_order(&self) -> Vec<usize> {
        let n = self.len();
        let mut indegree: Vec<usize> = (0..n).map(|i| self.deps[i].len()).collect();
        let mut queue: std::collections::VecDeque<usize> =
            (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = queue.pop_front() {
            order.push(i);
            for &d in &self.dependents[i] {
                indegree[d] -= 1;
                if indegree[d] == 0 {
                    queue.push_back(d);
                }
            }
        }
        order
    }

    /// Steps that can start now: pending in `state` (or absent from it) with every
    /// dependency completed, in plan order. A step a replan added and the state does not
    /// know yet counts as pending.
    ///
    /// This scans the whole plan; a runner that asks after every step should drive a
    /// [`Scheduler`](crate::Scheduler) instead.
    pub fn ready(&self, state: &RunState) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| {
                let pending = state
                    .status(self.plan.steps[i].id.as_str())
                    .is_none_or(|s| s == StepStatus::Pending);
                pending
                    && self.deps[i].iter().all(|&d| {
                        state
                            .status(self.plan.steps[d].id.as_str())
                            .is_some_and(StepStatus::is_completed)
                    })
            })
            .collect()
    }

    /// The steps grouped by level: level 0 has no dependencies, and a step's level is one
    /// more than its highest dependency's. Steps of a level can run together once the
    /// levels before are done. Each level is in plan order.
    pub fn levels(&self) -> Vec<Vec<usize>> {
        let mut level = vec![0usize; self.len()];
        let mut levels: Vec<Vec<usize>> = Vec::new();
        for i in self.topological_order() {
            let l = self.deps[i]
                .iter()
                .map(|&d| level[d] + 1)
                .max()
                .unwrap_or(0);
            level[i] = l;
            if levels.len() <= l {
                levels.resize_with(l + 1, Vec::new);
            }
            levels[l].push(i);
        }
        for l in &mut levels {
            l.sort_unstable();
        }
        levels
    }

    /// The number of steps on the longest dependency chain: the fewest rounds a runner
    /// with unlimited parallelism needs.
    pub fn critical_path_len(&self) -> usize {
        self.critical_path().steps.len()
    }

    /// The longest dependency chain, counting each step as 1.
    pub fn critical_path(&self) -> CriticalPath {
        self.critical_path_weighted(|_| 1.0)
    }

    /// The chain of dependencies with the largest total weight (for example expected
    /// seconds per step): the least time a run can take with unlimited parallelism.
    /// Weights that are negative or not numbers count as 0. Ties go to the chain that ends
    /// earliest in plan order.
    pub fn critical_path_weighted(&self, weight: impl Fn(usize) -> f64) -> CriticalPath {
        let n = self.len();
        let mut finish = vec![0.0f64; n];
        let mut via: Vec<Option<usize>> = vec![None; n];
        for i in self.topological_order() {
            let mut best: Option<(usize, f64)> = None;
            for &d in &self.deps[i] {
                if best.is_none_or(|(b, f)| finish[d] > f || (finish[d] == f && d < b)) {
                    best = Some((d, finish[d]));
                }
            }
            let w = weight(i);
            let w = if w.is_finite() && w > 0.0 { w } else { 0.0 };
            finish[i] = best.map_or(0.0, |(_, f)| f) + w;
            via[i] = best.map(|(d, _)| d);
        }
        let mut end: Option<usize> = None;
        for i in 0..n {
            if end.is_none_or(|e| finish[i] > finish[e]) {
                end = Some(i);
            }
        }
        let mut steps = Vec::new();
        let mut cur = end;
        while let Some(i) = cur {
            steps.push(i);
            cur = via[i];
        }
        steps.reverse();
        CriticalPath {
            length: end.map_or(0.0, |e| finish[e]),
            steps,
        }
    }

    /// Every step that depends on step `index`, directly or not, ascending: what a failure
    /// of `index` leaves unable to run.
    pub fn descendants(&self, index: usize) -> Vec<usize> {
        self.reach(index, &self.dependents)
    }

    /// Every step that step `index` depends on, directly or not, ascending.
    pub fn ancestors(&self, index: usize) -> Vec<usize> {
        self.reach(index, &self.deps)
    }

    /// Steps with no dependencies, in plan order.
    pub fn roots(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.deps[i].is_empty())
            .collect()
    }

    /// Steps nothing depends on (the plan's end results), in plan order.
    pub fn sinks(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.dependents[i].is_empty())
            .collect()
    }

    fn reach(&self, start: usize, edges: &Adjacency) -> Vec<usize> {
        if start >= self.len() {
            return Vec::new();
        }
        let mut seen = vec![false; self.len()];
        seen[start] = true;
        let mut stack: Vec<usize> = edges[start].to_vec();
        let mut out = Vec::new();
        while let Some(i) = stack.pop() {
            if !seen[i] {
                seen[i] = true;
                out.push(i);
                stack.extend(&edges[i]);
            }
        }
        out.sort_unstable();
        out
    }
}

/// The longest chain of dependencies through a plan.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CriticalPath {
    /// Its total weight (its number of steps for [`PlanGraph::critical_path`]).
    pub length: f64,
    /// The steps, first to last: each depends on the one before.
    pub steps: Vec<usize>,
}

/// Edges of a graph in compressed rows: the targets of node `i` are
/// `targets[starts[i]..starts[i + 1]]`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Adjacency {
    starts: Vec<usize>,
    targets: Vec<usize>,
}

impl Adjacency {
    fn with_capacity(nodes: usize, edges: usize) -> Self {
        let mut starts = Vec::with_capacity(nodes + 1);
        starts.push(0);
        Self {
            starts,
            targets: Vec::with_capacity(edges),
        }
    }

    /// Builds rows from lists.
    pub(crate) fn from_lists(lists: &[Vec<usize>]) -> Self {
        let mut adj = Self::with_capacity(lists.len(), lists.iter().map(Vec::len).sum());
        for l in lists {
            adj.targets.extend_from_slice(l);
            adj.starts.push(adj.targets.len());
        }
        adj
    }

    fn nodes(&self) -> usize {
        self.starts.len() - 1
    }

    /// The same edges reversed; each row ascending.
    pub(crate) fn reversed(&self) -> Self {
        let n = self.nodes();
        let mut starts = vec![0usize; n + 1];
        for &t in &self.targets {
            starts[t + 1] += 1;
        }
        for i in 0..n {
            starts[i + 1] += starts[i];
        }
        let mut fill = starts.clone();
        let mut targets = vec![0usize; self.targets.len()];
        for i in 0..n {
            for &t in &self[i] {
                targets[fill[t]] = i;
                fill[t] += 1;
            }
        }
        Self { starts, targets }
    }

    /// A petgraph graph whose node weights are positions, with an edge `d → i` for each
    /// dependency `d` of `i` (when `self` lists dependencies).
    fn to_petgraph(&self) -> DiGraph<usize, ()> {
        let n = self.nodes();
        let mut graph = DiGraph::with_capacity(n, self.targets.len());
        for i in 0..n {
            graph.add_node(i);
        }
        for i in 0..n {
            for &d in &self[i] {
                graph.add_edge(NodeIndex::new(d), NodeIndex::new(i), ());
            }
        }
        graph
    }
}

impl std::ops::Index<usize> for Adjacency {
    type Output = [usize];

    fn index(&self, i: usize) -> &[usize] {
        &self.targets[self.starts[i]..self.starts[i + 1]]
    }
}

/// One cycle path per strongly connected component with more than one step, sorted.
/// `id(i)` names node `i`; `deps[i]` are the nodes node `i` depends on and `dependents`
/// the reverse.
pub(crate) fn cycle_paths<'a>(
    id: impl Fn(usize) -> &'a StepId,
    deps: &Adjacency,
    dependents: &Adjacency,
) -> Vec<Vec<StepId>> {
    let n = deps.nodes();
    // Kahn's algorithm first: a graph it empties has no cycle, and that is the common case.
    let mut waiting: Vec<usize> = (0..n).map(|i| deps[i].len()).collect();
    let mut queue: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut peeled = 0;
    while let Some(i) = queue.pop() {
        peeled += 1;
        for &d in &dependents[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                queue.push(d);
            }
        }
    }
    if peeled == n {
        return Vec::new();
    }
    let graph = deps.to_petgraph();
    let mut cycles = Vec::new();
    for scc in petgraph::algo::tarjan_scc(&graph) {
        if scc.len() < 2 {
            continue;
        }
        let members: std::collections::HashSet<usize> = scc.iter().map(|n| n.index()).collect();
        let Some(&start) = members.iter().min() else {
            continue;
        };
        // Walk "depends on" edges inside the component until a step repeats.
        let mut path = vec![start];
        let mut seen: HashMap<usize, usize> = HashMap::from([(start, 0)]);
        let mut current = start;
        while let Some(&next) = deps[current].iter().find(|d| members.contains(d)) {
            if let Some(&pos) = seen.get(&next) {
                let mut cycle: Vec<StepId> = path[pos..].iter().map(|&i| id(i).clone()).collect();
                cycle.push(id(next).clone());
                cycles.push(cycle);
                break;
            }
            seen.insert(next, path.len());
            path.push(next);
            current = next;
        }
    }
    cycles.sort();
    cycles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_listed() {
        let plan = Plan::new(
            "g",
            vec![
                Step::new("a", "a").depends_on(["c"]),
                Step::new("b", "b").depends_on(["a", "b", "zz"]),
                Step::new("c", "c").depends_on(["b"]),
                Step::new("c", "again"),
                Step::new("", "no id"),
            ],
        );
        let err = PlanGraph::new(plan).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("5 problems"), "{text}");
        assert!(text.contains("2 steps have the id `c`"), "{text}");
        assert!(text.contains("step `b` depends on itself"), "{text}");
        assert!(text.contains("depends on `zz`"), "{text}");
        assert!(text.contains("step #5 has an empty id"), "{text}");
        assert!(text.contains("cycle a -> c -> b -> a"), "{text}");
    }

    #[test]
    fn topological_order_respects_edges() {
        let plan = Plan::new(
            "g",
            vec![
                Step::new("c", "c").depends_on(["a", "b"]),
                Step::new("b", "b").depends_on(["a"]),
                Step::new("a", "a"),
            ],
        );
        let g = PlanGraph::new(plan).unwrap();
        let order: Vec<&str> = g
            .topological_order()
            .into_iter()
            .map(|i| g.step(i).id.as_str())
            .collect();
        assert_eq!(order, ["a", "b", "c"]);
        assert_eq!(g.dependents(2), &[0, 1]);
        let pg = g.graph();
        assert_eq!((pg.node_count(), pg.edge_count()), (3, 3));
        assert!(pg.contains_edge(NodeIndex::new(2), NodeIndex::new(0)));
        assert_eq!(g.index_of("b"), Some(1));
        assert_eq!(g.index_of("zz"), None);
    }

    fn diamond() -> PlanGraph {
        // a -> b -> d, a -> c -> d, e alone
        PlanGraph::new(Plan::new(
            "g",
            vec![
                Step::new("d", "d").depends_on(["b", "c"]),
                Step::new("a", "a"),
                Step::new("b", "b").depends_on(["a"]),
                Step::new("c", "c").depends_on(["a"]),
                Step::new("e", "e"),
            ],
        ))
        .unwrap()
    }

    #[test]
    fn levels_and_critical_paths() {
        let g = diamond();
        assert_eq!(g.levels(), vec![vec![1, 4], vec![2, 3], vec![0]]);
        assert_eq!(g.critical_path_len(), 3);
        let unit = g.critical_path();
        assert_eq!(unit.steps, vec![1, 2, 0]);
        assert_eq!(unit.length, 3.0);
        // c is slow, so the path goes through c; e alone is slower still.
        let w = g.critical_path_weighted(|i| [1.0, 1.0, 1.0, 5.0, 0.5][i]);
        assert_eq!((w.steps, w.length), (vec![1, 3, 0], 7.0));
        let w = g.critical_path_weighted(|i| if i == 4 { 10.0 } else { f64::NAN });
        assert_eq!((w.steps, w.length), (vec![4], 10.0));
    }

    #[test]
    fn descendants_ancestors_roots_sinks() {
        let g = diamond();
        assert_eq!(g.descendants(1), vec![0, 2, 3]);
        assert_eq!(g.descendants(2), vec![0]);
        assert!(g.descendants(0).is_empty());
        assert!(g.descendants(99).is_empty());
        assert_eq!(g.ancestors(0), vec![1, 2, 3]);
        assert_eq!(g.roots(), vec![1, 4]);
        assert_eq!(g.sinks(), vec![0, 4]);
    }

    #[test]
    fn ready_follows_run_state() {
        let g = diamond();
        let mut st = RunState::new(g.plan());
        assert_eq!(g.ready(&st), vec![1, 4]);
        st.start(&StepId::new("a")).unwrap();
        assert_eq!(g.ready(&st), vec![4]);
        st.complete(&StepId::new("a"), "x".into()).unwrap();
        assert_eq!(g.ready(&st), vec![2, 3, 4]);
        st.start(&StepId::new("b")).unwrap();
        st.fail(&StepId::new("b"), "no".into()).unwrap();
        assert_eq!(g.ready(&st), vec![3, 4]);
    }
}
