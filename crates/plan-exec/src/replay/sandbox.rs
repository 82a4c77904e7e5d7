//! [`ReplaySandbox`]: the sandbox a replayed run is built with.

use async_trait::async_trait;

use plan_sandbox::{Isolation, Limits, Program, RunOutput, Sandbox, SandboxError};

/// The sandbox a replayed run is built with: ready (so code steps ask for their
/// programs as they did), and running nothing — every program's run is served from the
/// recording before it gets here.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplaySandbox;

#[async_trait]
impl Sandbox for ReplaySandbox {
    fn isolation(&self) -> Isolation {
        Isolation::Bwrap
    }

    async fn run(&self, _program: &Program, _limits: &Limits) -> Result<RunOutput, SandboxError> {
        Err(SandboxError::Unavailable {
            backend: "replay",
            reason: "replay runs no programs, and this one was not served from the recording"
                .to_owned(),
        })
    }
}
