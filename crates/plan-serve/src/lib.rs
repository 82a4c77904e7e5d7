//! plan as an HTTP service: start runs, list them, read their reports, watch their events
//! live (Server-Sent Events, resumable with `Last-Event-ID`), cancel, resume, and answer
//! the runs that wait for approval, over any [`RunStore`].
//!
//! [`PlanService`] holds the store, the [`AgentFactory`] that turns a run's
//! [`RunSpec`] into its agent (the caller's [`Runtime`](plan_strategies::Runtime), so this
//! crate knows no provider) and the server's default spec, which each request's fields
//! override: a [`RunRequest`] is a goal and any of the [`RunSettings`] (strategy, model,
//! base_url, max_steps, max_replans, max_depth, reflection_rounds, concurrency,
//! step_timeout_secs, approve, budget_tokens, budget_usd), checked as every door checks
//! them, an unknown field or nonsense value refused with 422 naming it;
//! [`PlanService::router`] is its axum router, and [`serve`] serves it on a listener.
//! Runs started through the API execute in the server process, or, with a [`Fleet`]
//! ([`PlanService::with_fleet`]), are queued in a shared store for its workers (with the
//! `postgres` feature, `PostgresFleet` is the fleet of `plan worker`s on PostgreSQL).
//!
//! Every request passes the server's defences before it is routed: a `Host` allow-list
//! (loopback names and those [`ServeConfig`] adds, against DNS rebinding), same-origin
//! JSON for state changes (against cross-site requests riding a cookie), plain run ids, a
//! body timeout and a bound on event streams per client; every response carries a strict
//! Content-Security-Policy. A `base_url` a request names gets the server's keys only if the
//! operator listed it ([`ServeConfig::with_allowed_base_url`]). [`serve_until`] shuts down
//! gracefully on a signal, saving the runs it executes.
//!
//! The JSON of the API is the CLI's: `GET /api/runs/{id}` is the object `plan run --json`
//! prints, `GET /api/runs` the list `plan runs --json` prints; errors are
//! `{"error": "..."}`.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn plan_exec::store::RunStore>) -> std::io::Result<()> {
//! use std::sync::Arc;
//! use plan_llm::{ProviderConfig, ProviderRegistry};
//! use plan_serve::{PlanService, ServeConfig, serve};
//! use plan_strategies::{RunSpec, Runtime};
//!
//! let runtime = Runtime::new(ProviderRegistry::builtin(), ProviderConfig::from_env());
//! let service = PlanService::new(
//!     store,
//!     Arc::new(runtime),
//!     RunSpec::new("openai:gpt-4o-mini", "auto"),
//!     ServeConfig::default().with_token("s3cret"),
//! );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! serve(listener, service).await
//! # }
//! ```
#![deny(missing_docs)]

mod api;
mod auth;
mod fleet;
mod guard;
mod hub;
#[cfg(feature = "postgres")]
mod postgres;
mod web;

use std::sync::Arc;
use std::time::Duration;

use plan_exec::store::RunStore;
use plan_strategies::{AgentFactory, RunSettings, RunSpec, Runs};
use serde::Deserialize;

pub use api::ApiError;
pub use fleet::{Fleet, Held};
#[cfg(feature = "postgres")]
pub use postgres::PostgresFleet;

/// What a client asks for when it starts a run (`POST /api/runs`): the goal, and any of
/// the [`RunSettings`] (strategy, model, base_url, max_steps, max_replans, max_depth,
/// reflection_rounds, concurrency, step_timeout_secs, approve, budget_tokens, budget_usd),
/// which override the server's default spec. An unknown field, or a value of the wrong
/// type, is refused (422) naming it.
#[derive(Clone, Debug, Default, Deserialize)]
#[non_exhaustive]
pub struct RunRequest {
    /// What to achieve.
    pub goal: String,
    /// The settings the request names (the rest are the server's). Every member of the
    /// body other than `goal` is one of them: the settings refuse a name they do not know
    /// (serde's `deny_unknown_fields` does not work beside `flatten`).
    #[serde(flatten)]
    pub settings: RunSettings,
}

impl RunRequest {
    /// A request for `goal` with these settings.
    pub fn new(goal: impl Into<String>, settings: RunSettings) -> Self {
        Self {
            goal: goal.into(),
            settings,
        }
    }
}

/// How the server behaves.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServeConfig {
    /// The token every request must carry (`Authorization: Bearer`, or the cookie set
    /// from `?token=`); `None` serves without one (loopback only: the CLI refuses
    /// anything else).
    pub token: Option<String>,
    /// The endpoints a request may name as its `base_url` and have the server's API keys
    /// sent to (`--allow-base-url URL`). A request may also name a loopback endpoint
    /// that is not listed: its run gets no key ([`RunSpec::no_keys`]). Any other
    /// endpoint is refused, so the server is no proxy to other hosts.
    pub base_urls: Vec<String>,
    /// Host names (lowercase, no port) the server answers to besides loopback names
    /// (`--allow-host`, the host of `--public-url`); any other `Host` gets 421.
    pub allowed_hosts: Vec<String>,
    /// Origins (`https://plan.example.com`) whose pages may change state besides the
    /// server's own (the origin of `--public-url`, behind a proxy that rewrites `Host`).
    pub public_origins: Vec<String>,
    /// The largest request body, in bytes (default 256 KiB).
    pub body_limit: usize,
    /// How long a request body may take to arrive (default 10 s); slower gets 408.
    pub body_timeout: std::time::Duration,
    /// Event streams one client address may hold open at once (default 32); more get 429.
    pub streams_per_client: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            token: None,
            base_urls: Vec::new(),
            allowed_hosts: Vec::new(),
            public_origins: Vec::new(),
            body_limit: 256 * 1024,
            body_timeout: std::time::Duration::from_secs(10),
            streams_per_client: 32,
        }
    }
}

