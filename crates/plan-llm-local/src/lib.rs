//! The embedded offline default model for `plan`: a small GGUF model run in-process on the
//! CPU, behind plan-llm's [`Provider`](plan_llm::Provider) trait.
//!
//! ```
//! // The provider crate is built like any custom provider crate: it depends on plan-llm
//! // and implements its trait.
//! fn assert_provider<P: plan_llm::Provider>() {}
//! ```
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![deny(clippy::print_stdout, clippy::print_stderr)]
