//! Choosing a model: `provider:model` specs and the settings providers are built with.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::LlmError;
use crate::openai::Flavour;
use crate::provider::Provider;
use crate::registry::ProviderRegistry;
use crate::secret::ApiKey;

/// A model named as `provider:model`: the provider part picks a registered prefix in a
/// [`ProviderRegistry`], the model part is the provider's own model name (it may hold
/// colons, as Ollama tags do).
///
/// | spec | meaning |
/// |---|---|
/// | `openai:gpt-4o-mini` | OpenAI (or any server at `--base-url` / `OPENAI_BASE_URL`) |
/// | `openai-compatible:qwen2.5` | any OpenAI-compatible server; needs a base URL |
/// | `llama-cpp:m`, `llama-cpp-python:m`, `vllm:m`, `lmstudio:m`, `ollama-openai:m` | that server's OpenAI endpoint, at its usual local address unless a base URL is given ([`Flavour`](crate::Flavour)) |
/// | `anthropic:claude-sonnet-4-5` | Anthropic |
/// | `ollama:llama3.2` | Ollama at `OLLAMA_HOST` |
/// | `local`, `local:<name>` | the embedded model, registered by `plan-llm-local` |
/// | `mine:x` | whatever a provider crate registered as `mine` |
///
/// Parsing only splits the spec; whether the provider exists is the registry's question
/// ([`ProviderRegistry::check`]).
///
/// ```
/// use plan_llm::ModelSpec;
/// let spec: ModelSpec = "anthropic:claude-sonnet-4-5".parse().unwrap();
/// assert_eq!((spec.provider(), spec.model()), ("anthropic", Some("claude-sonnet-4-5")));
/// assert_eq!(spec.to_string(), "anthropic:claude-sonnet-4-5");
/// assert_eq!("local".parse::<ModelSpec>().unwrap(), ModelSpec::new("local", None));
/// assert_eq!("ollama:qwen2.5:7b".parse::<ModelSpec>().unwrap().model(), Some("qwen2.5:7b"));
/// assert!("openai:".parse::<ModelSpec>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModelSpec {
    provider: String,
    model: Option<String>,
}

impl ModelSpec {
    /// A spec from its parts; the provider is lower-cased.
    pub fn new(provider: impl Into<String>, model: Option<String>) -> Self {
        Self {
            provider: provider.into().trim().to_ascii_lowercase(),
            model,
        }
    }

    /// Parses a spec (same as `str::parse`).
    ///
    /// # Errors
    /// [`LlmError::Config`] naming the accepted forms.
    pub fn parse(spec: &str) -> Result<Self, LlmError> {
        spec.parse()
    }

    /// The provider part: the prefix a [`ProviderRegistry`] resolves.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The model part, if any.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
}

const FORMS: &str = "use provider:model, e.g. openai:gpt-4o-mini, anthropic:claude-sonnet-4-5, ollama:llama3.2, openai-compatible:<model> (with a base URL) or local";

impl FromStr for ModelSpec {
    type Err = LlmError;

    fn from_str(spec: &str) -> Result<Self, LlmError> {
        let spec = spec.trim();
        let (provider, model) = match spec.split_once(':') {
            Some((provider, model)) => {
                let model = model.trim();
                if model.is_empty() {
                    return Err(LlmError::Config(format!(
                        "model spec `{spec}` names no model; {FORMS}"
                    )));
                }
                (provider.trim(), Some(model.to_owned()))
            }
            None => (spec, None),
        };
        let valid = !provider.is_empty()
            && provider
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !valid {
            return Err(LlmError::Config(format!(
                "model spec `{spec}` has no valid provider; {FORMS}"
            )));
        }
        Ok(ModelSpec::new(provider, model))
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.model {
            Some(model) => write!(f, "{}:{model}", self.provider),
            None => f.write_str(&self.provider),
        }
    }
}

