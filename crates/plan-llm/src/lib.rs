//! Talking to language models: the [`Provider`] trait, normalised request and response
//! types, adapters (OpenAI and OpenAI-compatible servers, Anthropic, Ollama), layers
//! (retry, timeout, concurrency limit, usage meter, GenAI tracing spans), structured output, an open registry
//! of `provider:model` spec prefixes that provider crates add to, configuration from the
//! environment, and [`ScriptedModel`], a test double
//! for testing agents offline. Knows nothing about plans.
//!
//! ```
//! use std::time::Duration;
//! use plan_llm::{Message, Provider, ProviderExt, Reply, Request, RetryPolicy, ScriptedModel};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), plan_llm::LlmError> {
//! // In production: `build_provider(&ModelSpec::parse("openai:gpt-4o-mini")?, &ProviderConfig::from_env())?`
//! let model = ScriptedModel::new()
//!     .otherwise(Reply::text("2"))
//!     .with_timeout(Duration::from_secs(60))
//!     .with_retry(RetryPolicy::default());
//! let request = Request::new(vec![
//!     Message::system("You are terse."),
//!     Message::user("Name one prime number."),
//! ])
//! .with_max_tokens(16);
//! let reply = model.complete(&request).await?;
//! assert_eq!(reply.content, "2");
//! # Ok(()) }
//! ```
//!
//! # Libraries
//! HTTP with `reqwest` (rustls); SSE with `eventsource-stream` (plus a byte-order-mark
//! guard and dispatch of a last event lacking its blank line); retries with `backon`;
//! schemas with `schemars`.
//!
//! # Features
//! - `test-utils`: [`testing`]: `FakeOpenAi`, a fake OpenAI-compatible chat completions
//!   server with scripted replies, latency and request counts, for tests and benchmarks;
//!   and a fake HTTP server that replays wire recordings with split reads, with a
//!   conformance suite for any [`Provider`] built for a base URL, for authors of provider
//!   crates.
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod anthropic;
mod config;
mod error;
mod http;
mod layers;
mod ollama;
mod openai;
mod pricing;
mod provider;
mod record;
mod registry;
mod scripted;
mod secret;
mod structured;
mod traced;
mod types;

#[cfg(feature = "test-utils")]
pub mod testing;

pub use anthropic::{ANTHROPIC_BASE_URL, ANTHROPIC_DEFAULT_MAX_TOKENS, Anthropic};
pub use config::{ModelSpec, ProviderConfig, build_provider};
pub use error::{LlmError, LlmHint};
pub use layers::{
    BudgetLedger, ConcurrencyLimit, LedgerError, LedgerTotals, Metered, ProviderExt, Retry,
    RetryPolicy, Timeout, UsageMeter,
};
pub use ollama::{OLLAMA_BASE_URL, Ollama};
pub use openai::{Flavour, OPENAI_BASE_URL, OpenAi};
pub use pricing::{Price, known_price};
pub use provider::{Capabilities, ChunkStream, Provider, collect_stream, response_to_chunks};
pub use record::{CallRecord, UsageTotals, complete_recorded};
pub use registry::{ProviderFactory, ProviderRegistry};
pub use scripted::{Reply, ScriptedModel};
pub use secret::ApiKey;
pub use structured::{
    Structured, StructuredCall, StructuredMode, extract_json, generate_json, generate_structured,
    schema_for, validate_json,
};
pub use traced::{CAPTURE_CONTENT_VAR, Traced};
pub use types::{
    Chunk, FinishReason, Message, Purpose, Request, Response, ResponseFormat, Role, ToolCall,
    ToolChoice, ToolSpec, Usage,
};
