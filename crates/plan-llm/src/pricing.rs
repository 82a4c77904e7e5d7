//! What a model's tokens cost: a [`Price`] per million tokens, and list prices of a few
//! well-known hosted models ([`known_price`]); anything else is unknown unless the caller
//! supplies a price (the CLI reads `[prices."provider:model"]` in `plan.toml`).

use serde::{Deserialize, Serialize};

use crate::config::ModelSpec;

/// US dollars per million prompt (input) and completion (output) tokens.
///
/// ```
/// use plan_llm::Price;
/// let price = Price::new(0.15, 0.60);
/// assert!((price.cost(1_000_000, 500_000) - 0.45).abs() < 1e-9);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// Dollars per million prompt tokens.
    pub input_per_mtok: f64,
    /// Dollars per million completion tokens.
    pub output_per_mtok: f64,
}

impl Price {
    /// Nothing: a model that runs in-process.
    pub const FREE: Price = Price::new(0.0, 0.0);

    /// A price per million input and output tokens.
    pub const fn new(input_per_mtok: f64, output_per_mtok: f64) -> Self {
        Self {
            input_per_mtok,
            output_per_mtok,
        }
    }

    /// The cost in dollars of these tokens.
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        (prompt_tokens as f64 * self.input_per_mtok
            + completion_tokens as f64 * self.output_per_mtok)
            / 1_000_000.0
    }
}

/// List prices (USD per million tokens) of well-known hosted models, as published by
/// their providers; check them against your own bill and override them in configuration.
const LIST_PRICES: [(&str, &str, Price); 10] = [
    ("openai", "gpt-4o-mini", Price::new(0.15, 0.60)),
    ("openai", "gpt-4o", Price::new(2.50, 10.00)),
    ("openai", "gpt-4.1", Price::new(2.00, 8.00)),
    ("openai", "gpt-4.1-mini", Price::new(0.40, 1.60)),
    ("openai", "gpt-4.1-nano", Price::new(0.10, 0.40)),
    ("openai", "o4-mini", Price::new(1.10, 4.40)),
    ("anthropic", "claude-sonnet-4-5", Price::new(3.00, 15.00)),
    ("anthropic", "claude-haiku-4-5", Price::new(1.00, 5.00)),
    ("anthropic", "claude-opus-4-1", Price::new(15.00, 75.00)),
    (
        "anthropic",
        "claude-3-5-haiku-latest",
        Price::new(0.80, 4.00),
    ),
];

/// The list price of a well-known hosted model on its provider's own API, `Price::FREE`
/// for the embedded model (`local`), or `None` when unknown (self-hosted servers, other
/// models).
///
/// ```
/// use plan_llm::{ModelSpec, known_price};
/// let spec: ModelSpec = "openai:gpt-4o-mini".parse().unwrap();
/// assert!(known_price(&spec).is_some());
/// assert!(known_price(&"ollama:llama3.2".parse().unwrap()).is_none());
/// ```
pub fn known_price(spec: &ModelSpec) -> Option<Price> {
    if spec.provider() == "local" {
        return Some(Price::FREE);
    }
    let model = spec.model()?;
    LIST_PRICES
        .iter()
        .find(|(provider, name, _)| *provider == spec.provider() && *name == model)
        .map(|(_, _, price)| *price)
}
