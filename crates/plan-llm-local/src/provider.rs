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

struct Shared {
    engine: Mutex<Engine>,
    template: ChatTemplate,
    pool: rayon::ThreadPool,
    tokenizer: Tokenizer,
    threads: usize,
    seed: u64,
    default_max_tokens: u32,
    default_temperature: f32,
    repeat_penalty: f32,
    repeat_window: usize,
    load: LoadStats,
}

/// The embedded model, run in-process on the CPU, as a [`Provider`] named `local`.
///
/// Generation runs on a thread of its own (never on the async runtime) and requests are
/// served one at a time: concurrent calls wait for the model. Cloning is cheap and shares
/// the loaded model.
///
/// Supports free text, [`ResponseFormat::JsonObject`] and [`ResponseFormat::JsonSchema`]
/// (enforced token by token, so a reply that finishes normally always parses and matches
/// the schema; a reply cut by `max_tokens` ends with [`plan_llm::FinishReason::Length`]).
/// No native tool calls: tools are ignored, and a request that requires one is rejected.
#[derive(Clone)]
pub struct LocalModel {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalModel")
            .field("threads", &self.shared.threads)
            .finish_non_exhaustive()
    }
}

impl LocalModel {
    /// Loads the model, fetching it first if needed. Blocks (seconds): from async code
    /// call it through `tokio::task::spawn_blocking`.
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
            .install(|| Llama::load(&content, &mut reader, config.context_size))
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
        };
        Ok(Self {
            shared: Arc::new(Shared {
                engine: Mutex::new(engine),
                template,
                pool,
                tokenizer,
                threads,
                seed: config.seed,
                default_max_tokens: config.default_max_tokens,
                default_temperature: config.default_temperature,
                repeat_penalty: config.repeat_penalty,
                repeat_window: config.repeat_window,
                load: LoadStats {
                    weights,
                    tokenizer: tokenizer_time,
                },
            }),
        })
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.shared.tokenizer
    }

    /// The number of inference threads.
    pub fn threads(&self) -> usize {
        self.shared.threads
    }

    /// How long loading took.
    pub fn load_stats(&self) -> LoadStats {
        self.shared.load
    }

    /// The prompt tokens a request would be run with (chat template applied, plus the
    /// schema hint for JSON formats).
    ///
    /// # Errors
    /// [`LocalError::Template`] or [`LocalError::Tokenizer`].
    pub fn prompt_tokens(&self, request: &Request) -> Result<Vec<u32>, LocalError> {
        let text = self.shared.template.render(&with_format_hint(request))?;
        self.shared.tokenizer.encode(&text)
    }

    /// Runs a request to the end on the calling thread, passing text pieces to `on_text`
    /// as they are decoded. Blocking; [`Provider::stream`] wraps it on a thread of its own.
    fn run(
        &self,
        request: &Request,
        on_text: &mut (dyn FnMut(&str) -> bool + Send),
    ) -> Result<Outcome, LocalError> {
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
        let params = GenParams {
            max_tokens: request.max_tokens.unwrap_or(self.shared.default_max_tokens) as usize,
            temperature: request
                .temperature
                .unwrap_or(self.shared.default_temperature),
            seed: self.shared.seed,
            repeat_penalty: self.shared.repeat_penalty,
            repeat_window: self.shared.repeat_window,
            format: request.response_format.clone(),
            stop: request.stop.clone(),
        };
        let mut guard = self
            .shared
            .engine
            .lock()
            // Every generation starts from an empty cache, so a panic in an earlier one
            // leaves nothing to distrust.
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let engine: &mut Engine = &mut guard;
        self.shared
            .pool
            .install(|| engine.generate(&prompt, &params, on_text))
    }
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
        std::thread::Builder::new()
            .name("plan-local-gen".to_owned())
            .spawn(move || {
                let mut on_text =
                    |piece: &str| tx.blocking_send(Ok(Chunk::Text(piece.to_owned()))).is_ok();
                match model.run(&request, &mut on_text) {
                    Ok(outcome) => {
                        let _ = tx.blocking_send(Ok(Chunk::Usage(Usage::new(
                            outcome.prompt_tokens as u64,
                            outcome.completion_tokens as u64,
                        ))));
                        let _ = tx.blocking_send(Ok(Chunk::Finish(outcome.finish)));
                    }
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
