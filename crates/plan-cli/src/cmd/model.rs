//! `plan model pull` and `plan model list`: the embedded model's cache.

use std::process::ExitCode;

use plan_llm_local::ModelStore;

use crate::session;

/// `plan model pull`: fetches (or finds) the model, verifies it and prints its path.
pub fn pull(quiet: bool) -> anyhow::Result<ExitCode> {
    let path = session::pull_model(quiet)?;
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// `plan model list`: one line per cached model file: name, size, path.
pub fn list() -> anyhow::Result<ExitCode> {
    let store = ModelStore::default();
    let models = store.list().map_err(|e| {
        anyhow::anyhow!("cannot list the model cache {}: {e}", store.dir().display())
    })?;
    if models.is_empty() {
        eprintln!(
            "no models in {}: fetch the embedded model with `plan model pull`",
            store.dir().display()
        );
    }
    for m in models {
        println!(
            "{}  {:.1} MiB  {}",
            m.name,
            m.size as f64 / (1024.0 * 1024.0),
            m.path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
