//! [`LocalModel`]: the in-process model behind plan-llm's [`Provider`] trait, and its
//! [`LocalConfig`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use llguidance::ParserFactory;
use plan_llm::{
    Capabilities, Chunk, ChunkStream, LlmError, Provider, Request, Response, ResponseFormat, Role,
    ToolChoice, Usage, collect_stream,
};

use crate::chat::ChatTemplate;
use crate::engine::{Engine, GenParams, Outcome};
use crate::error::LocalError;
use crate::fetch::{FetchEvent, FetchOptions, ModelStore};
use crate::model::Llama;
use crate::queue::Ticket;
use crate::shared::{Counters, Key, Loaded, get_or_load};
use crate::tokenizer::Tokenizer;

/// The provider name used in logs and reports.
pub const PROVIDER_NAME: &str = "local";

/// The most tokens the model handles at once (prompt and reply together).
pub const MAX_CONTEXT: usize = 8192;

/// How to load a [`LocalModel`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LocalConfig {
    /// A GGUF file to load as is; when `None` the model is fetched into [`Self::store`].
    pub model_path: Option<PathBuf>,
    /// Where the model is cached.
    pub store: ModelStore,
    /// How to fetch the model when it is not cached.
    pub fetch: FetchOptions,
    /// Threads for inference; `None` picks 1 on machines with 2 cores or fewer (where a
    /// second thread fights other work for the CPU), else half the cores, at most 4.
    pub threads: Option<usize>,
    /// Context window in tokens (prompt plus reply), at most [`MAX_CONTEXT`]; memory for
    /// the cache grows with it (about 45 KiB per token for the default model).
    pub context_size: usize,
    /// Seed for sampling at temperatures above 0.
    pub seed: u64,
    /// Reply cap when a request sets no `max_tokens`.
    pub default_max_tokens: u32,
    /// Temperature when a request sets none.
    pub default_temperature: f32,
    /// Repetition penalty for free-text replies (as llama.cpp's `repeat_penalty`): the
    /// logit of a token seen in the last [`repeat_window`](Self::repeat_window) tokens of
    /// the reply is divided by it (multiplied when negative). A small model at temperature
    /// 0 otherwise falls into loops, repeating a sentence until the token cap. 1.0 turns
    /// it off. Constrained (JSON) replies are not penalised.
    pub repeat_penalty: f32,
    /// How many of the latest reply tokens the penalty looks at.
    pub repeat_window: usize,
    /// Whether a request reuses the keys and values of the prompt prefix it shares with
    /// the previous request (the same system prompt, goal or passages): only the rest of
    /// its prompt is run. Replies are the same either way; off, every prompt is run
    /// whole (for comparing). Default on.
    pub prefix_reuse: bool,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            model_path: None,
            store: ModelStore::default(),
            fetch: FetchOptions::default(),
            threads: None,
            context_size: 4096,
            seed: 0,
            default_max_tokens: 512,
            default_temperature: 0.0,
            repeat_penalty: 1.05,
            repeat_window: 64,
            prefix_reuse: true,
        }
    }
}

impl LocalConfig {
    /// Loads this GGUF file instead of the cached default model.
    pub fn with_model_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.model_path = Some(path.into());
        self
    }

    /// Uses this model cache.
    pub fn with_store(mut self, store: ModelStore) -> Self {
        self.store = store;
        self
    }

    /// Uses these fetch options when the model is not cached.
    pub fn with_fetch(mut self, fetch: FetchOptions) -> Self {
        self.fetch = fetch;
        self
    }

    /// Sets the number of inference threads.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Sets the context window in tokens.
    pub fn with_context_size(mut self, tokens: usize) -> Self {
        self.context_size = tokens;
        self
    }

    /// Sets the sampling seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the reply cap used when a request has none.
    pub fn with_default_max_tokens(mut self, tokens: u32) -> Self {
        self.default_max_tokens = tokens;
        self
    }

    /// Sets the repetition penalty (1.0: none) and the window of reply tokens it covers.
    pub fn with_repeat_penalty(mut self, penalty: f32, window: usize) -> Self {
        self.repeat_penalty = penalty;
        self.repeat_window = window;
        self
    }

    /// Turns reuse of a shared prompt prefix on or off (see
    /// [`prefix_reuse`](Self::prefix_reuse)).
    pub fn with_prefix_reuse(mut self, reuse: bool) -> Self {
        self.prefix_reuse = reuse;
        self
    }
}

/// The default thread count: 1 on machines with 2 cores or fewer, else half, at most 4.
pub fn default_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores <= 2 { 1 } else { (cores / 2).min(4) }
}

/// Timings of the last load, for benchmarks and progress reports.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct LoadStats {
    /// Reading, re-encoding and preparing the weights.
    pub weights: Duration,
    /// Building the tokenizer and the constrained-decoding tables.
    pub tokenizer: Duration,
}

