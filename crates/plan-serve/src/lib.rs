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
//! The JSON of the API is the CLI's: `GET /api/runs/{id}` is the object `plan run --json`
//! prints, `GET /api/runs` the list `plan runs --json` prints; errors are
//! `{"error": "..."}`.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn plan_exec::RunStore>) -> std::io::Result<()> {
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
mod hub;
#[cfg(feature = "postgres")]
mod postgres;
mod web;

use std::sync::Arc;

use plan_exec::RunStore;
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
    /// Whether a run may name any `base_url` (default: loopback URLs only, so the server
    /// cannot be used as a proxy to arbitrary hosts).
    pub allow_base_url: bool,
    /// The largest request body, in bytes (default 256 KiB).
    pub body_limit: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            token: None,
            allow_base_url: false,
            body_limit: 256 * 1024,
        }
    }
}

impl ServeConfig {
    /// Requires this token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into()).filter(|t| !t.is_empty());
        self
    }

    /// Allows any `base_url` in run requests.
    pub fn with_any_base_url(mut self, allow: bool) -> Self {
        self.allow_base_url = allow;
        self
    }
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
}

impl std::fmt::Debug for PlanService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanService")
            .field("allow_base_url", &self.config.allow_base_url)
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
    axum::serve(listener, service.router()).await
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
