//! The scheduler under random DAGs, arrival orders, interleavings and failures.

use std::collections::BTreeSet;

use plan_core::{PlanGraph, ScheduleState, Scheduler};
use proptest::prelude::*;

use crate::support::{Dag, Rng, dag_with_cycle, dag_with_order, id, plan, step};
use plan_core::PlanProblem;

/// Drives a streamed run: steps arrive in `arrival` order, interleaved at random with
/// taking, completing and failing work; nodes with `fails[node]` fail when run.
fn streamed_run(
    dag: &Dag,
    arrival: &[usize],
    fails: &[bool],
    seed: u64,
) -> Result<(), TestCaseError> {
    let n = dag.len();
    let mut rng = Rng::new(seed);
    let mut s = Scheduler::new();
    let mut node_of: Vec<usize> = Vec::new(); // scheduler index -> node
    let mut next_arrival = 0;
    let mut running: Vec<usize> = Vec::new();
    let mut taken = vec![false; n];
    let mut completed = vec![false; n];
    let mut failed = vec![false; n];
    let mut blocked = vec![false; n];

    let mut note_blocked =
        |list: Vec<usize>, node_of: &[usize], taken: &[bool]| -> Result<(), TestCaseError> {
            for i in list {
                let node = node_of[i];
                prop_assert!(!blocked[node], "{} reported blocked twice", id(node));
                prop_assert!(!taken[node], "{} blocked after being taken", id(node));
                blocked[node] = true;
            }
            Ok(())
        };

    loop {
        let can_add = next_arrival < n;
        let action = rng.below(4);
        if can_add && (action == 0 || (!s.has_ready() && running.is_empty())) {
            let node = arrival[next_arrival];
            next_arrival += 1;
            let index = s
                .add_step(&step(dag, node))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(index, node_of.len());
            node_of.push(node);
            if next_arrival == n {
                prop_assert!(s.finish_adding().is_ok());
            }
        } else if s.has_ready() && action != 3 {
            for i in s.take_ready() {
                let node = node_of[i];
                prop_assert!(!taken[node], "{} taken twice", id(node));
                for &d in &dag.deps[node] {
                    prop_assert!(
                        completed[d],
                        "{} ready before its dependency {}",
                        id(node),
                        id(d)
                    );
                }
                prop_assert_eq!(s.state(i), Some(ScheduleState::Running));
                taken[node] = true;
                running.push(i);
            }
        } else if !running.is_empty() {
            let i = running.swap_remove(rng.below(running.len()));
            let node = node_of[i];
            if fails[node] {
                failed[node] = true;
                let list = s.fail(i);
                note_blocked(list, &node_of, &taken)?;
            } else {
                completed[node] = true;
                s.complete(i);
            }
        } else if !can_add && !s.has_ready() {
            break;
        }
        let list = s.take_blocked();
        note_blocked(list, &node_of, &taken)?;
    }

    prop_assert!(s.is_finished());
    let mut expect_blocked = vec![false; n];
    for f in (0..n).filter(|&f| failed[f]) {
        for d in dag.descendants(f) {
            expect_blocked[d] = true;
        }
    }
    prop_assert_eq!(
        &blocked,
        &expect_blocked,
        "failures block exactly the descendants"
    );
    for node in 0..n {
        let runs = !blocked[node];
        prop_assert_eq!(
            taken[node],
            runs,
            "{} taken exactly when not blocked",
            id(node)
        );
        if runs {
            prop_assert_eq!(failed[node], fails[node]);
            prop_assert_eq!(completed[node], !fails[node]);
        }
    }
    let c = s.counts();
    prop_assert_eq!(c.completed, completed.iter().filter(|&&x| x).count());
    prop_assert_eq!(c.failed, failed.iter().filter(|&&x| x).count());
    prop_assert_eq!(c.blocked, blocked.iter().filter(|&&x| x).count());
    prop_assert_eq!(c.total(), n);
    Ok(())
}

fn arrival_and_failures() -> impl Strategy<Value = (Dag, Vec<usize>, Vec<bool>, u64)> {
    dag_with_order(40, 4).prop_flat_map(|(dag, arrival)| {
        let n = dag.len();
        (
            Just(dag),
            Just(arrival),
            proptest::collection::vec(proptest::bool::weighted(0.15), n),
            any::<u64>(),
        )
    })
}

