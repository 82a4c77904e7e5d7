//! `plan serve`: the HTTP API (plan-serve's `PlanService`) with the model, store and
//! settings a `plan run` would use.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

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
    let mut config = serve_config(&args, token)?;
    let ip = addr.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        // Clients reach a server bound to one address by that address.
        config = config.with_allowed_host(&ip.to_string());
    } else if ip.is_unspecified() && args.allow_host.is_empty() && args.public_url.is_none() {
        eprintln!(
            "plan serve: note: only requests for loopback names are answered; give --allow-host NAME (or --public-url URL) for the names clients use"
        );
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
    crate::cmd::runs::spawn_retention(&settings, "plan serve").await?;
    plan_serve::serve_until(listener, service, stop_signal(), GRACE)
        .await
        .map_err(|e| anyhow::anyhow!("plan serve: {e}"))?;
    eprintln!("plan serve: stopped");
    Ok(ExitCode::SUCCESS)
}

/// How long a stopping server waits for its runs to be saved and its requests to end:
/// within the 10 s a container runtime gives before it kills.
const GRACE: Duration = Duration::from_secs(8);

/// Until SIGTERM or Ctrl-C (SIGINT).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    eprintln!(
        "plan serve: stopping: cancelling the runs in this server (resume them with `plan resume`) and closing streams"
    );
}

/// The server's configuration from the flags: the token, the endpoints requests may
/// name, the host names it answers to.
fn serve_config(args: &ServeArgs, token: Option<String>) -> anyhow::Result<ServeConfig> {
    let mut config = ServeConfig::default();
    if let Some(token) = token {
        config = config.with_token(token);
    }
    for url in &args.allow_base_url {
        config = config
            .with_allowed_base_url(url)
            .map_err(|e| Usage::new(format!("--allow-base-url: {e}")))?;
    }
    for host in &args.allow_host {
        config = config.with_allowed_host(host);
    }
    if let Some(url) = &args.public_url {
        config = config
            .with_public_url(url)
            .map_err(|e| Usage::new(format!("--public-url: {e}")))?;
    }
    Ok(config)
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
