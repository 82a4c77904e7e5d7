//! `plan serve`: the HTTP API (plan-serve's `PlanService`) with the model, store and
//! settings a `plan run` would use.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use plan_serve::{PlanService, PostgresFleet, RunRequest, ServeConfig, is_loopback_host};

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
        StoreSpec::Postgres(url) => Some(postgres_fleet(url, &settings).await?),
        StoreSpec::Sqlite(_) => None,
    };
    let defaults = settings.clone();
    let provider = Arc::new(move |request: &RunRequest| {
        session::provider(&settings_for(&defaults, request)?, true).map_err(|e| e.to_string())
    });
    let defaults = settings.clone();
    let configure = Arc::new(
        move |builder: plan_strategies::AgentBuilder, request: &RunRequest| {
            let s = settings_for(&defaults, request)?;
            let mut builder = builder
                .strategy(session::strategy(s.strategy).map_err(|e| e.to_string())?)
                .concurrency(s.concurrency)
                .max_replans(s.max_replans)
                .max_depth(s.max_depth as usize)
                .model_spec(s.model.clone())
                .sandbox(s.sandbox.choice().lazy());
            if let Some(n) = s.max_steps {
                builder = builder.max_steps(n);
            }
            if let Some(url) = &s.base_url {
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

/// The fleet of `plan worker`s on the PostgreSQL store at `url`: each run request is
/// queued with the server's settings, overridden by what the request names.
async fn postgres_fleet(url: &str, defaults: &Settings) -> anyhow::Result<PostgresFleet> {
    let store = session::connect_postgres(url).await?;
    let defaults = defaults.clone();
    let record = Arc::new(move |request: &RunRequest| {
        let approve = match &request.approve {
            Some(serde_json::Value::Bool(true)) => Some("plan"),
            Some(serde_json::Value::String(s)) if s == "replans" => Some("replans"),
            _ => None,
        };
        let settings = settings_for(&defaults, request)?;
        Ok(super::fleet::queued_record(
            &settings,
            &request.goal,
            approve,
        ))
    });
    PostgresFleet::new(store, session::process_name("plan-serve"), record)
        .await
        .map_err(|e| anyhow::anyhow!("plan serve: {e}"))
}

/// The server's settings with what a run request names in their place.
fn settings_for(defaults: &Settings, request: &RunRequest) -> Result<Settings, String> {
    let mut settings = defaults.clone();
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
    Ok(settings)
}
