//! Shared helpers: random DAG strategies and a tiny deterministic RNG.

use plan_core::{Plan, Step};
use proptest::prelude::*;

/// A random DAG over `n` nodes: `deps[i]` only names nodes `< i` (topological numbering).
#[derive(Clone, Debug)]
pub struct Dag {
    pub deps: Vec<Vec<usize>>,
}

impl Dag {
    pub fn len(&self) -> usize {
        self.deps.len()
    }

    /// Every node reachable from `start` through dependents, excluding `start`.
    pub fn descendants(&self, start: usize) -> Vec<usize> {
        let n = self.len();
        let mut seen = vec![false; n];
        seen[start] = true;
        // Dependents of a node are all larger, so one forward sweep suffices.
        for i in start + 1..n {
            if self.deps[i].iter().any(|&d| seen[d]) {
                seen[i] = true;
            }
        }
        (start + 1..n).filter(|&i| seen[i]).collect()
    }
}

/// Random DAGs with up to `max_n` nodes and up to `max_deps` dependencies per node.
pub fn dag(max_n: usize, max_deps: usize) -> impl Strategy<Value = Dag> {
    (1..=max_n)
        .prop_flat_map(move |n| {
            (0..n)
                .map(|i| {
                    if i == 0 {
                        Just(Vec::new()).boxed()
                    } else {
                        proptest::collection::vec(0..i, 0..=max_deps).boxed()
                    }
                })
                .collect::<Vec<_>>()
        })
        .prop_map(|mut deps| {
            for d in &mut deps {
                d.sort_unstable();
                d.dedup();
            }
            Dag { deps }
        })
}

/// A DAG with a permutation giving each node's position in the plan (so dependencies may
/// point forward in plan order).
pub fn dag_with_order(max_n: usize, max_deps: usize) -> impl Strategy<Value = (Dag, Vec<usize>)> {
    dag(max_n, max_deps).prop_flat_map(|dag| {
        let n = dag.len();
        (Just(dag), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
    })
}

/// A DAG plus a cycle: node `i` also depends on `j > i`, and `j` on `i`.
pub fn dag_with_cycle() -> impl Strategy<Value = (Dag, Vec<usize>)> {
    dag_with_order(30, 3)
        .prop_filter("needs two steps", |(d, _)| d.len() >= 2)
        .prop_flat_map(|(dag, order)| {
            let n = dag.len();
            (Just(dag), Just(order), (0..n - 1))
                .prop_flat_map(move |(d, o, i)| (Just(d), Just(o), Just(i), (i + 1)..n))
        })
        .prop_map(|(mut dag, order, i, j)| {
            if !dag.deps[j].contains(&i) {
                dag.deps[j].push(i);
            }
            dag.deps[i].push(j);
            (dag, order)
        })
}

/// The id of DAG node `i`.
pub fn id(i: usize) -> String {
    format!("s{i}")
}

/// The DAG as a step for node `i`.
pub fn step(dag: &Dag, i: usize) -> Step {
    Step::new(id(i), format!("do step {i}")).depends_on(dag.deps[i].iter().map(|&d| id(d)))
}

/// The DAG as a plan whose `k`-th step is node `order[k]`.
pub fn plan(dag: &Dag, order: &[usize]) -> Plan {
    Plan::new("random", order.iter().map(|&i| step(dag, i)).collect())
}

/// xorshift64*: deterministic choices driven by a proptest-chosen seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
    }
}
