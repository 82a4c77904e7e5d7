//! `plan mcp`: serves plan, run and show as an MCP server on stdio (plan-mcp's
//! `PlanServer`), with the model, store and settings a `plan run` would use.

use std::process::ExitCode;
use std::sync::Arc;

use plan_mcp::{PlanServer, serve_stdio};

use crate::cli::McpArgs;
use crate::config::{Overrides, Settings};
use crate::session;

/// `plan mcp`.
pub async fn serve(args: McpArgs) -> anyhow::Result<ExitCode> {
    let mut overrides = Overrides::store(args.store.clone());
    overrides.model = args.model.clone();
    let settings = Settings::from_process(&overrides)?;
    // Stdout carries the protocol: nothing else may print there, and no live view.
    let runtime = session::runtime(&settings, true);
    let defaults = settings.spec();
    // Check the default model once at start, so a bad setup fails now, not per call.
    let _checked = session::headless_agent(&runtime, &defaults)?;
    let store = session::open_store(&settings.store).await?;
    // Each call's run is built from the defaults with its own budget meter.
    let server = PlanServer::new(Arc::new(runtime), defaults, store);
    serve_stdio(server)
        .await
        .map_err(|e| anyhow::anyhow!("plan mcp: {e}"))?;
    Ok(ExitCode::SUCCESS)
}
