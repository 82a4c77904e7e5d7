//! Speed of the embedded model: load time, prompt (prefill) tokens/s and decode tokens/s,
//! free text and JSON-schema constrained, for 1 and 2 threads. Prints figures; run with
//! `cargo bench -p plan-llm-local` (the model is fetched into the cache if missing).
//! On a shared machine the figures are noisy: other processes take the same cores.

use std::time::{Duration, Instant};

use plan_llm::{Message, Provider, Request, ResponseFormat};
use plan_llm_local::{FetchOptions, LocalConfig, LocalModel, ModelStore};
use serde_json::json;

fn timed(rt: &tokio::runtime::Runtime, model: &LocalModel, request: &Request) -> (Duration, u64) {
    let started = Instant::now();
    let reply = rt
        .block_on(model.complete(request))
        .unwrap_or_else(|e| panic!("{e}"));
    (started.elapsed(), reply.usage.completion_tokens)
}

/// Best of `runs` (the least disturbed by other load).
fn best(
    rt: &tokio::runtime::Runtime,
    model: &LocalModel,
    request: &Request,
    runs: usize,
) -> (Duration, u64) {
    (0..runs)
        .map(|_| timed(rt, model, request))
        .min_by_key(|(d, _)| *d)
        .unwrap_or_default()
}

fn main() {
    let path = ModelStore::default()
        .ensure(&FetchOptions::default(), &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let long_prompt = "The quick brown fox jumps over the lazy dog. ".repeat(30);
    let free = |max: u32| {
        Request::new(vec![Message::user(
            "Write a short story about a lighthouse keeper.",
        )])
        .with_temperature(0.0)
        .with_max_tokens(max)
    };
    let prefill = Request::new(vec![Message::user(format!("Summarise: {long_prompt}"))])
        .with_temperature(0.0)
        .with_max_tokens(1);
    let schema = json!({
        "type": "object",
        "properties": {
            "goal": {"type": "string", "maxLength": 80},
            "steps": {"type": "array", "minItems": 3, "maxItems": 5, "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,15}$"},
                    "description": {"type": "string", "maxLength": 100},
                    "dependencies": {"type": "array", "items": {"type": "string"}}
                },
                "required": ["id", "description", "dependencies"],
                "additionalProperties": false
            }}
        },
        "required": ["goal", "steps"],
        "additionalProperties": false
    });
    let constrained = |max: u32| {
        Request::new(vec![Message::user(
            "Goal: plan a trip to the mountains for a weekend.",
        )])
        .with_temperature(0.0)
        .with_max_tokens(max)
        .with_response_format(ResponseFormat::JsonSchema {
            name: "plan".into(),
            schema: schema.clone(),
        })
    };

    println!("plan-llm-local benchmark (best of 2 runs; noisy on a shared machine)");
    for threads in [1usize, 2] {
        let started = Instant::now();
        let model = LocalModel::load(
            LocalConfig::default()
                .with_model_path(&path)
                .with_threads(threads),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let load = started.elapsed();
        let stats = model.load_stats();
        let prompt_tokens = model
            .prompt_tokens(&prefill)
            .unwrap_or_else(|e| panic!("{e}"))
            .len();
        // Warm up (first-touch of the weights and cache pages).
        timed(&rt, &model, &free(4));
        let (t_prefill, _) = best(&rt, &model, &prefill, 2);
        let (t_free_1, _) = best(&rt, &model, &free(1), 2);
        let (t_free_n, n_free) = best(&rt, &model, &free(129), 2);
        let (t_con_1, _) = best(&rt, &model, &constrained(1), 2);
        let (t_con_n, n_con) = best(&rt, &model, &constrained(400), 2);
        let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
        println!("threads={threads}");
        println!(
            "  load: {:.2} s (weights {:.2} s, tokenizer+grammar tables {:.2} s)",
            load.as_secs_f64(),
            stats.weights.as_secs_f64(),
            stats.tokenizer.as_secs_f64()
        );
        println!(
            "  prompt: {:.0} tok/s ({prompt_tokens} tokens in {:.2} s)",
            rate(prompt_tokens as u64, t_prefill),
            t_prefill.as_secs_f64()
        );
        println!(
            "  decode, free text: {:.1} tok/s ({} tokens)",
            rate(n_free.saturating_sub(1), t_free_n.saturating_sub(t_free_1)),
            n_free
        );
        println!(
            "  decode, JSON schema: {:.1} tok/s ({} tokens incl. forced, {:.2} s)",
            rate(n_con.saturating_sub(1), t_con_n.saturating_sub(t_con_1)),
            n_con,
            t_con_n.as_secs_f64()
        );
    }
}
