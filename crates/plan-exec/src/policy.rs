//! Step policies ([`StepPolicy`], [`Backoff`]) and run options ([`RunOptions`]).

use std::collections::HashMap;
use std::time::Duration;

use backon::BackoffBuilder as _;
use plan_core::StepId;
use plan_llm::RetryPolicy;

/// How long to wait between attempts: exponential with jitter (computed with `backon`).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    /// The wait before the first retry.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Each wait is this many times the one before.
    pub factor: f32,
    /// Whether to randomise waits (so parallel steps do not retry in lockstep).
    pub jitter: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            factor: 2.0,
            jitter: true,
        }
    }
}

impl Backoff {
    /// No wait at all between attempts (tests).
    pub fn none() -> Self {
        Self {
            initial: Duration::ZERO,
            max: Duration::ZERO,
            factor: 1.0,
            jitter: false,
        }
    }

    /// Exponential waits from `initial` up to `max`, doubling, with jitter.
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            ..Self::default()
        }
    }

    /// The same waits, without jitter (predictable, for tests).
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// The waits before retries 1, 2, ..., `retries`.
    pub(crate) fn delays(&self, retries: u32) -> Vec<Duration> {
        if self.initial.is_zero() {
            return vec![Duration::ZERO; retries as usize];
        }
        let mut builder = backon::ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max.max(self.initial))
            .with_factor(self.factor.max(1.0))
            .with_max_times(retries as usize);
        if self.jitter {
            builder = builder.with_jitter();
        }
        // Whole milliseconds: backon's float arithmetic leaves nanosecond noise.
        builder
            .build()
            .map(|d| Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
            .collect()
    }
}

/// What the runner does around each attempt of a step.
///
/// # The bound on model calls
/// Model calls are retried in one place, the provider's retry layer
/// ([`RetryPolicy`]: at most `max_attempts` HTTP attempts a call, each bounded by the
/// provider's own timeout); a model error that reaches a step is not retried by the step.
/// The step timeout is the outer bound of an attempt, and two rules keep it from
/// multiplying the retry layer's attempts by the step's retries:
///
/// - its default is derived from the model call's own bound
///   ([`with_model_call_timeout`](Self::with_model_call_timeout): the provider's timeout
///   × its attempts, plus the waits between them, plus a margin), so it does not cut the
///   retry layer mid-way;
/// - an attempt whose timeout cuts a model call anyway (a shorter timeout, or a step that
///   makes several calls) is not tried again: its fallback runs, or the plan is revised.
///
/// So one model call of a step costs at most the retry policy's `max_attempts` requests,
/// whatever `retries` says. `retries` applies to the other retryable failures (a tool that
/// could not be reached, an empty reply, a check without a verdict) and to timeouts of work
/// that is not a model call.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StepPolicy {
    /// The longest an attempt may take. A timed-out attempt counts as a retryable failure,
    /// unless it cut a model call (see the bound above). `None`: no limit. Default:
    /// derived from [`DEFAULT_MODEL_CALL_TIMEOUT`](Self::DEFAULT_MODEL_CALL_TIMEOUT) and
    /// [`RetryPolicy::default`] by
    /// [`with_model_call_timeout`](Self::with_model_call_timeout) (23 min 39 s).
    pub timeout: Option<Duration>,
    /// Extra attempts after a retryable failure (0: try once).
    pub retries: u32,
    /// The waits between attempts.
    pub backoff: Backoff,
    /// Whether to run the step's `fallback` body when its attempts are spent or it failed
    /// fatally. Steps without a fallback fail either way.
    pub fallback: bool,
}

impl Default for StepPolicy {
    fn default() -> Self {
        Self {
            timeout: None,
            retries: 2,
            backoff: Backoff::default(),
            fallback: true,
        }
        .with_model_call_timeout(Self::DEFAULT_MODEL_CALL_TIMEOUT, &RetryPolicy::default())
    }
}

impl StepPolicy {
    /// The provider timeout of one model call's attempt that the default step timeout is
    /// derived from: 300 s, what the `plan` command gives remote providers. A caller whose
    /// provider times out otherwise derives its own with
    /// [`with_model_call_timeout`](Self::with_model_call_timeout).
    pub const DEFAULT_MODEL_CALL_TIMEOUT: Duration = Duration::from_secs(300);

    /// The longest one model call can take through a provider whose every attempt times
    /// out after `call_timeout`, retried by `retry`: `max_attempts` attempts, plus the
    /// waits between them (at most `max_total_delay` in all).
    ///
    /// ```
    /// use std::time::Duration;
    /// use plan_exec::policy::StepPolicy;
    /// use plan_llm::RetryPolicy;
    /// let retry = RetryPolicy::default(); // 4 attempts, at most 90 s of waits
    /// assert_eq!(
    ///     StepPolicy::model_call_bound(Duration::from_secs(300), &retry),
    ///     Duration::from_secs(4 * 300 + 90)
    /// );
    /// ```
    pub fn model_call_bound(call_timeout: Duration, retry: &RetryPolicy) -> Duration {
        let attempts = u32::try_from(retry.max_attempts.max(1)).unwrap_or(u32::MAX);
        call_timeout
            .saturating_mul(attempts)
            .saturating_add(retry.max_total_delay)
    }