/// Prompt tokens a loaded model ran and reused, over every request it served (through
/// any of its handles: see [`LocalModel::prefill_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PrefillStats {
    /// Requests generated.
    pub requests: u64,
    /// Prompt tokens run through the model.
    pub prefilled: u64,
    /// Prompt tokens whose keys and values were reused from the previous request's
    /// cache instead (a shared prefix).
    pub reused: u64,
}

/// The settings of one handle: loads of the same model share the engine, not these.
struct Settings {
    seed: u64,
    default_max_tokens: u32,
    default_temperature: f32,
    repeat_penalty: f32,
    repeat_window: usize,
    prefix_reuse: bool,
}

/// The embedded model, run in-process on the CPU, as a [`Provider`] named `local`.
///
/// Generation runs on a thread of its own (never on the async runtime) and requests are
/// served one at a time, first come first served: concurrent calls wait their turn, and
/// a call whose caller goes away (its stream dropped) gives its turn up. Loads of the same
/// file with the same [`context_size`](LocalConfig::context_size) and
/// [`threads`](LocalConfig::threads) share one loaded model and its queue within the
/// process (so a run's planner, its agent profiles and its research agent never decode at
/// the same time on the same cores); the other settings belong to each handle. Cloning is
/// cheap and shares the loaded model.
///
/// A request reuses the cached keys and values of the prompt prefix it shares with the
/// previous one (see [`LocalConfig::prefix_reuse`] and [`prefill_stats`](Self::prefill_stats)).
///
/// Supports free text, [`ResponseFormat::JsonObject`] and [`ResponseFormat::JsonSchema`]
/// (enforced token by token, so a reply that finishes normally always parses and matches
/// the schema; a reply cut by `max_tokens` ends with [`plan_llm::FinishReason::Length`]).
/// No native tool calls: tools are ignored, and a request that requires one is rejected.
#[derive(Clone)]
pub struct LocalModel {
    loaded: Arc<Loaded>,
    settings: Arc<Settings>,
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalModel")
            .field("threads", &self.loaded.threads)
            .field("prefix_reuse", &self.settings.prefix_reuse)
            .finish_non_exhaustive()
    }
}

impl LocalModel {
    /// Loads the model, fetching it first if needed, or shares the one this process has
    /// already loaded from the same file with the same context size and threads. Blocks
    /// (seconds): from async code call it through `tokio::task::spawn_blocking`.
    ///
    /// # Errors
    /// [`LocalError::Fetch`] when the model cannot be fetched, [`LocalError::Load`] and
    /// friends when it cannot be loaded.
    pub fn load(config: LocalConfig) -> Result<Self, LocalError> {
        Self::load_with_progress(config, &mut |_| {})
    }

    /// Like [`load`](Self::load), reporting fetch progress (for a progress bar).
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn load_with_progress(
        config: LocalConfig,
        progress: &mut dyn FnMut(FetchEvent),
    ) -> Result<Self, LocalError> {
        if config.context_size < 64 || config.context_size > MAX_CONTEXT {
            return Err(LocalError::Config(format!(
                "context size {} is outside 64..={MAX_CONTEXT}",
                config.context_size
            )));
        }
        let threads = config.threads.unwrap_or_else(default_threads);
        if threads == 0 {
            return Err(LocalError::Config("threads must be at least 1".to_owned()));
        }
        let path = match &config.model_path {
            Some(p) => p.clone(),
            None => config.store.ensure(&config.fetch, progress)?,
        };
        let key = Key::new(&path, config.context_size, threads)?;
        let loaded = get_or_load(key, || load_model(path, config.context_size, threads))?;
        Ok(Self {
            loaded,
            settings: Arc::new(Settings {
                seed: config.seed,
                default_max_tokens: config.default_max_tokens,
                default_temperature: config.default_temperature,
                repeat_penalty: config.repeat_penalty,
                repeat_window: config.repeat_window,
                prefix_reuse: config.prefix_reuse,
            }),
        })
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.loaded.tokenizer
    }

    /// The number of inference threads.
    pub fn threads(&self) -> usize {
        self.loaded.threads
    }

    /// How long loading took (the first load, when this one shared it).
    pub fn load_stats(&self) -> LoadStats {
        self.loaded.load
    }

    /// Prompt tokens run and reused so far by the loaded model: over every request of
    /// every handle sharing it.
    pub fn prefill_stats(&self) -> PrefillStats {
        self.loaded.counters.get()
    }

    /// Requests waiting for the model, the one being generated included.
    pub fn queued(&self) -> u64 {
        self.loaded.queue.len()
    }

