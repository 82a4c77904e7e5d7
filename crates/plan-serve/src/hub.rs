//! One reader per followed run: all the event streams of a run are fed by one follower of
//! the store, so two hundred viewers cost one read per new batch of events, not two
//! hundred. Each stream catches up from the store by itself (from its `Last-Event-ID`),
//! then takes the live events from the run's reader, skipping what it already sent; a
//! stream that falls behind catches up from the store again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use plan_core::{EventKind, RunId};
use plan_exec::store::{JournalEntry, RunStore};
use tokio::sync::broadcast;

use crate::Fleet;

/// Live events buffered per run for slow streams (beyond it they catch up from the store).
const BUFFER: usize = 1024;

/// How often an idle reader checks whether anyone still listens.
const IDLE_CHECK: Duration = Duration::from_secs(5);

type Feed = broadcast::Sender<Arc<JournalEntry>>;

/// The runs being followed, each by one reader.
#[derive(Default)]
pub(crate) struct Hub {
    runs: Mutex<HashMap<RunId, Feed>>,
}

/// Where the readers read and how they wait for new events.
#[derive(Clone)]
pub(crate) struct Source {
    pub(crate) store: Arc<dyn RunStore>,
    pub(crate) fleet: Option<Arc<dyn Fleet>>,
}

impl Source {
    /// Until new events of `run` may be there: the fleet's notification, or a short poll.
    async fn wait(&self, run: &RunId) {
        match &self.fleet {
            Some(fleet) => fleet.wait_for_events(run, Duration::from_secs(1)).await,
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn finished(entry: &JournalEntry) -> bool {
    matches!(entry.event.kind, EventKind::RunFinished { .. })
}

impl Hub {
    /// A receiver of `run`'s live events, starting its reader (from `from`) if it has none.
    fn subscribe(
        self: &Arc<Self>,
        source: &Source,
        run: &RunId,
        from: u64,
    ) -> broadcast::Receiver<Arc<JournalEntry>> {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(feed) = runs.get(run) {
            return feed.subscribe();
        }
        let (feed, rx) = broadcast::channel(BUFFER);
        runs.insert(run.clone(), feed.clone());
        tokio::spawn(read(self.clone(), source.clone(), run.clone(), from, feed));
        rx
    }

    /// Forgets `run`'s reader, if `feed` is still it.
    fn remove(&self, run: &RunId, feed: &Feed) {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        if runs.get(run).is_some_and(|f| f.same_channel(feed)) {
            runs.remove(run);
        }
    }

    /// Sends `run`'s events after `after` into `out`, then its live ones, until
    /// `run_finished` or until `out` is closed (the client went away).
    pub(crate) async fn stream(
        self: Arc<Self>,
        source: Source,
        run: RunId,
        after: u64,
        out: tokio::sync::mpsc::Sender<Arc<JournalEntry>>,
    ) {
        let mut last = after;
        let mut live = self.subscribe(&source, &run, after);
        loop {
            // Catch up from the store: what was written before subscribing, or missed.
            loop {
                let Ok(batch) = source.store.events_after(&run, last, 512).await else {
                    return;
                };
                if batch.is_empty() {
                    break;
                }
                for entry in batch {
                    last = entry.seq;
                    let end = finished(&entry);
                    if for_readers(&entry) && out.send(Arc::new(entry)).await.is_err() || end {
                        return;
                    }
                }
            }
            // Then the reader's live events, in order; a gap or a lag catches up again.
            loop {
                match live.recv().await {
                    Ok(entry) if entry.seq <= last => {}
                    Ok(entry) if entry.seq == last + 1 => {
                        last = entry.seq;
                        let end = finished(&entry);
                        if for_readers(&entry) && out.send(entry).await.is_err() || end {
                            return;
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => {
                        // The reader stopped (the store failed): start another.
                        source.wait(&run).await;
                        live = self.subscribe(&source, &run, last);
                        break;
                    }
                }
            }
        }
    }
}

/// Whether an entry goes to the run's readers: every event but the calls recorded for
/// replay, which are the journal's alone.
fn for_readers(entry: &JournalEntry) -> bool {
    !entry.event.kind.is_journal_only()
}

/// A run's reader: follows the store from `from` and broadcasts every entry, until the
/// run finishes or nobody listens any more.
async fn read(hub: Arc<Hub>, source: Source, run: RunId, from: u64, feed: Feed) {
    {
        let waiter = source.clone();
        let waited = run.clone();
        let wait = move || {
            let waiter = waiter.clone();
            let run = waited.clone();
            async move { waiter.wait(&run).await }
        };
        let mut entries = std::pin::pin!(plan_exec::store::follow_with(
            source.store.as_ref(),
            &run,
            from,
            wait
        ));
        let mut idle = tokio::time::interval(IDLE_CHECK);
        idle.tick().await;
        loop {
            tokio::select! {
                entry = entries.next() => match entry {
                    Some(Ok(entry)) => {
                        let end = finished(&entry);
                        if feed.send(Arc::new(entry)).is_err() || end {
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(run = %run, error = %e, "cannot follow the run's events");
                        break;
                    }
                    None => break,
                },
                _ = idle.tick() => {
                    if feed.receiver_count() == 0 {
                        break;
                    }
                }
            }
        }
    }
    hub.remove(&run, &feed);
}
