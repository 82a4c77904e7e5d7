//! [`StrategyError`]: what can stop planning or a run before it has a report.

use plan_llm::LlmError;

/// An error from planning, a strategy or the [`Agent`](crate::Agent).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StrategyError {
    /// A model call failed (after the provider's own retries).
    #[error("the {purpose} call to the model failed: {source}")]
    Llm {
        /// What the call was for (`plan`, `critique`, `decompose`, `synthesize`).
        purpose: String,
        /// The provider's error.
        #[source]
        source: LlmError,
    },
    /// The model did not produce a usable plan, even after re-prompting and repair.
    #[error(
        "the model did not produce a valid plan after {attempts} attempts:{}\ntry a larger model, a simpler goal, or allow more steps",
        problems.iter().map(|p| format!("\n  - {p}")).collect::<String>()
    )]
    InvalidPlan {
        /// Replies received.
        attempts: u32,
        /// What was wrong with the last one.
        problems: Vec<String>,
    },
    /// A structured reply (a critique, a decomposition) could not be understood.
    #[error("the model's {purpose} reply could not be used: {message}")]
    InvalidReply {
        /// What the call was for.
        purpose: String,
        /// What was wrong.
        message: String,
    },
    /// A plan given to run is invalid.
    #[error("{0}")]
    Plan(#[from] plan_core::PlanErrors),
    /// The agent was configured wrongly.
    #[error("configuration error: {0}")]
    Config(String),
    /// Executing the plan failed outside any step (the runner or the store).
    #[error("execution error: {0}")]
    Exec(#[source] plan_exec::error::ExecError),
    /// A run names a strategy that is not registered.
    #[error(transparent)]
    UnknownStrategy(#[from] crate::strategy::UnknownStrategy),
    /// A prompt template failed to render (a bug: please report it).
    #[error("prompt template `{template}` failed to render: {message}")]
    Template {
        /// The template's name.
        template: String,
        /// What went wrong.
        message: String,
    },
    /// A plan names agents that do not exist, or the agent profiles are wrong.
    #[error("{0}")]
    Agents(#[from] crate::agents::AgentError),
    /// The run was cancelled.
    #[error("cancelled")]
    Cancelled,
}

impl From<plan_exec::error::ExecError> for StrategyError {
    fn from(e: plan_exec::error::ExecError) -> Self {
        match e {
            plan_exec::error::ExecError::InvalidPlan(p) => StrategyError::Plan(p),
            other => StrategyError::Exec(other),
        }
    }
}

impl From<plan_exec::error::StoreError> for StrategyError {
    fn from(e: plan_exec::error::StoreError) -> Self {
        StrategyError::Exec(plan_exec::error::ExecError::Store(e))
    }
}

impl StrategyError {
    /// The setting or action that fixes it, if one does.
    pub fn hint(&self) -> Option<plan_exec::error::Hint> {
        match self {
            StrategyError::InvalidPlan { .. } => Some(plan_exec::error::Hint::MaxSteps),
            StrategyError::Exec(e) => e.hint(),
            _ => None,
        }
    }

    /// A short stable name for the kind of error (`llm`, `invalid_plan`,
    /// `invalid_reply`, `plan`, `config`, `exec`, `cancelled`, ...), for traces
    /// (`error.type`).
    pub fn kind(&self) -> &'static str {
        match self {
            StrategyError::Llm { .. } => "llm",
            StrategyError::InvalidPlan { .. } => "invalid_plan",
            StrategyError::InvalidReply { .. } => "invalid_reply",
            StrategyError::Plan(_) => "plan",
            StrategyError::Config(_) => "config",
            StrategyError::Exec(_) => "exec",
            StrategyError::UnknownStrategy(_) => "unknown_strategy",
            StrategyError::Template { .. } => "template",
            StrategyError::Agents(_) => "agents",
            StrategyError::Cancelled => "cancelled",
        }
    }

    pub(crate) fn llm(purpose: &str, source: LlmError) -> Self {
        StrategyError::Llm {
            purpose: purpose.to_owned(),
            source,
        }
    }
}
