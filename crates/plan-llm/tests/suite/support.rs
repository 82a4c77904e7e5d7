//! Shared helpers: recordings and providers pointed at a fake server.

use std::path::PathBuf;
use std::sync::Arc;

use plan_llm::{Anthropic, ApiKey, Flavour, Ollama, OpenAi, Provider};

/// A key that must never appear in any error text.
pub const CANARY_KEY: &str = "sk-canary-7f3a9c1e5d2b8f4a6c0e";

pub fn recording(path: &str) -> Vec<u8> {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/recordings")
        .join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

pub fn openai(url: &str) -> Arc<dyn Provider> {
    Arc::new(OpenAi::new("gpt-4o-mini", Some(ApiKey::new(CANARY_KEY))).with_base_url(url))
}

pub fn openai_compatible(url: &str) -> Arc<dyn Provider> {
    Arc::new(
        OpenAi::new("local-model", Some(ApiKey::new(CANARY_KEY)))
            .with_base_url(url)
            .with_flavour(Flavour::compatible().with_detect(false)),
    )
}

pub fn anthropic(url: &str) -> Arc<dyn Provider> {
    Arc::new(Anthropic::new("claude-sonnet-4-5", ApiKey::new(CANARY_KEY)).with_base_url(url))
}

pub fn ollama(url: &str) -> Arc<dyn Provider> {
    Arc::new(Ollama::new("llama3.2").with_base_url(url))
}
