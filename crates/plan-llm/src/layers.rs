//! Layers: wrappers that implement [`Provider`] around another provider, composed like
//! tower layers: retry, timeout, concurrency limit and usage metering.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;
use tokio::sync::Semaphore;

use crate::error::LlmError;
use crate::pricing::Price;
use crate::provider::{Capabilities, ChunkStream, Provider};
use crate::types::{Chunk, Request, Response, Usage};

/// When and how long to retry. Retries errors for which
/// [`LlmError::is_retryable`] holds (408, 409, 429, 5xx, 529, timeouts, transport
/// errors), waiting what the server asked for (`retry-after-ms`, `retry-after`) or else
/// an exponential backoff with jitter. A server that asks for more than
/// [`max_retry_after`](Self::max_retry_after) is not retried: the error is returned.
///
/// ```
/// use std::time::Duration;
/// use plan_llm::RetryPolicy;
/// let policy = RetryPolicy::default()
///     .with_max_attempts(5)
///     .with_initial_delay(Duration::from_millis(200));
/// assert_eq!(policy.max_attempts, 5);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 means no retry).
    pub max_attempts: usize,
    /// The first backoff delay; each later one doubles.
    pub initial_delay: Duration,
    /// The longest backoff delay.
    pub max_delay: Duration,
    /// The longest server-requested delay honoured; asking for more ends the retries.
    pub max_retry_after: Duration,
    /// The most time one call may spend waiting between its attempts, in all; a retry
    /// that would wait beyond it is not made.
    pub max_total_delay: Duration,
    /// Adds random jitter to backoff delays (not to server-requested ones).
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
            max_total_delay: Duration::from_secs(90),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// Sets the number of attempts (at least 1).
    pub fn with_max_attempts(mut self, n: usize) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Sets the first backoff delay.
    pub fn with_initial_delay(mut self, d: Duration) -> Self {
        self.initial_delay = d;
        self
    }

    /// Sets the longest backoff delay.
    pub fn with_max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// Sets the longest server-requested delay that is honoured.
    pub fn with_max_retry_after(mut self, d: Duration) -> Self {
        self.max_retry_after = d;
        self
    }

    /// Sets the most time one call may wait between attempts, in all.
    pub fn with_max_total_delay(mut self, d: Duration) -> Self {
        self.max_total_delay = d;
        self
    }

    /// Turns backoff jitter on or off.
    pub fn with_jitter(mut self, yes: bool) -> Self {
        self.jitter = yes;
        self
    }

    fn backoff(&self) -> ExponentialBuilder {
        let b = ExponentialBuilder::default()
            .with_min_delay(self.initial_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_max_times(self.max_attempts.saturating_sub(1));
        if self.jitter { b.with_jitter() } else { b }
    }

    /// The delay before the next attempt: the server's, else the backoff's; `None` stops,
    /// also when the call's waits (`waited` so far) would pass `max_total_delay`.
    fn next_delay(
        &self,
        error: &LlmError,
        backoff: Option<Duration>,
        waited: &std::sync::Mutex<Duration>,
    ) -> Option<Duration> {
        let backoff = backoff?;
        let delay = match error.retry_after() {
            Some(asked) if asked > self.max_retry_after => return None,
            Some(asked) => asked,
            None => backoff,
        };
        let mut waited = waited
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *waited + delay > self.max_total_delay {
            return None;
        }
        *waited += delay;
        Some(delay)
    }
}

/// Retries failed calls by a [`RetryPolicy`] (built with `backon`). For streams, opening
/// the stream and an error in place of the first chunk are retried; an error after
/// output has started is passed on.
#[derive(Clone, Debug)]
pub struct Retry<P> {
    inner: P,
    policy: RetryPolicy,
}

impl<P: Provider> Retry<P> {
    /// Wraps `inner`.
    pub fn new(inner: P, policy: RetryPolicy) -> Self {
        Self { inner, policy }
    }

    /// The wrapped provider.
    pub fn inner(&self) -> &P {
        &self.inner
    }
}