impl ServeConfig {
    /// Requires this token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into()).filter(|t| !t.is_empty());
        self
    }

    /// Lets requests name `url` as their `base_url`, with the server's keys.
    ///
    /// # Errors
    /// When `url` is not an `http(s)://` URL.
    pub fn with_allowed_base_url(mut self, url: &str) -> Result<Self, String> {
        let parsed = http_url(url)?;
        self.base_urls.push(endpoint(&parsed));
        Ok(self)
    }

    /// Answers requests for this host name too (a name clients reach the server by).
    pub fn with_allowed_host(mut self, name: &str) -> Self {
        let name = name.trim().trim_start_matches('[').trim_end_matches(']');
        self.allowed_hosts.push(name.to_ascii_lowercase());
        self
    }

    /// The URL clients reach the server at (behind a proxy, say): its host is answered
    /// and its origin's pages may change state.
    ///
    /// # Errors
    /// When `url` is not an `http(s)://` URL.
    pub fn with_public_url(mut self, url: &str) -> Result<Self, String> {
        let parsed = http_url(url)?;
        if let Some(host) = parsed.host_str() {
            self = self.with_allowed_host(host);
        }
        self.public_origins
            .push(parsed.origin().ascii_serialization().to_ascii_lowercase());
        Ok(self)
    }
}

/// `url` parsed, when it is an `http(s)://` URL with a host.
fn http_url(url: &str) -> Result<url::Url, String> {
    let parsed = url::Url::parse(url.trim()).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("`{url}` is not an http(s):// URL"));
    }
    Ok(parsed)
}

/// An endpoint as compared: the URL without a trailing `/`.
pub(crate) fn endpoint(url: &url::Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

/// The service: a store, how to build a run's agent from its spec, the server's default
/// spec, and the model-free run operations with the runs in progress in this process
/// (for cancelling them).
pub struct PlanService {
    pub(crate) store: Arc<dyn RunStore>,
    pub(crate) runtime: Arc<dyn AgentFactory>,
    pub(crate) defaults: RunSpec,
    pub(crate) config: ServeConfig,
    /// The model-free run operations, and the runs running in this process.
    pub(crate) runs: Runs,
    pub(crate) fleet: Option<Arc<dyn Fleet>>,
    pub(crate) hub: Arc<hub::Hub>,
    /// The event streams open per client address.
    pub(crate) streams: Arc<guard::StreamSlots>,
    /// Cancelled when the server shuts down: the event streams end.
    pub(crate) closing: plan_exec::context::CancelToken,
}

impl std::fmt::Debug for PlanService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanService")
            .field("base_urls", &self.config.base_urls)
            .field("token", &self.config.token.as_ref().map(|_| "(set)"))
            .finish_non_exhaustive()
    }
}

impl PlanService {
    /// A service over `store`, building each run's agent with `runtime` from `defaults`
    /// overridden by what the request names.
    pub fn new(
        store: Arc<dyn RunStore>,
        runtime: Arc<dyn AgentFactory>,
        defaults: RunSpec,
        config: ServeConfig,
    ) -> Self {
        Self {
            runs: Runs::new(store.clone()),
            store,
            runtime,
            defaults,
            config,
            fleet: None,
            hub: Arc::default(),
            streams: Arc::default(),
            closing: plan_exec::context::CancelToken::new(),
        }
    }

    /// Queues the runs started through the API for `fleet`'s workers (see [`Fleet`]).
    pub fn with_fleet(mut self, fleet: Arc<dyn Fleet>) -> Self {
        self.runs = self
            .runs
            .cancel_requests(Arc::new(api::FleetCancel(fleet.clone())));
        self.fleet = Some(fleet);
        self
    }

    /// The HTTP routes (the API, behind the token when one is set).
    pub fn router(self) -> axum::Router {
        api::router(Arc::new(self))
    }
}

/// Serves `service` on `listener` until the process ends.
///
/// # Errors
/// When the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, service: PlanService) -> std::io::Result<()> {
    serve_until(listener, service, std::future::pending(), Duration::ZERO).await
}

/// Serves `service` on `listener` until `shutdown` completes (a signal), then shuts down
/// gracefully: stops accepting connections, ends the event streams, cancels the runs
/// running in this process (each is saved as `cancelled`, and can be resumed) and waits
/// up to `grace` for them to be saved and for open requests to finish.
///
/// # Errors
/// When the listener fails.
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    service: PlanService,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let closing = service.closing.clone();
    let runs = service.runs.clone();
    let app = service
        .router()
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server =
        std::future::IntoFuture::into_future(axum::serve(listener, app).with_graceful_shutdown({
            let closing = closing.clone();
            async move {
                shutdown.await;
                closing.cancel();
            }
        }));
    let mut server = std::pin::pin!(server);
    let ended = tokio::select! {
        ended = &mut server => Some(ended),
        () = closing.cancelled() => None,
    };
    if !closing.is_cancelled() {
        return ended.unwrap_or(Ok(()));
    }
    tracing::info!("shutting down: cancelling the runs in this server and closing streams");
    let drained = async {
        if ended.is_none() && tokio::time::timeout(grace, &mut server).await.is_err() {
            tracing::warn!(
                "requests still open after {} s: closing them",
                grace.as_secs()
            );
        }
    };
    let ((), left) = tokio::join!(drained, runs.cancel_all_here(grace));
    if left > 0 {
        tracing::warn!(
            runs = left,
            "runs still running after the grace period; resume them with `plan resume`"
        );
    }
    Ok(())
}

/// Whether `addr` is a loopback address (127.0.0.0/8, ::1, `localhost`), where serving
/// without a token is allowed.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}
