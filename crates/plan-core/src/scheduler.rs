//! [`Scheduler`]: an incremental ready-set tracker, the one scheduling core of every runner.
//!
//! Steps may be added while a plan is still arriving (streamed planning): a step whose
//! dependencies are not known yet simply waits for them. Each step keeps a counter of the
//! dependencies it still waits for and a list of its dependents, so a whole run costs
//! amortised O(V + E) however the work is taken.

use std::collections::{HashMap, VecDeque};

use crate::graph::{Adjacency, PlanErrors, PlanGraph, PlanProblem, cycle_paths};
use crate::index::IdIndex;
use crate::model::{Step, StepId};

/// Where a step stands in a [`Scheduler`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ScheduleState {
    /// Waits for dependencies (some may not have been added yet).
    Pending,
    /// Every dependency completed; not taken yet.
    Ready,
    /// Returned by [`Scheduler::take_ready`] and not finished yet.
    Running,
    /// Completed ([`Scheduler::complete`] or [`Scheduler::mark_completed`]).
    Completed,
    /// Failed for good ([`Scheduler::fail`]).
    Failed,
    /// Can never run because a dependency failed or was blocked.
    Blocked,
}

impl ScheduleState {
    /// Completed, failed or blocked.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            ScheduleState::Completed | ScheduleState::Failed | ScheduleState::Blocked
        )
    }
}

/// How many steps of a [`Scheduler`] are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SchedulerCounts {
    /// Waiting for dependencies.
    pub pending: usize,
    /// Ready and not taken yet.
    pub ready: usize,
    /// Taken and not finished yet.
    pub running: usize,
    /// Completed.
    pub completed: usize,
    /// Failed for good.
    pub failed: usize,
    /// Blocked by a failed dependency.
    pub blocked: usize,
}

impl SchedulerCounts {
    /// All steps.
    pub fn total(&self) -> usize {
        self.pending + self.ready + self.running + self.completed + self.failed + self.blocked
    }

    /// Completed, failed or blocked steps.
    pub fn finished(&self) -> usize {
        self.completed + self.failed + self.blocked
    }

    fn slot(&mut self, state: ScheduleState) -> &mut usize {
        match state {
            ScheduleState::Pending => &mut self.pending,
            ScheduleState::Ready => &mut self.ready,
            ScheduleState::Running => &mut self.running,
            ScheduleState::Completed => &mut self.completed,
            ScheduleState::Failed => &mut self.failed,
            ScheduleState::Blocked => &mut self.blocked,
        }
    }
}

#[derive(Clone, Debug)]
struct Slot {
    id: StepId,
    state: ScheduleState,
    /// Dependencies not completed yet, including ones not added yet.
    remaining: usize,
    /// Resolved dependencies (positions), in the order they were resolved.
    deps: Vec<usize>,
    /// Steps that depend on this one.
    dependents: Vec<usize>,
}

/// Tracks which steps can run, as steps arrive, start and finish.
///
/// Both the sequential and the parallel runners drive one of these: add steps (all at once
/// with [`from_graph`](Self::from_graph), or one by one with [`add_step`](Self::add_step)
/// while a plan streams in), then repeatedly [`take_ready`](Self::take_ready), run, and
/// report [`complete`](Self::complete) or [`fail`](Self::fail) until
/// [`is_finished`](Self::is_finished).
///
/// Steps are addressed by position (`usize`): the order they were added, which for
/// [`from_graph`](Self::from_graph) is the graph's (and plan's) step order.
///
/// ```
/// use plan_core::{Scheduler, Step};
///
/// let mut s = Scheduler::new();
/// let b = s.add_step(&Step::new("b", "uses a").depends_on(["a"]))?; // `a` not known yet
/// assert!(s.take_ready().is_empty());
/// let a = s.add_step(&Step::new("a", "first"))?;
/// s.finish_adding()?;
/// assert_eq!(s.take_ready(), vec![a]);
/// s.complete(a);
/// assert_eq!(s.take_ready(), vec![b]);
/// s.complete(b);
/// assert!(s.is_finished());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Scheduler {
    slots: Vec<Slot>,
    index: IdIndex,
    /// Dependencies named by added steps but not added themselves: id → waiting steps.
    unresolved: HashMap<StepId, Vec<usize>>,
    ready: VecDeque<usize>,
    blocked_unreported: Vec<usize>,
    counts: SchedulerCounts,
    adding_finished: bool,
}

