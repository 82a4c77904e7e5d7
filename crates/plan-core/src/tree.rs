//! [`GoalTree`]: a goal broken into sub-goals and leaf steps, and its flattening into a
//! [`Plan`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::graph::{Limits, PlanErrors, PlanGraph, PlanProblem};
use crate::model::{Plan, Step, StepId};

/// Separates the ids of sub-goals and leaf in the ids of a flattened plan
/// (`research/search`).
pub const PATH_SEPARATOR: &str = "/";

/// A goal broken down hierarchically: sub-goals hold further nodes, leaves are steps.
///
/// Dependencies name siblings only (nodes with the same parent); a node that depends on a
/// sub-goal waits for every leaf under it. In JSON a node is a step with an optional
/// `children` array:
///
/// ```
/// use plan_core::GoalTree;
///
/// let tree: GoalTree = serde_json::from_str(r#"{
///   "goal": "Write a report on Rust web frameworks",
///   "children": [
///     {"id": "research", "description": "Find the facts", "children": [
///       {"id": "list", "description": "List the popular frameworks"},
///       {"id": "bench", "description": "Find benchmarks", "kind": "search"}
///     ]},
///     {"id": "write", "description": "Write the report", "dependencies": ["research"]}
///   ]
/// }"#)?;
/// let flat = tree.flatten()?;
/// let ids: Vec<&str> = flat.plan.steps.iter().map(|s| s.id.as_str()).collect();
/// assert_eq!(ids, ["research/list", "research/bench", "write"]);
/// assert_eq!(flat.plan.steps[2].dependencies.len(), 2); // both leaves of `research`
/// assert_eq!(flat.path(0), ["research"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GoalTree {
    /// The overall goal.
    pub goal: String,
    /// The top-level sub-goals and steps.
    #[serde(default)]
    pub children: Vec<GoalNode>,
}

/// A node of a [`GoalTree`]: a leaf step, or a sub-goal when it has children.
///
/// For a sub-goal only `id`, `description` and `dependencies` of [`step`](Self::step) count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GoalNode {
    /// The node itself; its dependencies name siblings.
    #[serde(flatten)]
    pub step: Step,
    /// Sub-goals and steps under this node; empty for a leaf step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<GoalNode>,
}

impl GoalNode {
    /// A leaf step.
    pub fn leaf(step: Step) -> Self {
        Self {
            step,
            children: Vec::new(),
        }
    }

    /// A sub-goal with an id, a description and children.
    pub fn sub_goal(
        id: impl Into<StepId>,
        description: impl Into<String>,
        children: Vec<GoalNode>,
    ) -> Self {
        Self {
            step: Step::new(id, description),
            children,
        }
    }

    /// Adds dependencies on siblings.
    pub fn depends_on<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<StepId>,
    {
        self.step = self.step.depends_on(ids);
        self
    }

    /// Whether this node is a step (it has no children).
    pub fn is_leaf(&self) -> bool {
        self.children.is_empty()
    }
}

/// A flattened [`GoalTree`]: the plan and, for each of its steps, the sub-goals it sits
/// under, so results can be rolled up.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FlatPlan {
    /// The leaf steps, in the tree's order with each group of siblings sorted so that
    /// dependencies come first; ids are the node ids on the way down joined with
    /// [`PATH_SEPARATOR`].
    pub plan: Plan,
    /// `paths[i]` are the ids of the sub-goals above step `i`, outermost first.
    pub paths: Vec<Vec<StepId>>,
}

impl FlatPlan {
    /// The sub-goals above step `index`, outermost first (empty for a top-level step or a
    /// position out of range).
    pub fn path(&self, index: usize) -> &[StepId] {
        self.paths.get(index).map_or(&[], Vec::as_slice)
    }

    /// Positions of the steps under the sub-goal reached by `path` (outermost first); every
    /// step for an empty path.
    pub fn leaves_under(&self, path: &[&str]) -> Vec<usize> {
        (0..self.paths.len())
            .filter(|&i| {
                let p = &self.paths[i];
                p.len() >= path.len() && p.iter().zip(path).all(|(a, b)| a.as_str() == *b)
            })
            .collect()
    }
}

impl GoalTree {
    /// A tree from a goal and its top-level nodes.
    pub fn new(goal: impl Into<String>, children: Vec<GoalNode>) -> Self {
        Self {
            goal: goal.into(),
            children,
        }
    }

