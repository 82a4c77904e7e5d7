//! What every command that talks to a model sets up: the progress display fed by the
//! run's events, the `--events` file, the provider (pulling the embedded model on first
//! use), the run store and the agent.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use plan_core::Event;
use plan_exec::context::CancelToken;
use plan_exec::events::{ChannelSink, event_channel};
use plan_exec::store::RunStore;
use plan_llm::{LlmError, LlmHint, ModelSpec, ProviderConfig, ProviderRegistry};
use plan_llm_local::{FetchEvent, LocalConfig, LocalFactory, ModelStore};
use plan_postgres::PostgresStore;
use plan_sqlite::SqliteStore;
use plan_strategies::{
    AgentBuilder, AgentFactory as _, RunSpec, Runtime, RuntimeError, StrategyError,
};
use tokio::task::JoinHandle;

use crate::config::{Settings, StoreSpec};
use crate::display::{Display, Mode};
use crate::events::EventsFile;
use crate::exit::Usage;

/// The display and events file of one command, fed from the run's event channel.
pub struct Ui {
    display: Arc<Mutex<Display>>,
    sink: ChannelSink,
    task: JoinHandle<()>,
}

impl Ui {
    /// Starts the task that shows and writes events. Needs a tokio runtime.
    pub fn start(quiet: bool, events: Option<&Path>) -> anyhow::Result<Ui> {
        let mut file = events.map(EventsFile::create).transpose()?;
        let display = Arc::new(Mutex::new(Display::new(Mode::detect(quiet))));
        let (sink, mut rx) = event_channel();
        let shown = display.clone();
        let task = tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                if let Some(file) = &mut file {
                    file.write(&event);
                }
                show(&shown, &event);
            }
        });
        Ok(Ui {
            display,
            sink,
            task,
        })
    }

    /// The sink to give the agent.
    pub fn sink(&self) -> ChannelSink {
        self.sink.clone()
    }

    /// Runs `f` with the live view hidden (prompts, the editor).
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match self.display.lock() {
            Ok(d) => d.suspend(f),
            Err(_) => f(),
        }
    }

    /// Shows a forecast when the plan is made, and an ETA while the run goes.
    pub fn set_forecaster(&self, forecaster: plan_exec::forecast::Forecaster) {
        if let Ok(mut d) = self.display.lock() {
            d.set_forecaster(forecaster);
        }
    }

    /// Waits until every event is shown and written, then clears the live view. Every
    /// other holder of the sink (the agent) must be dropped first.
    pub async fn finish(self) {
        drop(self.sink);
        let _ = self.task.await;
        if let Ok(mut d) = self.display.lock() {
            d.finish();
        }
    }
}

fn show(display: &Mutex<Display>, event: &Event) {
    if let Ok(mut d) = display.lock() {
        d.event(event);
    }
}

/// The runtime of this process: the provider registry (plan-llm's adapters and the
/// embedded model, pulled on first use with a progress bar), keys from the environment,
/// the configured prices. Every command that runs an agent gets it here.
pub fn runtime(settings: &Settings, quiet: bool) -> Runtime {
    Runtime::new(registry(quiet), ProviderConfig::from_env())
        .with_prices(settings.prices.clone())
        .with_in_process(plan_llm_local::PROVIDER_NAME, Some(LOCAL_MAX_STEPS))
}

/// The agent builder of `spec` without a live view (the model checked now, so a bad
/// setup fails before anything starts), with the CLI's way out in its errors.
pub fn headless_agent(runtime: &Runtime, spec: &RunSpec) -> anyhow::Result<AgentBuilder> {
    runtime
        .agent(spec)
        .map_err(|e| runtime_error(e, &spec.model))
}

/// A runtime error as a usage error naming the flag to change.
pub fn runtime_error(e: RuntimeError, model: &str) -> anyhow::Error {
    match &e {
        RuntimeError::Model { source, .. } => {
            let local = ModelSpec::parse(model).is_ok_and(|spec| is_local(&spec));
            if local && !matches!(source, LlmError::Config(_)) {
                Usage::new(format!(
                    "{}\n  run `plan model pull` to fetch it, or use a provider: --model openai:gpt-4o-mini with OPENAI_API_KEY set",
                    llm_message(source)
                ))
            } else {
                Usage::new(format!("invalid --model `{model}`: {}", llm_message(source)))
            }
        }
        RuntimeError::UnknownPrice(_) => Usage::new(format!(
            "--budget-usd needs the price of {model}, which is not known\n  hint: set it in plan.toml:\n    [prices.\"{model}\"]\n    input_per_mtok = 0.15   # dollars per million prompt tokens\n    output_per_mtok = 0.60"
        )),
        _ => Usage::new(e.to_string()),
    }
    .into()
}

