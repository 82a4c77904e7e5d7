//! `plan mcp`: serves plan, run and show as an MCP server on stdio (plan-mcp's
//! `PlanServer`), with the model, store and settings a `plan run` would use.

use std::process::ExitCode;
use std::sync::Arc;

use plan_mcp::{PlanServer, serve_stdio};

use crate::cli::McpArgs;
use crate::config::{Overrides, Settings};
use crate::exit::Usage;
use crate::session;

/// `plan mcp`.
pub async fn serve(args: McpArgs) -> anyhow::Result<ExitCode> {
    // The server's runs share one provider, so a spending limit here would cap them all
    // together and no run's forecast would be checked against it.
    if args.model.budget_usd.is_some() {
        return Err(Usage::new(
            "--budget-usd limits one run; plan mcp serves many: give the limit to `plan run` instead",
        )
        .into());
    }
    let mut overrides = Overrides::store(args.store.clone());
    overrides.model = args.model.clone();
    let settings = Settings::from_process(&overrides)?;
    // Stdout carries the protocol: nothing else may print there, and no live view.
    let provider = session::provider(&settings, true)?;
    let store = session::open_store(&settings.store).await?;
    let strategy = session::strategy(settings.strategy)?;
    let defaults = settings.clone();
    let server = PlanServer::new(Arc::new(move || Ok(provider.clone())), store).with_configure(
        Arc::new(move |builder| {
            let mut builder = builder
                .strategy(strategy.clone())
                .concurrency(defaults.concurrency)
                .max_replans(defaults.max_replans)
                .max_depth(defaults.max_depth as usize)
                .model_spec(defaults.model.clone())
                .sandbox(defaults.sandbox.choice().lazy());
            if let Some(n) = defaults.max_steps {
                builder = builder.max_steps(n);
            }
            if let Some(url) = &defaults.base_url {
                builder = builder.base_url(url.clone());
            }
            builder
        }),
    );
    serve_stdio(server)
        .await
        .map_err(|e| anyhow::anyhow!("plan mcp: {e}"))?;
    Ok(ExitCode::SUCCESS)
}
