//! Hierarchical planning: recursive decomposition of a goal into a [`GoalTree`], and the
//! roll-up of leaf results to their sub-goals.

use std::collections::{HashMap, HashSet};

use futures::future::{BoxFuture, try_join_all};
use plan_core::{FlatPlan, GoalNode, GoalTree, Plan, Step, StepId};
use plan_llm::{CallRecord, Provider};

use crate::calls::{SubGoal, decompose};
use crate::error::StrategyError;
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
    calls: &mut Vec<CallRecord>,
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

type Split = (Option<Vec<GoalNode>>, Vec<CallRecord>);

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

/// The goal tree a hierarchical run's results roll up: the tree it was planned with, or
/// the rolled-up tree kept with the run (recorded when it was planned, stopped for
/// approval or was interrupted), for a run that is approved or resumed later. Either is
/// used only while the plan is the one the tree was flattened into.
#[derive(Clone, Debug)]
pub(crate) enum RunTree {
    /// The tree as decomposed, and its flattening.
    Planned { tree: GoalTree, flat: FlatPlan },
    /// The tree kept with the run: its shape and goals (statuses and outputs are redone).
    Kept(GoalResult),
}

impl RunTree {
    /// `tree`, when `plan` is the plan it flattens into (not one edited since).
    pub(crate) fn planned(tree: GoalTree, plan: &Plan) -> Option<Self> {
        let flat = tree.flatten().ok()?;
        (flat.plan == *plan).then_some(Self::Planned { tree, flat })
    }

    /// A tree kept with the run, when its leaves are exactly the steps of `plan` (the
    /// same ids with the same descriptions).
    pub(crate) fn kept(kept: GoalResult, plan: &Plan) -> Option<Self> {
        fits(&kept, plan).then_some(Self::Kept(kept))
    }

    /// The tree with `results` rolled up it: a sub-goal is completed when all its leaves
    /// are, and its output is its leaves' outputs in order.
    pub(crate) fn roll_up(&self, results: &[StepState]) -> GoalResult {
        match self {
            Self::Planned { tree, flat } => roll_up(tree, flat, results),
            Self::Kept(kept) => roll_up_kept(kept, results),
        }
    }
}

/// [`roll_up`] over a tree already rolled up once: the same shape, goals and ids, with the
/// statuses and outputs of `results`.
fn roll_up_kept(kept: &GoalResult, results: &[StepState]) -> GoalResult {
    let by_id: HashMap<&str, &StepState> = results.iter().map(|r| (r.id.as_str(), r)).collect();
    fn node(n: &GoalResult, by_id: &HashMap<&str, &StepState>) -> GoalResult {
        if n.children.is_empty() {
            let r = by_id.get(n.id.as_str());
            return GoalResult {
                id: n.id.clone(),
                goal: n.goal.clone(),
                status: r.map_or("pending", |r| r.status.name()).to_owned(),
                output: r.and_then(|r| r.output.clone()),
                children: Vec::new(),
            };
        }
        let children = n.children.iter().map(|c| node(c, by_id)).collect();
        combine(n.id.clone(), n.goal.clone(), children)
    }
    let children = kept.children.iter().map(|c| node(c, &by_id)).collect();
    combine(kept.id.clone(), kept.goal.clone(), children)
}

/// Whether the leaves of `tree` are exactly the steps of `plan` (ids and descriptions).
fn fits(tree: &GoalResult, plan: &Plan) -> bool {
    fn leaves<'a>(n: &'a GoalResult, out: &mut Vec<(&'a str, &'a str)>) {
        for c in &n.children {
            if c.children.is_empty() {
                out.push((c.id.as_str(), c.goal.as_str()));
            } else {
                leaves(c, out);
            }
        }
    }
    let mut tree_leaves = Vec::new();
    leaves(tree, &mut tree_leaves);
    let mut steps: Vec<(&str, &str)> = plan
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.description.as_str()))
        .collect();
    tree_leaves.sort_unstable();
    steps.sort_unstable();
    !steps.is_empty() && tree_leaves == steps
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

    fn tree() -> GoalTree {
        GoalTree::new(
            "g",
            vec![
                GoalNode::sub_goal(
                    "facts",
                    "Gather the facts",
                    vec![
                        GoalNode::leaf(Step::new("list", "List them")),
                        GoalNode::leaf(Step::new("check", "Check them")).depends_on(["list"]),
                    ],
                ),
                GoalNode::leaf(Step::new("write", "Write it up")).depends_on(["facts"]),
            ],
        )
    }

    #[test]
    fn a_kept_tree_rolls_up_as_the_tree_it_came_from() {
        let tree = tree();
        let flat = tree.flatten().unwrap();
        let results = vec![
            StepState::completed(StepId::new("facts/list"), "the list".to_owned()),
            StepState::completed(StepId::new("facts/check"), "checked".to_owned()),
        ];
        let kept = RunTree::kept(roll_up(&tree, &flat, &[]), &flat.plan).unwrap();
        let planned = RunTree::planned(tree.clone(), &flat.plan).unwrap();
        assert_eq!(kept.roll_up(&results), planned.roll_up(&results));
        let rolled = kept.roll_up(&results);
        assert_eq!(rolled.status, "pending");
        assert_eq!(rolled.children[0].status, "completed");
        assert_eq!(
            rolled.children[0].output.as_deref(),
            Some("[facts/list] the list\n\n[facts/check] checked")
        );
    }

    #[test]
    fn a_tree_is_used_only_while_the_plan_is_the_one_it_was_flattened_into() {
        let tree = tree();
        let flat = tree.flatten().unwrap();
        let kept = roll_up(&tree, &flat, &[]);
        let mut edited = flat.plan.clone();
        edited.steps[2].description = "Write it up briefly".into();
        assert!(RunTree::planned(tree.clone(), &edited).is_none());
        assert!(RunTree::kept(kept.clone(), &edited).is_none());
        edited.steps[2].description = "Write it up".into();
        edited.steps.pop();
        assert!(RunTree::kept(kept, &edited).is_none());
    }

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
