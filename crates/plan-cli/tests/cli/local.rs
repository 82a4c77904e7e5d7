//! The quick start: `plan run GOAL` on the embedded model, offline, end to end.
//!
//! Needs the model in the cache (`cargo xtask test` fetches it first; so does
//! `plan model pull`). Without it the test fails in CI and is skipped elsewhere, saying so.

use std::path::PathBuf;

use serde_json::Value;

use crate::support::{Sandbox, expect_code, output, stderr, stdout};

/// The goal of the README's quick start.
pub const QUICK_START_GOAL: &str = "Write a short comparison of three sorting algorithms";

/// The model cache of the user running the tests (where `cargo xtask fetch-model` puts it).
fn model_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PLAN_MODEL_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(cache.join("plan").join("models"))
}

pub fn cached_model() -> Option<PathBuf> {
    let file = model_dir()?.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if file.exists() {
        return Some(file);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the embedded model is not in {}: run `cargo xtask fetch-model` first",
        file.display()
    );
    eprintln!(
        "notice: the embedded model is not cached ({}); the embedded-model tests are skipped here. Run `cargo xtask fetch-model` to enable them.",
        file.display()
    );
    None
}

#[test]
fn quick_start_runs_offline_on_the_embedded_model() {
    let Some(model) = cached_model() else { return };
    let sb = Sandbox::new();
    let out = output(
        sb.plan(["run", QUICK_START_GOAL, "--json", "--max-steps", "3"])
            .env("PLAN_MODEL_DIR", model.parent().unwrap())
            // No network: any provider URL would fail.
            .env("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
            .env_remove("OPENAI_API_KEY"),
    );
    expect_code(&out, 0);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["model"], "local");
    assert_eq!(v["status"], "succeeded");
    assert!(!v["plan"]["steps"].as_array().unwrap().is_empty());
    assert!(!v["answer"].as_str().unwrap().trim().is_empty());
    assert!(v["usage"]["llm_calls"].as_u64().unwrap() >= 3);
    assert!(!stderr(&out).contains('\x1b'));
}

#[test]
fn model_pull_and_list_use_the_cache() {
    let Some(model) = cached_model() else { return };
    let sb = Sandbox::new();
    let dir = sb.dir.path().join("models");
    // Pull from a local file (PLAN_MODEL_PATH): verified, then installed in the cache.
    let out = output(
        sb.plan(["model", "pull"])
            .env("PLAN_MODEL_DIR", &dir)
            .env("PLAN_MODEL_PATH", &model),
    );
    expect_code(&out, 0);
    assert!(
        stdout(&out).trim_end().ends_with(".gguf"),
        "{}",
        stdout(&out)
    );
    let out = output(sb.plan(["model", "list"]).env("PLAN_MODEL_DIR", &dir));
    expect_code(&out, 0);
    assert!(
        stdout(&out).contains("SmolLM2-135M-Instruct"),
        "{}",
        stdout(&out)
    );

    // A corrupt file is refused.
    let bad = sb.write("bad.gguf", "not a model");
    let out = output(
        sb.plan(["model", "pull"])
            .env("PLAN_MODEL_DIR", sb.dir.path().join("other"))
            .env("PLAN_MODEL_PATH", &bad),
    );
    expect_code(&out, 1);
    assert!(stderr(&out).contains("sha256"), "{}", stderr(&out));
}

#[test]
fn model_list_of_an_empty_cache() {
    let sb = Sandbox::new();
    let out = output(
        sb.plan(["model", "list"])
            .env("PLAN_MODEL_DIR", sb.dir.path().join("none")),
    );
    expect_code(&out, 0);
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("plan model pull"));
}

#[test]
fn embedded_model_writes_a_program_that_runs_in_the_sandbox() {
    let Some(model) = cached_model() else { return };
    let sb = Sandbox::new();
    sb.write(
        "sum.json",
        r#"{"goal": "Print the value of 2 + 3.", "steps": [
            {"id": "add", "description": "Print the value of 2 + 3.", "kind": "code"}]}"#,
    );
    let out = output(
        sb.plan(["exec", "sum.json", "--json", "--events", "events.jsonl"])
            .env("PLAN_MODEL_DIR", model.parent().unwrap())
            .env("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
            .env_remove("OPENAI_API_KEY"),
    );
    expect_code(&out, 0);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["model"], "local");
    let output = v["steps"][0]["output"].as_str().unwrap();
    // The step's output is what the program printed in the sandbox, not the model's reply.
    // The last number it printed is the sum (the model may print a sentence around it).
    let last_number = output
        .split(|c: char| !c.is_ascii_digit())
        .rfind(|w| !w.is_empty());
    assert_eq!(last_number, Some("5"), "{output}");
    assert!(!output.contains("```"), "{output}");
    let ran = crate::support::read_events(&sb.path("events.jsonl"))
        .into_iter()
        .filter(|e| e["event"] == "tool_call" && e["ok"] == true)
        .count();
    assert!(ran >= 1, "no program ran: {}", stderr(&out));
}
