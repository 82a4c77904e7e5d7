//! A custom provider: implement the one `Provider` trait, register its spec prefix in a
//! `ProviderRegistry` (so `adder:v1`, from a flag or a config file, reaches it beside
//! `openai:...` and the rest), then use the model like any other, through
//! `Arc<dyn Provider>` and the standard layers.
//!
//! The provider here is a toy "rule model" that answers arithmetic questions and refuses
//! everything else; a real provider crate would call its service with an HTTP client and
//! test itself with `plan_llm::testing::run_conformance` (feature `test-utils`).
//!
//! Run: `cargo run -p plan-examples --example custom_provider`

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use plan_llm::{
    Capabilities, LlmError, Message, ModelSpec, Provider, ProviderConfig, ProviderExt,
    ProviderRegistry, Request, Response, RetryPolicy, Usage, UsageMeter,
};

/// Adds the integers in the last user message.
struct Adder;

#[async_trait]
impl Provider for Adder {
    fn name(&self) -> &str {
        "adder:v1"
    }

    fn capabilities(&self) -> Capabilities {
        // Streaming comes for free: the trait's default streams the complete reply.
        Capabilities::default()
    }

    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        let question = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == plan_llm::Role::User)
            .map(|m| m.content.as_str())
            .unwrap_or_default();
        let numbers: Vec<i64> = question
            .split(|c: char| !c.is_ascii_digit() && c != '-')
            .filter_map(|w| w.parse().ok())
            .collect();
        if numbers.is_empty() {
            return Err(LlmError::Refused {
                provider: self.name().to_owned(),
                message: "I only add numbers".to_owned(),
            });
        }
        let sum: i64 = numbers.iter().sum();
        let usage = Usage::new(question.len().div_ceil(4) as u64, 1);
        Ok(Response::text(sum.to_string(), usage))
    }
}

#[tokio::main]
async fn main() -> Result<(), LlmError> {
    // A provider crate registers its prefix next to plan-llm's own adapters.
    let mut registry = ProviderRegistry::builtin();
    registry.register(
        "adder",
        "adds the numbers in the question",
        |_: &ModelSpec, _: &ProviderConfig| Ok(Arc::new(Adder) as Arc<dyn Provider>),
    );
    // Selected at run time by a spec, as `--model adder:v1` would name it.
    let spec = ModelSpec::parse("adder:v1")?;
    let adder = registry.build(&spec, &ProviderConfig::from_env())?;
    let meter = UsageMeter::new().with_budget(1_000);
    // Wrapped in layers like any built-in adapter.
    let model: Arc<dyn Provider> = Arc::new(
        adder
            .with_timeout(Duration::from_secs(5))
            .with_retry(RetryPolicy::default().with_max_attempts(3))
            .with_usage_meter(&meter),
    );

    let reply = model
        .complete(&Request::new(vec![Message::user("What is 19 + 23?")]))
        .await?;
    println!("{} says: {}", model.name(), reply.content);

    match model
        .complete(&Request::new(vec![Message::user("Write a poem")]))
        .await
    {
        Err(e) => println!("as expected: {e}"),
        Ok(r) => println!("unexpected: {}", r.content),
    }

    let totals = meter.totals();
    println!(
        "usage: {} calls, {} prompt + {} completion tokens",
        totals.llm_calls, totals.prompt_tokens, totals.completion_tokens
    );
    Ok(())
}