    /// A one-level tree holding the steps of a plan.
    pub fn from_plan(plan: Plan) -> Self {
        Self {
            goal: plan.goal,
            children: plan.steps.into_iter().map(GoalNode::leaf).collect(),
        }
    }

    /// Number of leaf steps.
    pub fn leaf_count(&self) -> usize {
        fn count(nodes: &[GoalNode]) -> usize {
            nodes
                .iter()
                .map(|n| if n.is_leaf() { 1 } else { count(&n.children) })
                .sum()
        }
        count(&self.children)
    }

    /// Flattens the tree into a plan of its leaves. A leaf depends on every leaf of each
    /// sibling that it, or any sub-goal above it, depends on.
    ///
    /// # Errors
    /// [`PlanErrors`] listing every problem, each naming the nodes by their full path: no
    /// nodes, a repeated id among siblings, an empty id or description, a dependency on
    /// itself or on a node that is not a sibling, a cycle among siblings, or two leaves
    /// whose joined ids collide (ids containing [`PATH_SEPARATOR`]).
    pub fn flatten(&self) -> Result<FlatPlan, PlanErrors> {
        let mut problems = Vec::new();
        if self.children.is_empty() {
            problems.push(PlanProblem::Empty);
        }
        let mut out = Flattener::default();
        out.group(&self.children, &[], &[], &mut problems);
        if problems.is_empty() {
            let mut seen: HashMap<&StepId, usize> = HashMap::new();
            for s in &out.steps {
                *seen.entry(&s.id).or_default() += 1;
            }
            let mut dups: Vec<(&StepId, usize)> =
                seen.into_iter().filter(|(_, c)| *c > 1).collect();
            dups.sort();
            problems.extend(
                dups.into_iter()
                    .map(|(id, count)| PlanProblem::DuplicateId {
                        step: id.clone(),
                        count,
                    }),
            );
        }
        if problems.is_empty() {
            Ok(FlatPlan {
                plan: Plan::new(self.goal.clone(), out.steps),
                paths: out.paths,
            })
        } else {
            Err(PlanErrors { problems })
        }
    }
}

#[derive(Default)]
struct Flattener {
    steps: Vec<Step>,
    paths: Vec<Vec<StepId>>,
}

fn join(prefix: &[StepId], id: &StepId) -> StepId {
    let mut s = String::new();
    for p in prefix {
        s.push_str(p.as_str());
        s.push_str(PATH_SEPARATOR);
    }
    s.push_str(id.as_str());
    StepId::new(s)
}

