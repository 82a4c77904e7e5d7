//! The built-in tool that runs a program in the sandbox.

use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::{Tool, ToolContext, ToolError, ToolOutput};
use plan_sandbox::{Limits, Program, Sandbox};

/// The language of a [`RunCodeTool`] program.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CodeLanguage {
    /// Python 3.
    Python,
    /// GNU bash.
    Bash,
}

/// Arguments of [`RunCodeTool`].
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCodeArgs {
    /// The program's language.
    pub language: CodeLanguage,
    /// The program's source.
    pub code: String,
    /// Wall-clock limit in seconds (at most the tool's configured limit).
    #[serde(default)]
    #[schemars(range(min = 1, max = 600))]
    pub timeout_secs: Option<u64>,
}

/// Runs Python or bash in a [`Sandbox`] and returns the exit code, output and the limit hit,
/// if any. A program that fails is a successful tool call (the model sees the failure);
/// only a sandbox that cannot run anything is a tool error.
#[derive(Clone)]
pub struct RunCodeTool {
    sandbox: Arc<dyn Sandbox>,
    limits: Limits,
}

impl std::fmt::Debug for RunCodeTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunCodeTool")
            .field("isolation", &self.sandbox.isolation())
            .field("limits", &self.limits)
            .finish()
    }
}

impl RunCodeTool {
    /// Runs programs in `sandbox` under the default [`Limits`].
    pub fn new(sandbox: Arc<dyn Sandbox>) -> Self {
        Self {
            sandbox,
            limits: Limits::default(),
        }
    }

    /// Sets the limits; a call may ask for a shorter timeout, never a longer one.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

impl Tool for RunCodeTool {
    type Args = RunCodeArgs;

    fn name(&self) -> &str {
        "run_code"
    }

    fn description(&self) -> &str {
        "Run a Python 3 or bash program in an isolated sandbox (no network, only its own \
         files). Returns exit_code, stdout, stderr and limit_hit; print what you need to see."
    }

    async fn call(&self, args: RunCodeArgs, _ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let program = match args.language {
            CodeLanguage::Python => Program::python(args.code),
            CodeLanguage::Bash => Program::bash(args.code),
        };
        let mut limits = self.limits.clone();
        if let Some(secs) = args.timeout_secs {
            limits.timeout = limits.timeout.min(Duration::from_secs(secs.max(1)));
        }
        let out = self
            .sandbox
            .run(&program, &limits)
            .await
            .map_err(|e| ToolError::failed("run_code", e.to_string()))?;
        Ok(ToolOutput::Json(serde_json::json!({
            "exit_code": out.exit_code,
            "signal": out.signal,
            "stdout": out.stdout,
            "stderr": out.stderr,
            "truncated": out.truncated(),
            "limit_hit": out.limit_hit.map(|l| l.as_str()),
            "duration_ms": u64::try_from(out.duration.as_millis()).unwrap_or(u64::MAX),
            "isolation": out.isolation.as_str(),
        })))
    }
}
