//! [`LocalError`]: what can go wrong loading or running the local model.

use std::path::PathBuf;

use crate::fetch::FetchError;

/// An error loading or running the local model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalError {
    /// The model file could not be fetched or verified.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The model file could not be read or is not a usable GGUF model.
    #[error("cannot load the model from {path}: {message}")]
    Load {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// The model's tokenizer metadata is missing or unusable.
    #[error("cannot build the tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template could not be rendered.
    #[error("cannot render the chat template: {0}")]
    Template(String),
    /// The requested response format could not be turned into a grammar.
    #[error("unsupported response format: {0}")]
    Grammar(String),
    /// The prompt does not fit in the context window.
    #[error(
        "the prompt has {prompt_tokens} tokens but the context holds {context} (with room for at least one reply token); shorten the conversation or raise the context size"
    )]
    ContextLength {
        /// Tokens in the prompt.
        prompt_tokens: usize,
        /// The context size.
        context: usize,
    },
    /// Invalid configuration.
    #[error("invalid local model configuration: {0}")]
    Config(String),
    /// Inference failed.
    #[error("inference failed: {0}")]
    Inference(String),
}