    /// The prompt tokens a request would be run with (chat template applied, plus the
    /// schema hint for JSON formats).
    ///
    /// # Errors
    /// [`LocalError::Template`] or [`LocalError::Tokenizer`].
    pub fn prompt_tokens(&self, request: &Request) -> Result<Vec<u32>, LocalError> {
        let text = self.loaded.template.render(&with_format_hint(request))?;
        self.loaded.tokenizer.encode(&text)
    }

    /// Runs a request to the end on the calling thread once `ticket`'s turn comes,
    /// passing text pieces to `on_text` as they are decoded; `alive` says whether the
    /// caller still wants the reply (asked before the turn is taken up and during the
    /// generation). Blocking; [`Provider::stream`] wraps it on a thread of its own.
    fn run(
        &self,
        request: &Request,
        ticket: Ticket,
        on_text: &mut (dyn FnMut(&str) -> bool + Send),
        alive: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<Outcome>, LocalError> {
        if !request.tools.is_empty()
            && matches!(
                request.tool_choice,
                ToolChoice::Required | ToolChoice::Tool(_)
            )
        {
            return Err(LocalError::Config(
                "the local model cannot call tools; use a provider with tool support".to_owned(),
            ));
        }
        Engine::grammar(&request.response_format)?;
        let prompt = self.prompt_tokens(request)?;
        let settings = &self.settings;
        let params = GenParams {
            max_tokens: request.max_tokens.unwrap_or(settings.default_max_tokens) as usize,
            temperature: request.temperature.unwrap_or(settings.default_temperature),
            seed: settings.seed,
            repeat_penalty: settings.repeat_penalty,
            repeat_window: settings.repeat_window,
            format: request.response_format.clone(),
            stop: request.stop.clone(),
            reuse_prefix: settings.prefix_reuse,
        };
        let asked = Instant::now();
        let _turn = ticket.wait();
        if !alive() {
            // The caller went away while waiting: the next one is served at once.
            return Ok(None);
        }
        let waited = asked.elapsed();
        let mut engine = self.loaded.engine();
        let engine: &mut Engine = &mut engine;
        let started = Instant::now();
        let outcome = self
            .loaded
            .pool
            .install(|| engine.generate(&prompt, &params, on_text, alive))?;
        self.loaded
            .counters
            .add(outcome.prompt_tokens, outcome.reused_tokens);
        tracing::debug!(
            prompt_tokens = outcome.prompt_tokens,
            reused_tokens = outcome.reused_tokens,
            completion_tokens = outcome.completion_tokens,
            queued_ms = waited.as_millis() as u64,
            generation_ms = started.elapsed().as_millis() as u64,
            "local model generation"
        );
        Ok(Some(outcome))
    }
}

/// Loads the model file at `path` with a cache of `context` tokens and `threads`
/// inference threads.
fn load_model(path: PathBuf, context: usize, threads: usize) -> Result<Loaded, LocalError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("plan-local-{i}"))
        .build()
        .map_err(|e| LocalError::Config(format!("cannot start {threads} threads: {e}")))?;
    let load_err = |message: String| LocalError::Load {
        path: path.clone(),
        message,
    };
    let started = Instant::now();
    let file = std::fs::File::open(&path).map_err(|e| load_err(e.to_string()))?;
    let mut reader = std::io::BufReader::new(file);
    let content = candle_core::quantized::gguf_file::Content::read(&mut reader)
        .map_err(|e| load_err(e.to_string()))?;
    let model = pool
        .install(|| Llama::load(&content, &mut reader, context))
        .map_err(load_err)?;
    let weights = started.elapsed();

    let started = Instant::now();
    let tokenizer = Tokenizer::from_gguf(&content)?;
    let template = ChatTemplate::new(
        content
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .cloned(),
    )?;
    let mut stop_tokens = vec![tokenizer.eos_token()];
    for s in ["<|im_end|>", "<|endoftext|>", "<|im_start|>"] {
        if let Some(id) = tokenizer.token_id(s)
            && !stop_tokens.contains(&id)
        {
            stop_tokens.push(id);
        }
    }
    let n_vocab = model.hyper.vocab;
    let tok_env = tokenizer.tok_env(n_vocab, &stop_tokens)?;
    let mut factory = ParserFactory::new(
        &tok_env,
        toktrie::InferenceCapabilities {
            ff_tokens: true,
            backtrack: false,
            conditional_ff_tokens: false,
            fork: false,
        },
        &llguidance::earley::SlicedBiasComputer::general_slices(),
    )
    .map_err(|e| LocalError::Tokenizer(e.to_string()))?;
    // Libraries do not print: llguidance's warnings go to its buffer, not stderr.
    factory.quiet();
    let tokenizer_time = started.elapsed();
    let engine = Engine {
        model,
        tokenizer: tokenizer.clone(),
        factory: Arc::new(factory),
        tok_env,
        stop_tokens,
        cached: Vec::new(),
    };
    Ok(Loaded {
        queue: Arc::default(),
        engine: Mutex::new(engine),
        template,
        pool,
        tokenizer,
        threads,
        load: LoadStats {
            weights,
            tokenizer: tokenizer_time,
        },
        counters: Counters::default(),
    })
}

