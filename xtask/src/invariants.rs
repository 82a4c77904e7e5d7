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

/// The methods of `RunStore` that write.
const STORE_WRITES: [&str; 6] = [
    "create_run",
    "save_plan",
    "append_events",
    "commit_output",
    "set_status",
    "finish_run",
];

/// Library and binary sources that may write to a `RunStore`: the run session, and the
/// store implementations themselves.
fn may_write_store(path: &str) -> bool {
    path.ends_with("plan-exec/src/session.rs")
        || path.contains("plan-exec/src/store/")
        || path.ends_with("plan-sqlite/src/lib.rs")
        || path.ends_with("plan-exec/src/conformance.rs")
        || path.ends_with("plan-postgres/src/store.rs")
        // The store's retry layer, whose tests write to check what a retry recognises.
        || path.ends_with("plan-postgres/src/outage.rs")
}

/// Calls in `text` of a `RunStore` write method on a store (`store.save_plan(`,
/// `self.store.set_status(`, `store.clone()\n    .commit_output(` ...), as `line: text`.
fn store_writes_in(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for method in STORE_WRITES {
        let call = format!(".{method}(");
        let mut from = 0;
        while let Some(found) = text[from..].find(&call) {
            let at = from + found;
            from = at + call.len();
            let mut receiver = text[..at].trim_end();
            receiver = receiver
                .strip_suffix(".clone()")
                .unwrap_or(receiver)
                .trim_end();
            let ident: String = receiver
                .chars()
                .rev()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let line = text[..at].matches('\n').count();
            let shown = lines.get(line).copied().unwrap_or("").trim();
            if shown.starts_with("//") || !ident.to_ascii_lowercase().contains("store") {
                continue;
            }
            out.push(format!("{}: {}", line + 1, shown));
        }
    }
    out.sort_by_key(|h| {
        h.split(':')
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
    });
    out
}

/// Every place outside the run session that writes to a `RunStore`.
fn store_writers(root: &std::path::Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.join("crates")];
    while let Some(dir) = dirs.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            let shown = path.to_string_lossy().replace('\\', "/");
            if path.is_dir() {
                // Only library and binary sources: tests and benches may drive a store.
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if !matches!(name, "tests" | "benches" | "examples" | "target") {
                    dirs.push(path);
                }
            } else if shown.ends_with(".rs") && shown.contains("/src/") && !may_write_store(&shown)
            {
                let text = std::fs::read_to_string(&path)?;
                for hit in store_writes_in(&text) {
                    out.push(format!(
                        "{shown}:{hit} (only the RunSession writes to a store)"
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// The heavy crates: a bundled SQLite, the seccomp compiler and `nix` (the sandbox
/// backends), JSON-schema validation (tools) and tantivy (the local index).
const SQLITE: [&str; 2] = ["rusqlite", "libsqlite3-sys"];
const SECCOMP: [&str; 2] = ["seccompiler", "nix"];
const TANTIVY: &str = "tantivy";
const JSONSCHEMA: &str = "jsonschema";

/// What each library crate must not compile, as `cargo tree -p CRATE -e normal` resolves
/// it (its own default features, nothing a sibling turns on): the runner alone builds
/// none of the heavy crates, and the store, the strategies and the server leave the SQLite
/// store, the sandbox backends and the local index to the binary.
fn weight_limits() -> Vec<(&'static str, Vec<&'static str>)> {
    let no_backends: Vec<&str> = SQLITE
        .iter()
        .chain(&SECCOMP)
        .copied()
        .chain([TANTIVY])
        .collect();
    let mut runner = no_backends.clone();
    runner.push(JSONSCHEMA);
    vec![
        ("plan-exec", runner),
        ("plan-postgres", no_backends.clone()),
        ("plan-strategies", no_backends.clone()),
        ("plan-serve", no_backends.clone()),
        ("plan-worker", no_backends),
    ]
}

/// The heavy crates `cargo tree -p CRATE -e normal` lists, for each crate of
/// [`weight_limits`], as violations.
fn too_heavy() -> Result<Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut found = Vec::new();
    for (krate, banned) in weight_limits() {
        let out = Command::new(&cargo)
            .args([
                "tree", "-p", krate, "-e", "normal", "--prefix", "none", "--locked",
            ])
            .output()
            .context("could not run cargo tree")?;
        if !out.status.success() {
            bail!(
                "cargo tree -p {krate} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut heavy: Vec<String> = text
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|name| banned.contains(name))
            .map(|name| {
                format!(
                    "{krate} builds {name} (`cargo tree -p {krate} -e normal -i {name}` shows why)"
                )
            })
            .collect();
        heavy.sort();
        heavy.dedup();
        found.extend(heavy);
    }
    Ok(found)
}

/// Checks every invariant and reports all violations at once.
pub fn check_workspace() -> Result<()> {
    let graph = DepGraph::load()?;
    let mut violations = violations(&graph);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    violations.extend(store_writers(&root)?);
    violations.extend(too_heavy()?);
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
        "plan-sandbox",
        &["plan-llm", "plan-exec", "plan-strategies"],
        "the sandbox runs programs: it knows nothing about models or runs",
    );
    forbid(
        &mut out,
        "plan-tools",
        &["plan-strategies", "plan-llm-local", "plan-sqlite"],
        "tools sit beside the runner, below the strategies",
    );
    forbid(
        &mut out,
        "plan-sqlite",
        &["plan-strategies", "plan-llm-local", "plan-tools"],
        "a store is a leaf below the strategies: it implements plan-exec's RunStore",
    );
    forbid(
        &mut out,
        "plan-strategies",
        &["plan-llm-local"],
        "strategies work with any provider",
    );
    forbid(
        &mut out,
        "plan-postgres",
        &["plan-strategies", "plan-llm-local"],
        "a store is a leaf below the strategies: it implements plan-exec's RunStore",
    );
    forbid(
        &mut out,
        "plan-mcp",
        &["plan-llm-local"],
        "the MCP server gets its models from the caller's provider factory",
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
    fn the_library_crates_leave_the_heavy_crates_to_the_binary() {
        let heavy = too_heavy().unwrap();
        assert!(heavy.is_empty(), "{}", heavy.join("\n"));
    }

    #[test]
    fn only_the_run_session_writes_to_a_store() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let writers = store_writers(&root).unwrap();
        assert!(writers.is_empty(), "{}", writers.join("\n"));
    }

    #[test]
    fn a_store_write_outside_the_session_is_found() {
        let text = "fn f() {\n    self.store.save_plan(&id, 0, &plan).await?;\n    session.set_status(s).await?;\n    store.clone().commit_output(&id, &o, &[]).await?;\n    store\n        .set_status(&id, s)\n        .await?;\n    // store.finish_run(&id, &end)\n}\n";
        let hits = store_writes_in(text);
        assert_eq!(hits.len(), 3, "{hits:?}");
        assert!(hits[0].starts_with("2: "), "{hits:?}");
        assert!(hits[1].starts_with("4: "), "{hits:?}");
        assert!(hits[2].starts_with("6: "), "{hits:?}");
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