/// Every provider `--model` can name: plan-llm's adapters and the embedded model.
pub fn registry(quiet: bool) -> ProviderRegistry {
    let mut registry = ProviderRegistry::builtin();
    // The bar appears with the first fetch event, so remote models never show it.
    let mut progress: Option<PullProgress> = None;
    plan_llm_local::register_factory(
        &mut registry,
        LocalFactory::new(LocalConfig::default().with_default_max_tokens(LOCAL_MAX_TOKENS))
            .with_progress(move |e| {
                progress
                    .get_or_insert_with(|| PullProgress::new(quiet))
                    .event(e)
            }),
    );
    registry
}

/// Whether a spec names the embedded model.
fn is_local(spec: &ModelSpec) -> bool {
    spec.provider() == plan_llm_local::PROVIDER_NAME
}

/// A library error with the CLI's way out appended.
pub fn llm_message(e: &LlmError) -> String {
    match e.hint().and_then(llm_flag_hint) {
        Some(hint) => format!("{e}\n  hint: {hint}"),
        None => e.to_string(),
    }
}

/// What the CLI user does about a provider error's hint.
fn llm_flag_hint(hint: LlmHint) -> Option<&'static str> {
    Some(match hint {
        LlmHint::Model => "choose another --model (`--model local` runs offline, no key needed)",
        LlmHint::BaseUrl => "pass --base-url URL (e.g. http://localhost:8080/v1)",
        LlmHint::TokenBudget => "raise --budget-tokens",
        LlmHint::SpendLimit => "raise --budget-usd",
        _ => return None,
    })
}

/// The most steps a plan on the embedded model has unless `--max-steps` says otherwise.
pub const LOCAL_MAX_STEPS: usize = 3;

/// The reply cap of step and synthesis calls on the embedded model (planning calls ask for
/// what a plan needs): a few paragraphs, so a quick start takes about a minute on a laptop.
pub const LOCAL_MAX_TOKENS: u32 = 256;

/// Pulls the embedded model into the cache with a progress bar (`plan model pull`).
pub fn pull_model(quiet: bool) -> anyhow::Result<std::path::PathBuf> {
    let store = ModelStore::default();
    let mut progress = PullProgress::new(quiet);
    let result = store.ensure(&plan_llm_local::FetchOptions::default(), &mut |e| {
        progress.event(e);
    });
    progress.finish();
    result.map_err(|e| anyhow::anyhow!("cannot pull the embedded model: {e}"))
}

/// Shows [`FetchEvent`]s: a byte bar on a terminal, plain lines otherwise.
struct PullProgress {
    bar: Option<ProgressBar>,
}

impl PullProgress {
    fn new(quiet: bool) -> Self {
        let live = !quiet && crate::style::stderr_is_terminal();
        let bar = live.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {msg} {bytes}/{total_bytes} {bytes_per_sec} {elapsed}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        PullProgress { bar }
    }

