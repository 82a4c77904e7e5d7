//! The `plan` command-line tool: parsing, configuration, display and exit codes. The work
//! itself is done by the library crates.

mod approve;
mod cli;
mod cmd;
mod config;
mod display;
mod events;
mod exit;
mod forecast;
mod interrupt;
mod render;
mod session;
mod style;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, ModelCommand, SandboxCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A worker logs its claims and lease losses unless RUST_LOG says otherwise.
    let logs = matches!(cli.command, Command::Worker(_)).then_some("plan_worker=info");
    let telemetry = telemetry::Telemetry::init(logs);
    let code = match run(cli) {
        Ok(code) => code,
        Err(error) => exit::report(&error),
    };
    telemetry.shutdown();
    code
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let quiet = cli.quiet || cli.command.quiet();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Run(args) => runtime.block_on(cmd::run::run(args, quiet)),
        Command::Plan(args) => runtime.block_on(cmd::run::plan(args, quiet)),
        Command::Exec(args) => runtime.block_on(cmd::run::exec(args, quiet)),
        Command::Resume(args) => runtime.block_on(cmd::run::resume(args, quiet)),
        Command::Rerun(args) => runtime.block_on(cmd::run::rerun(args, quiet)),
        Command::Approve(args) => runtime.block_on(async {
            // A replan waiting for approval is shown as a diff first.
            cmd::diff::before_approval(&args).await;
            cmd::run::approve(args, quiet).await
        }),
        Command::Reject(args) => runtime.block_on(cmd::run::reject(args)),
        Command::Wait(args) => runtime.block_on(cmd::run::wait(args)),
        Command::Serve(args) => runtime.block_on(cmd::serve::serve(args)),
        Command::Submit(args) => runtime.block_on(cmd::fleet::submit(args)),
        Command::Worker(args) => runtime.block_on(cmd::fleet::worker(args)),
        Command::Runs(args) => runtime.block_on(cmd::runs::runs(args)),
        Command::Show(args) => runtime.block_on(cmd::runs::show(args)),
        Command::Diff(args) => runtime.block_on(cmd::diff::diff(args)),
        Command::Replay(args) => runtime.block_on(cmd::replay::replay(args)),
        Command::Graph(args) => runtime.block_on(cmd::graph::run(args)),
        Command::Sandbox(SandboxCommand::Run(args)) => runtime.block_on(cmd::sandbox::run(args)),
        Command::Model(ModelCommand::Pull(_)) => cmd::model::pull(quiet),
        Command::Model(ModelCommand::List) => cmd::model::list(),
        Command::Tools(args) => runtime.block_on(cmd::tools::tools(args)),
        Command::Mcp(args) => runtime.block_on(cmd::mcp::serve(args)),
    }
}
