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
use crate::record::UsageTotals;
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

/// A run's usage as its [`BudgetLedger`] keeps it: the calls of every process working on
/// the run, together.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct LedgerTotals {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Dollars charged, each call at the price the meter that charged it knew (0 for a
    /// call metered without a price).
    pub usd: f64,
}

impl LedgerTotals {
    /// Totals with these counts.
    pub fn new(prompt_tokens: u64, completion_tokens: u64, usd: f64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            usd,
        }
    }

    /// Prompt and completion tokens together.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// Why a [`BudgetLedger`] could not be read or charged (the implementation's own error).
pub type LedgerError = Box<dyn std::error::Error + Send + Sync>;

/// The one usage account of a run, shared by every [`UsageMeter`] metering the run's
/// calls, in this process or in others (a fleet of workers running the run's steps), so
/// that the run's budget holds for its total wherever its calls are made.
///
/// A meter given a ledger ([`UsageMeter::with_ledger`]) reads [`used`](Self::used) before
/// each call and refuses the call when the run's total is at or over the budget, and
/// [`charge`](Self::charge)s each call's usage after it. `charge` must be atomic: two
/// meters charging at once both count. `plan_postgres`'s run ledger keeps it in the
/// run store.
#[async_trait]
pub trait BudgetLedger: Send + Sync {
    /// The run's usage so far.
    async fn used(&self) -> Result<LedgerTotals, LedgerError>;

    /// Adds one call's usage (its tokens, and its cost in dollars: 0 when the meter knows
    /// no price) to the run's, atomically, and returns the run's usage after it.
    async fn charge(&self, usage: Usage, usd: f64) -> Result<LedgerTotals, LedgerError>;
}

#[async_trait]
impl<T: BudgetLedger + ?Sized> BudgetLedger for Arc<T> {
    async fn used(&self) -> Result<LedgerTotals, LedgerError> {
        (**self).used().await
    }

    async fn charge(&self, usage: Usage, usd: f64) -> Result<LedgerTotals, LedgerError> {
        (**self).charge(usage, usd).await
    }
}

#[async_trait]
impl<T: BudgetLedger + ?Sized> BudgetLedger for Box<T> {
    async fn used(&self) -> Result<LedgerTotals, LedgerError> {
        (**self).used().await
    }

    async fn charge(&self, usage: Usage, usd: f64) -> Result<LedgerTotals, LedgerError> {
        (**self).charge(usage, usd).await
    }
}

#[derive(Default)]
struct MeterState {
    totals: UsageTotals,
    budget: Option<u64>,
    spend: Option<(f64, Price)>,
    ledger: Option<Arc<dyn BudgetLedger>>,
    /// Usage the ledger has not been charged with yet (a charge failed): added to the
    /// next charge, and counted meanwhile.
    unsynced: Usage,
    /// The ledger's totals as last read or charged.
    seen: Option<LedgerTotals>,
}

impl std::fmt::Debug for MeterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeterState")
            .field("totals", &self.totals)
            .field("budget", &self.budget)
            .field("spend", &self.spend)
            .field("ledger", &self.ledger.is_some())
            .field("unsynced", &self.unsynced)
            .field("seen", &self.seen)
            .finish()
    }
}

impl MeterState {
    /// Tokens and dollars the budget is checked against: the run's in the ledger (as
    /// last seen, with what it still owes) when there is one, else this meter's.
    fn used(&self) -> (u64, u64, f64) {
        match self.seen {
            Some(run) => (
                run.prompt_tokens + self.unsynced.prompt_tokens,
                run.completion_tokens + self.unsynced.completion_tokens,
                run.usd,
            ),
            None => (
                self.totals.prompt_tokens,
                self.totals.completion_tokens,
                0.0,
            ),
        }
    }

    /// Dollars spent at the spending limit's price: the tokens at that price, or the
    /// dollars the ledger was charged if more (calls charged at another worker's price).
    fn spent_usd(&self) -> Option<f64> {
        let (_, price) = self.spend?;
        let (prompt, completion, charged) = self.used();
        Some(price.cost(prompt, completion).max(charged))
    }
}