/// The settings [`build_provider`] needs: keys and base URLs, usually read from the
/// environment with [`from_env`](Self::from_env), plus an explicit base-URL override.
/// Keys are held as [`ApiKey`]s, so printing a config never shows them.
///
/// ```
/// use plan_llm::{ApiKey, ModelSpec, ProviderConfig, build_provider};
/// let config = ProviderConfig::from_vars([("OPENAI_API_KEY", "sk-test")])
///     .with_base_url("http://localhost:8080/v1");
/// let model = build_provider(&ModelSpec::parse("openai:gpt-4o-mini").unwrap(), &config).unwrap();
/// assert_eq!(model.name(), "openai:gpt-4o-mini");
/// assert!(!format!("{config:?}").contains("sk-test"));
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ProviderConfig {
    /// `OPENAI_API_KEY`.
    pub openai_api_key: Option<ApiKey>,
    /// `OPENAI_BASE_URL`.
    pub openai_base_url: Option<String>,
    /// `ANTHROPIC_API_KEY`.
    pub anthropic_api_key: Option<ApiKey>,
    /// `ANTHROPIC_BASE_URL`.
    pub anthropic_base_url: Option<String>,
    /// `OLLAMA_HOST`.
    pub ollama_host: Option<String>,
    /// Overrides the chosen provider's endpoint (the CLI's `--base-url`).
    pub base_url: Option<String>,
    /// The flavour for `openai-compatible` specs (default [`Flavour::compatible`]).
    pub compatible_flavour: Option<Flavour>,
}

impl ProviderConfig {
    /// Reads the conventional variables from the process environment.
    pub fn from_env() -> Self {
        Self::from_vars(
            [
                "OPENAI_API_KEY",
                "OPENAI_BASE_URL",
                "ANTHROPIC_API_KEY",
                "ANTHROPIC_BASE_URL",
                "OLLAMA_HOST",
            ]
            .into_iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k, v))),
        )
    }

    /// Reads the conventional variables from these pairs (for tests and embedding);
    /// empty values count as unset.
    pub fn from_vars<K: AsRef<str>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let vars: BTreeMap<String, String> = vars
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.into()))
            .filter(|(_, v)| !v.trim().is_empty())
            .collect();
        let get = |k: &str| vars.get(k).cloned();
        Self {
            openai_api_key: get("OPENAI_API_KEY").map(ApiKey::new),
            openai_base_url: get("OPENAI_BASE_URL"),
            anthropic_api_key: get("ANTHROPIC_API_KEY").map(ApiKey::new),
            anthropic_base_url: get("ANTHROPIC_BASE_URL"),
            ollama_host: get("OLLAMA_HOST"),
            base_url: None,
            compatible_flavour: None,
        }
    }

    /// Sends requests to this base URL whatever the provider's default.
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// Uses this OpenAI key.
    pub fn with_openai_key(mut self, key: ApiKey) -> Self {
        self.openai_api_key = Some(key);
        self
    }

    /// Uses this Anthropic key.
    pub fn with_anthropic_key(mut self, key: ApiKey) -> Self {
        self.anthropic_api_key = Some(key);
        self
    }

    /// The same settings with no API key: for an endpoint the keys must not go to (a
    /// server's client chose it). Endpoints that need a key then fail to build with
    /// [`LlmError::MissingKey`].
    pub fn without_keys(mut self) -> Self {
        self.openai_api_key = None;
        self.anthropic_api_key = None;
        self
    }

    /// Uses this flavour for `openai-compatible` specs.
    pub fn with_compatible_flavour(mut self, flavour: Flavour) -> Self {
        self.compatible_flavour = Some(flavour);
        self
    }
}

/// Builds the provider a spec names with plan-llm's own adapters
/// ([`ProviderRegistry::builtin`]); use a registry of your own to add provider crates.
///
/// # Errors
/// As [`ProviderRegistry::build`]: [`LlmError::MissingKey`] naming the variable to set,
/// [`LlmError::MissingBaseUrl`] for an `openai-compatible` spec without one,
/// [`LlmError::UnknownProvider`] for a prefix nobody registered (`local` included: the
/// embedded model lives in `plan-llm-local`).
pub fn build_provider(
    spec: &ModelSpec,
    config: &ProviderConfig,
) -> Result<Arc<dyn Provider>, LlmError> {
    ProviderRegistry::builtin().build(spec, config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip_and_bad_ones_say_what_to_use() {
        for s in [
            "openai:gpt-4o-mini",
            "openai-compatible:qwen2.5:7b",
            "ollama:llama3.2:1b",
            "local",
            "local:tiny",
            "mine:x",
        ] {
            assert_eq!(ModelSpec::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(
            ModelSpec::parse(" OpenAI:gpt-4o ").unwrap().provider(),
            "openai"
        );
        for bad in ["openai:", "", ":gpt-4o", "a b:c"] {
            let err = ModelSpec::parse(bad).unwrap_err().to_string();
            assert!(err.contains("openai:gpt-4o-mini"), "{bad}: {err}");
        }
    }
}
