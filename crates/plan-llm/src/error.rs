//! [`LlmError`]: what can go wrong talking to a model.

use std::time::Duration;

/// An error from a provider or a layer. Messages never contain API keys.
///
/// Adapters fold the server's `x-should-retry` hint into the variant: a status the server
/// says not to retry becomes [`LlmError::BadRequest`], one it says to retry becomes
/// [`LlmError::Server`], so [`is_retryable`](LlmError::is_retryable) tells the whole story.
/// 408 and 409 map to [`LlmError::Server`] (transient server-side conditions).
///
/// It serialises (externally tagged, `{"server": {...}}`), so a recorded run can replay a
/// failed call as the same error.
#[derive(Clone, Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LlmError {
    /// The key was missing, wrong or lacks permission (401/403).
    #[error("authentication failed ({provider}): {message}")]
    Auth {
        /// Which provider.
        provider: String,
        /// What the server said, or what to set.
        message: String,
    },
    /// Too many requests (429); `retry_after` is the server's requested delay.
    #[error("rate limited ({provider}): {message}")]
    RateLimited {
        /// Which provider.
        provider: String,
        /// What the server said.
        message: String,
        /// The delay the server asked for.
        retry_after: Option<Duration>,
    },
    /// The server is overloaded or failed (5xx, 529, or an error event mid-stream).
    #[error("server error ({provider}{}): {message}", status.map(|s| format!(", HTTP {s}")).unwrap_or_default())]
    Server {
        /// Which provider.
        provider: String,
        /// HTTP status, if the error came with one.
        status: Option<u16>,
        /// What the server said.
        message: String,
        /// The delay the server asked for.
        retry_after: Option<Duration>,
    },
    /// The request was rejected as malformed (400, 404, 422, ...); retrying will not help.
    #[error("request rejected ({provider}, HTTP {status}): {message}")]
    BadRequest {
        /// Which provider.
        provider: String,
        /// HTTP status.
        status: u16,
        /// What the server said.
        message: String,
    },
    /// The prompt is longer than the model's context.
    #[error("context length exceeded ({provider}): {message}")]
    ContextLength {
        /// Which provider.
        provider: String,
        /// What the server said.
        message: String,
    },
    /// No reply in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The connection failed or broke.
    #[error("transport error ({provider}): {message}")]
    Transport {
        /// Which provider.
        provider: String,
        /// What failed.
        message: String,
    },
    /// The reply could not be understood, or was cut off.
    #[error("invalid response ({provider}): {message}")]
    InvalidResponse {
        /// Which provider.
        provider: String,
        /// What was wrong.
        message: String,
    },
    /// The model refused to answer.
    #[error("the model refused ({provider}): {message}")]
    Refused {
        /// Which provider.
        provider: String,
        /// The refusal text.
        message: String,
    },
    /// A token budget would be exceeded.
    #[error(
        "token budget exceeded: used {used} of {budget} tokens; raise the token budget or shorten the goal"
    )]
    BudgetExceeded {
        /// Tokens used so far.
        used: u64,
        /// The budget.
        budget: u64,
    },
    /// The spending limit was reached before this call.
    #[error(
        "spending limit reached: spent ${spent_usd:.4} of ${limit_usd:.4}; raise the limit or shorten the goal"
    )]
    SpendExceeded {
        /// Dollars spent so far.
        spent_usd: f64,
        /// The limit.
        limit_usd: f64,
    },
    /// Missing or bad configuration.
    #[error("configuration error: {0}")]
    Config(String),
    /// A provider needs an API key that is not set.
    #[error("{var} is not set; set it to use `{spec}`, or choose a model that needs no key")]
    MissingKey {
        /// The spec being built.
        spec: String,
        /// The environment variable to set.
        var: String,
    },
    /// A provider needs a base URL and none was given.
    #[error("`{spec}` needs a base URL: give one or set OPENAI_BASE_URL (e.g. {example})")]
    MissingBaseUrl {
        /// The spec being built.
        spec: String,
        /// An example URL.
        example: String,
    },
    /// No provider is registered for a spec's prefix.
    #[error(
        "unknown provider `{provider}` in model spec `{spec}`; {}",
        unknown_provider_advice(provider, known)
    )]
    UnknownProvider {
        /// The spec.
        spec: String,
        /// Its provider part.
        provider: String,
        /// The registered prefixes.
        known: Vec<String>,
    },
    /// The operation was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// A structured reply could not be obtained; `attempts` says what was tried and how
    /// each attempt failed.
    #[error("no valid structured output from {provider} for `{schema}`: {}", attempts.join("; "))]
    StructuredOutput {
        /// Which provider.
        provider: String,
        /// The schema's name.
        schema: String,
        /// One line per attempt: the mode tried and why it failed.
        attempts: Vec<String>,
    },
}

/// What a user can change to get past an error: the CLI turns it into the flag to use, a
/// library user into their own setting. Library messages name no CLI flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LlmHint {
    /// Choose another model (the CLI's `--model`, e.g. the offline `local`).
    Model,
    /// Give the server's base URL (the CLI's `--base-url`).
    BaseUrl,
    /// Raise the token budget (the CLI's `--budget-tokens`).
    TokenBudget,
    /// Raise the spending limit (the CLI's `--budget-usd`).
    SpendLimit,
}

fn unknown_provider_advice(provider: &str, known: &[String]) -> String {
    let known = known.join(", ");
    if provider == "local" {
        format!(
            "the embedded model is built by the plan-llm-local crate: register it with `plan_llm_local::register` (registered here: {known})"
        )
    } else {
        format!("registered providers: {known}; write provider:model, e.g. openai:gpt-4o-mini")
    }
}

impl LlmError {
    /// A short stable name for the kind of error (`auth`, `rate_limited`, `server`,
    /// `bad_request`, `timeout`, ...), for traces (`error.type`) and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            LlmError::Auth { .. } => "auth",
            LlmError::RateLimited { .. } => "rate_limited",
            LlmError::Server { .. } => "server",
            LlmError::BadRequest { .. } => "bad_request",
            LlmError::ContextLength { .. } => "context_length",
            LlmError::Timeout(_) => "timeout",
            LlmError::Transport { .. } => "transport",
            LlmError::InvalidResponse { .. } => "invalid_response",
            LlmError::Refused { .. } => "refused",
            LlmError::BudgetExceeded { .. } => "budget_exceeded",
            LlmError::SpendExceeded { .. } => "spend_exceeded",
            LlmError::Config(_)
            | LlmError::MissingKey { .. }
            | LlmError::MissingBaseUrl { .. }
            | LlmError::UnknownProvider { .. } => "config",
            LlmError::Cancelled => "cancelled",
            LlmError::StructuredOutput { .. } => "structured_output",
        }
    }

    /// What the user can change to get past this error, if anything.
    pub fn hint(&self) -> Option<LlmHint> {
        match self {
            LlmError::MissingKey { .. } | LlmError::UnknownProvider { .. } => Some(LlmHint::Model),
            LlmError::MissingBaseUrl { .. } => Some(LlmHint::BaseUrl),
            LlmError::BudgetExceeded { .. } => Some(LlmHint::TokenBudget),
            LlmError::SpendExceeded { .. } => Some(LlmHint::SpendLimit),
            _ => None,
        }
    }

    /// Whether retrying the same request may succeed (rate limits, server errors, timeouts,
    /// transport errors).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            LlmError::RateLimited { .. }
                | LlmError::Server { .. }
                | LlmError::Timeout(_)
                | LlmError::Transport { .. }
        )
    }

    /// The delay the server asked for before a retry, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::RateLimited { retry_after, .. } | LlmError::Server { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}
