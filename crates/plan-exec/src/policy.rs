//! Step policies ([`StepPolicy`], [`Backoff`]) and run options ([`RunOptions`]).

use std::collections::HashMap;
use std::time::Duration;

use backon::BackoffBuilder as _;
use plan_core::StepId;

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
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StepPolicy {
    /// The longest an attempt may take; a timed-out attempt counts as a retryable
    /// failure. `None`: no limit.
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
            timeout: Some(Duration::from_secs(300)),
            retries: 2,
            backoff: Backoff::default(),
            fallback: true,
        }
    }
}

impl StepPolicy {
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