impl Flattener {
    /// Flattens one group of siblings under `prefix`; `inherited` are the flat ids every
    /// leaf here must depend on (from dependencies of the sub-goals above). Returns the
    /// flat ids of all leaves in the group.
    fn group(
        &mut self,
        nodes: &[GoalNode],
        prefix: &[StepId],
        inherited: &[StepId],
        problems: &mut Vec<PlanProblem>,
    ) -> Vec<StepId> {
        // Check the siblings as a plan of their own, with full ids so messages name them.
        let mut full_ids = Vec::with_capacity(nodes.len());
        for (i, n) in nodes.iter().enumerate() {
            if n.step.id.as_str().trim().is_empty() {
                match prefix.last() {
                    Some(parent) => problems.push(PlanProblem::EmptyChildId {
                        parent: join(&prefix[..prefix.len() - 1], parent),
                        index: i,
                    }),
                    None => problems.push(PlanProblem::EmptyId { index: i }),
                }
                full_ids.push(join(prefix, &StepId::new(format!("#{}", i + 1))));
            } else {
                full_ids.push(join(prefix, &n.step.id));
            }
        }
        let sibling_plan = Plan::new(
            "",
            nodes
                .iter()
                .zip(&full_ids)
                .map(|(n, id)| {
                    let mut s = Step::new(id.clone(), n.step.description.clone());
                    s.dependencies = n
                        .step
                        .dependencies
                        .iter()
                        .map(|d| join(prefix, d))
                        .collect();
                    s
                })
                .collect(),
        );
        let order = match PlanGraph::with_limits(sibling_plan, &Limits::with_max_steps(usize::MAX))
        {
            Ok(graph) => graph.topological_order(),
            Err(e) => {
                problems.extend(e.problems.into_iter().filter(|p| *p != PlanProblem::Empty));
                (0..nodes.len()).collect()
            }
        };
        let index: HashMap<&StepId, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (&n.step.id, i))
            .collect();
        // Leaves of each sibling, filled in dependency order so dependents can use them.
        let mut leaves: Vec<Vec<StepId>> = vec![Vec::new(); nodes.len()];
        let mut all = Vec::new();
        for i in order {
            let node = &nodes[i];
            let mut deps: Vec<StepId> = inherited.to_vec();
            for d in &node.step.dependencies {
                if let Some(&k) = index.get(d)
                    && k != i
                {
                    for l in &leaves[k] {
                        if !deps.contains(l) {
                            deps.push(l.clone());
                        }
                    }
                }
            }
            if node.is_leaf() {
                let mut step = node.step.clone();
                step.id = join(prefix, &node.step.id);
                step.dependencies = deps;
                leaves[i].push(step.id.clone());
                self.steps.push(step);
                self.paths.push(prefix.to_vec());
            } else {
                let mut sub_prefix = prefix.to_vec();
                sub_prefix.push(node.step.id.clone());
                leaves[i] = self.group(&node.children, &sub_prefix, &deps, problems);
            }
            all.extend(leaves[i].iter().cloned());
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> GoalTree {
        GoalTree::new(
            "g",
            vec![
                GoalNode::leaf(Step::new("write", "write it")).depends_on(["research", "plan"]),
                GoalNode::sub_goal(
                    "research",
                    "find facts",
                    vec![
                        GoalNode::leaf(Step::new("read", "read")).depends_on(["search"]),
                        GoalNode::leaf(Step::new("search", "search")),
                    ],
                )
                .depends_on(["plan"]),
                GoalNode::leaf(Step::new("plan", "outline")),
            ],
        )
    }

    #[test]
    fn flattening_orders_siblings_and_expands_sub_goal_dependencies() {
        let flat = tree().flatten().unwrap();
        let ids: Vec<&str> = flat.plan.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["plan", "research/search", "research/read", "write"]);
        let deps = |i: usize| -> Vec<&str> {
            flat.plan.steps[i]
                .dependencies
                .iter()
                .map(StepId::as_str)
                .collect()
        };
        assert_eq!(deps(1), ["plan"]);
        assert_eq!(deps(2), ["plan", "research/search"]);
        assert_eq!(deps(3), ["research/search", "research/read", "plan"]);
        assert_eq!(flat.path(2), [StepId::new("research")]);
        assert!(flat.path(3).is_empty());
        assert_eq!(flat.leaves_under(&["research"]), vec![1, 2]);
        assert_eq!(flat.leaves_under(&[]).len(), 4);
        assert!(PlanGraph::new(flat.plan).is_ok());
        assert_eq!(tree().leaf_count(), 4);
    }

    #[test]
    fn problems_name_full_paths() {
        let t = GoalTree::new(
            "g",
            vec![
                GoalNode::sub_goal(
                    "r",
                    "r",
                    vec![
                        GoalNode::leaf(Step::new("a", "a")).depends_on(["b", "top"]),
                        GoalNode::leaf(Step::new("b", "b")).depends_on(["a"]),
                    ],
                ),
                GoalNode::leaf(Step::new("top", "t")),
                GoalNode::leaf(Step::new("top", "t2")),
            ],
        );
        let text = t.flatten().unwrap_err().to_string();
        assert!(text.contains("2 steps have the id `top`"), "{text}");
        assert!(text.contains("step `r/a` depends on `r/top`"), "{text}");
        assert!(text.contains("cycle r/a -> r/b -> r/a"), "{text}");
        assert_eq!(
            GoalTree::new("g", vec![]).flatten().unwrap_err().problems,
            vec![PlanProblem::Empty]
        );
    }

    #[test]
    fn colliding_joined_ids_are_reported() {
        let t = GoalTree::new(
            "g",
            vec![
                GoalNode::sub_goal("a", "a", vec![GoalNode::leaf(Step::new("b", "b"))]),
                GoalNode::leaf(Step::new("a/b", "x")),
            ],
        );
        let err = t.flatten().unwrap_err();
        assert_eq!(
            err.problems,
            vec![PlanProblem::DuplicateId {
                step: "a/b".into(),
                count: 2
            }]
        );
    }

    #[test]
    fn serde_round_trip_and_from_plan() {
        let t = tree();
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains(r#""children":[{"id":"read""#), "{json}");
        assert_eq!(serde_json::from_str::<GoalTree>(&json).unwrap(), t);
        let plan = Plan::new(
            "g",
            vec![Step::new("x", "x"), Step::new("y", "y").depends_on(["x"])],
        );
        let flat = GoalTree::from_plan(plan.clone()).flatten().unwrap();
        assert_eq!(flat.plan, plan);
    }
}
