//! `plan serve`: the HTTP API (plan-serve's `PlanService`) with the model, store and
//! settings a `plan run` would use.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use plan_serve::{PlanService, PostgresFleet, ServeConfig, is_loopback_host};

use crate::cli::ServeArgs;
use crate::config::{Overrides, Settings, StoreSpec};
use crate::exit::Usage;
use crate::session;

/// `plan serve`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let addr = listen_address(&args.addr)?;
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
    let runtime = session::runtime(&settings, true);
    let defaults = settings.spec();
    // Check the default model once at start, so a bad setup fails now, not per request.
    let _checked = session::headless_agent(&runtime, &defaults)?;
    let store = session::open_store(&settings.store).await?;
    // On a shared store the runs go to the fleet's workers.
    let fleet = match &settings.store {
        StoreSpec::Postgres(url) => Some(postgres_fleet(url).await?),
        StoreSpec::Sqlite(_) => None,
    };
    let mut config = ServeConfig::default().with_any_base_url(args.allow_base_url);
    if let Some(token) = token {
        config = config.with_token(token);
    }
    let mut service = PlanService::new(store, Arc::new(runtime), defaults, config);
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
/// queued with the server's spec, overridden by what the request names.
async fn postgres_fleet(url: &str) -> anyhow::Result<PostgresFleet> {
    let store = session::connect_postgres(url).await?;
    PostgresFleet::new(store, session::process_name("plan-serve"))
        .await
        .map_err(|e| anyhow::anyhow!("plan serve: {e}"))
}

/// The address of `--addr`: `IP:PORT`, or `NAME:PORT` with a name this machine resolves
/// (`localhost:8080`), its first address taken.
fn listen_address(addr: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(parsed) = addr.parse() {
        return Ok(parsed);
    }
    let bad = |why: String| {
        Usage::new(format!(
            "--addr {addr}: {why}; give HOST:PORT, such as 127.0.0.1:8080 or localhost:8080"
        ))
    };
    std::net::ToSocketAddrs::to_socket_addrs(addr)
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("the name has no address".to_owned()).into())
}