impl Scheduler {
    /// An empty scheduler; add steps with [`add_step`](Self::add_step).
    pub fn new() -> Self {
        Self::default()
    }

    /// A scheduler holding every step of a validated plan, at the graph's positions, with
    /// adding finished. More steps may still be added (which reopens adding). To resume,
    /// [`mark_completed`](Self::mark_completed) the steps already done; after a replan that
    /// drops steps, build a new scheduler from the new graph and mark the kept ones.
    pub fn from_graph(graph: &PlanGraph) -> Self {
        let n = graph.len();
        let mut slots = Vec::with_capacity(n);
        let index = graph.index.clone();
        let mut ready = VecDeque::new();
        for i in 0..n {
            let id = graph.step(i).id.clone();
            let deps = graph.dependencies(i).to_vec();
            let state = if deps.is_empty() {
                ready.push_back(i);
                ScheduleState::Ready
            } else {
                ScheduleState::Pending
            };
            slots.push(Slot {
                id,
                state,
                remaining: deps.len(),
                deps,
                dependents: graph.dependents(i).to_vec(),
            });
        }
        let counts = SchedulerCounts {
            ready: ready.len(),
            pending: n - ready.len(),
            ..SchedulerCounts::default()
        };
        Self {
            slots,
            index,
            unresolved: HashMap::new(),
            ready,
            blocked_unreported: Vec::new(),
            counts,
            adding_finished: true,
        }
    }

    /// Adds a step and returns its position. Its dependencies may name steps not added yet:
    /// the step waits for them. A step that depends on a failed or blocked step is blocked
    /// at once (see [`take_blocked`](Self::take_blocked)).
    ///
    /// # Errors
    /// [`PlanProblem::EmptyId`], [`PlanProblem::DuplicateId`] or
    /// [`PlanProblem::SelfDependency`]; the step is not added then. Adding after
    /// [`finish_adding`](Self::finish_adding) is allowed (a replan may add steps) and reopens
    /// adding until `finish_adding` is called again.
    pub fn add_step(&mut self, step: &Step) -> Result<usize, PlanProblem> {
        let me = self.slots.len();
        if step.id.as_str().trim().is_empty() {
            return Err(PlanProblem::EmptyId { index: me });
        }
        if self.index_of(step.id.as_str()).is_some() {
            return Err(PlanProblem::DuplicateId {
                step: step.id.clone(),
                count: 2,
            });
        }
        if step.dependencies.contains(&step.id) {
            return Err(PlanProblem::SelfDependency {
                step: step.id.clone(),
            });
        }
        self.adding_finished = false;

        let mut remaining = 0;
        let mut deps = Vec::with_capacity(step.dependencies.len());
        let mut blocked = false;
        for (k, dep) in step.dependencies.iter().enumerate() {
            if step.dependencies[..k].contains(dep) {
                continue; // a repeated dependency counts once
            }
            match self.index_of(dep.as_str()) {
                Some(d) => {
                    deps.push(d);
                    let slot = &mut self.slots[d];
                    match slot.state {
                        ScheduleState::Completed => {}
                        ScheduleState::Failed | ScheduleState::Blocked => blocked = true,
                        _ => {
                            remaining += 1;
                            slot.dependents.push(me);
                        }
                    }
                }
                None => {
                    remaining += 1;
                    self.unresolved.entry(dep.clone()).or_default().push(me);
                }
            }
        }
        // Steps added earlier that were waiting for this one.
        let dependents = self.unresolved.remove(&step.id).unwrap_or_default();
        for &w in &dependents {
            self.slots[w].deps.push(me);
        }
        let state = if blocked {
            ScheduleState::Blocked
        } else if remaining == 0 {
            self.ready.push_back(me);
            ScheduleState::Ready
        } else {
            ScheduleState::Pending
        };
        *self.counts.slot(state) += 1;
        self.slots.push(Slot {
            id: step.id.clone(),
            state,
            remaining,
            deps,
            dependents,
        });
        let slots = &self.slots;
        self.index
            .insert(step.id.as_str(), me, |i| slots[i].id.as_str());
        if blocked {
            self.blocked_unreported.push(me);
            let more = self.block_descendants(me);
            self.blocked_unreported.extend(more);
        }
        Ok(me)
    }

