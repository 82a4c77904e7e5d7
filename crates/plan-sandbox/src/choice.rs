//! Choosing a sandbox backend (`--sandbox auto|bwrap|process|none`).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::{Sandbox, SandboxError};

/// Which sandbox backend to use, as a user picks it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SandboxChoice {
    /// bubblewrap when its probe passes; otherwise code steps fail with an error that says
    /// how to install it.
    #[default]
    Auto,
    /// bubblewrap, or an error.
    Bwrap,
    /// A plain child process with limits only (unisolated; reported as such).
    Process,
    /// No code execution: code steps are refused.
    None,
}

impl SandboxChoice {
    /// The name as the CLI spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxChoice::Auto => "auto",
            SandboxChoice::Bwrap => "bwrap",
            SandboxChoice::Process => "process",
            SandboxChoice::None => "none",
        }
    }

    /// Opens the chosen backend, probing bubblewrap for `auto` and `bwrap`.
    ///
    /// Errors: [`SandboxError::Unavailable`] (with how to install bubblewrap) when
    /// bubblewrap does not work here, [`SandboxError::Disabled`] for `none`.
    pub async fn open(self) -> Result<Arc<dyn Sandbox>, SandboxError> {
        match self {
            SandboxChoice::None => Err(SandboxError::Disabled),
            #[cfg(all(target_os = "linux", feature = "backends"))]
            SandboxChoice::Auto | SandboxChoice::Bwrap => {
                let sandbox = super::BwrapSandbox::new(super::BwrapConfig::default())?;
                sandbox.probe().await?;
                Ok(Arc::new(sandbox))
            }
            #[cfg(all(target_os = "linux", feature = "backends"))]
            SandboxChoice::Process => Ok(Arc::new(super::ProcessSandbox::new())),
            #[cfg(not(all(target_os = "linux", feature = "backends")))]
            other => Err(SandboxError::Unavailable {
                backend: other.as_str(),
                reason: "this build has no sandbox backend (they need Linux and plan-sandbox's \
                         `backends` feature); code steps cannot run"
                    .to_owned(),
            }),
        }
    }
}

impl fmt::Display for SandboxChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for an unknown `--sandbox` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sandbox `{0}`: expected one of auto, bwrap, process, none")]
pub struct ParseSandboxChoiceError(String);

impl FromStr for SandboxChoice {
    type Err = ParseSandboxChoiceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(SandboxChoice::Auto),
            "bwrap" | "bubblewrap" => Ok(SandboxChoice::Bwrap),
            "process" => Ok(SandboxChoice::Process),
            "none" => Ok(SandboxChoice::None),
            _ => Err(ParseSandboxChoiceError(s.to_owned())),
        }
    }
}
