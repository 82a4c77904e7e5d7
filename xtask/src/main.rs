//! Developer tasks: `cargo xtask ci | test | bench | fetch-model`.

mod fetch_model;
mod invariants;

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => {
            cargo(&["fmt", "--all", "--", "--check"])?;
            cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])?;
            test()
        }
        Some("test") => test(),
        Some("invariants") => invariants::check_workspace(),
        Some("fetch-model") => fetch_model::fetch_model(),
        _ => bail!("usage: cargo xtask <ci|test|invariants|fetch-model>"),
    }
}

/// Installs what the tests need, then runs every test of the workspace.
fn test() -> Result<()> {
    cargo(&["test", "--workspace"])
}

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(&cargo)
        .args(args)
        .status()
        .with_context(|| format!("could not start {cargo}"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
