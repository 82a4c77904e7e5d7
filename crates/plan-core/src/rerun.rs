//! What a re-run of a plan can reuse: a content key per step.
//!
//! A step's key is a hash of everything that determines its output — its description,
//! kind, agent, fallback, expected output, program (`code`, `lang`), a `salt` for what
//! the plan does not say (the model it runs on) — and of the keys
//! of the steps it depends on, not of their ids. So a step keeps its key exactly while
//! nothing it reads changed, directly or through its dependencies: an edit changes the
//! keys of the edited step and of everything downstream of it, and of nothing else. A
//! re-run reuses the output of a finished step of the earlier run with the same key.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use crate::model::{Plan, StepId};

/// Each step's content key (SHA-256, hex) in `plan`, with `salt` mixed into every key.
/// A dependency on an id the plan does not have, or a cycle, is part of the key as such.
pub fn step_keys(plan: &Plan, salt: &str) -> HashMap<StepId, String> {
    let by_id: HashMap<&StepId, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (&s.id, i))
        .collect();
    let mut keys: Vec<Option<String>> = vec![None; plan.steps.len()];
    let mut visiting = vec![false; plan.steps.len()];
    for i in 0..plan.steps.len() {
        key_of(plan, &by_id, i, salt, &mut keys, &mut visiting);
    }
    plan.steps
        .iter()
        .zip(keys)
        .map(|(s, k)| (s.id.clone(), k.unwrap_or_default()))
        .collect()
}

fn key_of(
    plan: &Plan,
    by_id: &HashMap<&StepId, usize>,
    i: usize,
    salt: &str,
    keys: &mut Vec<Option<String>>,
    visiting: &mut Vec<bool>,
) -> String {
    if let Some(k) = &keys[i] {
        return k.clone();
    }
    if visiting[i] {
        return "cycle".to_owned();
    }
    visiting[i] = true;
    let step = &plan.steps[i];
    let mut deps: Vec<String> = step
        .dependencies
        .iter()
        .map(|d| match by_id.get(d) {
            Some(&j) => key_of(plan, by_id, j, salt, keys, visiting),
            None => format!("unknown:{d}"),
        })
        .collect();
    deps.sort();
    let mut content = serde_json::to_value(step).unwrap_or(serde_json::Value::Null);
    if let Some(map) = content.as_object_mut() {
        map.remove("id");
        map.remove("dependencies");
        // Whether it always runs is the re-run's business, not what it produces.
        map.remove("always_run");
        map.insert("dependency_keys".to_owned(), deps.into());
        map.insert("salt".to_owned(), salt.into());
    }
    let digest = Sha256::digest(content.to_string().as_bytes());
    let key: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    visiting[i] = false;
    keys[i] = Some(key.clone());
    key
}

/// The steps of `plan` that depend on one of `from`, directly or not, and `from`
/// themselves: what `plan rerun --from STEP` runs again whatever the keys say.
pub fn downstream_of(plan: &Plan, from: &[StepId]) -> HashSet<StepId> {
    let mut out: HashSet<StepId> = from.iter().cloned().collect();
    loop {
        let before = out.len();
        for s in &plan.steps {
            if !out.contains(&s.id) && s.dependencies.iter().any(|d| out.contains(d)) {
                out.insert(s.id.clone());
            }
        }
        if out.len() == before {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::Step;

    fn chain() -> Plan {
        Plan::new(
            "g",
            vec![
                Step::new("a", "A"),
                Step::new("b", "B").depends_on(["a"]),
                Step::new("c", "C"),
            ],
        )
    }

    #[test]
    fn an_edit_changes_the_keys_of_the_step_and_its_downstream_only() {
        let before = step_keys(&chain(), "m");
        let mut edited = chain();
        edited.steps[0].description = "A, differently".to_owned();
        let after = step_keys(&edited, "m");
        assert_ne!(before["a"], after["a"]);
        assert_ne!(before["b"], after["b"], "b reads a");
        assert_eq!(before["c"], after["c"]);
    }

    #[test]
    fn ids_and_always_run_do_not_matter_the_salt_does() {
        let mut renamed = chain();
        renamed.steps[0].id = StepId::new("first");
        renamed.steps[1].dependencies = vec![StepId::new("first")];
        let (a, b) = (step_keys(&chain(), "m"), step_keys(&renamed, "m"));
        assert_eq!(a["a"], b["first"]);
        assert_eq!(a["b"], b["b"]);
        assert_ne!(step_keys(&chain(), "m")["c"], step_keys(&chain(), "n")["c"]);
        let mut always = chain();
        always.steps[2].always_run = true;
        assert_eq!(a["c"], step_keys(&always, "m")["c"]);
    }

    #[test]
    fn downstream_of_a_step_is_it_and_what_depends_on_it() {
        let got = downstream_of(&chain(), &[StepId::new("a")]);
        let want: HashSet<StepId> = [StepId::new("a"), StepId::new("b")].into();
        assert_eq!(got, want);
    }

    /// A random DAG: each step depends on some earlier ones.
    fn dag() -> impl Strategy<Value = Plan> {
        (2usize..24).prop_flat_map(|n| {
            proptest::collection::vec(
                proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
                n,
            )
            .prop_map(move |deps| {
                let steps = (0..n)
                    .map(|i| {
                        let mut s = Step::new(format!("s{i}"), format!("Do {i}"));
                        if i > 0 {
                            let mut d: Vec<String> =
                                deps[i].iter().map(|x| format!("s{}", x.index(i))).collect();
                            d.sort();
                            d.dedup();
                            s = s.depends_on(d);
                        }
                        s
                    })
                    .collect();
                Plan::new("g", steps)
            })
        })
    }

    proptest! {
        /// Editing some steps changes exactly the keys of the edited steps and of every step
        /// downstream of them: what a re-run runs again is the invalidated closure.
        #[test]
        fn keys_change_on_exactly_the_invalidated_closure(
            plan in dag(),
            picks in proptest::collection::vec(any::<prop::sample::Index>(), 1..4),
        ) {
            let edited_ids: Vec<StepId> = picks
                .iter()
                .map(|p| plan.steps[p.index(plan.steps.len())].id.clone())
                .collect();
            let mut edited = plan.clone();
            for s in &mut edited.steps {
                if edited_ids.contains(&s.id) {
                    s.description.push_str(" (edited)");
                }
            }
            let (before, after) = (step_keys(&plan, "m"), step_keys(&edited, "m"));
            let changed: HashSet<StepId> = plan
                .steps
                .iter()
                .filter(|s| before[&s.id] != after[&s.id])
                .map(|s| s.id.clone())
                .collect();
            // The oracle: the graph's own descendants of each edited step.
            let graph = crate::graph::PlanGraph::with_limits(
                plan.clone(),
                &crate::graph::Limits::with_max_steps(usize::MAX),
            )
            .unwrap();
            let mut want: HashSet<StepId> = edited_ids.iter().cloned().collect();
            for id in &edited_ids {
                let i = plan.steps.iter().position(|s| &s.id == id).unwrap();
                want.extend(graph.descendants(i).into_iter().map(|j| plan.steps[j].id.clone()));
            }
            prop_assert_eq!(&changed, &want);
            prop_assert_eq!(changed, downstream_of(&plan, &edited_ids));
        }
    }
}
