//! Registering the embedded model with a [`ProviderRegistry`], so the `local` spec prefix
//! (`--model local`) reaches it like any other provider.

use std::sync::{Arc, Mutex, PoisonError};

use plan_llm::{LlmError, ModelSpec, Provider, ProviderConfig, ProviderFactory, ProviderRegistry};

use crate::fetch::FetchEvent;
use crate::provider::{LocalConfig, LocalModel, PROVIDER_NAME};

/// The one model this crate embeds, as `local:<MODEL_ID>` names it (`local` alone means
/// the same).
pub const MODEL_ID: &str = "smollm2-135m-instruct";

type Progress = Box<dyn FnMut(FetchEvent) + Send>;

/// Builds [`LocalModel`]s for `local` and `local:smollm2-135m-instruct` specs, fetching the
/// model first if needed (reporting progress to an optional callback). Building blocks
/// while the model loads (about a second, plus any fetch).
pub struct LocalFactory {
    config: LocalConfig,
    progress: Mutex<Option<Progress>>,
}

impl std::fmt::Debug for LocalFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalFactory")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl LocalFactory {
    /// A factory loading with `config`.
    pub fn new(config: LocalConfig) -> Self {
        Self {
            config,
            progress: Mutex::new(None),
        }
    }

    /// Reports fetch progress to `progress` (for a progress bar).
    pub fn with_progress(self, progress: impl FnMut(FetchEvent) + Send + 'static) -> Self {
        *self.progress.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(progress));
        self
    }
}

impl ProviderFactory for LocalFactory {
    fn build(
        &self,
        spec: &ModelSpec,
        _config: &ProviderConfig,
    ) -> Result<Arc<dyn Provider>, LlmError> {
        if let Some(name) = spec.model().filter(|m| !m.eq_ignore_ascii_case(MODEL_ID)) {
            return Err(LlmError::Config(format!(
                "unknown embedded model `{name}`: the embedded model is `{MODEL_ID}` (write `local`)"
            )));
        }
        let mut progress = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        let loaded = match progress.as_mut() {
            Some(report) => LocalModel::load_with_progress(self.config.clone(), &mut **report),
            None => LocalModel::load(self.config.clone()),
        };
        let model =
            loaded.map_err(|e| LlmError::Config(format!("cannot load the embedded model: {e}")))?;
        Ok(Arc::new(model))
    }
}

/// Registers the embedded model under `local` with the default configuration.
///
/// ```
/// use plan_llm::{ModelSpec, ProviderRegistry};
///
/// let mut registry = ProviderRegistry::builtin();
/// plan_llm_local::register(&mut registry);
/// assert!(registry.contains("local"));
/// assert!(registry.check(&ModelSpec::parse("local")?).is_ok());
/// # Ok::<(), plan_llm::LlmError>(())
/// ```
pub fn register(registry: &mut ProviderRegistry) -> &mut ProviderRegistry {
    register_factory(registry, LocalFactory::new(LocalConfig::default()))
}

/// Registers `factory` under `local` (for a custom configuration or a progress bar).
pub fn register_factory(
    registry: &mut ProviderRegistry,
    factory: LocalFactory,
) -> &mut ProviderRegistry {
    registry.register_optional_model(
        PROVIDER_NAME,
        "the embedded offline model (SmolLM2-135M-Instruct on the CPU; no key)",
        factory,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_local_names_are_refused_before_loading() {
        let mut registry = ProviderRegistry::empty();
        register(&mut registry);
        let err = registry
            .build(
                &"local:llama-70b".parse().unwrap(),
                &ProviderConfig::default(),
            )
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("unknown embedded model `llama-70b`") && err.contains(MODEL_ID),
            "{err}"
        );
    }

    #[test]
    fn a_model_that_cannot_load_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let bogus = dir.path().join("bogus.gguf");
        std::fs::write(&bogus, b"not a model").unwrap();
        let mut registry = ProviderRegistry::empty();
        register_factory(
            &mut registry,
            LocalFactory::new(LocalConfig::default().with_model_path(&bogus)),
        );
        let err = registry
            .build(&"local".parse().unwrap(), &ProviderConfig::default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cannot load the embedded model"), "{err}");
    }
}
