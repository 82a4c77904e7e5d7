//! [`Cancellable`]: every model call of a run gives up when the run is cancelled (Ctrl-C, a
//! cancel request, a lost lease), whatever made it: a planning call and the re-prompts that
//! fix its reply, a step, research, verification, the synthesis. Without it, a cancelled
//! run waited for a slow model to answer a planning call, and then made the next one.

use async_trait::async_trait;
use futures::StreamExt as _;
use plan_exec::context::CancelToken;
use plan_llm::{Capabilities, ChunkStream, LlmError, Provider, Request, Response};
use std::sync::Arc;

/// A model whose calls end with [`LlmError::Cancelled`] as soon as `cancel` is cancelled
/// (a call made after that ends at once); a stream ends with that error too.
pub(crate) struct Cancellable {
    inner: Arc<dyn Provider>,
    cancel: CancelToken,
}

impl Cancellable {
    /// `inner`, giving up its calls when `cancel` is cancelled.
    pub(crate) fn wrap(inner: Arc<dyn Provider>, cancel: CancelToken) -> Arc<dyn Provider> {
        Arc::new(Self { inner, cancel })
    }
}

#[async_trait]
impl Provider for Cancellable {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(LlmError::Cancelled),
            response = self.inner.complete(request) => response,
        }
    }

    async fn stream(&self, request: &Request) -> Result<ChunkStream, LlmError> {
        let stream = tokio::select! {
            biased;
            () = self.cancel.cancelled() => return Err(LlmError::Cancelled),
            stream = self.inner.stream(request) => stream?,
        };
        let state = (stream, self.cancel.clone(), false);
        Ok(Box::pin(futures::stream::unfold(
            state,
            |(mut stream, cancel, ended)| async move {
                if ended {
                    return None;
                }
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => Some((Err(LlmError::Cancelled), (stream, cancel, true))),
                    chunk = stream.next() => chunk.map(|c| (c, (stream, cancel, false))),
                }
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plan_llm::{Message, Reply, ScriptedModel};
    use std::time::Duration;

    /// A model that answers after a minute.
    struct Slow;

    #[async_trait]
    impl Provider for Slow {
        fn name(&self) -> &str {
            "slow"
        }

        async fn complete(&self, _: &Request) -> Result<Response, LlmError> {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Err(LlmError::Config("the slow model answered".to_owned()))
        }
    }

    fn request() -> Request {
        Request::new(vec![Message::user("hello")])
    }

    #[tokio::test]
    async fn a_call_waiting_on_the_model_ends_when_the_run_is_cancelled() {
        let cancel = CancelToken::new();
        let model = Cancellable::wrap(Arc::new(Slow), cancel.clone());
        let call = tokio::spawn(async move { model.complete(&request()).await });
        tokio::task::yield_now().await;
        cancel.cancel();
        let result = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .expect("the call ended with the cancellation")
            .unwrap();
        assert!(matches!(result, Err(LlmError::Cancelled)), "{result:?}");
    }

    #[tokio::test]
    async fn calls_go_through_until_the_run_is_cancelled_and_none_after() {
        let cancel = CancelToken::new();
        let model = Cancellable::wrap(
            Arc::new(ScriptedModel::from_replies([
                Reply::text("one"),
                Reply::text("two"),
            ])),
            cancel.clone(),
        );
        assert_eq!(model.complete(&request()).await.unwrap().content, "one");
        cancel.cancel();
        assert!(matches!(
            model.complete(&request()).await,
            Err(LlmError::Cancelled)
        ));
        assert!(matches!(
            model.stream(&request()).await.err(),
            Some(LlmError::Cancelled)
        ));
    }

    #[tokio::test]
    async fn a_stream_ends_with_the_cancellation() {
        let cancel = CancelToken::new();
        let model = Cancellable::wrap(
            Arc::new(ScriptedModel::from_replies([Reply::text("a reply")])),
            cancel.clone(),
        );
        let mut stream = model.stream(&request()).await.unwrap();
        assert!(stream.next().await.unwrap().is_ok());
        cancel.cancel();
        assert!(matches!(
            stream.next().await,
            Some(Err(LlmError::Cancelled))
        ));
        assert!(stream.next().await.is_none());
    }
}
