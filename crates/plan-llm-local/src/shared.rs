//! One loaded model per file per process.
//!
//! A run loads the embedded model once per use (its planner, each agent profile, the
//! research agent, every run a server hosts). Separate loads would each keep their own
//! weights, cache and threads and decode at the same time on the same cores, each slowing
//! the others; so loads of the same file with the same engine settings share one
//! [`Loaded`] model, with one queue in front of its one engine. A model is unloaded when
//! its last handle is dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::SystemTime;

use crate::chat::ChatTemplate;
use crate::engine::Engine;
use crate::error::LocalError;
use crate::provider::{LoadStats, PrefillStats};
use crate::queue::Fifo;
use crate::tokenizer::Tokenizer;

/// What one load makes: everything the handles of one model share.
pub(crate) struct Loaded {
    /// Callers in the order they asked; the one served holds [`Self::engine`].
    pub(crate) queue: Arc<Fifo>,
    pub(crate) engine: Mutex<Engine>,
    pub(crate) template: ChatTemplate,
    pub(crate) pool: rayon::ThreadPool,
    pub(crate) tokenizer: Tokenizer,
    pub(crate) threads: usize,
    pub(crate) load: LoadStats,
    pub(crate) counters: Counters,
}

impl Loaded {
    /// The engine, for the caller whose turn it is. After a panic in an earlier
    /// generation the cache's contents are not to be trusted: they are forgotten.
    pub(crate) fn engine(&self) -> MutexGuard<'_, Engine> {
        match self.engine.lock() {
            Ok(engine) => engine,
            Err(poisoned) => {
                let mut engine = poisoned.into_inner();
                engine.forget_cache();
                self.engine.clear_poison();
                engine
            }
        }
    }
}

/// Prompt tokens run and reused, over every request the model served.
#[derive(Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    prefilled: AtomicU64,
    reused: AtomicU64,
}

impl Counters {
    /// Counts a generation that reused `reused` of its `prompt` tokens.
    pub(crate) fn add(&self, prompt: usize, reused: usize) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.prefilled
            .fetch_add((prompt - reused) as u64, Ordering::Relaxed);
        self.reused.fetch_add(reused as u64, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> PrefillStats {
        PrefillStats {
            requests: self.requests.load(Ordering::Relaxed),
            prefilled: self.prefilled.load(Ordering::Relaxed),
            reused: self.reused.load(Ordering::Relaxed),
        }
    }
}

/// What makes two loads the same model: the file (by its canonical path, size and
/// modification time, so a replaced file is loaded afresh) and the engine's settings.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    context: usize,
    threads: usize,
}

impl Key {
    pub(crate) fn new(path: &Path, context: usize, threads: usize) -> Result<Self, LocalError> {
        let load_err = |e: std::io::Error| LocalError::Load {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let canonical = path.canonicalize().map_err(load_err)?;
        let meta = std::fs::metadata(&canonical).map_err(load_err)?;
        Ok(Self {
            path: canonical,
            len: meta.len(),
            modified: meta.modified().ok(),
            context,
            threads,
        })
    }
}

/// The models loaded in this process (dropped ones are pruned on the next load).
static LOADED: Mutex<Option<HashMap<Key, Weak<Loaded>>>> = Mutex::new(None);

/// The model loaded for `key`, loading it with `load` if no handle to one is left. Loads
/// are serialised, so two callers asking at once for the same model load it once.
pub(crate) fn get_or_load(
    key: Key,
    load: impl FnOnce() -> Result<Loaded, LocalError>,
) -> Result<Arc<Loaded>, LocalError> {
    // The map is only changed in single statements: a panicked load leaves it whole.
    let mut loaded = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
    let map = loaded.get_or_insert_with(HashMap::new);
    map.retain(|_, model| model.strong_count() > 0);
    if let Some(model) = map.get(&key).and_then(Weak::upgrade) {
        return Ok(model);
    }
    let model = Arc::new(load()?);
    map.insert(key, Arc::downgrade(&model));
    Ok(model)
}
