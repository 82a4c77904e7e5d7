//! The [`StepExecutor`] trait: what runs one step.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;

use crate::context::StepContext;
use crate::error::StepError;

/// Runs one attempt of one step and returns its output.
///
/// The runner handles timeouts, retries, fallbacks and cancellation around it: an
/// executor only does the work, reports model or tool calls with
/// [`StepContext::emit`], and says how it failed ([`StepError::retryable`],
/// [`StepError::fatal`]). Object-safe, so executors of different types share a
/// [`Router`](crate::router::Router).
#[async_trait]
pub trait StepExecutor: Send + Sync {
    /// Runs `ctx.step()` and returns its output text.
    async fn execute(&self, ctx: &StepContext) -> Result<String, StepError>;
}

#[async_trait]
impl<E: StepExecutor + ?Sized> StepExecutor for &E {
    async fn execute(&self, ctx: &StepContext) -> Result<String, StepError> {
        (**self).execute(ctx).await
    }
}

#[async_trait]
impl<E: StepExecutor + ?Sized> StepExecutor for Box<E> {
    async fn execute(&self, ctx: &StepContext) -> Result<String, StepError> {
        (**self).execute(ctx).await
    }
}

#[async_trait]
impl<E: StepExecutor + ?Sized> StepExecutor for Arc<E> {
    async fn execute(&self, ctx: &StepContext) -> Result<String, StepError> {
        (**self).execute(ctx).await
    }
}

/// An executor made from an async closure; see [`executor_fn`].
pub struct FnExecutor<F>(F);

impl<F> std::fmt::Debug for FnExecutor<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnExecutor")
    }
}

/// An executor from a closure that takes the context (cloned, so the future may keep it)
/// and returns a future of the output: tools, test doubles, no-op steps.
///
/// ```
/// use plan_exec::executor::executor_fn;
/// use plan_exec::context::StepContext;
///
/// let upper = executor_fn(|ctx: StepContext| async move {
///     Ok(ctx.step().description.to_uppercase())
/// });
/// # let _ = upper;
/// ```
pub fn executor_fn<F, Fut>(f: F) -> FnExecutor<F>
where
    F: Fn(StepContext) -> Fut + Send + Sync,
    Fut: Future<Output = Result<String, StepError>> + Send,
{
    FnExecutor(f)
}

#[async_trait]
impl<F, Fut> StepExecutor for FnExecutor<F>
where
    F: Fn(StepContext) -> Fut + Send + Sync,
    Fut: Future<Output = Result<String, StepError>> + Send,
{
    async fn execute(&self, ctx: &StepContext) -> Result<String, StepError> {
        (self.0)(ctx.clone()).await
    }
}
