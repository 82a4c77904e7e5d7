//! [`ToolStepExecutor`]: runs a step with a model that may call tools.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use plan_core::EventKind;
use plan_llm::{CallRecord, Provider, Purpose, Usage};

use crate::{
    ToolCallRecord, ToolContext, ToolLoop, ToolLoopConfig, ToolLoopError, ToolObserver, ToolSet,
};
use plan_exec::context::StepContext;
use plan_exec::error::StepError;
use plan_exec::executor::StepExecutor;
use plan_exec::llm::LlmStepExecutor;

/// Runs a step with a model that may call tools (a [`ToolLoop`]).
///
/// The prompt is the one [`LlmStepExecutor`] builds (goal, the step's description verbatim,
/// the capped outputs of its direct dependencies); tools are offered natively or as JSON
/// actions ([`ToolCallMode`](crate::ToolCallMode)). A `verify` step's final answer is read
/// as its verdict, as [`LlmStepExecutor`] reads it: `FAIL` fails the step (fatally, so its
/// fallback runs or the plan is revised), no verdict is a retryable error; a system prompt
/// of its own (an agent profile's) still asks a check for its verdict. Every tool call
/// emits a `tool_call` event and every model call an `llm_call` event. Model errors keep their retryability;
/// a model that never stops calling tools is a fatal error; a tool that cannot be reached
/// ([`ToolError::Unavailable`](crate::ToolError::Unavailable)) fails the step (retryable
/// when the tool says so); cancellation stops the loop.
#[derive(Clone)]
pub struct ToolStepExecutor {
    provider: Arc<dyn Provider>,
    tools: ToolSet,
    config: ToolLoopConfig,
    system: Option<String>,
    max_tokens: Option<u32>,
}

impl std::fmt::Debug for ToolStepExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolStepExecutor")
            .field("provider", &self.provider.name())
            .field("tools", &self.tools)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ToolStepExecutor {
    /// An executor over `provider` offering `tools`.
    pub fn new(provider: Arc<dyn Provider>, tools: ToolSet) -> Self {
        Self {
            provider,
            tools,
            config: ToolLoopConfig::default(),
            system: None,
            max_tokens: None,
        }
    }

    /// Sets the tool loop's settings.
    pub fn with_config(mut self, config: ToolLoopConfig) -> Self {
        self.config = config;
        self
    }

    /// Replaces the system prompt (a specialised agent's).
    pub fn with_system_prompt(mut self, system: impl Into<String>) -> Self {
        let system = system.into();
        self.system = (!system.trim().is_empty()).then_some(system);
        self
    }

    /// Caps the tokens of each reply.
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// The tools.
    pub fn tools(&self) -> &ToolSet {
        &self.tools
    }
}

struct Events<'a> {
    ctx: &'a StepContext,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl ToolObserver for Events<'_> {
    fn tool_called(&self, record: &ToolCallRecord) {
        self.ctx.emit(EventKind::ToolCall {
            step: self.ctx.step().id.clone(),
            tool: record.tool.clone(),
            ok: record.ok,
            duration_ms: millis(record.duration),
        });
    }

    fn model_called(&self, usage: &Usage, duration: Duration) {
        self.ctx
            .account_call(&CallRecord::new(Purpose::Step.as_str(), *usage, duration));
    }
}

#[async_trait]
impl StepExecutor for ToolStepExecutor {
    async fn execute(&self, ctx: &StepContext) -> Result<String, StepError> {
        let mut prompt = LlmStepExecutor::new(self.provider.as_ref());
        if let Some(system) = &self.system {
            prompt = prompt.with_system_prompt(system.clone());
        }
        let request = prompt.request(ctx);
        let mut config = self.config.clone();
        if config.temperature.is_none() {
            config.temperature = request.temperature;
        }
        let tool_loop = ToolLoop::new(Arc::clone(&self.provider), self.tools.clone())
            .with_config(config)
            .with_max_tokens(self.max_tokens);
        let tool_ctx = ToolContext::for_step(ctx.step().id.clone());
        let observer = Events { ctx };
        let result = tokio::select! {
            r = tool_loop.run(request.messages, &tool_ctx, &observer) => r,
            () = ctx.cancel_token().cancelled() => return Err(StepError::cancelled()),
        };
        let outcome = result.map_err(|e| match e {
            ToolLoopError::Llm(e) => StepError::from(e),
            ToolLoopError::ToolUnavailable {
                retryable: true,
                source,
            } => StepError::retryable(source.to_string()),
            other => StepError::fatal(other.to_string()),
        })?;
        if outcome.answer.trim().is_empty() {
            return Err(StepError::retryable(format!(
                "the model ({}) returned an empty answer for step `{}`",
                self.provider.name(),
                ctx.step().id
            )));
        }
        plan_exec::verdict::step_output(ctx.step(), outcome.answer)
    }
}