    /// Says no more steps will be added.
    ///
    /// # Errors
    /// [`PlanErrors`] listing every dependency on an id that was never added and every
    /// cycle among the waiting steps. The scheduler stays usable: steps outside the
    /// problems still run, and [`block_stuck`](Self::block_stuck) gives up on the rest.
    pub fn finish_adding(&mut self) -> Result<(), PlanErrors> {
        self.adding_finished = true;
        let mut problems = Vec::new();
        let mut unknown: Vec<(usize, &StepId)> = self
            .unresolved
            .iter()
            .flat_map(|(dep, waiters)| waiters.iter().map(move |&w| (w, dep)))
            .collect();
        unknown.sort();
        problems.extend(
            unknown
                .into_iter()
                .map(|(w, dep)| PlanProblem::UnknownDependency {
                    step: self.slots[w].id.clone(),
                    dependency: dep.clone(),
                }),
        );
        problems.extend(
            self.cycles()
                .into_iter()
                .map(|path| PlanProblem::Cycle { path }),
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PlanErrors { problems })
        }
    }

    /// Whether [`finish_adding`](Self::finish_adding) was called (and no step added since).
    pub fn is_adding_finished(&self) -> bool {
        self.adding_finished
    }

    /// Marks a step as already done (resuming a run), whether or not it was taken; its
    /// dependents may become ready. A step so marked is never returned by
    /// [`take_ready`](Self::take_ready). Does nothing for a failed or blocked step.
    pub fn mark_completed(&mut self, index: usize) {
        let Some(slot) = self.slots.get(index) else {
            return;
        };
        if slot.state.is_finished() {
            return;
        }
        self.set_state(index, ScheduleState::Completed);
        for k in 0..self.slots[index].dependents.len() {
            let d = self.slots[index].dependents[k];
            let dependent = &mut self.slots[d];
            if dependent.state == ScheduleState::Pending {
                dependent.remaining -= 1;
                if dependent.remaining == 0 {
                    self.set_state(d, ScheduleState::Ready);
                    self.ready.push_back(d);
                }
            }
        }
    }

    /// The steps that became ready since the last call, in ascending position; they count as
    /// running from now on. Each step is returned once ever.
    pub fn take_ready(&mut self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.ready.len());
        while let Some(i) = self.ready.pop_front() {
            // A queued step may have been marked completed, failed or blocked since.
            if self.slots[i].state == ScheduleState::Ready {
                self.set_state(i, ScheduleState::Running);
                out.push(i);
            }
        }
        out.sort_unstable();
        out
    }

    /// Whether a step is ready and not taken yet.
    pub fn has_ready(&self) -> bool {
        self.counts.ready > 0
    }

    /// A taken step finished successfully; dependents whose last dependency this was become
    /// ready. Same as [`mark_completed`](Self::mark_completed).
    pub fn complete(&mut self, index: usize) {
        self.mark_completed(index);
    }

    /// A step failed for good. Returns every not-yet-taken step that depends on it,
    /// directly or not (among those added so far), in ascending position: they are blocked
    /// now and the caller skips them. Steps added later that depend on a failed or blocked
    /// step are blocked as they arrive and reported by [`take_blocked`](Self::take_blocked).
    /// Does nothing (and returns nothing) for a finished step.
    pub fn fail(&mut self, index: usize) -> Vec<usize> {
        match self.slots.get(index) {
            Some(slot) if !slot.state.is_finished() => {}
            _ => return Vec::new(),
        }
        self.set_state(index, ScheduleState::Failed);
        let mut blocked = self.block_descendants(index);
        blocked.sort_unstable();
        blocked
    }

    /// Steps blocked when they were added (they depend on a failed or blocked step), and
    /// their dependents, since the last call, in ascending position.
    pub fn take_blocked(&mut self) -> Vec<usize> {
        let mut out = std::mem::take(&mut self.blocked_unreported);
        out.sort_unstable();
        out
    }

    /// After [`finish_adding`](Self::finish_adding): blocks every waiting step that can
    /// never become ready (it waits for an id never added, sits on a cycle, or depends on
    /// such a step) and returns them in ascending position. Empty while adding goes on.
    pub fn block_stuck(&mut self) -> Vec<usize> {
        if !self.adding_finished {
            return Vec::new();
        }
        let stuck = self.stuck();
        for &i in &stuck {
            self.set_state(i, ScheduleState::Blocked);
        }
        stuck
    }

    /// Whether adding is finished and every step is completed, failed or blocked.
    pub fn is_finished(&self) -> bool {
        self.adding_finished && self.counts.finished() == self.slots.len()
    }

    /// Number of steps added.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no step was added.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The id of the step at `index`.
    ///
    /// # Panics
    /// When `index` is not the position of an added step.
    pub fn step_id(&self, index: usize) -> &StepId {
        &self.slots[index].id
    }

    /// The position of the step with this id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id, |i| self.slots[i].id.as_str())
    }

    /// Where a step stands; `None` for a position never added.
    pub fn state(&self, index: usize) -> Option<ScheduleState> {
        self.slots.get(index).map(|s| s.state)
    }

    /// Positions of the added steps that step `index` depends on (empty for a position
    /// never added).
    pub fn dependencies(&self, index: usize) -> &[usize] {
        self.slots.get(index).map_or(&[], |s| &s.deps)
    }

    /// Positions of the steps that depend directly on step `index` and were waiting for it
    /// when it finished or are still waiting.
    pub fn dependents(&self, index: usize) -> &[usize] {
        self.slots.get(index).map_or(&[], |s| &s.dependents)
    }

    /// How many steps are in each state.
    pub fn counts(&self) -> SchedulerCounts {
        self.counts
    }

    fn set_state(&mut self, index: usize, state: ScheduleState) {
        let slot = &mut self.slots[index];
        *self.counts.slot(slot.state) -= 1;
        *self.counts.slot(state) += 1;
        slot.state = state;
    }

    /// Blocks every pending or ready step reachable from `start` through dependents;
    /// returns them (not `start`).
    fn block_descendants(&mut self, start: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(i) = stack.pop() {
            for k in 0..self.slots[i].dependents.len() {
                let d = self.slots[i].dependents[k];
                if matches!(
                    self.slots[d].state,
                    ScheduleState::Pending | ScheduleState::Ready
                ) {
                    self.set_state(d, ScheduleState::Blocked);
                    out.push(d);
                    stack.push(d);
                }
            }
        }
        out
    }

    /// Pending steps that cannot become ready with the steps added so far, ascending.
    fn stuck(&self) -> Vec<usize> {
        // Peel pending steps whose pending dependencies all get peeled (Kahn's algorithm on
        // the pending subgraph); what is left waits for an unknown id or a cycle.
        let n = self.slots.len();
        let mut waits = vec![0usize; n];
        for waiters in self.unresolved.values() {
            for &w in waiters {
                waits[w] += 1;
            }
        }
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.state == ScheduleState::Pending {
                for &d in &slot.dependents {
                    if self.slots[d].state == ScheduleState::Pending {
                        waits[d] += 1;
                    }
                }
            } else {
                waits[i] = 0;
            }
        }
        let mut queue: Vec<usize> = (0..n)
            .filter(|&i| self.slots[i].state == ScheduleState::Pending && waits[i] == 0)
            .collect();
        while let Some(i) = queue.pop() {
            for &d in &self.slots[i].dependents {
                if self.slots[d].state == ScheduleState::Pending {
                    waits[d] -= 1;
                    if waits[d] == 0 {
                        queue.push(d);
                    }
                }
            }
        }
        (0..n)
            .filter(|&i| self.slots[i].state == ScheduleState::Pending && waits[i] > 0)
            .collect()
    }

    /// One cycle path per strongly connected group of stuck steps.
    fn cycles(&self) -> Vec<Vec<StepId>> {
        let stuck = self.stuck();
        if stuck.len() < 2 {
            return Vec::new();
        }
        let mut local = vec![usize::MAX; self.slots.len()];
        for (k, &i) in stuck.iter().enumerate() {
            local[i] = k;
        }
        let mut deps: Vec<Vec<usize>> = vec![Vec::new(); stuck.len()];
        for (k, &i) in stuck.iter().enumerate() {
            for &d in &self.slots[i].deps {
                if local[d] != usize::MAX {
                    deps[k].push(local[d]);
                }
            }
        }
        let deps = Adjacency::from_lists(&deps);
        cycle_paths(|k| &self.slots[stuck[k]].id, &deps, &deps.reversed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Plan;

    fn step(id: &str, deps: &[&str]) -> Step {
        Step::new(id, format!("do {id}")).depends_on(deps.iter().copied())
    }

    #[test]
    fn from_graph_runs_in_dependency_order() {
        let plan = Plan::new(
            "g",
            vec![
                step("c", &["a", "b"]),
                step("b", &["a"]),
                step("a", &[]),
                step("d", &[]),
            ],
        );
        let g = PlanGraph::new(plan).unwrap();
        let mut s = Scheduler::from_graph(&g);
        assert!(s.is_adding_finished());
        assert_eq!(s.take_ready(), vec![2, 3]);
        assert!(s.take_ready().is_empty());
        s.complete(3);
        s.complete(2);
        assert_eq!(s.take_ready(), vec![1]);
        s.complete(1);
        assert_eq!(s.take_ready(), vec![0]);
        assert!(!s.is_finished());
        s.complete(0);
        assert!(s.is_finished());
        assert_eq!(s.counts().completed, 4);
    }

    #[test]
    fn streamed_steps_wait_for_unknown_dependencies() {
        let mut s = Scheduler::new();
        let c = s.add_step(&step("c", &["a", "b", "a"])).unwrap();
        let a = s.add_step(&step("a", &[])).unwrap();
        assert_eq!(s.take_ready(), vec![a]);
        s.complete(a);
        assert!(s.take_ready().is_empty());
        let b = s.add_step(&step("b", &["a"])).unwrap();
        assert_eq!(s.take_ready(), vec![b]);
        assert!(!s.is_finished());
        s.complete(b);
        assert_eq!(s.take_ready(), vec![c]);
        s.complete(c);
        assert!(!s.is_finished(), "adding is not finished");
        s.finish_adding().unwrap();
        assert!(s.is_finished());
        assert_eq!(s.dependencies(c), &[a, b]);
    }

    #[test]
    fn add_step_rejects_bad_steps() {
        let mut s = Scheduler::new();
        s.add_step(&step("a", &[])).unwrap();
        assert!(matches!(
            s.add_step(&step("a", &[])),
            Err(PlanProblem::DuplicateId { .. })
        ));
        assert!(matches!(
            s.add_step(&step("b", &["b"])),
            Err(PlanProblem::SelfDependency { .. })
        ));
        assert_eq!(
            s.add_step(&step(" ", &[])),
            Err(PlanProblem::EmptyId { index: 1 })
        );
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn failure_blocks_descendants_now_and_later() {
        let mut s = Scheduler::new();
        let a = s.add_step(&step("a", &[])).unwrap();
        let b = s.add_step(&step("b", &["a"])).unwrap();
        let c = s.add_step(&step("c", &["b", "x"])).unwrap();
        let z = s.add_step(&step("z", &["y"])).unwrap();
        let other = s.add_step(&step("other", &[])).unwrap();
        assert_eq!(s.take_ready(), vec![a, other]);
        assert_eq!(s.fail(a), vec![b, c]);
        assert!(s.take_blocked().is_empty());
        // `y` arrives depending on the failed step; `z` waited for `y`.
        let y = s.add_step(&step("y", &["b"])).unwrap();
        assert_eq!(s.take_blocked(), vec![z, y]);
        let x = s.add_step(&step("x", &[])).unwrap();
        assert_eq!(s.take_ready(), vec![x]);
        s.complete(x);
        s.complete(other);
        assert_eq!(s.state(c), Some(ScheduleState::Blocked));
        s.finish_adding().unwrap();
        assert!(s.is_finished());
        let n = s.counts();
        assert_eq!((n.completed, n.failed, n.blocked), (2, 1, 4));
    }

    #[test]
    fn mark_completed_resumes_and_is_never_taken() {
        let plan = Plan::new(
            "g",
            vec![step("a", &[]), step("b", &["a"]), step("c", &["b"])],
        );
        let g = PlanGraph::new(plan).unwrap();
        let mut s = Scheduler::from_graph(&g);
        s.mark_completed(0);
        s.mark_completed(1);
        assert_eq!(s.take_ready(), vec![2]);
        s.complete(2);
        assert!(s.is_finished());
        // Out-of-range positions and repeated calls are harmless.
        s.mark_completed(99);
        s.complete(2);
        assert!(s.fail(2).is_empty());
        assert_eq!(s.counts().completed, 3);
    }

    #[test]
    fn finish_adding_reports_unknown_ids_and_cycles() {
        let mut s = Scheduler::new();
        s.add_step(&step("ok", &[])).unwrap();
        s.add_step(&step("a", &["c"])).unwrap();
        s.add_step(&step("b", &["a"])).unwrap();
        s.add_step(&step("c", &["b"])).unwrap();
        s.add_step(&step("d", &["a", "nope"])).unwrap();
        let err = s.finish_adding().unwrap_err();
        assert_eq!(
            err.problems,
            vec![
                PlanProblem::UnknownDependency {
                    step: "d".into(),
                    dependency: "nope".into()
                },
                PlanProblem::Cycle {
                    path: vec!["a".into(), "c".into(), "b".into(), "a".into()]
                },
            ]
        );
        assert_eq!(s.take_ready(), vec![0]);
        s.complete(0);
        assert!(!s.is_finished());
        assert_eq!(s.block_stuck(), vec![1, 2, 3, 4]);
        assert!(s.is_finished());
    }

    #[test]
    fn steps_can_be_added_after_from_graph() {
        let plan = Plan::new("g", vec![step("a", &[]), step("b", &["a"])]);
        let g = PlanGraph::new(plan).unwrap();
        let mut s = Scheduler::from_graph(&g);
        assert_eq!(s.take_ready(), vec![0]);
        let c = s.add_step(&step("c", &["b", "a"])).unwrap();
        assert!(!s.is_adding_finished());
        assert!(matches!(
            s.add_step(&step("b", &[])),
            Err(PlanProblem::DuplicateId { .. })
        ));
        s.complete(0);
        assert_eq!(s.take_ready(), vec![1]);
        s.complete(1);
        assert_eq!(s.take_ready(), vec![c]);
        s.complete(c);
        s.finish_adding().unwrap();
        assert!(s.is_finished());
        assert_eq!(s.index_of("c"), Some(2));
        assert_eq!(s.dependencies(c), &[1, 0]);
    }

    #[test]
    fn counts_track_states() {
        let mut s = Scheduler::new();
        s.add_step(&step("a", &[])).unwrap();
        s.add_step(&step("b", &["a"])).unwrap();
        s.add_step(&step("c", &[])).unwrap();
        let n = s.counts();
        assert_eq!((n.pending, n.ready, n.running), (1, 2, 0));
        s.take_ready();
        let n = s.counts();
        assert_eq!((n.pending, n.ready, n.running, n.total()), (1, 0, 2, 3));
        s.mark_completed(1); // resume: b is known done though a is not
        s.complete(0);
        assert!(s.take_ready().is_empty(), "b was marked done, never taken");
    }
}
