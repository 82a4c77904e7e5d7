//! The provider registry: which code builds the provider a `provider:model` spec names.
//!
//! plan-llm registers its own adapters ([`ProviderRegistry::builtin`]); a provider crate
//! registers its prefix beside them (plan-llm-local registers `local`), so `--model mine:x`
//! reaches a provider that plan-llm has never heard of.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::anthropic::Anthropic;
use crate::config::{ModelSpec, ProviderConfig};
use crate::error::LlmError;
use crate::ollama::Ollama;
use crate::openai::{Flavour, OPENAI_BASE_URL, OpenAi};
use crate::provider::Provider;

/// Builds providers for one spec prefix.
///
/// Any `Fn(&ModelSpec, &ProviderConfig) -> Result<Arc<dyn Provider>, LlmError>` is a
/// factory, so most registrations are closures.
pub trait ProviderFactory: Send + Sync {
    /// Builds the provider `spec` names, with keys and base URLs from `config`. It may
    /// block (a local model loads here); async callers wrap it in `block_in_place` or
    /// `spawn_blocking`.
    ///
    /// # Errors
    /// An [`LlmError`] saying what is missing or wrong, e.g. [`LlmError::MissingKey`].
    fn build(
        &self,
        spec: &ModelSpec,
        config: &ProviderConfig,
    ) -> Result<Arc<dyn Provider>, LlmError>;
}

impl<F> ProviderFactory for F
where
    F: Fn(&ModelSpec, &ProviderConfig) -> Result<Arc<dyn Provider>, LlmError> + Send + Sync,
{
    fn build(
        &self,
        spec: &ModelSpec,
        config: &ProviderConfig,
    ) -> Result<Arc<dyn Provider>, LlmError> {
        self(spec, config)
    }
}

/// One registered prefix.
#[derive(Clone)]
struct Entry {
    description: String,
    model_required: bool,
    factory: Arc<dyn ProviderFactory>,
}

/// Prefixes and the factories that build their providers.
///
/// ```
/// use std::sync::Arc;
/// use plan_llm::{ModelSpec, Provider, ProviderConfig, ProviderRegistry, Reply, ScriptedModel};
///
/// let mut registry = ProviderRegistry::builtin();
/// registry.register("echo", "a scripted echo model", |spec: &ModelSpec, _: &ProviderConfig| {
///     let model = ScriptedModel::new().otherwise(Reply::text(spec.model().unwrap_or("hi")));
///     Ok(Arc::new(model) as Arc<dyn Provider>)
/// });
/// let provider = registry.build(&"echo:hello".parse()?, &ProviderConfig::default())?;
/// assert_eq!(provider.name(), "scripted");
/// assert!(registry.prefixes().any(|(p, _)| p == "openai"));
/// # Ok::<(), plan_llm::LlmError>(())
/// ```
#[derive(Clone, Default)]
pub struct ProviderRegistry {
    entries: BTreeMap<String, Entry>,
    aliases: BTreeMap<String, String>,
}

impl fmt::Debug for ProviderRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderRegistry")
            .field("prefixes", &self.entries.keys().collect::<Vec<_>>())
            .field("aliases", &self.aliases)
            .finish()
    }
}

impl ProviderRegistry {
    /// A registry with nothing in it.
    pub fn empty() -> Self {
        Self::default()
    }

    /// plan-llm's own adapters: `openai`, `openai-compatible` (alias `compatible`),
    /// `anthropic` and `ollama`.
    pub fn builtin() -> Self {
        let mut r = Self::empty();
        r.register(
            "openai",
            "OpenAI's API (OPENAI_API_KEY), or any server at a base URL",
            build_openai,
        );
        r.register(
            "openai-compatible",
            "any OpenAI-compatible server at a base URL; its flavour is detected",
            build_compatible,
        );
        r.alias("compatible", "openai-compatible");
        r.alias("openai_compatible", "openai-compatible");
        r.register(
            "anthropic",
            "Anthropic's API (ANTHROPIC_API_KEY)",
            build_anthropic,
        );
        r.register("ollama", "an Ollama server (OLLAMA_HOST)", build_ollama);
        for (flavour, url) in FLAVOURED {
            r.register(
                flavour.name,
                format!("a {} server (default base URL {url})", flavour.name),
                move |spec: &ModelSpec, config: &ProviderConfig| {
                    build_flavoured(spec, config, flavour, url)
                },
            );
        }
        r
    }

    /// Registers (or replaces) the factory for `prefix`; specs with this prefix must name
    /// a model.
    pub fn register(
        &mut self,
        prefix: &str,
        description: impl Into<String>,
        factory: impl ProviderFactory + 'static,
    ) -> &mut Self {
        self.insert(prefix, description.into(), true, Arc::new(factory))
    }

    /// Registers (or replaces) the factory for `prefix`, which may be used alone (as
    /// `local` is) or with a model (`local:name`).
    pub fn register_optional_model(
        &mut self,
        prefix: &str,
        description: impl Into<String>,
        factory: impl ProviderFactory + 'static,
    ) -> &mut Self {
        self.insert(prefix, description.into(), false, Arc::new(factory))
    }

