//! `cargo xtask fetch-model`: puts the embedded model into the cache (for CI and
//! developers), the same way `plan model pull` does.

use anyhow::Result;
use plan_llm_local::{FetchEvent, FetchOptions, ModelStore};

/// Fetches the model into the default store and prints where it is.
pub fn fetch_model() -> Result<()> {
    let store = ModelStore::default();
    let mut last_percent = None;
    store.ensure(&FetchOptions::default(), &mut |event| match event {
        FetchEvent::Cached { path } => println!("model already cached: {}", path.display()),
        FetchEvent::Trying { source } => println!("fetching the model from {source}"),
        FetchEvent::SourceFailed { source, reason } => {
            println!("  {source} failed: {reason}")
        }
        FetchEvent::Progress { bytes, total } => {
            let mb = bytes / 1_000_000;
            match total {
                Some(total) if total > 0 => {
                    let percent = bytes * 100 / total / 10 * 10;
                    if last_percent != Some(percent) {
                        last_percent = Some(percent);
                        println!("  {percent}% ({mb} MB)");
                    }
                }
                _ => {
                    // Unknown size (pip): one line per 10 MB.
                    let tens = mb / 10;
                    if last_percent != Some(tens) {
                        last_percent = Some(tens);
                        println!("  {mb} MB");
                    }
                }
            }
        }
        FetchEvent::Verifying => println!("  verifying sha256"),
        FetchEvent::Done { path } => println!("model ready: {}", path.display()),
        _ => {}
    })?;
    Ok(())
}
