//! `plan sandbox run FILE --lang python|bash`: run a program in the sandbox and exit with
//! its exit code (128 + signal when killed, 125 when the sandbox could not run it).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use plan_core::CodeLang;
use plan_sandbox::{Isolation, Limits, Program};

use crate::cli::{Lang, SandboxRunArgs};
use crate::config::{Overrides, Settings, read_input};
use crate::exit;

/// Runs the command.
pub async fn run(args: SandboxRunArgs) -> anyhow::Result<ExitCode> {
    let source = read_input(&args.file)?;
    let mut overrides = Overrides::default();
    overrides.execution.sandbox = args.sandbox;
    let settings = Settings::from_process(&overrides)?;
    let choice = settings.sandbox.choice();
    let lang = match args.lang {
        Lang::Python => CodeLang::Python,
        Lang::Bash => CodeLang::Bash,
    };
    let limits = Limits::default()
        .with_timeout(Duration::from_secs(args.timeout.max(1)))
        .with_cpu_secs(args.timeout.max(1))
        .with_memory_bytes(args.memory_mb.saturating_mul(1024 * 1024));
    let sandbox = match choice.open().await {
        Ok(s) => s,
        Err(e) => return Ok(cannot_run(&e)),
    };
    let output = match sandbox.run(&Program::new(lang, source), &limits).await {
        Ok(o) => o,
        Err(e) => return Ok(cannot_run(&e)),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&output)?);
    } else {
        let _ = std::io::stdout().write_all(output.stdout.as_bytes());
        let _ = std::io::stderr().write_all(output.stderr.as_bytes());
        if output.truncated() {
            eprintln!("plan: output was cut at the sandbox's output limit");
        }
        if let Some(hit) = output.limit_hit {
            eprintln!("plan: the program hit the {} limit", hit.as_str());
        }
        if output.isolation == Isolation::Process {
            eprintln!("plan: warning: the program ran unisolated (--sandbox process)");
        }
    }
    let code = u8::try_from(output.exit_code.clamp(0, 255)).unwrap_or(u8::MAX);
    Ok(ExitCode::from(code))
}

fn cannot_run(error: &plan_sandbox::SandboxError) -> ExitCode {
    let p = crate::style::Palette::stderr();
    eprintln!(
        "{}error{:#}: the sandbox could not run the program: {error}",
        p.error, p.error
    );
    let hint = error
        .wants_another_backend()
        .then_some(plan_exec::error::Hint::Sandbox)
        .and_then(crate::session::flag_hint);
    if let Some(hint) = hint {
        eprintln!("  hint: {hint}");
    }
    ExitCode::from(exit::SANDBOX_UNAVAILABLE)
}
