//! The `plan` command-line tool: parsing, configuration, display and exit codes. The work
//! itself is done by the library crates.

mod cli;
mod cmd;
mod config;
mod display;
mod events;
mod exit;
mod interrupt;
mod render;
mod style;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, SandboxCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => exit::report(&error),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Graph(args) => cmd::graph::run(args),
        Command::Sandbox(SandboxCommand::Run(args)) => runtime.block_on(cmd::sandbox::run(args)),
        _ => Err(exit::Usage::new("this command is not wired yet").into()),
    }
}
