//! Following a run's journal as it is written.

use std::time::Duration;

use futures::Stream;
use plan_core::{EventKind, RunId};

use super::{JournalEntry, RunStore};
use crate::error::StoreError;

/// The run's events after position `after`, then every new one as it is written, ending
/// after `run_finished`. Polls the store every `interval` while nothing is new; a store
/// with its own notifications wakes followers sooner through [`follow_with`].
pub fn follow<'a>(
    store: &'a dyn RunStore,
    run: &'a RunId,
    after: u64,
    interval: Duration,
) -> impl Stream<Item = Result<JournalEntry, StoreError>> + Send + 'a {
    follow_with(store, run, after, move || tokio::time::sleep(interval))
}

/// As [`follow`], but while nothing is new it awaits `wait()` before reading again: a
/// future that ends when the store announces new events of the run (or after a while, as
/// a safety net against a missed announcement).
pub fn follow_with<'a, W, F>(
    store: &'a dyn RunStore,
    run: &'a RunId,
    after: u64,
    wait: W,
) -> impl Stream<Item = Result<JournalEntry, StoreError>> + Send + 'a
where
    W: Fn() -> F + Send + Sync + 'a,
    F: std::future::Future<Output = ()> + Send + 'a,
{
    let wait = std::sync::Arc::new(wait);
    futures::stream::unfold(
        (after, Vec::<JournalEntry>::new().into_iter(), false),
        move |(mut seq, mut buffered, done)| {
            let wait = wait.clone();
            async move {
                loop {
                    if let Some(entry) = buffered.next() {
                        seq = entry.seq;
                        // Calls recorded for replay are the journal's alone.
                        if entry.event.kind.is_journal_only() {
                            continue;
                        }
                        let finished = matches!(entry.event.kind, EventKind::RunFinished { .. });
                        return Some((Ok(entry), (seq, buffered, finished)));
                    }
                    if done {
                        return None;
                    }
                    match store.events_after(run, seq, 512).await {
                        Ok(batch) if batch.is_empty() => wait().await,
                        Ok(batch) => buffered = batch.into_iter(),
                        Err(e) => return Some((Err(e), (seq, buffered, true))),
                    }
                }
            }
        },
    )
}