    fn say(&self, text: String) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{} {text}", crate::display::now()),
        }
    }

    fn event(&mut self, event: FetchEvent) {
        match event {
            FetchEvent::Cached { .. } => {}
            FetchEvent::Trying { source } => {
                if let Some(bar) = &self.bar {
                    bar.set_message(format!("pulling the embedded model from {source}"));
                } else {
                    self.say(format!("pulling the embedded model from {source}"));
                }
            }
            FetchEvent::SourceFailed { source, reason } => {
                self.say(format!("{source} failed: {reason}"));
            }
            FetchEvent::Progress { bytes, total } => {
                if let Some(bar) = &self.bar {
                    if let Some(total) = total {
                        bar.set_length(total);
                    }
                    bar.set_position(bytes);
                }
            }
            FetchEvent::Verifying => {
                if let Some(bar) = &self.bar {
                    bar.set_message("verifying sha256");
                }
            }
            FetchEvent::Done { path } => {
                self.say(format!("embedded model ready: {}", path.display()));
            }
            _ => {}
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for PullProgress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Opens (creating if needed) the run store: a SQLite file, or a PostgreSQL database
/// (its tables created or migrated).
pub async fn open_store(spec: &StoreSpec) -> anyhow::Result<Arc<dyn RunStore>> {
    match spec {
        StoreSpec::Sqlite(path) => open_sqlite(path).map(|s| Arc::new(s) as Arc<dyn RunStore>),
        StoreSpec::Postgres(url) => Ok(Arc::new(connect_postgres(url).await?)),
    }
}

/// Connects to a PostgreSQL store; the message names the server and what to check,
/// never the password. The store rides out an outage of up to `PLAN_DB_OUTAGE_SECS`
/// seconds (default: the store's 60).
pub async fn connect_postgres(url: &str) -> anyhow::Result<PostgresStore> {
    let bound = outage_bound()?;
    let store = PostgresStore::connect(url).await.map_err(|e| {
        anyhow::Error::from(Usage::new(format!(
            "{e}\n  hint: pass --store (or set PLAN_STORE) to use another store"
        )))
    })?;
    Ok(match bound {
        Some(bound) => store.with_outage_bound(bound),
        None => store,
    })
}

/// The variable that sets how long a process rides out a PostgreSQL outage.
const OUTAGE_VAR: &str = "PLAN_DB_OUTAGE_SECS";

/// `PLAN_DB_OUTAGE_SECS`, if set: whole seconds, at most a day.
fn outage_bound() -> anyhow::Result<Option<Duration>> {
    let Ok(value) = std::env::var(OUTAGE_VAR) else {
        return Ok(None);
    };
    match value.trim().parse::<u64>() {
        Ok(secs) if secs <= 86_400 => Ok(Some(Duration::from_secs(secs))),
        _ => Err(Usage::new(format!(
            "{OUTAGE_VAR}={value}: give a whole number of seconds from 0 to 86400 (how long a run rides out a database outage; default 60)"
        ))
        .into()),
    }
}

/// How long this process's lease on a run it drives on a shared store lasts without
/// renewal: a fleet worker continues the run this long after the process dies.
const DRIVER_LEASE: Duration = Duration::from_secs(5);

/// A run store through which this process drives runs itself (`plan run`, `exec`,
/// `resume`, `approve`): on PostgreSQL, plan-postgres's [`Driver`](plan_postgres::Driver)
/// (every run it creates or continues leased to this process, its writes fenced by the
/// lease, renewed while the process works, given up at the end; a lost lease or a
/// cancellation asked through the store cancels `cancel`), with the CLI's words for
/// what happened.
pub struct DrivingStore {
    /// The store to give the run's session.
    pub store: Arc<dyn RunStore>,
    driver: Option<plan_postgres::Driver>,
}

impl DrivingStore {
    /// Opens the store of `spec` for `command` (its name, in the leases).
    pub async fn open(
        spec: &StoreSpec,
        command: &str,
        cancel: &CancelToken,
    ) -> anyhow::Result<DrivingStore> {
        match spec {
            StoreSpec::Postgres(url) => {
                let pg = connect_postgres(url).await?;
                let name = process_name(&format!("plan-{command}"));
                let driver = plan_postgres::Driver::open(&pg, &name, DRIVER_LEASE, cancel);
                Ok(DrivingStore {
                    store: Arc::new(driver.store().clone()),
                    driver: Some(driver),
                })
            }
            StoreSpec::Sqlite(_) => Ok(DrivingStore {
                store: open_store(spec).await?,
                driver: None,
            }),
        }
    }

    /// As [`open`](Self::open), for a store that must exist already.
    pub async fn open_existing(
        spec: &StoreSpec,
        command: &str,
        cancel: &CancelToken,
    ) -> anyhow::Result<Option<DrivingStore>> {
        if let StoreSpec::Sqlite(path) = spec
            && !path.exists()
        {
            return Ok(None);
        }
        Self::open(spec, command, cancel).await.map(Some)
    }

    /// Why the run stopped, when the store stopped it rather than this process: its lease
    /// was lost to another process, or a cancellation was asked through the store.
    pub fn stopped_by_store(&self, run: &str) -> Option<String> {
        use plan_postgres::StoreStop;
        Some(match self.driver.as_ref()?.stopped_by_store()? {
            StoreStop::LeaseLost { ttl } => format!(
                "this process lost its lease on run {run} (it was paused or cut off for longer than {} s) and another process continues the run: follow it with `plan wait {run}`",
                ttl.as_secs()
            ),
            StoreStop::CancelRequested => {
                format!("run {run} was cancelled through the store (a cancel request from the API)")
            }
            other => format!("run {run}: {other}"),
        })
    }

    /// When the run stopped because its database stayed unreachable for longer than the
    /// store waits: the run's report as this process knows it, ended as interrupted
    /// (the database still says `running`, and the run is continued with `plan resume`
    /// once it is back), and what happened.
    pub fn outage(&self, error: &StrategyError) -> Option<(plan_exec::report::RunReport, String)> {
        let down = plan_postgres::Unreachable::find(error)?;
        let store = self.driver.as_ref()?.store();
        let run = store.held_leases().into_iter().next()?.run;
        let mut stored = store.journal_copy(&run)?;
        let why = format!(
            "the database ({}) was unreachable for {} s, longer than the {} s a run waits for it: run {run} stopped here, with the steps it finished before the outage saved",
            down.server,
            down.down_for.as_secs(),
            store.outage_bound().as_secs()
        );
        stored.status = plan_core::RunStatus::Cancelled;
        stored.failure = Some(why.clone());
        Some((plan_exec::report::RunReport::from_stored(&stored), why))
    }

    /// Takes `run` over for this process before continuing it: on a shared store it must
    /// not be held by a live process (a worker, another `plan run`), or two would run it.
    ///
    /// # Errors
    /// A usage error naming the holder when the run is held; a store error.
    pub async fn claim(&self, run: &plan_core::RunId) -> anyhow::Result<()> {
        let Some(driver) = &self.driver else {
            return Ok(());
        };
        match driver.claim(run).await {
            Ok(()) => Ok(()),
            Err(plan_postgres::ClaimError::Held { holder, .. }) => Err(Usage::new(format!(
                "run {run} is being run by `{}` (it holds the run's lease): nothing was started here; follow it with `plan wait {run}`",
                holder.worker
            ))
            .into()),
            Err(e) => Err(anyhow::anyhow!("cannot read the run store: {e}")),
        }
    }
}

/// `PREFIX@HOST-PID`: this process's name in leases and logs.
pub fn process_name(prefix: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{prefix}@{host}-{}", std::process::id())
}

fn open_sqlite(path: &Path) -> anyhow::Result<SqliteStore> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            Usage::new(format!(
                "cannot create the run store directory {}: {e}: pass --store PATH",
                dir.display()
            ))
        })?;
    }
    SqliteStore::open(path).map_err(|e| {
        Usage::new(format!(
            "cannot open the run store {}: {e}: pass --store PATH to use another file",
            path.display()
        ))
        .into()
    })
}

