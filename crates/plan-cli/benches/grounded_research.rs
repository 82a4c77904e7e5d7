//! Grounded research on the embedded model, measured on every question of two corpora:
//! `testdata/research-corpus` (the one thresholds and prompts were tuned on) and
//! `testdata/ops-corpus` (held out: written separately, in another domain and style,
//! most questions in two parts, never tuned on). For each: citation recall and precision,
//! the abstention rate on the questions the documents do not answer, and the wall time of
//! each `plan run --research` (p50 and max; the first one builds the index from scratch).
//!
//! `cargo bench -p plan-cli --bench grounded_research` (part of `cargo xtask bench`); needs
//! the embedded model (`cargo xtask fetch-model`).

#[path = "../tests/cli/research_eval.rs"]
mod research_eval;

use std::path::PathBuf;

use research_eval::{Scores, cases_of, corpus, held_out_corpus, line, run_case};

/// The embedded model's folder (where `cargo xtask fetch-model` puts it).
fn model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PLAN_MODEL_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("HOME is set");
    cache.join("plan").join("models")
}

fn main() {
    let model = model_dir();
    assert!(
        model.join("SmolLM2-135M-Instruct.Q4_1.gguf").exists(),
        "the embedded model is not in {}: run `cargo xtask fetch-model` first",
        model.display()
    );
    let plan = std::path::Path::new(env!("CARGO_BIN_EXE_plan"));
    // Only one corpus, e.g. while tuning: PLAN_BENCH_CORPUS=tuning|held-out.
    let only = std::env::var("PLAN_BENCH_CORPUS").unwrap_or_default();
    let corpora = [
        ("tuning", "thresholds and prompts chosen on it", corpus()),
        (
            "held-out",
            "written separately, never tuned on",
            held_out_corpus(),
        ),
    ];
    let mut summary = Vec::new();
    for (name, about, dir) in corpora {
        if !only.is_empty() && only != name {
            continue;
        }
        let docs = documents(&dir);
        println!(
            "\n== {name} corpus: {} ({docs} documents; {about})",
            dir.display()
        );
        // One home per corpus: its first run builds the index, the others reuse it.
        let home = tempfile::tempdir().unwrap();
        let mut results = Vec::new();
        for case in cases_of(&dir) {
            let r = run_case(plan, home.path(), &model, &case);
            println!("{}", line(&r));
            results.push(r);
        }
        let scores = Scores::of(&results);
        println!(
            "\ngrounded research on the {name} corpus, {} questions:",
            results.len()
        );
        println!("{scores}");
        println!(
            "first run (index of {docs} documents built from scratch): {:.1} s",
            results[0].secs
        );
        let mut times: Vec<f64> = results.iter().map(|r| r.secs).collect();
        times.sort_by(f64::total_cmp);
        let (p50, max) = (times[times.len() / 2], times[times.len() - 1]);
        println!("run time: p50 {p50:.1} s, max {max:.1} s (target: every run within 60 s)");
        let routes = |route: &str| results.iter().filter(|r| r.route == route).count();
        println!(
            "routes: {} direct, {} planned, {} abstained",
            routes("direct"),
            routes("planned"),
            results.iter().filter(|r| r.abstained).count()
        );
        summary.push(format!(
            "{name:<9} cite all gold {:>3.0}% ({}/{}), abstain {:>3.0}% ({}/{}), false abstentions {}, p50 {p50:.1} s, max {max:.1} s",
            scores.fully_cited_rate() * 100.0,
            scores.fully_cited,
            scores.answerable,
            scores.abstention_rate() * 100.0,
            scores.abstained,
            scores.unanswerable,
            scores.false_abstentions,
        ));
    }
    println!("\n== summary (targets: cite all gold >= 85%, abstain 100%, max <= 60 s)");
    for line in summary {
        println!("{line}");
    }
}

/// The documents of a corpus (Markdown and text files, questions.toml aside).
fn documents(dir: &std::path::Path) -> usize {
    fn walk(dir: &std::path::Path, n: &mut usize) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, n);
            } else if path.extension().is_some_and(|e| e == "md" || e == "txt") {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(dir, &mut n);
    n
}
