//! Grounded research on the embedded model, measured on every question of
//! `testdata/research-corpus/questions.toml` (35 documents): citation recall and
//! precision, the abstention rate on the questions the documents do not answer, and the
//! wall time of each `plan run --research` (the first one builds the index from scratch).
//!
//! `cargo bench -p plan-cli --bench grounded_research` (part of `cargo xtask bench`); needs
//! the embedded model (`cargo xtask fetch-model`).

#[path = "../tests/cli/research_eval.rs"]
mod research_eval;

use std::path::PathBuf;

use research_eval::{Scores, cases, line, run_case};

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
    // One home for all runs: the first run builds the index, the others reuse it.
    let home = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    for case in cases() {
        let r = run_case(plan, home.path(), &model, &case);
        println!("{}", line(&r));
        results.push(r);
    }
    let scores = Scores::of(&results);
    println!("\ngrounded research, {} questions:", results.len());
    println!("{scores}");
    let first = &results[0];
    println!(
        "first run (index of 35 documents built from scratch): {:.1} s; target under 90 s",
        first.secs
    );
    let mut times: Vec<f64> = results.iter().map(|r| r.secs).collect();
    times.sort_by(f64::total_cmp);
    println!(
        "run time: median {:.1} s, slowest {:.1} s",
        times[times.len() / 2],
        times[times.len() - 1]
    );
}