    fn insert(
        &mut self,
        prefix: &str,
        description: String,
        model_required: bool,
        factory: Arc<dyn ProviderFactory>,
    ) -> &mut Self {
        let prefix = prefix.trim().to_ascii_lowercase();
        self.aliases.remove(&prefix);
        self.entries.insert(
            prefix,
            Entry {
                description,
                model_required,
                factory,
            },
        );
        self
    }

    /// Makes `alias` another name for the registered `prefix`.
    pub fn alias(&mut self, alias: &str, prefix: &str) -> &mut Self {
        self.aliases
            .insert(alias.to_ascii_lowercase(), prefix.to_ascii_lowercase());
        self
    }

    /// Whether `prefix` (or an alias of one) is registered.
    pub fn contains(&self, prefix: &str) -> bool {
        self.entry(prefix).is_some()
    }

    /// The registered prefixes with their one-line descriptions, in name order.
    pub fn prefixes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|(p, e)| (p.as_str(), e.description.as_str()))
    }

    fn entry(&self, prefix: &str) -> Option<&Entry> {
        let prefix = prefix.to_ascii_lowercase();
        let canonical = self.aliases.get(&prefix).unwrap_or(&prefix);
        self.entries.get(canonical)
    }

    /// Checks that `spec` names a registered prefix, with a model where it needs one,
    /// without building anything.
    ///
    /// # Errors
    /// [`LlmError::UnknownProvider`] listing the known prefixes, or [`LlmError::Config`]
    /// when the spec names no model but its provider needs one.
    pub fn check(&self, spec: &ModelSpec) -> Result<(), LlmError> {
        let entry = self
            .entry(spec.provider())
            .ok_or_else(|| LlmError::UnknownProvider {
                spec: spec.to_string(),
                provider: spec.provider().to_owned(),
                known: self.entries.keys().cloned().collect(),
            })?;
        if entry.model_required && spec.model().is_none() {
            return Err(LlmError::Config(format!(
                "model spec `{spec}` names no model; write `{}:<model>`",
                spec.provider()
            )));
        }
        Ok(())
    }

    /// Builds the provider `spec` names.
    ///
    /// # Errors
    /// As [`check`](Self::check), then whatever the prefix's factory reports (a missing
    /// key, a missing base URL, a model that cannot load).
    pub fn build(
        &self,
        spec: &ModelSpec,
        config: &ProviderConfig,
    ) -> Result<Arc<dyn Provider>, LlmError> {
        self.check(spec)?;
        match self.entry(spec.provider()) {
            Some(entry) => entry.factory.build(spec, config),
            None => unreachable_entry(spec),
        }
    }
}

fn unreachable_entry(spec: &ModelSpec) -> Result<Arc<dyn Provider>, LlmError> {
    Err(LlmError::Config(format!(
        "no provider is registered for `{spec}`"
    )))
}

/// The model part of a spec whose prefix requires one (checked by the registry).
fn model(spec: &ModelSpec) -> &str {
    spec.model().unwrap_or_default()
}

fn build_openai(spec: &ModelSpec, config: &ProviderConfig) -> Result<Arc<dyn Provider>, LlmError> {
    let base_url = config.base_url.as_ref().or(config.openai_base_url.as_ref());
    // A server other than OpenAI's (a local one) usually needs no key.
    let elsewhere = base_url.is_some_and(|u| u.trim_end_matches('/') != OPENAI_BASE_URL);
    let key = match (&config.openai_api_key, elsewhere) {
        (Some(key), _) => Some(key.clone()),
        (None, true) => None,
        (None, false) => {
            return Err(LlmError::MissingKey {
                spec: spec.to_string(),
                var: "OPENAI_API_KEY".to_owned(),
            });
        }
    };
    let mut provider = OpenAi::new(model(spec), key);
    if let Some(url) = base_url {
        provider = provider.with_base_url(url);
    }
    if elsewhere {
        // Another server speaking OpenAI's API: ask it who it is before the first call.
        provider = provider.with_flavour(Flavour::openai().with_detect(true));
    }
    Ok(Arc::new(provider))
}

/// The servers with a flavour and a prefix of their own, with their usual local address.
const FLAVOURED: [(Flavour, &str); 5] = [
    (Flavour::llama_cpp(), "http://localhost:8080/v1"),
    (Flavour::llama_cpp_python(), "http://localhost:8000/v1"),
    (Flavour::vllm(), "http://localhost:8000/v1"),
    (Flavour::lm_studio(), "http://localhost:1234/v1"),
    (Flavour::ollama_openai(), "http://localhost:11434/v1"),
];

fn build_flavoured(
    spec: &ModelSpec,
    config: &ProviderConfig,
    flavour: Flavour,
    default_url: &str,
) -> Result<Arc<dyn Provider>, LlmError> {
    let url = config
        .base_url
        .as_deref()
        .or(config.openai_base_url.as_deref())
        .unwrap_or(default_url);
    let provider = OpenAi::new(model(spec), config.openai_api_key.clone())
        .with_base_url(url)
        .with_name(spec.to_string())
        .with_flavour(flavour);
    Ok(Arc::new(provider))
}