proptest! {
    #[test]
    fn streamed_steps_run_once_after_their_dependencies(
        (dag, arrival, fails, seed) in arrival_and_failures()
    ) {
        streamed_run(&dag, &arrival, &fails, seed)?;
    }

    #[test]
    fn streamed_runs_without_failures_complete_everything(
        (dag, arrival) in dag_with_order(40, 4), seed in any::<u64>()
    ) {
        let fails = vec![false; dag.len()];
        streamed_run(&dag, &arrival, &fails, seed)?;
    }

    #[test]
    fn from_graph_resumes_and_runs_each_step_once(
        (dag, order) in dag_with_order(40, 4), seed in any::<u64>()
    ) {
        let n = dag.len();
        let graph = PlanGraph::new(plan(&dag, &order)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut s = Scheduler::from_graph(&graph);
        let mut rng = Rng::new(seed);
        // A random set of already-done steps, closed under dependencies (as a resumed run has).
        let mut done = vec![false; n];
        for node in 0..n {
            done[node] = rng.below(3) == 0 && dag.deps[node].iter().all(|&d| done[d]);
        }
        let node_of: Vec<usize> = order.clone();
        for (i, &node) in node_of.iter().enumerate() {
            prop_assert_eq!(s.step_id(i).as_str(), id(node));
            prop_assert_eq!(s.index_of(&id(node)), Some(i));
            if done[node] {
                s.mark_completed(i);
            }
        }
        let mut completed = done.clone();
        let mut taken = BTreeSet::new();
        let mut running = Vec::new();
        while !s.is_finished() {
            for i in s.take_ready() {
                let node = node_of[i];
                prop_assert!(dag.deps[node].iter().all(|&d| completed[d]), "{} ready too early", id(node));
                running.push(i);
            }
            prop_assert!(!running.is_empty(), "no progress before the run is finished");
            // Finish a random part of what runs, as a parallel runner would.
            let k = 1 + rng.below(running.len());
            for _ in 0..k {
                let i = running.swap_remove(rng.below(running.len()));
                let node = node_of[i];
                prop_assert!(!done[node], "{} was done already", id(node));
                prop_assert!(taken.insert(node), "{} taken twice", id(node));
                completed[node] = true;
                s.complete(i);
            }
        }
        prop_assert_eq!(taken.len() + done.iter().filter(|&&d| d).count(), n);
    }

    #[test]
    fn streamed_cycles_are_reported_and_stuck_steps_blocked(
        (dag, arrival) in dag_with_cycle(), seed in any::<u64>()
    ) {
        let n = dag.len();
        let mut rng = Rng::new(seed);
        let mut s = Scheduler::new();
        for &node in &arrival {
            s.add_step(&step(&dag, node)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            // Run whatever is ready as steps arrive.
            if rng.below(2) == 0 {
                for i in s.take_ready() {
                    s.complete(i);
                }
            }
        }
        let err = s.finish_adding().err();
        let Some(err) = err else {
            return Err(TestCaseError::fail("a streamed cycle went unnoticed"));
        };
        for problem in &err.problems {
            let PlanProblem::Cycle { path } = problem else {
                return Err(TestCaseError::fail(format!("unexpected problem: {problem}")));
            };
            prop_assert_eq!(path.first(), path.last());
            for pair in path.windows(2) {
                let a: usize = pair[0].as_str()[1..].parse().unwrap();
                let b: usize = pair[1].as_str()[1..].parse().unwrap();
                prop_assert!(dag.deps[a].contains(&b), "{} does not depend on {}", pair[0], pair[1]);
            }
        }
        // Run what can run; what is left sits on or after a cycle.
        loop {
            let ready = s.take_ready();
            if ready.is_empty() {
                break;
            }
            for i in ready {
                s.complete(i);
            }
        }
        let stuck = s.block_stuck();
        prop_assert!(!stuck.is_empty());
        prop_assert!(s.is_finished());
        prop_assert_eq!(s.counts().completed + stuck.len(), n);
        // Exactly the steps that can never run: on a cycle or depending on one.
        let mut can_run = vec![false; n];
        for _ in 0..n {
            for node in 0..n {
                can_run[node] = dag.deps[node].iter().all(|&d| can_run[d]);
            }
        }
        let mut expect: Vec<String> = (0..n).filter(|&v| !can_run[v]).map(id).collect();
        expect.sort();
        let mut got: Vec<String> = stuck.iter().map(|&i| s.step_id(i).to_string()).collect();
        got.sort();
        prop_assert_eq!(got, expect);
    }
}
