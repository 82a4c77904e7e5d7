//! Why a sandbox could not run a program.

use std::io;

/// Why a sandbox could not run a program (a program that fails is not an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The chosen backend cannot work on this machine.
    #[error("sandbox backend `{backend}` is unavailable: {reason}")]
    Unavailable {
        /// The backend's name.
        backend: &'static str,
        /// Why, and what to do about it.
        reason: String,
    },
    /// Code execution is switched off (the `none` backend).
    #[error(
        "code steps are disabled (sandbox `none`); choose the `auto` backend (needs \
         bubblewrap) or `process` (unisolated)"
    )]
    Disabled,
    /// No interpreter for the program's language is visible to the sandbox.
    #[error("no {lang} interpreter visible to the sandbox: {reason}")]
    NoInterpreter {
        /// The language.
        lang: String,
        /// What is missing and what to install.
        reason: String,
    },
    /// The program is not acceptable (bad input file path, unsupported language, ...).
    #[error("invalid program: {0}")]
    InvalidProgram(String),
    /// The backend does not support a requested feature.
    #[error("unsupported by sandbox backend `{backend}`: {what}")]
    Unsupported {
        /// The backend's name.
        backend: &'static str,
        /// What is unsupported.
        what: String,
    },
    /// Setting up the sandbox failed (bubblewrap's own error included).
    #[error("sandbox setup failed: {0}")]
    Setup(String),
    /// An I/O error while preparing, running or collecting.
    #[error("sandbox i/o error while {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl SandboxError {
    /// Whether another backend (or turning code execution on) gets past this error: this
    /// backend cannot work here, or code execution is off.
    pub fn wants_another_backend(&self) -> bool {
        matches!(
            self,
            SandboxError::Unavailable { .. } | SandboxError::Disabled
        )
    }

    #[cfg_attr(not(all(target_os = "linux", feature = "backends")), allow(dead_code))]
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        SandboxError::Io {
            context: context.into(),
            source,
        }
    }
}
