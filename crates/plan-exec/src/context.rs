//! What a step executor is given: [`StepContext`], [`DependencyOutput`] and the
//! [`CancelToken`].

use std::sync::Arc;

use plan_core::{EventKind, RunId, Step, StepId};

use plan_llm::CallRecord;

use crate::events::Emitter;

/// A cancellation signal shared by a run and its steps.
///
/// Cancelling a token cancels every token made from it with [`child`](Self::child), but
/// not the other way round. It wraps `tokio_util`'s `CancellationToken` so that type does
/// not become part of this crate's API.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(tokio_util::sync::CancellationToken);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels this token and its children.
    pub fn cancel(&self) {
        self.0.cancel();
    }

    /// Whether the token is cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Waits until the token is cancelled.
    pub async fn cancelled(&self) {
        self.0.cancelled().await;
    }

    /// A token cancelled with this one (and on its own by its own `cancel`).
    pub fn child(&self) -> CancelToken {
        CancelToken(self.0.child_token())
    }
}

/// The output of one direct dependency, as a step sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DependencyOutput {
    /// The dependency's id.
    pub id: StepId,
    /// The dependency's description.
    pub description: String,
    /// Its output, capped at the run's limit; when cut, it ends with a visible marker
    /// (see [`cap_output`]).
    pub output: String,
    /// Whether `output` was cut.
    pub truncated: bool,
}

/// Caps `output` at `max_chars` characters. A cut output ends with a line saying how much
/// was left out, so the model (and the user reading the prompt) can see it is incomplete.
///
/// Returns the text and whether it was cut.
pub fn cap_output(output: &str, max_chars: usize) -> (String, bool) {
    match output.char_indices().nth(max_chars) {
        None => (output.to_owned(), false),
        Some((cut, _)) => {
            let left_out = output[cut..].chars().count();
            let mut text = String::with_capacity(cut + 64);
            text.push_str(&output[..cut]);
            text.push_str(&format!(
                "\n[... truncated: {left_out} more characters not shown]"
            ));
            (text, true)
        }
    }
}

/// Everything an executor gets for one attempt of one step.
///
/// Per the context contract, a step sees the goal, its own step (description verbatim)
/// and the outputs of its *direct* dependencies only, each capped.
#[derive(Clone, Debug)]
pub struct StepContext {
    pub(crate) run: RunId,
    pub(crate) goal: Arc<str>,
    pub(crate) step: Step,
    pub(crate) dependencies: Vec<DependencyOutput>,
    pub(crate) attempt: u32,
    pub(crate) cancel: CancelToken,
    pub(crate) events: Emitter,
}

impl StepContext {
    /// A context for running `step` outside a runner (tests, custom tools): attempt 1, no
    /// dependencies, a fresh cancel token, events discarded. Add to it with the `with_*`
    /// methods.
    pub fn new(goal: impl Into<String>, step: Step) -> Self {
        Self {
            run: RunId::new("standalone"),
            goal: Arc::from(goal.into()),
            step,
            dependencies: Vec::new(),
            attempt: 1,
            cancel: CancelToken::new(),
            events: Emitter::noop(),
        }
    }

    /// Adds the output of a dependency (not capped here; the runner caps).
    pub fn with_dependency(mut self, step: &Step, output: impl Into<String>) -> Self {
        self.dependencies.push(DependencyOutput {
            id: step.id.clone(),
            description: step.description.clone(),
            output: output.into(),
            truncated: false,
        });
        self
    }

    /// Sets the run id events are stamped with.
    pub fn with_run_id(mut self, run: RunId) -> Self {
        self.run = run;
        self
    }

    /// Sends this context's events to `sink`.
    pub fn with_event_sink(mut self, sink: Arc<dyn crate::events::EventSink>) -> Self {
        self.events = Emitter::to_sink(sink);
        self
    }

    /// Sets the cancel token.
    pub fn with_cancel(mut self, cancel: CancelToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// Sets the attempt number (1-based).
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// The run this step belongs to.
    pub fn run_id(&self) -> &RunId {
        &self.run
    }

    /// The run's goal.
    pub fn goal(&self) -> &str {
        &self.goal
    }

    /// The step to run (its fallback body, under the step's id, when the fallback runs).
    pub fn step(&self) -> &Step {
        &self.step
    }

    /// The outputs of the step's direct dependencies, in the order of
    /// `step.dependencies`.
    pub fn dependencies(&self) -> &[DependencyOutput] {
        &self.dependencies
    }

    /// The attempt number: 1 for the first try, then 2, 3, ... for retries.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The step's cancel token: long work should stop when it is cancelled (the runner
    /// also drops the executor's future then).
    pub fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }

    /// Whether the step has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Reports an event of this run (for example an [`EventKind::LlmCall`] or
    /// [`EventKind::ToolCall`]); it is stamped with the time and the run id.
    pub fn emit(&self, kind: EventKind) {
        self.events.emit(&self.run, kind);
    }

    /// Accounts a model call made for this step: its `llm_call` event, from which the
    /// run's usage and forecasts are derived.
    pub fn account_call(&self, call: &CallRecord) {
        self.emit(llm_call_event(call, Some(self.step().id.clone())));
    }
}

/// The `llm_call` event of a model call, made for `step` or (`None`) for the run: the one
/// way a model call enters a run's journal ([`StepContext::account_call`],
/// [`RunSession::account_call`](crate::session::RunSession::account_call)).
pub fn llm_call_event(call: &CallRecord, step: Option<plan_core::StepId>) -> EventKind {
    EventKind::LlmCall {
        purpose: call.purpose.clone(),
        step,
        prompt_tokens: call.usage.prompt_tokens,
        completion_tokens: call.usage.completion_tokens,
        duration_ms: call.duration_ms(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_marks_what_was_cut() {
        assert_eq!(cap_output("short", 10), ("short".to_owned(), false));
        assert_eq!(cap_output("exactly", 7), ("exactly".to_owned(), false));
        let (text, cut) = cap_output("héllo wörld", 5);
        assert!(cut);
        assert_eq!(text, "héllo\n[... truncated: 6 more characters not shown]");
    }
}