#[async_trait]
impl<P: Provider> Provider for Retry<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        let name = self.inner.name();
        let waited = std::sync::Mutex::new(Duration::ZERO);
        (|| self.inner.complete(request))
            .retry(self.policy.backoff())
            .sleep(tokio::time::sleep)
            .when(LlmError::is_retryable)
            .adjust(|e, d| self.policy.next_delay(e, d, &waited))
            .notify(|e, d| tracing::warn!(provider = name, error = %e, delay = ?d, "retrying"))
            .await
    }

    async fn stream(&self, request: &Request) -> Result<ChunkStream, LlmError> {
        let name = self.inner.name();
        // An error before the first chunk (e.g. an `overloaded_error` event on HTTP 200)
        // is retried like a failed request: nothing has been delivered yet.
        let open = || async {
            let mut stream = self.inner.stream(request).await?;
            match stream.next().await {
                Some(Err(e)) => Err(e),
                Some(Ok(first)) => {
                    let rest: ChunkStream =
                        Box::pin(futures::stream::once(async move { Ok(first) }).chain(stream));
                    Ok(rest)
                }
                None => Ok(stream),
            }
        };
        let waited = std::sync::Mutex::new(Duration::ZERO);
        open.retry(self.policy.backoff())
            .sleep(tokio::time::sleep)
            .when(LlmError::is_retryable)
            .adjust(|e, d| self.policy.next_delay(e, d, &waited))
            .notify(|e, d| tracing::warn!(provider = name, error = %e, delay = ?d, "retrying"))
            .await
    }
}

/// Fails a call with [`LlmError::Timeout`] when it takes longer than a limit. For a
/// stream the limit is a deadline for the whole stream, opening included.
#[derive(Clone, Debug)]
pub struct Timeout<P> {
    inner: P,
    limit: Duration,
}

impl<P: Provider> Timeout<P> {
    /// Wraps `inner`.
    pub fn new(inner: P, limit: Duration) -> Self {
        Self { inner, limit }
    }
}

#[async_trait]
impl<P: Provider> Provider for Timeout<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        tokio::time::timeout(self.limit, self.inner.complete(request))
            .await
            .map_err(|_| LlmError::Timeout(self.limit))?
    }

    async fn stream(&self, request: &Request) -> Result<ChunkStream, LlmError> {
        let limit = self.limit;
        let deadline = tokio::time::Instant::now() + limit;
        let stream = tokio::time::timeout_at(deadline, self.inner.stream(request))
            .await
            .map_err(|_| LlmError::Timeout(limit))??;
        let mut stream = Some(stream);
        let mut sleep = Box::pin(tokio::time::sleep_until(deadline));
        Ok(Box::pin(futures::stream::poll_fn(move |cx| {
            use std::future::Future;
            use std::task::Poll;
            let Some(s) = stream.as_mut() else {
                return Poll::Ready(None);
            };
            if let Poll::Ready(item) = s.poll_next_unpin(cx) {
                return Poll::Ready(item);
            }
            match sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    stream = None;
                    Poll::Ready(Some(Err(LlmError::Timeout(limit))))
                }
                Poll::Pending => Poll::Pending,
            }
        })))
    }
}

/// Lets at most `n` calls run at once; the others wait their turn. A stream holds its
/// slot until it is dropped.
#[derive(Clone, Debug)]
pub struct ConcurrencyLimit<P> {
    inner: P,
    slots: Arc<Semaphore>,
}

impl<P: Provider> ConcurrencyLimit<P> {
    /// Wraps `inner` (`n` is at least 1).
    pub fn new(inner: P, n: usize) -> Self {
        Self {
            inner,
            slots: Arc::new(Semaphore::new(n.max(1))),
        }
    }

    async fn acquire(&self) -> Result<tokio::sync::OwnedSemaphorePermit, LlmError> {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| LlmError::Cancelled)
    }
}

#[async_trait]
impl<P: Provider> Provider for ConcurrencyLimit<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        let _permit = self.acquire().await?;
        self.inner.complete(request).await
    }

    async fn stream(&self, request: &Request) -> Result<ChunkStream, LlmError> {
        let permit = self.acquire().await?;
        let stream = self.inner.stream(request).await?;
        Ok(Box::pin(stream.map(move |item| {
            let _held = &permit;
            item
        })))
    }
}

/// Totals read from a [`UsageMeter`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UsageTotals {
    /// Calls made (failed ones included).
    pub calls: u64,
    /// Prompt tokens summed.
    pub prompt_tokens: u64,
    /// Completion tokens summed.
    pub completion_tokens: u64,
}

impl UsageTotals {
    /// Prompt and completion tokens together.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

#[derive(Debug, Default)]
struct MeterState {
    totals: UsageTotals,
    budget: Option<u64>,
    spend: Option<(f64, Price)>,
}

/// A shareable handle that sums the calls and tokens of every provider metered with it,
/// and can enforce a token budget: once the budget is used up, calls fail with
/// [`LlmError::BudgetExceeded`] before reaching the provider. (The call that crosses the
/// budget completes: its tokens are already spent.)
///
/// ```
/// use plan_llm::{Provider, ProviderExt, Reply, Request, Message, ScriptedModel, Usage, UsageMeter};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let meter = UsageMeter::new().with_budget(100);
/// let model = ScriptedModel::new()
///     .otherwise(Reply::text("ok").with_usage(Usage::new(60, 40)))
///     .with_usage_meter(&meter);
/// let ask = Request::new(vec![Message::user("hi")]);
/// model.complete(&ask).await.unwrap();
/// assert_eq!(meter.totals().total_tokens(), 100);
/// assert!(model.complete(&ask).await.is_err());
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct UsageMeter {
    state: Arc<Mutex<MeterState>>,
}

impl UsageMeter {
    /// A meter with no budget.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a token budget (prompt and completion tokens together).
    pub fn with_budget(self, tokens: u64) -> Self {
        self.lock().budget = Some(tokens);
        self
    }

