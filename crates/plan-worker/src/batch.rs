//! Store calls that many tasks make at once, sent in batches: one statement for what
//! arrived while the previous batch was in flight, instead of one per task.

use std::future::Future;

use plan_exec::error::StoreError;
use tokio::sync::{mpsc, oneshot};

type Request<T, R> = (T, oneshot::Sender<Result<R, StoreError>>);

/// Gathers the requests of many tasks and makes them in batches of at most `max`, one
/// batch at a time. Dropping it ends its task once the requests in hand are answered.
pub(crate) struct Batcher<T, R> {
    tx: mpsc::UnboundedSender<Request<T, R>>,
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// A batcher making its batches with `call`, which answers each request of a batch in
    /// order. Needs a tokio runtime.
    pub(crate) fn new<F, Fut>(max: usize, call: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<R>, StoreError>> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Request<T, R>>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // The tasks woken with this one add theirs first.
                tokio::task::yield_now().await;
                let mut batch = vec![first];
                while batch.len() < max.max(1) {
                    match rx.try_recv() {
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
                let (items, acks): (Vec<T>, Vec<_>) = batch.into_iter().unzip();
                match call(items).await {
                    Ok(answers) => {
                        let mut answers = answers.into_iter();
                        for ack in acks {
                            let _ = ack.send(answers.next().ok_or_else(|| {
                                StoreError::new("a batched store call gave too few answers")
                            }));
                        }
                    }
                    Err(e) => {
                        for ack in acks {
                            let _ = ack.send(Err(StoreError::new(e.to_string())));
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    /// Makes the request with the others waiting, and returns its answer.
    pub(crate) async fn call(&self, item: T) -> Result<R, StoreError> {
        let stopped = || StoreError::new("the worker is stopping: a store call was dropped");
        let (ack, answer) = oneshot::channel();
        self.tx.send((item, ack)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "current_thread")]
    async fn requests_made_together_go_in_one_batch_and_each_gets_its_own_answer() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = batches.clone();
        let doubler = Arc::new(Batcher::new(64, move |items: Vec<u32>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { Ok(items.into_iter().map(|i| i * 2).collect()) }
        }));
        let answers = futures_join(&doubler, 0..10).await;
        assert_eq!(answers, (0..10).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(batches.load(Ordering::SeqCst), 1, "ten requests, one batch");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_batch_fails_each_request_and_a_short_answer_is_an_error() {
        let failing = Batcher::new(8, |_: Vec<u32>| async {
            Err::<Vec<u32>, _>(StoreError::new("the database is down"))
        });
        let e = failing.call(1).await.unwrap_err();
        assert!(e.to_string().contains("the database is down"), "{e}");
        let short = Batcher::new(8, |_: Vec<u32>| async { Ok(Vec::<u32>::new()) });
        let e = short.call(1).await.unwrap_err();
        assert!(e.to_string().contains("too few answers"), "{e}");
    }

    /// Makes the requests `items` at once and gathers their answers in order.
    async fn futures_join(b: &Arc<Batcher<u32, u32>>, items: std::ops::Range<u32>) -> Vec<u32> {
        let mut set = tokio::task::JoinSet::new();
        for i in items {
            let b = b.clone();
            set.spawn(async move { (i, b.call(i).await.unwrap()) });
        }
        let mut answers = Vec::new();
        while let Some(done) = set.join_next().await {
            answers.push(done.unwrap());
        }
        answers.sort();
        answers.into_iter().map(|(_, a)| a).collect()
    }
}