/// The messages with a hint about the reply format added to the system prompt (the
/// grammar enforces the format; the hint helps the model fill it sensibly).
fn with_format_hint(request: &Request) -> Vec<plan_llm::Message> {
    let hint = match &request.response_format {
        ResponseFormat::JsonObject => {
            "Reply with a single JSON object and nothing else.".to_owned()
        }
        ResponseFormat::JsonSchema { schema, .. } => format!(
            "Reply with a single JSON object that matches this JSON schema, and nothing else:\n{schema}"
        ),
        _ => return request.messages.clone(),
    };
    let mut messages = request.messages.clone();
    match messages.iter_mut().find(|m| m.role == Role::System) {
        Some(system) => {
            system.content.push_str("\n\n");
            system.content.push_str(&hint);
        }
        None => messages.insert(0, plan_llm::Message::system(hint)),
    }
    messages
}

fn to_llm_error(e: LocalError) -> LlmError {
    match e {
        LocalError::ContextLength { .. } => LlmError::ContextLength {
            provider: PROVIDER_NAME.to_owned(),
            message: e.to_string(),
        },
        LocalError::Grammar(_) | LocalError::Config(_) => LlmError::BadRequest {
            provider: PROVIDER_NAME.to_owned(),
            status: 400,
            message: e.to_string(),
        },
        other => LlmError::InvalidResponse {
            provider: PROVIDER_NAME.to_owned(),
            message: other.to_string(),
        },
    }
}

#[async_trait]
impl Provider for LocalModel {
    fn name(&self) -> &str {
        PROVIDER_NAME
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.streaming = true;
        caps.json_object = true;
        caps.json_schema = true;
        caps
    }

    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        let stream = self.stream(request).await?;
        collect_stream(PROVIDER_NAME, stream).await
    }

    async fn stream(&self, request: &Request) -> Result<ChunkStream, LlmError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Chunk, LlmError>>(64);
        let model = self.clone();
        let request = request.clone();
        // The place in the queue is taken now, in the order the calls were made.
        let ticket = self.loaded.queue.ticket();
        std::thread::Builder::new()
            .name("plan-local-gen".to_owned())
            .spawn(move || {
                let alive = || !tx.is_closed();
                let mut on_text =
                    |piece: &str| tx.blocking_send(Ok(Chunk::Text(piece.to_owned()))).is_ok();
                match model.run(&request, ticket, &mut on_text, &alive) {
                    Ok(Some(outcome)) => {
                        let _ = tx.blocking_send(Ok(Chunk::Usage(Usage::new(
                            outcome.prompt_tokens as u64,
                            outcome.completion_tokens as u64,
                        ))));
                        let _ = tx.blocking_send(Ok(Chunk::Finish(outcome.finish)));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(to_llm_error(e)));
                    }
                }
            })
            .map_err(|e| LlmError::InvalidResponse {
                provider: PROVIDER_NAME.to_owned(),
                message: format!("cannot start the generation thread: {e}"),
            })?;
        Ok(Box::pin(futures::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a panic during a generation the cache is not trusted: the next one runs its
    /// whole prompt.
    #[test]
    fn a_panic_forgets_the_cached_prefix() {
        let path = crate::fetch::ModelStore::default()
            .ensure(&FetchOptions::default(), &mut |_| {})
            .unwrap();
        // A context no other test uses: a model of its own.
        let model = LocalModel::load(
            LocalConfig::default()
                .with_model_path(path)
                .with_context_size(640),
        )
        .unwrap();
        let request = Request::new(vec![plan_llm::Message::user("Name a colour.")])
            .with_temperature(0.0)
            .with_max_tokens(2);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(model.complete(&request)).unwrap();
        rt.block_on(model.complete(&request)).unwrap();
        assert!(model.prefill_stats().reused > 0);
        let loaded = model.loaded.clone();
        let panicked = std::thread::spawn(move || {
            let _engine = loaded.engine();
            panic!("a bug in the middle of a generation");
        })
        .join();
        assert!(panicked.is_err() && model.loaded.engine.is_poisoned());
        let before = model.prefill_stats();
        rt.block_on(model.complete(&request)).unwrap();
        let after = model.prefill_stats();
        assert_eq!(after.reused, before.reused);
        assert_eq!(
            after.prefilled - before.prefilled,
            model.prompt_tokens(&request).unwrap().len() as u64
        );
        assert!(!model.loaded.engine.is_poisoned());
    }
}
