//! Exit codes (DESIGN.md) and the error markers that choose them.

use std::fmt;
use std::process::ExitCode;

/// The run failed (failed steps are named on stderr).
pub const RUN_FAILED: u8 = 1;
/// Usage or configuration error, an invalid plan file included.
pub const USAGE: u8 = 2;
/// `plan sandbox run`: the sandbox itself could not run the program.
pub const SANDBOX_UNAVAILABLE: u8 = 125;

/// `plan wait` gave up before the run ended (as `timeout(1)` does).
pub const TIMED_OUT: u8 = 124;
/// Interrupted by Ctrl-C.
pub const INTERRUPTED: u8 = 130;

/// A usage or configuration problem: exit code 2. The message says what to do.
#[derive(Debug)]
pub struct Usage(String);

impl Usage {
    /// A usage error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// An error that ends the process with a given code, its message already shown (or none
/// needed).
#[derive(Debug)]
pub struct Code(pub u8);

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit {}", self.0)
    }
}

impl std::error::Error for Code {}

/// The exit code for an error: 2 for [`Usage`] anywhere in the chain, the code of a
/// [`Code`], else 1.
pub fn code_for(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.downcast_ref::<Usage>().is_some() {
            return USAGE;
        }
        if let Some(Code(code)) = cause.downcast_ref::<Code>() {
            return *code;
        }
    }
    RUN_FAILED
}

/// Prints `error` (unless it is a bare [`Code`]) and returns its exit code.
pub fn report(error: &anyhow::Error) -> ExitCode {
    let code = code_for(error);
    if error.downcast_ref::<Code>().is_none() {
        let style = crate::style::Palette::stderr().error;
        eprintln!("{style}error{style:#}: {error:#}");
    }
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(code_for(&anyhow::Error::new(Usage::new("x"))), USAGE);
        assert_eq!(
            code_for(&anyhow::Error::new(Usage::new("x")).context("while y")),
            USAGE
        );
        assert_eq!(code_for(&anyhow::Error::new(Code(130))), INTERRUPTED);
        assert_eq!(code_for(&anyhow::anyhow!("boom")), RUN_FAILED);
    }
}
