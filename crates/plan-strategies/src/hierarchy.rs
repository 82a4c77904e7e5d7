//! Hierarchical planning: recursive decomposition of a goal into a [`GoalTree`], and the
//! roll-up of leaf results to their sub-goals.

use std::collections::{HashMap, HashSet};

use futures::future::{BoxFuture, try_join_all};
use plan_core::{FlatPlan, GoalNode, GoalTree, Plan, Step, StepId};
use plan_llm::Provider;

use crate::calls::{SubGoal, decompose};
use crate::error::StrategyError;
use crate::planner::LlmCall;
use crate::report::GoalResult;
use plan_core::StepState;

/// Limits of a decomposition.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TreeLimits {
    /// Levels of sub-goals under the goal (the goal is depth 0).
    pub(crate) max_depth: usize,
    /// The most sub-goals one goal is split into.
    pub(crate) max_subgoals: usize,
    /// The most leaves in the whole tree; once reached, goals are not split further.
    pub(crate) max_leaves: usize,
}

/// Decomposes `goal` recursively. A goal the model calls atomic, or one at `max_depth`,
/// becomes a leaf step. Siblings are decomposed concurrently.
pub(crate) async fn build_tree(
    provider: &dyn Provider,
    goal: &str,
    limits: TreeLimits,
    calls: &mut Vec<LlmCall>,
) -> Result<GoalTree, StrategyError> {
    if limits.max_depth == 0 {
        return Ok(GoalTree::new(
            goal,
            vec![GoalNode::leaf(Step::new("goal", goal))],
        ));
    }
    let budget = std::sync::atomic::AtomicUsize::new(limits.max_leaves.max(1));
    let (children, mut node_calls) = split(provider, goal, Vec::new(), 0, limits, &budget).await?;
    calls.append(&mut node_calls);
    let children = match children {
        Some(children) => children,
        None => vec![GoalNode::leaf(Step::new("goal", goal))],
    };
    Ok(GoalTree::new(goal, children))
}

type Split = (Option<Vec<GoalNode>>, Vec<LlmCall>);

/// Asks whether `goal` (at `depth`) splits; returns its children (None: atomic).
fn split<'a>(
    provider: &'a dyn Provider,
    goal: &'a str,
    ancestors: Vec<String>,
    depth: usize,
    limits: TreeLimits,
    budget: &'a std::sync::atomic::AtomicUsize,
) -> BoxFuture<'a, Result<Split, StrategyError>> {
    Box::pin(async move {
        let mut calls = Vec::new();
        let d = match decompose(provider, goal, &ancestors, limits.max_subgoals, &mut calls).await {
            Ok(d) => d,
            // A reply that stays unusable after re-prompting (a small model's broken JSON)
            // leaves the goal whole: it still runs, as one leaf. Provider errors end the run.
            Err(StrategyError::InvalidReply { message, .. }) => {
                tracing::warn!(goal, depth, %message, "unusable decomposition: the goal stays one leaf");
                return Ok((None, calls));
            }
            Err(e) => return Err(e),
        };
        tracing::debug!(goal, depth, atomic = d.atomic, subgoals = ?d.subgoals.iter().map(|s| s.goal.as_str()).collect::<Vec<_>>(), "decomposed");
        let subgoals = clean_subgoals(goal, d.subgoals, limits.max_subgoals);
        if d.atomic || subgoals.len() < 2 {
            return Ok((None, calls));
        }
        // Each sub-goal takes a leaf from the budget; the goal itself gives one back.
        let extra = subgoals.len() - 1;
        let left = budget.load(std::sync::atomic::Ordering::SeqCst);
        if left < extra + 1 {
            return Ok((None, calls));
        }
        budget.fetch_sub(extra, std::sync::atomic::Ordering::SeqCst);
        let child_depth = depth + 1;
        let mut path = ancestors.clone();
        path.push(goal.to_owned());
        let results = try_join_all(subgoals.iter().map(|sg| {
            let path = path.clone();
            async move {
                if child_depth >= limits.max_depth {
                    return Ok((None, Vec::new()));
                }
                split(provider, &sg.goal, path, child_depth, limits, budget).await
            }
        }))
        .await?;
        let mut nodes = Vec::with_capacity(subgoals.len());
        for (sg, (children, mut sub_calls)) in subgoals.into_iter().zip(results) {
            calls.append(&mut sub_calls);
            let node = match children {
                Some(children) => GoalNode::sub_goal(sg.id.as_str(), sg.goal, children),
                None => GoalNode::leaf(Step::new(sg.id.as_str(), sg.goal)),
            };
            nodes.push(node.depends_on(sg.dependencies));
        }
        Ok((Some(nodes), calls))
    })
}

