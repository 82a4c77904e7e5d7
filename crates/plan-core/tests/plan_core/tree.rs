//! GoalTree flattening on random trees.

use std::collections::HashSet;

use plan_core::{GoalNode, GoalTree, PlanGraph, Step};
use proptest::prelude::*;

use crate::support::Rng;

#[derive(Clone, Debug)]
enum Shape {
    Leaf,
    Group(Vec<Shape>),
}

fn shapes() -> impl Strategy<Value = Vec<Shape>> {
    let leaf = Just(Shape::Leaf);
    let shape = leaf.prop_recursive(3, 24, 4, |inner| {
        prop::collection::vec(inner, 1..4).prop_map(Shape::Group)
    });
    prop::collection::vec(shape, 1..5)
}

/// Builds nodes with ids `n0, n1, ..` per group and random dependencies on earlier
/// siblings, listed in a shuffled order so dependencies may point forward.
fn build(shapes: &[Shape], rng: &mut Rng) -> Vec<GoalNode> {
    let mut nodes: Vec<GoalNode> = shapes
        .iter()
        .enumerate()
        .map(|(k, shape)| {
            let deps: Vec<String> = (0..k)
                .filter(|_| rng.below(3) == 0)
                .map(|d| format!("n{d}"))
                .collect();
            let node = match shape {
                Shape::Leaf => GoalNode::leaf(Step::new(format!("n{k}"), format!("leaf {k}"))),
                Shape::Group(children) => {
                    GoalNode::sub_goal(format!("n{k}"), format!("goal {k}"), build(children, rng))
                }
            };
            node.depends_on(deps)
        })
        .collect();
    for i in (1..nodes.len()).rev() {
        nodes.swap(i, rng.below(i + 1));
    }
    nodes
}

/// Every (leaf, required leaf) pair the tree implies, by full id.
fn implied(
    nodes: &[GoalNode],
    prefix: &str,
    inherited: &[String],
    out: &mut Vec<(String, String)>,
) -> Vec<String> {
    let full = |id: &str| {
        if prefix.is_empty() {
            id.to_owned()
        } else {
            format!("{prefix}/{id}")
        }
    };
    let mut leaves_of: Vec<Vec<String>> = Vec::new();
    // Leaves of each sibling, computed without dependencies first.
    fn leaves(node: &GoalNode, path: String) -> Vec<String> {
        if node.is_leaf() {
            vec![path]
        } else {
            node.children
                .iter()
                .flat_map(|c| leaves(c, format!("{path}/{}", c.step.id)))
                .collect()
        }
    }
    for n in nodes {
        leaves_of.push(leaves(n, full(n.step.id.as_str())));
    }
    let mut all = Vec::new();
    for n in nodes {
        let mut need: Vec<String> = inherited.to_vec();
        for d in &n.step.dependencies {
            let k = nodes.iter().position(|m| m.step.id == *d).unwrap();
            need.extend(leaves_of[k].iter().cloned());
        }
        let id = full(n.step.id.as_str());
        if n.is_leaf() {
            for r in &need {
                out.push((id.clone(), r.clone()));
            }
            all.push(id);
        } else {
            all.extend(implied(&n.children, &id, &need, out));
        }
    }
    all
}

proptest! {
    #[test]
    fn flattened_trees_validate_and_keep_every_implied_order(shapes in shapes(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let tree = GoalTree::new("random", build(&shapes, &mut rng));
        let flat = tree.flatten().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(flat.plan.steps.len(), tree.leaf_count());
        prop_assert_eq!(flat.paths.len(), flat.plan.steps.len());
        let graph = PlanGraph::new(flat.plan.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut pairs = Vec::new();
        let leaves = implied(&tree.children, "", &[], &mut pairs);
        let ids: Vec<String> = flat.plan.steps.iter().map(|s| s.id.to_string()).collect();
        let mut sorted_ids = ids.clone();
        sorted_ids.sort();
        let mut sorted_leaves = leaves.clone();
        sorted_leaves.sort();
        prop_assert_eq!(sorted_ids, sorted_leaves);
        let edges: HashSet<(String, String)> = flat
            .plan
            .steps
            .iter()
            .flat_map(|s| s.dependencies.iter().map(move |d| (s.id.to_string(), d.to_string())))
            .collect();
        let expected: HashSet<(String, String)> = pairs.into_iter().collect();
        prop_assert_eq!(edges, expected);
        // Plan order is a valid running order, and paths match the ids.
        for (i, step) in flat.plan.steps.iter().enumerate() {
            for &d in graph.dependencies(i) {
                prop_assert!(d < i, "{} comes before its dependency {}", step.id, graph.step(d).id);
            }
            let mut parts: Vec<&str> = step.id.as_str().split('/').collect();
            parts.pop();
            let path: Vec<&str> = flat.path(i).iter().map(|p| p.as_str()).collect();
            prop_assert_eq!(path, parts);
        }
    }
}
