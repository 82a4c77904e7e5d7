//! The reference workloads of the benchmarks: plan shapes that planning agents produce
//! (a chain, a fan-out, a diamond, layers, a research plan), with their critical paths.

use plan_core::{Plan, Step, StepKind};

/// A reference plan and the number of steps on its critical path (the fewest rounds of
/// model calls that can run it).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Workload {
    /// A short name for tables.
    pub name: &'static str,
    /// The plan.
    pub plan: Plan,
    /// Steps on the longest dependency chain.
    pub critical_path: u32,
}

/// Every reference workload: chain of 6, fan-out 8 then 1, diamond, layered 4,5,4,4,3,
/// research 3-2-1.
pub fn reference() -> Vec<Workload> {
    let w = |name, plan, critical_path| Workload {
        name,
        plan,
        critical_path,
    };
    vec![
        w("chain of 6", chain(6), 6),
        w("fan-out 8 then 1", fan_out(8), 2),
        w("diamond", diamond(), 3),
        w("layered 4,5,4,4,3", layered(&[4, 5, 4, 4, 3]), 5),
        w("research 3-2-1", research(), 3),
    ]
}

fn step(id: &str, what: &str, deps: &[String]) -> Step {
    Step::new(id, what).depends_on(deps.iter().cloned())
}

/// `n` steps, each depending on the one before.
pub fn chain(n: usize) -> Plan {
    let steps = (0..n)
        .map(|i| {
            let deps: Vec<String> = if i == 0 {
                vec![]
            } else {
                vec![format!("c{}", i - 1)]
            };
            step(
                &format!("c{i}"),
                &format!("Refine the draft, pass {i}"),
                &deps,
            )
        })
        .collect();
    Plan::new("Write a short essay in six passes", steps)
}

/// `n` independent steps, then one that merges them all.
pub fn fan_out(n: usize) -> Plan {
    let mut steps: Vec<Step> = (0..n)
        .map(|i| step(&format!("f{i}"), &format!("Summarise source {i}"), &[]))
        .collect();
    let all: Vec<String> = (0..n).map(|i| format!("f{i}")).collect();
    steps.push(step("merge", "Merge the summaries", &all));
    Plan::new("Summarise eight sources and merge them", steps)
}

/// One step, two in parallel after it, one joining them.
pub fn diamond() -> Plan {
    Plan::new(
        "Plan a trip",
        vec![
            step("1", "Pick a destination", &[]),
            step("2a", "Find flights", &["1".into()]),
            step("2b", "Find hotels", &["1".into()]),
            step("3", "Make an itinerary", &["2a".into(), "2b".into()]),
        ],
    )
}

/// Stages of the given widths; each step depends on two steps of the stage before.
pub fn layered(widths: &[usize]) -> Plan {
    let mut steps = Vec::new();
    for (l, &w) in widths.iter().enumerate() {
        for k in 0..w {
            let deps: Vec<String> = if l == 0 {
                vec![]
            } else {
                let p = widths[l - 1];
                let mut d = vec![format!("L{}_{}", l - 1, k % p)];
                let other = format!("L{}_{}", l - 1, (k + 1) % p);
                if !d.contains(&other) {
                    d.push(other);
                }
                d
            };
            steps.push(step(
                &format!("L{l}_{k}"),
                &format!("Task {k} of stage {l}"),
                &deps,
            ));
        }
    }
    Plan::new("A layered project", steps)
}

/// Three searches, two analyses of all of them, one synthesis.
pub fn research() -> Plan {
    let searches: Vec<String> = (1..=3).map(|i| format!("search{i}")).collect();
    let mut steps: Vec<Step> = searches
        .iter()
        .map(|id| step(id, &format!("Search the web: {id}"), &[]).with_kind(StepKind::Search))
        .collect();
    steps.push(step("analyze1", "Analyse speed", &searches).with_kind(StepKind::Analyze));
    steps.push(step("analyze2", "Analyse ecosystems", &searches).with_kind(StepKind::Analyze));
    steps.push(
        step(
            "synthesis",
            "Write the comparison",
            &["analyze1".into(), "analyze2".into()],
        )
        .with_kind(StepKind::Synthesize),
    );
    Plan::new("Compare the top 3 Python web frameworks", steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_critical_paths_are_right() {
        for w in reference() {
            let graph = plan_core::PlanGraph::new(w.plan).unwrap();
            assert_eq!(
                graph.critical_path_len() as u32,
                w.critical_path,
                "{}",
                w.name
            );
        }
    }
}