/// Makes sibling sub-goals usable: ids without the path separator and unique, non-empty
/// goals, dependencies on siblings only, no cycles (plan-core's repair), at most `max`.
fn clean_subgoals(parent: &str, subgoals: Vec<SubGoal>, max: usize) -> Vec<SubGoal> {
    let steps: Vec<Step> = subgoals
        .into_iter()
        .filter(|sg| !sg.goal.trim().is_empty() && sg.goal.trim() != parent.trim())
        .take(max)
        .map(|sg| {
            let id = sanitize_id(&sg.id);
            Step::new(id, sg.goal).depends_on(sg.dependencies.iter().map(|d| sanitize_id(d)))
        })
        .collect();
    let (plan, _) = plan_core::repair(Plan::new(parent, steps));
    plan.steps
        .into_iter()
        .map(|s| SubGoal {
            id: s.id.to_string(),
            goal: s.description,
            dependencies: s.dependencies.into_iter().map(|d| d.to_string()).collect(),
        })
        .collect()
}

fn sanitize_id(id: &str) -> String {
    let cleaned: String = id
        .trim()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    cleaned.to_lowercase()
}

/// Rolls step results up the tree: a sub-goal is completed when all its leaves are, and
/// its output is its leaves' outputs in order.
pub(crate) fn roll_up(tree: &GoalTree, flat: &FlatPlan, results: &[StepState]) -> GoalResult {
    let by_id: HashMap<&str, &StepState> = results.iter().map(|r| (r.id.as_str(), r)).collect();
    let leaf_ids: Vec<&StepId> = flat.plan.steps.iter().map(|s| &s.id).collect();
    fn node(
        n: &GoalNode,
        prefix: &str,
        by_id: &HashMap<&str, &StepState>,
        leaf_ids: &HashSet<&str>,
    ) -> GoalResult {
        let id = if prefix.is_empty() {
            n.step.id.to_string()
        } else {
            format!("{prefix}{}{}", plan_core::PATH_SEPARATOR, n.step.id)
        };
        if n.is_leaf() {
            let r = by_id
                .get(id.as_str())
                .filter(|_| leaf_ids.contains(id.as_str()));
            return GoalResult {
                id,
                goal: n.step.description.clone(),
                status: r.map_or("pending", |r| r.status.name()).to_owned(),
                output: r.and_then(|r| r.output.clone()),
                children: Vec::new(),
            };
        }
        let children: Vec<GoalResult> = n
            .children
            .iter()
            .map(|c| node(c, &id, by_id, leaf_ids))
            .collect();
        combine(id, n.step.description.clone(), children)
    }
    let leaf_set: HashSet<&str> = leaf_ids.iter().map(|s| s.as_str()).collect();
    let children: Vec<GoalResult> = tree
        .children
        .iter()
        .map(|c| node(c, "", &by_id, &leaf_set))
        .collect();
    combine(String::new(), tree.goal.clone(), children)
}

fn combine(id: String, goal: String, children: Vec<GoalResult>) -> GoalResult {
    let rank = |s: &str| match s {
        "completed" => 0,
        "pending" => 1,
        "cancelled" => 2,
        "skipped" => 3,
        _ => 4,
    };
    let status = children
        .iter()
        .map(|c| c.status.as_str())
        .max_by_key(|s| rank(s))
        .unwrap_or("completed")
        .to_owned();
    let parts: Vec<String> = children
        .iter()
        .filter_map(|c| c.output.as_ref().map(|o| format!("[{}] {}", c.id, o)))
        .collect();
    GoalResult {
        id,
        goal,
        status,
        output: (!parts.is_empty()).then(|| parts.join("\n\n")),
        children,
    }
}

/// The tree as indented text: one line per node with its status.
pub(crate) fn render_tree(root: &GoalResult) -> String {
    fn walk(n: &GoalResult, prefix: &str, last: bool, out: &mut String) {
        let branch = if last { "└── " } else { "├── " };
        let short =
            n.id.rsplit(plan_core::PATH_SEPARATOR)
                .next()
                .unwrap_or(&n.id);
        out.push_str(&format!(
            "{prefix}{branch}{short}: {} [{}]\n",
            n.goal, n.status
        ));
        let child_prefix = format!("{prefix}{}", if last { "    " } else { "│   " });
        for (i, c) in n.children.iter().enumerate() {
            walk(c, &child_prefix, i + 1 == n.children.len(), out);
        }
    }
    let mut out = format!("{} [{}]\n", root.goal, root.status);
    for (i, c) in root.children.iter().enumerate() {
        walk(c, "", i + 1 == root.children.len(), &mut out);
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subgoals_are_cleaned() {
        let sgs = vec![
            SubGoal {
                id: "a/b".into(),
                goal: "first".into(),
                dependencies: vec!["c".into(), "ghost".into()],
            },
            SubGoal {
                id: "c".into(),
                goal: "second".into(),
                dependencies: vec!["a/b".into()],
            },
            SubGoal {
                id: "d".into(),
                goal: "parent".into(),
                dependencies: vec![],
            },
        ];
        let out = clean_subgoals("parent", sgs, 5);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].id, "a_b");
        // the cycle a_b <-> c is broken, the unknown dependency dropped
        assert!(out[0].dependencies.is_empty(), "{out:?}");
        assert_eq!(out[1].dependencies, vec!["a_b".to_owned()]);
    }
}