/// A shareable handle that sums the calls and tokens of every provider metered with it,
/// and can enforce a token budget: once the budget is used up, calls fail with
/// [`LlmError::BudgetExceeded`] before reaching the provider. (The call that crosses the
/// budget completes: its tokens are already spent.)
///
/// Given a [`BudgetLedger`] ([`with_ledger`](Self::with_ledger)), the budget and the
/// spending limit hold for the run's total in the ledger, which other meters, in other
/// processes, charge too; without one, for this meter's own calls. Either way the check
/// is made before each call, so calls already under way when the total reaches the
/// budget complete as well.
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

    /// Meters against a run's shared [`BudgetLedger`]: each call's usage is charged to
    /// it, and (with a budget or spending limit) a call is refused when the run's total
    /// there has reached the limit. The meter is a shared handle, so this applies to
    /// every provider already metered with it.
    ///
    /// A ledger that cannot be read refuses the call with a retryable
    /// [`LlmError::Transport`] (the budget cannot be checked); a charge that fails is
    /// logged, kept, and added to the next charge.
    pub fn with_ledger(self, ledger: Arc<dyn BudgetLedger>) -> Self {
        self.lock().ledger = Some(ledger);
        self
    }

    /// Dollars spent so far at the spending limit's price (`None` without a limit): with
    /// a ledger, the run's as last seen there.
    pub fn spent_usd(&self) -> Option<f64> {
        self.lock().spent_usd()
    }

    /// The totals of this meter's own calls so far.
    pub fn totals(&self) -> UsageTotals {
        self.lock().totals
    }

    /// The run's totals in the ledger as last read or charged (`None` without a ledger,
    /// or before its first use).
    pub fn ledger_totals(&self) -> Option<LedgerTotals> {
        self.lock().seen
    }

    /// Tokens left in the budget, if there is one: with a ledger, as last seen there.
    pub fn remaining(&self) -> Option<u64> {
        let s = self.lock();
        let (prompt, completion, _) = s.used();
        s.budget.map(|b| b.saturating_sub(prompt + completion))
    }

    fn lock(&self) -> MutexGuard<'_, MeterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn start_call(&self) -> Result<(), LlmError> {
        let ledger = {
            let s = self.lock();
            let limited = s.budget.is_some() || s.spend.is_some();
            s.ledger.clone().filter(|_| limited)
        };
        if let Some(ledger) = ledger {
            let run = ledger.used().await.map_err(|e| LlmError::Transport {
                provider: "budget ledger".to_owned(),
                message: format!(
                    "cannot read the run's usage to check its budget, so the call was not made: {e}; check that the run store is reachable"
                ),
            })?;
            self.lock().seen = Some(run);
        }
        let mut s = self.lock();
        let (prompt, completion, _) = s.used();
        if let Some(budget) = s.budget {
            let used = prompt + completion;
            if used >= budget {
                return Err(LlmError::BudgetExceeded { used, budget });
            }
        }
        if let (Some((limit_usd, _)), Some(spent_usd)) = (s.spend, s.spent_usd())
            && spent_usd >= limit_usd
        {
            return Err(LlmError::SpendExceeded {
                spent_usd,
                limit_usd,
            });
        }
        s.totals.llm_calls += 1;
        Ok(())
    }

    async fn add(&self, usage: Usage) {
        let (ledger, owed, usd) = {
            let mut s = self.lock();
            s.totals.prompt_tokens += usage.prompt_tokens;
            s.totals.completion_tokens += usage.completion_tokens;
            let Some(ledger) = s.ledger.clone() else {
                return;
            };
            let mut owed = std::mem::take(&mut s.unsynced);
            owed += usage;
            if owed.total() == 0 {
                return;
            }
            let usd = s.spend.map_or(0.0, |(_, price)| {
                price.cost(owed.prompt_tokens, owed.completion_tokens)
            });
            (ledger, owed, usd)
        };
        match ledger.charge(owed, usd).await {
            Ok(run) => self.lock().seen = Some(run),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    tokens = owed.total(),
                    "cannot charge the run's budget ledger; the usage is kept and charged with the next call"
                );
                self.lock().unsynced += owed;
            }
        }
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
        self.meter.start_call().await?;
        let response = self.inner.complete(request).await?;
        self.meter.add(response.usage).await;
        Ok(response)
    }

    async fn stream(&self, request: &Request) -> Result<ChunkStream, LlmError> {
        self.meter.start_call().await?;
        let stream = self.inner.stream(request).await?;
        let meter = self.meter.clone();
        let mut counted = Usage::default();
        Ok(Box::pin(stream.then(move |item| {
            // Usage chunks replace earlier ones: add only the difference.
            let delta = match &item {
                Ok(Chunk::Usage(latest)) => {
                    let delta = Usage::new(
                        latest.prompt_tokens.saturating_sub(counted.prompt_tokens),
                        latest
                            .completion_tokens
                            .saturating_sub(counted.completion_tokens),
                    );
                    counted = *latest;
                    Some(delta)
                }
                _ => None,
            };
            let meter = meter.clone();
            async move {
                if let Some(delta) = delta {
                    meter.add(delta).await;
                }
                item
            }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::provider::collect_stream;
    use crate::scripted::{Reply, ScriptedModel};
    use crate::types::Message;

    /// A ledger in memory, as a store would keep it; it can be told to fail.
    #[derive(Default)]
    struct MemoryLedger {
        totals: Mutex<LedgerTotals>,
        fail_reads: bool,
        failing_charges: AtomicUsize,
    }

    #[async_trait]
    impl BudgetLedger for MemoryLedger {
        async fn used(&self) -> Result<LedgerTotals, LedgerError> {
            if self.fail_reads {
                return Err("the database is down".into());
            }
            Ok(*self.totals.lock().unwrap())
        }

        async fn charge(&self, usage: Usage, usd: f64) -> Result<LedgerTotals, LedgerError> {
            let failing = self.failing_charges.load(Ordering::SeqCst);
            if failing > 0 {
                self.failing_charges.store(failing - 1, Ordering::SeqCst);
                return Err("the database is down".into());
            }
            let mut t = self.totals.lock().unwrap();
            t.prompt_tokens += usage.prompt_tokens;
            t.completion_tokens += usage.completion_tokens;
            t.usd += usd;
            Ok(*t)
        }
    }

    fn ask() -> Request {
        Request::new(vec![Message::user("hi")])
    }

    /// A model replying with `usage` to every call, metered by `meter`.
    fn model(usage: Usage, meter: &UsageMeter) -> (ScriptedModel, Metered<ScriptedModel>) {
        let model = ScriptedModel::new().otherwise(Reply::text("ok").with_usage(usage));
        (model.clone(), model.with_usage_meter(meter))
    }

    /// Two meters (two workers' agents) with the same budget and one ledger: the second
    /// sees the first's spend, its call crosses the budget and completes, and then both
    /// refuse, with the run's total in the error. Alone, each would have made two calls.
    #[tokio::test]
    async fn meters_sharing_a_ledger_hold_the_runs_total() {
        let ledger = Arc::new(MemoryLedger::default());
        let a = UsageMeter::new()
            .with_budget(100)
            .with_ledger(ledger.clone());
        let b = UsageMeter::new()
            .with_budget(100)
            .with_ledger(ledger.clone());
        let (seen_a, model_a) = model(Usage::new(40, 20), &a);
        let (seen_b, model_b) = model(Usage::new(40, 20), &b);

        model_a.complete(&ask()).await.unwrap();
        model_b.complete(&ask()).await.unwrap();
        for refused in [
            model_a.complete(&ask()).await,
            model_b.complete(&ask()).await,
        ] {
            match refused {
                Err(LlmError::BudgetExceeded { used, budget }) => {
                    assert_eq!((used, budget), (120, 100));
                }
                other => panic!("expected a budget refusal, got {other:?}"),
            }
        }
        assert_eq!(seen_a.call_count() + seen_b.call_count(), 2);
        assert_eq!(ledger.used().await.unwrap().total_tokens(), 120);
        assert_eq!(
            a.totals().total_tokens(),
            60,
            "each meter keeps its own totals"
        );
        assert_eq!(a.remaining(), Some(0));

        // Without the ledger, the same budget per meter lets each make a second call.
        let alone = UsageMeter::new().with_budget(100);
        let (seen, model_alone) = model(Usage::new(40, 20), &alone);
        model_alone.complete(&ask()).await.unwrap();
        model_alone.complete(&ask()).await.unwrap();
        assert_eq!(seen.call_count(), 2);
    }

    /// The spending limit holds for the ledger's total: tokens another process charged
    /// (or that were seeded from a journal, with no price) count at this meter's price,
    /// and this meter charges its calls in dollars.
    #[tokio::test]
    async fn a_spending_limit_holds_for_the_ledgers_total() {
        let price = Price::new(1.0, 2.0);
        let ledger = Arc::new(MemoryLedger {
            totals: Mutex::new(LedgerTotals::new(500_000, 0, 0.0)),
            ..MemoryLedger::default()
        });
        let meter = UsageMeter::new()
            .with_spend_limit(1.0, price)
            .with_ledger(ledger.clone());
        let (seen, metered) = model(Usage::new(400_000, 50_000), &meter);
        metered.complete(&ask()).await.unwrap();
        let run = ledger.used().await.unwrap();
        assert_eq!(run.prompt_tokens, 900_000);
        assert!((run.usd - 0.5).abs() < 1e-9, "charged {}", run.usd);
        match metered.complete(&ask()).await {
            Err(LlmError::SpendExceeded {
                spent_usd,
                limit_usd,
            }) => {
                assert!((spent_usd - 1.0).abs() < 1e-9, "spent {spent_usd}");
                assert!((limit_usd - 1.0).abs() < 1e-9);
            }
            other => panic!("expected a spending refusal, got {other:?}"),
        }
        assert_eq!(seen.call_count(), 1);
    }

    /// A ledger that cannot be read refuses the call (the budget cannot be checked) with
    /// a retryable error that says so, and the provider is not called.
    #[tokio::test]
    async fn an_unreadable_ledger_refuses_the_call() {
        let ledger = Arc::new(MemoryLedger {
            fail_reads: true,
            ..MemoryLedger::default()
        });
        let meter = UsageMeter::new().with_budget(100).with_ledger(ledger);
        let (seen, metered) = model(Usage::new(1, 1), &meter);
        let e = metered.complete(&ask()).await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("cannot read the run's usage") && text.contains("database is down"),
            "{text}"
        );
        assert_eq!(seen.call_count(), 0);
        assert_eq!(meter.totals().llm_calls, 0);
    }

    /// A charge that fails keeps the usage, counts it in the next budget check, and
    /// charges it with the next call.
    #[tokio::test]
    async fn a_failed_charge_is_charged_with_the_next_call() {
        let ledger = Arc::new(MemoryLedger::default());
        ledger.failing_charges.store(1, Ordering::SeqCst);
        let meter = UsageMeter::new()
            .with_budget(50)
            .with_ledger(ledger.clone());
        let (_, metered) = model(Usage::new(10, 10), &meter);
        metered.complete(&ask()).await.unwrap();
        assert_eq!(ledger.used().await.unwrap().total_tokens(), 0);
        metered.complete(&ask()).await.unwrap();
        assert_eq!(ledger.used().await.unwrap().total_tokens(), 40);
        metered.complete(&ask()).await.unwrap();
        assert!(matches!(
            metered.complete(&ask()).await,
            Err(LlmError::BudgetExceeded {
                used: 60,
                budget: 50
            })
        ));
    }

    /// A streamed call is charged from its usage chunk, once.
    #[tokio::test]
    async fn a_streamed_call_is_charged_from_its_usage_chunk() {
        let ledger = Arc::new(MemoryLedger::default());
        let meter = UsageMeter::new()
            .with_budget(1000)
            .with_ledger(ledger.clone());
        let (_, metered) = model(Usage::new(7, 5), &meter);
        let stream = metered.stream(&ask()).await.unwrap();
        let response = collect_stream("scripted", stream).await.unwrap();
        assert_eq!(response.usage, Usage::new(7, 5));
        assert_eq!(ledger.used().await.unwrap(), LedgerTotals::new(7, 5, 0.0));
        assert_eq!(meter.ledger_totals(), Some(LedgerTotals::new(7, 5, 0.0)));
    }
}
