//! The architecture invariants of ARCHITECTURE.md, checked against `cargo metadata`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Normal (non-dev, non-build) dependencies of each package, transitively, by name.
struct DepGraph {
    direct: BTreeMap<String, BTreeSet<String>>,
}

impl DepGraph {
    fn load() -> Result<Self> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let out = Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--locked"])
            .output()
            .context("could not run cargo metadata")?;
        if !out.status.success() {
            bail!(
                "cargo metadata failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let meta: Value = serde_json::from_slice(&out.stdout)?;
        let names: BTreeMap<&str, &str> = meta["packages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
            .collect();
        let mut direct: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for node in meta["resolve"]["nodes"].as_array().into_iter().flatten() {
            let Some(name) = node["id"].as_str().and_then(|id| names.get(id)) else {
                continue;
            };
            let entry = direct.entry((*name).to_owned()).or_default();
            for dep in node["deps"].as_array().into_iter().flatten() {
                let normal = dep["dep_kinds"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|k| k["kind"].is_null());
                if let (true, Some(dep_name)) =
                    (normal, dep["pkg"].as_str().and_then(|id| names.get(id)))
                {
                    entry.insert((*dep_name).to_owned());
                }
            }
        }
        Ok(Self { direct })
    }

    fn transitive(&self, root: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![root.to_owned()];
        while let Some(p) = stack.pop() {
            for d in self.direct.get(&p).into_iter().flatten() {
                if seen.insert(d.clone()) {
                    stack.push(d.clone());
                }
            }
        }
        seen
    }
}

/// Checks every invariant and reports all violations at once.
pub fn check_workspace() -> Result<()> {
    let graph = DepGraph::load()?;
    let violations = violations(&graph);
    if violations.is_empty() {
        println!("architecture invariants hold");
        Ok(())
    } else {
        bail!(
            "architecture invariants broken:\n  - {}",
            violations.join("\n  - ")
        )
    }
}

fn violations(graph: &DepGraph) -> Vec<String> {
    let mut out = Vec::new();
    let forbid = |out: &mut Vec<String>, krate: &str, banned: &[&str], why: &str| {
        let deps = graph.transitive(krate);
        for b in banned {
            if deps.contains(*b) {
                out.push(format!("{krate} depends on {b} ({why})"));
            }
        }
    };
    forbid(
        &mut out,
        "plan-core",
        &["tokio", "reqwest", "rusqlite", "plan-llm", "plan-exec"],
        "plan-core is data and graph only: no runtime, network or storage",
    );
    forbid(
        &mut out,
        "plan-llm",
        &[
            "plan-core",
            "plan-exec",
            "plan-strategies",
            "plan-llm-local",
        ],
        "plan-llm knows nothing about plans",
    );
    forbid(
        &mut out,
        "plan-llm-local",
        &["plan-core", "plan-exec", "plan-strategies"],
        "the embedded model is a provider crate like any other",
    );
    forbid(
        &mut out,
        "plan-exec",
        &["plan-strategies", "plan-llm-local"],
        "arrows only point down",
    );
    forbid(
        &mut out,
        "plan-strategies",
        &["plan-llm-local"],
        "strategies work with any provider",
    );
    for (pkg, deps) in &graph.direct {
        if pkg != "plan-cli" && deps.contains("plan-cli") {
            out.push(format!("{pkg} depends on plan-cli (nothing may)"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_respects_architecture_invariants() {
        let graph = DepGraph::load().unwrap();
        assert!(
            graph.direct.contains_key("plan-core"),
            "metadata lists plan-core"
        );
        let v = violations(&graph);
        assert!(
            v.is_empty(),
            "architecture invariants broken:\n{}",
            v.join("\n")
        );
    }

    #[test]
    fn a_forbidden_edge_is_reported() {
        let mut graph = DepGraph::load().unwrap();
        graph
            .direct
            .entry("plan-core".into())
            .or_default()
            .insert("tokio".into());
        let v = violations(&graph);
        assert!(
            v.iter()
                .any(|l| l.starts_with("plan-core depends on tokio")),
            "{v:?}"
        );
    }
}
