//! Talking to language models: the [`Provider`] trait, normalised request and response
//! types, adapters, layers and a scripted test double. Knows nothing about plans.
//!
//! ```
//! use plan_llm::{Message, Request};
//!
//! let request = Request::new(vec![
//!     Message::system("You are terse."),
//!     Message::user("Name one prime number."),
//! ])
//! .with_max_tokens(16);
//! assert_eq!(request.messages.len(), 2);
//! ```
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod error;
mod provider;
mod types;

pub use error::LlmError;
pub use provider::{Capabilities, ChunkStream, Provider, collect_stream, response_to_chunks};
pub use types::{
    Chunk, FinishReason, Message, Request, Response, ResponseFormat, Role, ToolCall, ToolChoice,
    ToolSpec, Usage,
};
