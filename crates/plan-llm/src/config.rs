//! Choosing a model: `provider:model` specs and construction from the environment.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::anthropic::Anthropic;
use crate::error::LlmError;
use crate::ollama::Ollama;
use crate::openai::{Flavour, OpenAi};
use crate::provider::Provider;
use crate::secret::ApiKey;

/// A model named as `provider:model`.
///
/// | spec | meaning |
/// |---|---|
/// | `openai:gpt-4o-mini` | OpenAI (or `OPENAI_BASE_URL`) |
/// | `openai-compatible:qwen2.5` | any OpenAI-compatible server; needs a base URL |
/// | `anthropic:claude-sonnet-4-5` | Anthropic |
/// | `ollama:llama3.2` | Ollama at `OLLAMA_HOST` |
/// | `local`, `local:<name>` | the embedded model, built by `plan-llm-local` |
///
/// ```
/// use plan_llm::ModelSpec;
/// let spec: ModelSpec = "anthropic:claude-sonnet-4-5".parse().unwrap();
/// assert_eq!(spec, ModelSpec::Anthropic { model: "claude-sonnet-4-5".into() });
/// assert_eq!(spec.to_string(), "anthropic:claude-sonnet-4-5");
/// assert_eq!("local".parse::<ModelSpec>().unwrap(), ModelSpec::Local { model: None });
/// assert!("gpt-4o".parse::<ModelSpec>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ModelSpec {
    /// OpenAI's API.
    OpenAi {
        /// The model name.
        model: String,
    },
    /// An OpenAI-compatible server at a base URL.
    OpenAiCompatible {
        /// The model name.
        model: String,
    },
    /// Anthropic's API.
    Anthropic {
        /// The model name.
        model: String,
    },
    /// An Ollama server.
    Ollama {
        /// The model name.
        model: String,
    },
    /// The embedded model; plan-llm cannot build it: the caller builds it with
    /// `plan-llm-local`.
    Local {
        /// A specific local model, if named.
        model: Option<String>,
    },
}

impl ModelSpec {
    /// Parses a spec (same as `str::parse`).
    ///
    /// # Errors
    /// [`LlmError::Config`] naming the accepted forms.
    pub fn parse(spec: &str) -> Result<Self, LlmError> {
        spec.parse()
    }

    /// The provider part: `openai`, `openai-compatible`, `anthropic`, `ollama`, `local`.
    pub fn provider(&self) -> &'static str {
        match self {
            ModelSpec::OpenAi { .. } => "openai",
            ModelSpec::OpenAiCompatible { .. } => "openai-compatible",
            ModelSpec::Anthropic { .. } => "anthropic",
            ModelSpec::Ollama { .. } => "ollama",
            ModelSpec::Local { .. } => "local",
        }
    }

    /// The model part, if any.
    pub fn model(&self) -> Option<&str> {
        match self {
            ModelSpec::OpenAi { model }
            | ModelSpec::OpenAiCompatible { model }
            | ModelSpec::Anthropic { model }
            | ModelSpec::Ollama { model } => Some(model),
            ModelSpec::Local { model } => model.as_deref(),
        }
    }
}

const FORMS: &str = "use provider:model, e.g. openai:gpt-4o-mini, anthropic:claude-sonnet-4-5, ollama:llama3.2, openai-compatible:<model> (with a base URL) or local";

impl FromStr for ModelSpec {
    type Err = LlmError;