fn build_compatible(
    spec: &ModelSpec,
    config: &ProviderConfig,
) -> Result<Arc<dyn Provider>, LlmError> {
    let url = config
        .base_url
        .as_ref()
        .or(config.openai_base_url.as_ref())
        .ok_or_else(|| LlmError::MissingBaseUrl {
            spec: spec.to_string(),
            example: "http://localhost:8080/v1".to_owned(),
        })?;
    let provider = OpenAi::new(model(spec), config.openai_api_key.clone())
        .with_base_url(url)
        .with_name(spec.to_string());
    Ok(Arc::new(
        provider.with_flavour(
            config
                .compatible_flavour
                .unwrap_or_else(Flavour::compatible),
        ),
    ))
}

fn build_anthropic(
    spec: &ModelSpec,
    config: &ProviderConfig,
) -> Result<Arc<dyn Provider>, LlmError> {
    let key = config
        .anthropic_api_key
        .clone()
        .ok_or_else(|| LlmError::MissingKey {
            spec: spec.to_string(),
            var: "ANTHROPIC_API_KEY".to_owned(),
        })?;
    let mut provider = Anthropic::new(model(spec), key);
    if let Some(url) = config
        .base_url
        .as_ref()
        .or(config.anthropic_base_url.as_ref())
    {
        provider = provider.with_base_url(url);
    }
    Ok(Arc::new(provider))
}

fn build_ollama(spec: &ModelSpec, config: &ProviderConfig) -> Result<Arc<dyn Provider>, LlmError> {
    let mut provider = Ollama::new(model(spec));
    if let Some(url) = config.base_url.as_ref().or(config.ollama_host.as_ref()) {
        provider = provider.with_base_url(url);
    }
    Ok(Arc::new(provider))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::LlmHint;

    fn build(spec: &str, config: &ProviderConfig) -> Result<Arc<dyn Provider>, LlmError> {
        ProviderRegistry::builtin().build(&spec.parse()?, config)
    }

    #[test]
    fn missing_keys_and_urls_say_what_to_set() {
        let config = ProviderConfig::default();
        for (spec, var) in [
            ("openai:gpt-4o-mini", "OPENAI_API_KEY"),
            ("anthropic:claude-sonnet-4-5", "ANTHROPIC_API_KEY"),
            ("openai-compatible:qwen", "OPENAI_BASE_URL"),
        ] {
            let err = build(spec, &config).err().unwrap();
            assert!(err.to_string().contains(var), "{spec}: {err}");
            assert!(!err.to_string().contains("--"), "no CLI flags: {err}");
            assert!(err.hint().is_some(), "{spec}: {err}");
        }
        assert!(build("ollama:llama3.2", &config).is_ok());
    }

    #[test]
    fn a_base_url_makes_the_openai_key_optional() {
        let local = ProviderConfig::default().with_base_url("http://127.0.0.1:8080/v1");
        assert!(build("openai:qwen", &local).is_ok());
        let from_env = ProviderConfig::from_vars([("OPENAI_BASE_URL", "http://gpu:8000/v1")]);
        assert!(build("openai:qwen", &from_env).is_ok());
        let openai_itself = ProviderConfig::default().with_base_url("https://api.openai.com/v1/");
        let err = build("openai:gpt-4o", &openai_itself).err().unwrap();
        assert!(matches!(err, LlmError::MissingKey { .. }), "{err}");
    }

    #[test]
    fn unknown_prefixes_list_the_known_ones_and_local_says_where_it_lives() {
        let err = build("gemini:pro", &ProviderConfig::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("unknown provider `gemini`") && err.contains("anthropic, "),
            "{err}"
        );
        let err = build("local", &ProviderConfig::default()).err().unwrap();
        assert!(err.to_string().contains("plan-llm-local"), "{err}");
        assert_eq!(err.hint(), Some(LlmHint::Model));
        let err = build("openai", &ProviderConfig::default()).err().unwrap();
        assert!(err.to_string().contains("names no model"), "{err}");
    }

    #[test]
    fn registered_prefixes_and_aliases_reach_their_factory() {
        let mut registry = ProviderRegistry::builtin();
        registry.register_optional_model(
            "mine",
            "test",
            |_: &ModelSpec, _: &ProviderConfig| -> Result<Arc<dyn Provider>, LlmError> {
                Ok(Arc::new(crate::ScriptedModel::new()))
            },
        );
        let config = ProviderConfig::default();
        assert!(registry.build(&"mine".parse().unwrap(), &config).is_ok());
        assert!(registry.build(&"MINE:x".parse().unwrap(), &config).is_ok());
        let url = config.clone().with_base_url("http://127.0.0.1:1/v1");
        let p = registry
            .build(&"compatible:qwen".parse().unwrap(), &url)
            .unwrap();
        assert_eq!(p.name(), "compatible:qwen");
    }
}