    /// Sets a spending limit in dollars, with the price the tokens are charged at: once
    /// the spend reaches it, calls fail with [`LlmError::SpendExceeded`].
    pub fn with_spend_limit(self, usd: f64, price: Price) -> Self {
        self.lock().spend = Some((usd, price));
        self
    }

    /// Dollars spent so far at the spending limit's price (`None` without a limit).
    pub fn spent_usd(&self) -> Option<f64> {
        let s = self.lock();
        s.spend
            .map(|(_, price)| price.cost(s.totals.prompt_tokens, s.totals.completion_tokens))
    }

    /// The totals so far.
    pub fn totals(&self) -> UsageTotals {
        self.lock().totals
    }

    /// Tokens left in the budget, if there is one.
    pub fn remaining(&self) -> Option<u64> {
        let s = self.lock();
        s.budget.map(|b| b.saturating_sub(s.totals.total_tokens()))
    }

    fn lock(&self) -> MutexGuard<'_, MeterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start_call(&self) -> Result<(), LlmError> {
        let mut s = self.lock();
        if let Some(budget) = s.budget {
            let used = s.totals.total_tokens();
            if used >= budget {
                return Err(LlmError::BudgetExceeded { used, budget });
            }
        }
        if let Some((limit_usd, price)) = s.spend {
            let spent_usd = price.cost(s.totals.prompt_tokens, s.totals.completion_tokens);
            if spent_usd >= limit_usd {
                return Err(LlmError::SpendExceeded {
                    spent_usd,
                    limit_usd,
                });
            }
        }
        s.totals.calls += 1;
        Ok(())
    }

    fn add(&self, usage: Usage) {
        let mut s = self.lock();
        s.totals.prompt_tokens += usage.prompt_tokens;
        s.totals.completion_tokens += usage.completion_tokens;
    }
}

/// Sums a provider's usage into a [`UsageMeter`].
#[derive(Clone, Debug)]
pub struct Metered<P> {
    inner: P,
    meter: UsageMeter,
}

impl<P: Provider> Metered<P> {
    /// Wraps `inner`, reporting to `meter`.
    pub fn new(inner: P, meter: UsageMeter) -> Self {
        Self { inner, meter }
    }
}

#[async_trait]
impl<P: Provider> Provider for Metered<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        self.meter.start_call()?;
        let response = self.inner.complete(request).await?;
        self.meter.add(response.usage);
        Ok(response)
    }

    async fn stream(&self, request: &Request) -> Result<ChunkStream, LlmError> {
        self.meter.start_call()?;
        let stream = self.inner.stream(request).await?;
        let meter = self.meter.clone();
        let mut counted = Usage::default();
        Ok(Box::pin(stream.map(move |item| {
            if let Ok(Chunk::Usage(latest)) = &item {
                // Usage chunks replace earlier ones: add only the difference.
                meter.add(Usage::new(
                    latest.prompt_tokens.saturating_sub(counted.prompt_tokens),
                    latest
                        .completion_tokens
                        .saturating_sub(counted.completion_tokens),
                ));
                counted = *latest;
            }
            item
        })))
    }
}

/// Adds the layers to every provider: `model.with_retry(..).with_timeout(..)`.
///
/// Suggested order, outermost first: usage meter, retry, timeout (per attempt),
/// concurrency limit, then the adapter.
pub trait ProviderExt: Provider + Sized {
    /// Retries failures by `policy`.
    fn with_retry(self, policy: RetryPolicy) -> Retry<Self> {
        Retry::new(self, policy)
    }

    /// Fails calls that take longer than `limit`.
    fn with_timeout(self, limit: Duration) -> Timeout<Self> {
        Timeout::new(self, limit)
    }

    /// Runs at most `n` calls at once.
    fn with_concurrency_limit(self, n: usize) -> ConcurrencyLimit<Self> {
        ConcurrencyLimit::new(self, n)
    }

    /// Sums usage into `meter` (and enforces its budget).
    fn with_usage_meter(self, meter: &UsageMeter) -> Metered<Self> {
        Metered::new(self, meter.clone())
    }

    /// Opens a GenAI `chat` span around every call.
    fn with_tracing(self) -> crate::traced::Traced<Self> {
        crate::traced::Traced::new(self)
    }
}

impl<P: Provider> ProviderExt for P {}
