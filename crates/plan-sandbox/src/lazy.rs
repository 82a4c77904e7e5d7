//! [`LazySandbox`]: the backend of a [`SandboxChoice`], opened when the first program runs.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::OnceCell;

use super::{Isolation, Limits, Program, RunOutput, Sandbox, SandboxChoice, SandboxError};

/// A [`SandboxChoice`] opened on first use: the probe runs when the first program does,
/// so a run without code steps never needs bubblewrap, and a run with them fails each
/// code step with the probe's error (which says what to install) instead of failing
/// before it starts. The probe runs once; its outcome is kept.
///
/// ```no_run
/// # async fn demo() -> Result<(), plan_sandbox::SandboxError> {
/// use plan_sandbox::{Limits, Program, Sandbox, SandboxChoice};
///
/// let sandbox = SandboxChoice::Auto.lazy(); // nothing probed yet
/// let out = sandbox.run(&Program::python("print(1)"), &Limits::default()).await?;
/// assert_eq!(out.stdout, "1\n");
/// # Ok(()) }
/// ```
pub struct LazySandbox {
    choice: SandboxChoice,
    opened: OnceCell<Result<Arc<dyn Sandbox>, SandboxError>>,
}

impl LazySandbox {
    /// A sandbox that opens `choice` when it first runs a program.
    pub fn new(choice: SandboxChoice) -> Self {
        LazySandbox {
            choice,
            opened: OnceCell::new(),
        }
    }

    /// The choice it opens.
    pub fn choice(&self) -> SandboxChoice {
        self.choice
    }

    async fn backend(&self) -> Result<&Arc<dyn Sandbox>, SandboxError> {
        let opened = self
            .opened
            .get_or_init(|| async { self.choice.open().await })
            .await;
        opened.as_ref().map_err(replay)
    }
}

impl fmt::Debug for LazySandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazySandbox")
            .field("choice", &self.choice)
            .field("opened", &self.opened.initialized())
            .finish()
    }
}

/// The error of a failed open, again for each later run.
fn replay(e: &SandboxError) -> SandboxError {
    match e {
        SandboxError::Unavailable { backend, reason } => SandboxError::Unavailable {
            backend,
            reason: reason.clone(),
        },
        SandboxError::Disabled => SandboxError::Disabled,
        SandboxError::NoInterpreter { lang, reason } => SandboxError::NoInterpreter {
            lang: lang.clone(),
            reason: reason.clone(),
        },
        SandboxError::InvalidProgram(m) => SandboxError::InvalidProgram(m.clone()),
        SandboxError::Unsupported { backend, what } => SandboxError::Unsupported {
            backend,
            what: what.clone(),
        },
        SandboxError::Setup(m) => SandboxError::Setup(m.clone()),
        SandboxError::Io { .. } => SandboxError::Setup(e.to_string()),
    }
}

#[async_trait]
impl Sandbox for LazySandbox {
    /// The isolation the choice gives once open: [`Isolation::Process`] for `process`,
    /// [`Isolation::Bwrap`] otherwise (`none` runs nothing).
    fn isolation(&self) -> Isolation {
        match self.opened.get() {
            Some(Ok(backend)) => backend.isolation(),
            _ if self.choice == SandboxChoice::Process => Isolation::Process,
            _ => Isolation::Bwrap,
        }
    }

    async fn run(&self, program: &Program, limits: &Limits) -> Result<RunOutput, SandboxError> {
        self.backend().await?.run(program, limits).await
    }

    async fn ready(&self) -> Result<(), SandboxError> {
        self.backend().await?.ready().await
    }
}

impl SandboxChoice {
    /// This choice as a sandbox that opens (and probes) it when the first program runs.
    pub fn lazy(self) -> LazySandbox {
        LazySandbox::new(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_open_is_reported_on_every_run() {
        let sandbox = SandboxChoice::None.lazy();
        for _ in 0..2 {
            let e = sandbox
                .run(&Program::python("print(1)"), &Limits::default())
                .await
                .unwrap_err();
            assert!(matches!(e, SandboxError::Disabled), "{e}");
            let e = sandbox.ready().await.unwrap_err();
            assert!(matches!(e, SandboxError::Disabled), "{e}");
        }
    }
}