/// Opens the run store for reading (`plan runs`, `plan show`): `None` for a SQLite file
/// that does not exist yet.
pub async fn open_existing_store(spec: &StoreSpec) -> anyhow::Result<Option<Arc<dyn RunStore>>> {
    if let StoreSpec::Sqlite(path) = spec
        && !path.exists()
    {
        return Ok(None);
    }
    open_store(spec).await.map(Some)
}

/// An agent builder for `spec` with the live view's sink and the cancel token.
pub fn agent(
    runtime: &Runtime,
    spec: &RunSpec,
    ui: &Ui,
    cancel: &CancelToken,
) -> anyhow::Result<AgentBuilder> {
    Ok(headless_agent(runtime, spec)?
        .event_sink(ui.sink())
        .cancel_token(cancel.clone()))
}

/// The exit code class of a library error: configuration problems are usage errors.
pub fn strategy_error(e: StrategyError) -> anyhow::Error {
    match e {
        StrategyError::Config(m) => Usage::new(m).into(),
        // A rejected key or a provider misconfiguration: the user has to fix the setup.
        StrategyError::Llm {
            source: source @ (LlmError::Auth { .. } | LlmError::Config(_)),
            purpose,
        } => Usage::new(format!(
            "the {purpose} call to the model failed: {}\n  check the API key in the environment (OPENAI_API_KEY, ANTHROPIC_API_KEY) and --model",
            llm_message(&source)
        ))
        .into(),
        other => {
            let hint = other.hint().and_then(flag_hint).or_else(|| match &other {
                StrategyError::Llm { source, .. } => source.hint().and_then(llm_flag_hint),
                _ => None,
            });
            match hint {
                Some(hint) => anyhow::anyhow!("{other}\n  hint: {hint}"),
                None => anyhow::Error::new(other),
            }
        }
    }
}

/// What the CLI user does about a library's hint.
pub fn flag_hint(hint: plan_exec::error::Hint) -> Option<&'static str> {
    use plan_exec::error::Hint;
    Some(match hint {
        Hint::MaxSteps => "raise --max-steps",
        Hint::MaxReplans => "raise --max-replans",
        Hint::ListRuns => "list runs with `plan runs` (or pass the --store the run used)",
        Hint::StorePath => "pass --store PATH or URL (or set PLAN_STORE) to use another store",
        Hint::Resume => "continue it with `plan resume RUN_ID`",
        Hint::Sandbox => "choose another backend with --sandbox",
        _ => return None,
    })
}
