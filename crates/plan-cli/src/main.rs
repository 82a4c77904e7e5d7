//! The `plan` command-line tool.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("plan: not built yet");
    ExitCode::from(2)
}
