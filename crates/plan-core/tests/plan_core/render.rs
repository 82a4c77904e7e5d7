//! Snapshot tests of the text tree, Mermaid and DOT renderings.

use plan_core::{
    GoalNode, GoalTree, Plan, PlanGraph, RunState, Step, StepId, StepKind, render_dot,
    render_goal_tree, render_mermaid, render_text,
};

fn plan() -> Plan {
    Plan::new(
        "Compare \"fast\" Rust web frameworks <2026> & pick one",
        vec![
            Step::new("search", "Find the most used Rust web frameworks").with_kind(StepKind::Search),
            Step::new("bench", "Collect benchmark results (req/s, p99 latency) for each \\ framework #1")
                .depends_on(["search"])
                .with_kind(StepKind::Search),
            Step::new("docs", "Rate the documentation of each framework on a scale from one to ten, with a short justification per framework")
                .depends_on(["search"]),
            Step::new("compare", "Compare them:\nspeed, docs, ecosystem").depends_on(["bench", "docs"]).with_kind(StepKind::Analyze),
            Step::new("check", "Check the comparison cites a source for every number")
                .depends_on(["compare", "bench"])
                .with_kind(StepKind::Verify),
            Step::new("report", "Write the recommendation").depends_on(["check", "compare"]).with_kind(StepKind::Synthesize),
            Step::new("notes", "Keep notes of \"surprises\""),
        ],
    )
}

fn graph() -> PlanGraph {
    PlanGraph::new(plan()).unwrap()
}

/// search and docs done, bench failed, compare and its dependents skipped, notes running.
fn state() -> RunState {
    let mut st = RunState::new(&plan());
    let id = StepId::new;
    for s in ["search", "docs"] {
        st.start(&id(s)).unwrap();
        st.complete(&id(s), format!("{s} output")).unwrap();
    }
    st.start(&id("bench")).unwrap();
    st.fail(&id("bench"), "site unreachable".into()).unwrap();
    for s in ["compare", "check", "report"] {
        st.skip(&id(s), "bench failed".into()).unwrap();
    }
    st.start(&id("notes")).unwrap();
    st
}

#[test]
fn text_tree() {
    insta::assert_snapshot!("text_plain", render_text(&graph(), None));
    insta::assert_snapshot!("text_with_state", render_text(&graph(), Some(&state())));
}

#[test]
fn mermaid() {
    insta::assert_snapshot!("mermaid_plain", render_mermaid(&graph(), None));
    insta::assert_snapshot!(
        "mermaid_with_state",
        render_mermaid(&graph(), Some(&state()))
    );
}

#[test]
fn dot() {
    insta::assert_snapshot!("dot_plain", render_dot(&graph(), None));
    insta::assert_snapshot!("dot_with_state", render_dot(&graph(), Some(&state())));
}

fn tree() -> GoalTree {
    GoalTree::new(
        "Ship the release",
        vec![
            GoalNode::sub_goal(
                "prepare",
                "Get the code ready",
                vec![
                    GoalNode::leaf(Step::new("test", "Run the tests").with_kind(StepKind::Code)),
                    GoalNode::leaf(Step::new("notes", "Write release notes")),
                    GoalNode::leaf(Step::new("review", "Review the notes")).depends_on(["notes"]),
                ],
            ),
            GoalNode::sub_goal(
                "publish",
                "Publish it",
                vec![
                    GoalNode::leaf(Step::new("tag", "Tag the commit")),
                    GoalNode::leaf(Step::new("announce", "Announce it")).depends_on(["tag"]),
                ],
            )
            .depends_on(["prepare"]),
        ],
    )
}

#[test]
fn goal_tree() {
    let tree = tree();
    insta::assert_snapshot!("goal_tree_plain", render_goal_tree(&tree, None));
    let flat = tree.flatten().unwrap();
    let mut st = RunState::new(&flat.plan);
    let id = StepId::new;
    for s in ["prepare/test", "prepare/notes"] {
        st.start(&id(s)).unwrap();
        st.complete(&id(s), "ok".into()).unwrap();
    }
    st.start(&id("prepare/review")).unwrap();
    insta::assert_snapshot!("goal_tree_with_state", render_goal_tree(&tree, Some(&st)));
}