    /// Sets the timeout of each attempt from the bound of the model calls it makes
    /// ([`model_call_bound`](Self::model_call_bound)), plus a margin of a tenth (at least
    /// a second) for the executor's own work around the call: the step timeout then ends
    /// an attempt only after the provider's retry layer has had all its attempts, so one
    /// model call costs at most `retry.max_attempts` requests. A step that makes several
    /// model calls (a tool loop, a code step) may need longer; give it a timeout of its own
    /// ([`RunOptions::with_step_policy`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use plan_exec::policy::StepPolicy;
    /// use plan_llm::RetryPolicy;
    /// let retry = RetryPolicy::default()
    ///     .with_max_attempts(2)
    ///     .with_max_total_delay(Duration::from_secs(10));
    /// let policy =
    ///     StepPolicy::default().with_model_call_timeout(Duration::from_secs(60), &retry);
    /// // 2 × 60 s + 10 s of waits, and a tenth more.
    /// assert_eq!(policy.timeout, Some(Duration::from_secs(143)));
    /// ```
    pub fn with_model_call_timeout(mut self, call_timeout: Duration, retry: &RetryPolicy) -> Self {
        let bound = Self::model_call_bound(call_timeout, retry);
        let margin = (bound / 10).max(Duration::from_secs(1));
        self.timeout = Some(bound.saturating_add(margin));
        self
    }

    /// Sets the timeout of each attempt.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Removes the timeout.
    pub fn without_timeout(mut self) -> Self {
        self.timeout = None;
        self
    }

    /// Sets the number of retries after retryable failures.
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Sets the waits between attempts.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Never runs fallbacks.
    pub fn without_fallback(mut self) -> Self {
        self.fallback = false;
        self
    }
}

/// Options of a run: concurrency, the default step policy and per-step overrides, and
/// how much of each dependency's output a step sees.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RunOptions {
    /// The most steps running at once (at least 1).
    pub concurrency: usize,
    /// The policy of steps without an override.
    pub policy: StepPolicy,
    /// Policies for particular steps.
    pub step_policies: HashMap<StepId, StepPolicy>,
    /// The most characters of each dependency output passed to a step; longer outputs are
    /// cut with a visible marker.
    pub max_dependency_chars: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            concurrency: 4,
            policy: StepPolicy::default(),
            step_policies: HashMap::new(),
            max_dependency_chars: 8_000,
        }
    }
}

impl RunOptions {
    /// Sets the concurrency bound (values below 1 count as 1).
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Sets the default step policy.
    pub fn with_policy(mut self, policy: StepPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the policy of one step.
    pub fn with_step_policy(mut self, step: impl Into<StepId>, policy: StepPolicy) -> Self {
        self.step_policies.insert(step.into(), policy);
        self
    }

    /// Sets the cap on each dependency output a step sees.
    pub fn with_max_dependency_chars(mut self, max: usize) -> Self {
        self.max_dependency_chars = max;
        self
    }

    /// The policy that applies to a step.
    pub fn policy_for(&self, step: &StepId) -> &StepPolicy {
        self.step_policies.get(step).unwrap_or(&self.policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_step_timeout_outlasts_the_default_retry_layer() {
        let retry = RetryPolicy::default();
        let bound = StepPolicy::model_call_bound(StepPolicy::DEFAULT_MODEL_CALL_TIMEOUT, &retry);
        assert_eq!(bound, Duration::from_secs(4 * 300 + 90));
        let timeout = StepPolicy::default().timeout.unwrap();
        assert_eq!(timeout, Duration::from_secs(1290 + 129));
        assert!(timeout > bound);
        // A short bound still gets a second of margin.
        let quick = StepPolicy::default().with_model_call_timeout(
            Duration::from_millis(200),
            &RetryPolicy::default()
                .with_max_attempts(3)
                .with_max_total_delay(Duration::from_millis(30)),
        );
        assert_eq!(quick.timeout, Some(Duration::from_millis(1630)));
    }

    #[test]
    fn delays_grow_and_stay_capped() {
        let b = Backoff {
            jitter: false,
            ..Backoff::exponential(Duration::from_millis(100), Duration::from_millis(300))
        };
        assert_eq!(
            b.delays(4),
            vec![
                Duration::from_millis(100),
                Duration::from_millis(200),
                Duration::from_millis(300),
                Duration::from_millis(300)
            ]
        );
        assert_eq!(Backoff::none().delays(2), vec![Duration::ZERO; 2]);
    }
}
