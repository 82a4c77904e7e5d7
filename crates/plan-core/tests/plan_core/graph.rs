//! Validation and graph queries under random DAGs (property tests) and fixed plans.

use std::collections::HashMap;

use plan_core::{Plan, PlanGraph, PlanProblem, RunState, Step, StepId, StepStatus};
use proptest::prelude::*;

use crate::support::{Dag, Rng, dag, dag_with_cycle, dag_with_order, id, plan};

fn graph(dag: &Dag, order: &[usize]) -> Result<PlanGraph, TestCaseError> {
    PlanGraph::new(plan(dag, order)).map_err(|e| TestCaseError::fail(e.to_string()))
}

/// Position in the plan of each DAG node.
fn positions(order: &[usize]) -> Vec<usize> {
    let mut pos = vec![0; order.len()];
    for (k, &node) in order.iter().enumerate() {
        pos[node] = k;
    }
    pos
}

proptest! {
    #[test]
    fn random_dags_validate(( dag, order) in dag_with_order(60, 4)) {
        let g = graph(&dag, &order)?;
        prop_assert_eq!(g.len(), dag.len());
    }

    #[test]
    fn topological_order_respects_every_edge((dag, order) in dag_with_order(60, 4)) {
        let g = graph(&dag, &order)?;
        let topo = g.topological_order();
        prop_assert_eq!(topo.len(), g.len());
        let mut rank = vec![usize::MAX; g.len()];
        for (r, &i) in topo.iter().enumerate() {
            rank[i] = r;
        }
        for i in 0..g.len() {
            for &d in g.dependencies(i) {
                prop_assert!(rank[d] < rank[i], "{} before its dependency {}", g.step(i).id, g.step(d).id);
            }
        }
    }

    #[test]
    fn injected_cycle_is_rejected_with_a_real_cycle_path((dag, order) in dag_with_cycle()) {
        let err = PlanGraph::new(plan(&dag, &order)).err();
        let Some(err) = err else {
            return Err(TestCaseError::fail("a plan with a cycle validated"));
        };
        let depends: HashMap<String, Vec<String>> = (0..dag.len())
            .map(|i| (id(i), dag.deps[i].iter().map(|&d| id(d)).collect()))
            .collect();
        let mut cycles = 0;
        for problem in &err.problems {
            let PlanProblem::Cycle { path } = problem else {
                return Err(TestCaseError::fail(format!("unexpected problem: {problem}")));
            };
            cycles += 1;
            prop_assert!(path.len() >= 3, "{path:?}");
            prop_assert_eq!(path.first(), path.last());
            let inner = &path[..path.len() - 1];
            let mut distinct: Vec<&StepId> = inner.iter().collect();
            distinct.sort();
            distinct.dedup();
            prop_assert_eq!(distinct.len(), inner.len(), "a cycle visits each step once: {:?}", path);
            for pair in path.windows(2) {
                prop_assert!(
                    depends[pair[0].as_str()].iter().any(|d| d == pair[1].as_str()),
                    "{} does not depend on {} in {:?}", pair[0], pair[1], path
                );
            }
        }
        prop_assert!(cycles >= 1);
    }

    #[test]
    fn ready_never_holds_a_step_with_an_unfinished_dependency(
        (dag, order) in dag_with_order(40, 4), seed in any::<u64>(), moves in 0usize..80
    ) {
        let g = graph(&dag, &order)?;
        let mut state = RunState::new(g.plan());
        let mut rng = Rng::new(seed);
        let mut running: Vec<StepId> = Vec::new();
        for _ in 0..moves {
            let ready = g.ready(&state);
            // Exactly the pending steps whose dependencies all completed.
            for i in 0..g.len() {
                let pending = state.status(g.step(i).id.as_str()) == Some(StepStatus::Pending);
                let deps_done = g.dependencies(i).iter().all(|&d| {
                    state.status(g.step(d).id.as_str()).is_some_and(StepStatus::is_completed)
                });
                prop_assert_eq!(ready.contains(&i), pending && deps_done, "step {}", g.step(i).id);
            }
            if !ready.is_empty() && (running.is_empty() || rng.below(2) == 0) {
                let id = g.step(ready[rng.below(ready.len())]).id.clone();
                state.start(&id).map_err(|e| TestCaseError::fail(e.to_string()))?;
                running.push(id);
            } else if !running.is_empty() {
                let id = running.swap_remove(rng.below(running.len()));
                let r = if rng.below(5) == 0 {
                    state.fail(&id, "failed".into())
                } else {
                    state.complete(&id, "done".into())
                };
                r.map_err(|e| TestCaseError::fail(e.to_string()))?;
            } else {
                break;
            }
        }
    }

    #[test]
    fn levels_descendants_and_critical_path_agree((dag, order) in dag_with_order(40, 4)) {
        let g = graph(&dag, &order)?;
        let pos = positions(&order);
        let levels = g.levels();
        let mut level_of = vec![usize::MAX; g.len()];
        for (l, steps) in levels.iter().enumerate() {
            prop_assert!(!steps.is_empty());
            for &i in steps {
                level_of[i] = l;
            }
        }
        for i in 0..g.len() {
            let expect = g.dependencies(i).iter().map(|&d| level_of[d] + 1).max().unwrap_or(0);
            prop_assert_eq!(level_of[i], expect);
        }
        prop_assert_eq!(g.critical_path_len(), levels.len());
        let path = g.critical_path();
        for pair in path.steps.windows(2) {
            prop_assert!(g.dependencies(pair[1]).contains(&pair[0]));
        }
        for node in 0..dag.len() {
            let mut expect: Vec<usize> = dag.descendants(node).into_iter().map(|d| pos[d]).collect();
            expect.sort_unstable();
            prop_assert_eq!(g.descendants(pos[node]), expect);
        }
    }

    #[test]
    fn too_many_steps_is_reported(dag in dag(30, 3)) {
        let order: Vec<usize> = (0..dag.len()).collect();
        let limit = dag.len().saturating_sub(1);
        let err = PlanGraph::with_limits(plan(&dag, &order), &plan_core::Limits::with_max_steps(limit));
        prop_assert!(err.is_err());
    }
}

#[test]
fn weighted_critical_path_takes_the_slow_branch() {
    let plan = Plan::new(
        "g",
        vec![
            Step::new("fetch", "fetch"),
            Step::new("quick", "quick").depends_on(["fetch"]),
            Step::new("slow", "slow").depends_on(["fetch"]),
            Step::new("report", "report").depends_on(["quick", "slow"]),
        ],
    );
    let g = PlanGraph::new(plan).unwrap();
    let secs = [2.0, 1.0, 30.0, 3.0];
    let path = g.critical_path_weighted(|i| secs[i]);
    let ids: Vec<&str> = path.steps.iter().map(|&i| g.step(i).id.as_str()).collect();
    assert_eq!(ids, ["fetch", "slow", "report"]);
    assert_eq!(path.length, 35.0);
}
