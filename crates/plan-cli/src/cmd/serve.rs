//! `plan serve`: the HTTP API (plan-serve's `PlanService`) with the model, store and
//! settings a `plan run` would use.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use std::time::Duration;

use async_trait::async_trait;
use plan_core::RunId;
use plan_exec::{CancelToken, SessionBuilder};
use plan_postgres::{EventsListener, PostgresStore};
use plan_serve::{Fleet, Held, PlanService, RunRequest, ServeConfig, is_loopback_host};

use crate::cli::{ServeArgs, Strategy};
use crate::config::{Overrides, Settings, StoreSpec};
use crate::exit::Usage;
use crate::session;

/// `plan serve`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let addr: SocketAddr = args.addr.parse().map_err(|_| {
        Usage::new(format!(
            "--addr {}: not an address; give HOST:PORT, such as 127.0.0.1:8080",
            args.addr
        ))
    })?;
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var("PLAN_SERVE_TOKEN").ok())
        .filter(|t| !t.is_empty());
    if token.is_none() && !is_loopback_host(&addr.ip().to_string()) {
        return Err(Usage::new(format!(
            "--addr {addr} is reachable from other machines, and no token is set: give --token TOKEN (or PLAN_SERVE_TOKEN), or bind 127.0.0.1"
        ))
        .into());
    }
    let mut overrides = Overrides::store(args.store.clone());
    overrides.model = args.model.clone();
    let settings = Settings::from_process(&overrides)?;
    // Check the default model once at start, so a bad setup fails now, not per request.
    session::provider(&settings, true)?;
    let store = session::open_store(&settings.store).await?;
    // On a shared store the runs go to the fleet's workers.
    let fleet = match &settings.store {
        StoreSpec::Postgres(url) => Some(PostgresFleet::connect(url, &settings).await?),
        StoreSpec::Sqlite(_) => None,
    };
    let defaults = settings.clone();
    let provider = Arc::new(move |request: &RunRequest| {
        let mut s = defaults.clone();
        if let Some(model) = &request.model {
            s.model.clone_from(model);
        }
        if request.base_url.is_some() {
            s.base_url.clone_from(&request.base_url);
        }
        session::provider(&s, true).map_err(|e| e.to_string())
    });
    let defaults = settings.clone();
    let configure = Arc::new(
        move |builder: plan_strategies::AgentBuilder, request: &RunRequest| {
            let strategy = match request.strategy.as_deref() {
                Some(name) => Strategy::from_name(name).ok_or_else(|| {
                    format!(
                        "unknown strategy `{name}`: use auto, linear, dag, hierarchical, adaptive or reflective"
                    )
                })?,
                None => defaults.strategy,
            };
            let mut builder = builder
                .strategy(session::strategy(strategy).map_err(|e| e.to_string())?)
                .concurrency(defaults.concurrency)
                .max_replans(defaults.max_replans)
                .max_depth(defaults.max_depth as usize)
                .model_spec(
                    request
                        .model
                        .clone()
                        .unwrap_or_else(|| defaults.model.clone()),
                )
                .sandbox(defaults.sandbox.choice().lazy());
            if let Some(n) = defaults.max_steps {
                builder = builder.max_steps(n);
            }
            if let Some(url) = request.base_url.as_ref().or(defaults.base_url.as_ref()) {
                builder = builder.base_url(url.clone());
            }
            Ok(builder)
        },
    );
    let mut config = ServeConfig::default().with_any_base_url(args.allow_base_url);
    if let Some(token) = token {
        config = config.with_token(token);
    }
    let mut service = PlanService::new(store, provider, config).with_configure(configure);
    let on_fleet = fleet.is_some();
    if let Some(fleet) = fleet {
        service = service.with_fleet(Arc::new(fleet));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Usage::new(format!("cannot listen on {addr}: {e}")))?;
    eprintln!(
        "plan serve: listening on http://{} (API under /api/runs){}",
        listener.local_addr().unwrap_or(addr),
        if on_fleet {
            "; runs are queued for `plan worker`s on this store"
        } else {
            ""
        }
    );
    plan_serve::serve(listener, service)
        .await
        .map_err(|e| anyhow::anyhow!("plan serve: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

/// How long the server's lease on a run it continues itself (an approval) lasts.
const HOLD_LEASE: Duration = Duration::from_secs(5);

/// The fleet behind a PostgreSQL store: runs are queued for `plan worker`s, cancelled
/// through their leases, and followed through one shared `LISTEN` connection.
struct PostgresFleet {
    store: PostgresStore,
    defaults: Settings,
    events: EventsListener,
    name: String,
}

impl PostgresFleet {
    async fn connect(url: &str, defaults: &Settings) -> anyhow::Result<PostgresFleet> {
        let store = session::connect_postgres(url).await?;
        let events = store
            .events_listener()
            .await
            .map_err(|e| anyhow::anyhow!("plan serve: {e}"))?;
        Ok(PostgresFleet {
            store,
            defaults: defaults.clone(),
            events,
            name: session::process_name("plan-serve"),
        })
    }
}

#[async_trait]
impl Fleet for PostgresFleet {
    async fn submit(&self, request: &RunRequest) -> Result<RunId, String> {
        let mut settings = self.defaults.clone();
        if let Some(model) = &request.model {
            settings.model.clone_from(model);
        }
        if request.base_url.is_some() {
            settings.base_url.clone_from(&request.base_url);
        }
        if let Some(name) = &request.strategy {
            settings.strategy = Strategy::from_name(name).ok_or_else(|| {
                format!(
                    "unknown strategy `{name}`: use auto, linear, dag, hierarchical, adaptive or reflective"
                )
            })?;
        }
        if let Some(n) = request.max_steps {
            settings.max_steps = Some(n);
        }
        if let Some(n) = request.concurrency {
            settings.concurrency = n.max(1);
        }
        let approve = match &request.approve {
            Some(serde_json::Value::Bool(true)) => Some("plan"),
            Some(serde_json::Value::String(s)) if s == "replans" => Some("replans"),
            _ => None,
        };
        let record = super::fleet::queued_record(&settings, &request.goal, approve);
        SessionBuilder::new()
            .store(Arc::new(self.store.clone()))
            .enqueue(record)
            .await
            .map_err(|e| format!("cannot queue the run: {e}"))
    }

    async fn cancel(&self, run: &RunId) -> Result<bool, String> {
        self.store
            .request_cancel(run)
            .await
            .map_err(|e| e.to_string())
    }

    async fn requeue(&self, run: &RunId) -> Result<bool, String> {
        self.store.requeue(run).await.map_err(|e| e.to_string())
    }

    async fn hold(&self, run: &RunId, cancel: CancelToken) -> Result<Held, String> {
        let driving = self.store.driving(&self.name, HOLD_LEASE);
        match driving.claim_run(run).await.map_err(|e| e.to_string())? {
            Ok(_) => {
                let keeper = driving.keep_leases(HOLD_LEASE, cancel);
                Ok(Held {
                    store: Arc::new(driving),
                    guard: Box::new(keeper),
                })
            }
            Err(holder) => Err(format!(
                "run `{run}` is being run by `{}` (it holds the run's lease)",
                holder.worker
            )),
        }
    }

    async fn wait_for_events(&self, run: &RunId, at_most: Duration) {
        self.events.wait(run, at_most).await;
    }
}
