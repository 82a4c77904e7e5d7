//! [`LlmStepExecutor`]: runs a step by asking a model.

use std::fmt::Write as _;
use std::time::Instant;

use async_trait::async_trait;
use plan_core::StepKind;
use plan_llm::{CallRecord, Message, Provider, Purpose, Request, ResponseFormat};

use crate::context::StepContext;
use crate::error::StepError;
use crate::executor::StepExecutor;

const DEFAULT_SYSTEM: &str = "Do only the step given, building on the outputs shown, and \
reply with its result only.";

/// Runs a step with one call to a model through any [`Provider`].
///
/// The prompt (see [`request`](Self::request)) carries the goal, the step's description
/// verbatim, what the output should look like, and the outputs of the step's direct
/// dependencies as the runner capped them. A `verify` step is shown the outputs it checks
/// and asked for a verdict (`PASS` or `FAIL` on the first line); a `FAIL` fails the step
/// (fatally: its fallback runs, or the plan is revised), as it does under every executor
/// that runs verify steps (the tool loop's too). Each call emits an
/// `llm_call` event with the token usage; retryable model errors
/// ([`LlmError::is_retryable`](plan_llm::LlmError::is_retryable)) become retryable step
/// errors.
#[derive(Clone, Debug)]
pub struct LlmStepExecutor<P> {
    provider: P,
    system: Option<String>,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
}

impl<P: Provider> LlmStepExecutor<P> {
    /// An executor over `provider` with the built-in prompts.
    pub fn new(provider: P) -> Self {
        Self {
            provider,
            system: None,
            max_tokens: None,
            temperature: None,
        }
    }

    /// Replaces the system prompt (for every kind of step; a verify step's prompt still
    /// asks for its verdict, which is how its reply is read).
    pub fn with_system_prompt(mut self, system: impl Into<String>) -> Self {
        self.system = Some(system.into());
        self
    }

    /// Caps the tokens of each reply.
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// Sets the sampling temperature.
    pub fn with_temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// The provider.
    pub fn provider(&self) -> &P {
        &self.provider
    }

    /// The request this executor sends for a step.
    pub fn request(&self, ctx: &StepContext) -> Request {
        let step = ctx.step();
        let verify = step.kind == StepKind::Verify;
        let system = crate::verdict::system_prompt(step, self.system.as_deref(), DEFAULT_SYSTEM);

        let mut user = String::new();
        let _ = writeln!(user, "Goal: {}\n", ctx.goal());
        if verify {
            let _ = writeln!(user, "Check to make (step `{}`):", step.id);
        } else {
            let _ = writeln!(user, "Your step (`{}`):", step.id);
        }
        let _ = writeln!(user, "{}", step.description);
        if let Some(expected) = &step.expected_output {
            let _ = writeln!(user, "\nExpected output: {expected}");
        }
        if !ctx.dependencies().is_empty() {
            let _ = writeln!(user, "\nOutputs:");
            for dep in ctx.dependencies() {
                let _ = writeln!(user, "\n--- step `{}` ---\n{}", dep.id, dep.output);
            }
            let _ = write!(user, "--- end of outputs ---");
        }

        let user = user.trim_end().to_owned();
        let purpose = if verify {
            Purpose::Verify
        } else {
            Purpose::Step
        };
        let mut request =
            Request::new(vec![Message::system(system), Message::user(user)]).with_purpose(purpose);
        if verify && self.provider.capabilities().json_schema {
            request.response_format = ResponseFormat::JsonSchema {
                name: "verdict".to_owned(),
                schema: crate::verdict::schema(),
            };
        }
        request.max_tokens = self.max_tokens;
        request.temperature = self.temperature;
        request.stop = FRAMING.iter().map(|s| (*s).to_owned()).collect();
        request
    }
}

/// Lines of the prompt's own framing: a reply that starts writing one has finished its
/// step and is echoing the prompt (small models do), so generation stops there.
const FRAMING: [&str; 3] = [
    "\nYour step (`",
    "\nCheck to make (step `",
    "\n--- end of outputs ---",
];

#[async_trait]
impl<P: Provider> StepExecutor for LlmStepExecutor<P> {
    async fn execute(&self, ctx: &StepContext) -> Result<String, StepError> {
        let request = self.request(ctx);
        let started = Instant::now();
        let result = tokio::select! {
            r = crate::runner::model_call(self.provider.complete(&request)) => r,
            () = ctx.cancel_token().cancelled() => return Err(StepError::cancelled()),
        };
        let response = result.map_err(StepError::from)?;
        // Verify steps too: the event counts step calls, the request says which kind.
        ctx.account_call(&CallRecord::new(
            Purpose::Step.as_str(),
            response.usage,
            started.elapsed(),
        ));
        if response.content.trim().is_empty() {
            return Err(StepError::retryable(format!(
                "the model ({}) returned an empty reply for step `{}`",
                self.provider.name(),
                ctx.step().id
            )));
        }
        crate::verdict::step_output(ctx.step(), response.content)
    }
}
