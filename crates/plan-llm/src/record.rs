//! [`CallRecord`]: one model call as it is accounted: what it was for, its tokens, its
//! wall time. Every part of plan that calls a model makes one (with
//! [`complete_recorded`] where it makes the call itself), and a run turns each into one
//! `llm_call` event of its journal, from which its usage and forecasts are derived.
//! [`UsageTotals`]: usage summed over calls.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{LlmError, Provider, Purpose, Request, Response, Usage};

/// One model call: what it was for, its token counts and its wall-clock time.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallRecord {
    /// What it was for (a [`Purpose`]'s name: `plan`, `replan`, `improve`, `critique`,
    /// `decompose`, `step`, `synthesize`, ...).
    pub purpose: String,
    /// Its token counts.
    pub usage: Usage,
    /// Its wall-clock time.
    pub duration: Duration,
}

impl CallRecord {
    /// A call made for `purpose`, with its token counts and wall-clock time.
    pub fn new(purpose: impl Into<String>, usage: Usage, duration: Duration) -> Self {
        Self {
            purpose: purpose.into(),
            usage,
            duration,
        }
    }

    /// Its wall-clock time in whole milliseconds, as events carry it.
    pub fn duration_ms(&self) -> u64 {
        u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX)
    }
}

/// Model usage summed over calls: how many, and their tokens. The one totals type: a
/// [`UsageMeter`](crate::UsageMeter) reads its totals as one, plan-exec derives a run's usage from its
/// journal as one (the `--json` report's `usage`), and a list of [`CallRecord`]s sums
/// to one ([`of_calls`](Self::of_calls)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UsageTotals {
    /// Model calls (for a meter: made, failed ones included).
    pub llm_calls: u64,
    /// Prompt tokens summed.
    pub prompt_tokens: u64,
    /// Completion tokens summed.
    pub completion_tokens: u64,
}

impl UsageTotals {
    /// Totals with these counts.
    pub fn new(llm_calls: u64, prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            llm_calls,
            prompt_tokens,
            completion_tokens,
        }
    }

    /// The totals of `calls`.
    pub fn of_calls<'a>(calls: impl IntoIterator<Item = &'a CallRecord>) -> Self {
        let mut totals = Self::default();
        for call in calls {
            totals.add_call(call.usage);
        }
        totals
    }

    /// Counts one more call, with its tokens.
    pub fn add_call(&mut self, usage: Usage) {
        self.llm_calls += 1;
        self.prompt_tokens += usage.prompt_tokens;
        self.completion_tokens += usage.completion_tokens;
    }

    /// Prompt and completion tokens together.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// Calls `provider` with `request` and returns the response with its record. The record's
/// purpose is the request's ([`Request::with_purpose`]; `step` when it has none).
///
/// # Errors
/// The provider's error.
pub async fn complete_recorded(
    provider: &(impl Provider + ?Sized),
    request: &Request,
) -> Result<(Response, CallRecord), LlmError> {
    let started = Instant::now();
    let response = provider.complete(request).await?;
    let purpose = request.purpose.as_ref().unwrap_or(&Purpose::Step).as_str();
    let record = CallRecord::new(purpose, response.usage, started.elapsed());
    Ok((response, record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Message, Reply, ScriptedModel};

    #[tokio::test]
    async fn a_call_is_recorded_with_its_purpose_and_tokens() {
        let model = ScriptedModel::from_replies([Reply::response(Response::text(
            "fine",
            Usage::new(12, 3),
        ))]);
        let request =
            Request::new(vec![Message::user("How are you?")]).with_purpose(Purpose::Critique);
        let (response, record) = complete_recorded(&model, &request).await.unwrap();
        assert_eq!(response.content, "fine");
        assert_eq!(record.purpose, "critique");
        assert_eq!(record.usage, Usage::new(12, 3));
    }
}
