//! Specs, environment configuration and key handling through the public API.

use plan_llm::{ApiKey, ModelSpec, ProviderConfig, build_provider};

use super::support::CANARY_KEY;

#[test]
fn providers_are_built_from_vars_and_base_urls_override() {
    let config = ProviderConfig::from_vars([
        ("OPENAI_API_KEY", CANARY_KEY),
        ("ANTHROPIC_API_KEY", CANARY_KEY),
        ("OLLAMA_HOST", "gpu-box"),
        ("OPENAI_BASE_URL", "http://proxy:9000/v1"),
    ]);
    for (spec, name) in [
        ("openai:gpt-4o-mini", "openai:gpt-4o-mini"),
        ("anthropic:claude-sonnet-4-5", "anthropic:claude-sonnet-4-5"),
        ("ollama:llama3.2", "ollama:llama3.2"),
        ("openai-compatible:qwen2.5", "openai-compatible:qwen2.5"),
    ] {
        let p = build_provider(&ModelSpec::parse(spec).unwrap(), &config).unwrap();
        assert_eq!(p.name(), name);
    }
    let printed = format!("{config:?}");
    assert!(!printed.contains(CANARY_KEY), "{printed}");
    let err = build_provider(
        &ModelSpec::parse("openai:gpt-4o").unwrap(),
        &ProviderConfig::from_vars([("OPENAI_API_KEY", "  ")]),
    )
    .err()
    .unwrap();
    assert!(
        err.to_string().contains("OPENAI_API_KEY is not set"),
        "{err}"
    );
}

#[test]
fn keys_never_print() {
    let key = ApiKey::new(CANARY_KEY);
    assert!(!format!("{key} {key:?}").contains(CANARY_KEY));
    let config = ProviderConfig::default()
        .with_openai_key(key.clone())
        .with_anthropic_key(key);
    assert!(!format!("{config:?}").contains(CANARY_KEY));
}