    fn from_str(spec: &str) -> Result<Self, LlmError> {
        let spec = spec.trim();
        if spec == "local" {
            return Ok(ModelSpec::Local { model: None });
        }
        let Some((provider, model)) = spec.split_once(':') else {
            return Err(LlmError::Config(format!(
                "model spec `{spec}` has no provider; {FORMS}"
            )));
        };
        let model = model.trim().to_owned();
        if model.is_empty() {
            return Err(LlmError::Config(format!(
                "model spec `{spec}` names no model; {FORMS}"
            )));
        }
        match provider.trim().to_ascii_lowercase().as_str() {
            "openai" => Ok(ModelSpec::OpenAi { model }),
            "openai-compatible" | "openai_compatible" | "compatible" => {
                Ok(ModelSpec::OpenAiCompatible { model })
            }
            "anthropic" => Ok(ModelSpec::Anthropic { model }),
            "ollama" => Ok(ModelSpec::Ollama { model }),
            "local" => Ok(ModelSpec::Local { model: Some(model) }),
            other => Err(LlmError::Config(format!(
                "unknown provider `{other}` in model spec `{spec}`; {FORMS}"
            ))),
        }
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.model() {
            Some(model) => write!(f, "{}:{model}", self.provider()),
            None => f.write_str(self.provider()),
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

    /// Uses this flavour for `openai-compatible` specs.
    pub fn with_compatible_flavour(mut self, flavour: Flavour) -> Self {
        self.compatible_flavour = Some(flavour);
        self
    }
}

/// Builds the provider a spec names.
///
/// # Errors
/// [`LlmError::Config`] when a key is missing (naming the variable to set), when an
/// `openai-compatible` spec has no base URL, or for `local`, which the caller must build
/// with `plan-llm-local`.
pub fn build_provider(
    spec: &ModelSpec,
    config: &ProviderConfig,
) -> Result<Arc<dyn Provider>, LlmError> {
    match spec {
        ModelSpec::OpenAi { model } => {
            let key = config.openai_api_key.clone().ok_or_else(|| {
                LlmError::Config(format!(
                    "OPENAI_API_KEY is not set; set it to use `{spec}`, or use --model local to run offline"
                ))
            })?;
            let mut p = OpenAi::new(model, Some(key));
            if let Some(url) = config.base_url.as_ref().or(config.openai_base_url.as_ref()) {
                p = p.with_base_url(url);
            }
            Ok(Arc::new(p))
        }
        ModelSpec::OpenAiCompatible { model } => {
            let url = config
                .base_url
                .as_ref()
                .or(config.openai_base_url.as_ref())
                .ok_or_else(|| {
                    LlmError::Config(format!(
                        "`{spec}` needs a base URL; pass --base-url or set OPENAI_BASE_URL (e.g. http://localhost:8080/v1)"
                    ))
                })?;
            let flavour = config.compatible_flavour.unwrap_or_else(Flavour::compatible);
            Ok(Arc::new(
                OpenAi::new(model, config.openai_api_key.clone())
                    .with_base_url(url)
                    .with_flavour(flavour)
                    .with_name(spec.to_string()),
            ))
        }
        ModelSpec::Anthropic { model } => {
            let key = config.anthropic_api_key.clone().ok_or_else(|| {
                LlmError::Config(format!(
                    "ANTHROPIC_API_KEY is not set; set it to use `{spec}`, or use --model local to run offline"
                ))
            })?;
            let mut p = Anthropic::new(model, key);
            if let Some(url) = config.base_url.as_ref().or(config.anthropic_base_url.as_ref()) {
                p = p.with_base_url(url);
            }
            Ok(Arc::new(p))
        }
        ModelSpec::Ollama { model } => {
            let mut p = Ollama::new(model);
            if let Some(url) = config.base_url.as_ref().or(config.ollama_host.as_ref()) {
                p = p.with_base_url(url);
            }
            Ok(Arc::new(p))
        }
        ModelSpec::Local { .. } => Err(LlmError::Config(
            "the `local` model is built by the plan-llm-local crate, not by plan-llm; build it there (the plan CLI does)".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_keys_name_the_variable() {
        let config = ProviderConfig::default();
        for (spec, var) in [
            ("openai:gpt-4o-mini", "OPENAI_API_KEY"),
            ("anthropic:claude-sonnet-4-5", "ANTHROPIC_API_KEY"),
            ("openai-compatible:qwen", "OPENAI_BASE_URL"),
        ] {
            let err = build_provider(&spec.parse().unwrap(), &config)
                .err()
                .unwrap();
            assert!(err.to_string().contains(var), "{spec}: {err}");
        }
        assert!(build_provider(&"ollama:llama3.2".parse().unwrap(), &config).is_ok());
        let err = build_provider(&ModelSpec::Local { model: None }, &config)
            .err()
            .unwrap();
        assert!(err.to_string().contains("plan-llm-local"), "{err}");
    }

    #[test]
    fn specs_round_trip_and_bad_ones_say_what_to_use() {
        for s in [
            "openai:gpt-4o-mini",
            "openai-compatible:qwen2.5:7b",
            "ollama:llama3.2:1b",
            "local",
            "local:tiny",
        ] {
            assert_eq!(ModelSpec::parse(s).unwrap().to_string(), s);
        }
        let err = ModelSpec::parse("gemini:pro").unwrap_err().to_string();
        assert!(
            err.contains("unknown provider `gemini`") && err.contains("openai:gpt-4o-mini"),
            "{err}"
        );
        assert!(ModelSpec::parse("openai:").is_err());
    }
}
