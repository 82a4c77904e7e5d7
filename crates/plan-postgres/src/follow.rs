//! Following a run as it is written, woken by `LISTEN/NOTIFY` rather than polling.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use plan_core::{EventKind, RunId};
use plan_exec::error::StoreError;
use plan_exec::store::{JournalEntry, RunStore};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;

use crate::store::{EVENTS_CHANNEL, PostgresStore};

/// How long a follower waits for a notification before reading anyway (a safety net:
/// notifications arrive within milliseconds of the commit).
const FALLBACK_POLL: Duration = Duration::from_secs(2);

/// Events read per query.
const PAGE: usize = 512;

/// A `LISTEN` connection of its own; notifications wake `wake`. When the connection
/// drops (the server restarted, the backend was terminated), it is opened again with
/// backoff for as long as the listener lives, and the waiters are woken both when it
/// drops and when it is back, so they read the store and catch up.
pub(crate) struct Listener {
    pub(crate) wake: Arc<Notify>,
    // Owns the connection (and its client): dropped with the listener.
    task: JoinHandle<()>,
}

/// An open `LISTEN` connection: its client (the connection lives while it does), and
/// the payloads of its notifications (the channel closes when the connection does).
struct Listening {
    client: tokio_postgres::Client,
    payloads: tokio::sync::mpsc::UnboundedReceiver<String>,
    connection: JoinHandle<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PostgresStore {
    /// The run's events after position `after` (0 for all), then every new one as it is
    /// committed, ending after `run_finished`: like [`plan_exec::store::follow`], but each
    /// follower holds a `LISTEN` connection and wakes on the append's `NOTIFY` instead
    /// of polling (it still reads every two seconds should a notification be missed).
    pub fn follow<'a>(
        &'a self,
        run: &'a RunId,
        after: u64,
    ) -> impl Stream<Item = Result<JournalEntry, StoreError>> + Send + 'a {
        struct State {
            seq: u64,
            buffered: std::vec::IntoIter<JournalEntry>,
            done: bool,
            listener: Option<Listener>,
        }
        let start = State {
            seq: after,
            buffered: Vec::new().into_iter(),
            done: false,
            listener: None,
        };
        futures::stream::unfold(start, move |mut st| async move {
            loop {
                if let Some(entry) = st.buffered.next() {
                    st.seq = entry.seq;
                    // Calls recorded for replay are the journal's alone.
                    if entry.event.kind.is_journal_only() {
                        continue;
                    }
                    st.done = matches!(entry.event.kind, EventKind::RunFinished { .. });
                    return Some((Ok(entry), st));
                }
                if st.done {
                    return None;
                }
                // Listen before the first read, so nothing committed after it is missed.
                if st.listener.is_none() {
                    match self.listen(run).await {
                        Ok(l) => st.listener = Some(l),
                        Err(e) => {
                            st.done = true;
                            return Some((Err(e), st));
                        }
                    }
                }
                match self.events_after(run, st.seq, PAGE).await {
                    Ok(batch) if batch.is_empty() => {
                        if let Some(l) = &st.listener {
                            let _ = tokio::time::timeout(FALLBACK_POLL, l.wake.notified()).await;
                        }
                    }
                    Ok(batch) => st.buffered = batch.into_iter(),
                    Err(e) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
            }
        })
    }

    /// Opens a connection that listens on [`EVENTS_CHANNEL`] and wakes on `run`'s
    /// notifications.
    async fn listen(&self, run: &RunId) -> Result<Listener, StoreError> {
        self.listen_on(
            EVENTS_CHANNEL,
            Some(run.as_str().to_owned()),
            &format!("follow run `{run}`"),
        )
        .await
    }

    /// Opens a connection that listens on `channel` and wakes on its notifications (only
    /// those whose payload is `only`, when given).
    pub(crate) async fn listen_on(
        &self,
        channel: &str,
        only: Option<String>,
        what: &str,
    ) -> Result<Listener, StoreError> {
        let wake = Arc::new(Notify::new());
        let woken = wake.clone();
        let mut listener = self
            .listen_with(channel, what, move |payload| {
                // An empty payload: the connection closed or opened again; every
                // waiter looks again.
                if payload.is_empty() || only.as_deref().is_none_or(|p| p == payload) {
                    // Every waiter now, and the next one to come.
                    woken.notify_waiters();
                    woken.notify_one();
                }
            })
            .await?;
        listener.wake = wake;
        Ok(listener)
    }

    /// Opens a connection that listens on `channel` and calls `on` with each
    /// notification's payload (and with an empty one when the connection closes, and
    /// again once it is open again, so waiters read the store and catch up).
    pub(crate) async fn listen_with(
        &self,
        channel: &str,
        what: &str,
        on: impl Fn(&str) + Send + 'static,
    ) -> Result<Listener, StoreError> {
        let first = self.open_listening(channel, what).await?;
        let store = self.clone();
        let (channel, what) = (channel.to_owned(), what.to_owned());
        let task = tokio::spawn(async move {
            let mut open = Some(first);
            loop {
                let mut listening = match open.take() {
                    Some(listening) => listening,
                    None => {
                        let listening = store.reopen_listening(&channel, &what).await;
                        tracing::info!(channel = %channel, "listening again; the waiters read the store");
                        // Whatever was notified while the connection was down is read now.
                        on("");
                        listening
                    }
                };
                while let Some(payload) = listening.payloads.recv().await {
                    on(&payload);
                }
                drop(listening);
                tracing::warn!(channel = %channel, "the listening connection closed; opening it again (meanwhile the waiters read the store on their own)");
                // Waiters look again, and fall back to polling until it is back.
                on("");
            }
        });
        Ok(Listener {
            wake: Arc::new(Notify::new()),
            task,
        })
    }

    /// Opens a connection listening on `channel`, trying again with backoff until it
    /// opens.
    async fn reopen_listening(&self, channel: &str, what: &str) -> Listening {
        use backon::BackoffBuilder as _;
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(std::time::Duration::from_millis(100))
            .with_max_delay(std::time::Duration::from_secs(2))
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            let delay = delays.next().unwrap_or(std::time::Duration::from_secs(2));
            tokio::time::sleep(delay).await;
            match self.open_listening(channel, what).await {
                Ok(listening) => return listening,
                Err(e) => tracing::debug!(channel = %channel, error = %e, "cannot listen yet"),
            }
        }
    }

    /// Opens a connection of its own and listens on `channel`.
    async fn open_listening(&self, channel: &str, what: &str) -> Result<Listening, StoreError> {
        let inner = &self.inner;
        let (client, mut connection) = inner
            .address
            .config()
            .connect(inner.tls.clone())
            .await
            .map_err(|e| {
                StoreError::new(inner.errors.scrub(&format!(
                    "cannot open a connection to {what} at {}: {}",
                    inner.address.host_port(),
                    inner.errors.connect_reason(&e)
                )))
            })?;
        let (tx, payloads) = tokio::sync::mpsc::unbounded_channel();
        let connection = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(n.payload().to_owned()).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "the listening connection closed");
                        break;
                    }
                }
            }
        });
        let listening = Listening {
            client,
            payloads,
            connection,
        };
        listening
            .client
            .batch_execute(&format!("LISTEN {channel}"))
            .await
            .map_err(|e| inner.errors.store(&format!("cannot {what}"), &e))?;
        Ok(listening)
    }
}

/// Notifications routed by payload: each waiter is woken only for its own key.
#[derive(Clone, Default)]
pub(crate) struct Routed {
    waiters: Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<Notify>>>>,
}

impl Routed {
    /// Wakes the waiters for `keys`, one a line (every waiter for an empty payload: the
    /// connection closed).
    pub(crate) fn wake(&self, keys: &str) {
        let waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if keys.is_empty() {
            waiters.values().for_each(|n| n.notify_waiters());
            return;
        }
        for key in keys.split('\n') {
            if let Some(n) = waiters.get(key) {
                n.notify_waiters();
                n.notify_one();
            }
        }
    }

    /// Waits until `key` is announced, or `at_most` passes.
    pub(crate) async fn wait(&self, key: String, at_most: Duration) {
        self.watch(key).wait(at_most).await;
    }

    /// Watches `key` from now: an announcement made before [`Watch::wait`] is called is
    /// not missed.
    pub(crate) fn watch(&self, key: String) -> Watch {
        let notify = {
            let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            waiters.entry(key.clone()).or_default().clone()
        };
        Watch {
            routed: self.clone(),
            key,
            notify,
        }
    }
}

/// A key watched for announcements ([`Routed::watch`]); unwatched when dropped.
pub(crate) struct Watch {
    routed: Routed,
    key: String,
    notify: Arc<Notify>,
}

impl Watch {
    /// Waits until the key is announced (or was, since the watch began, and not yet
    /// waited for), or `at_most` passes.
    pub(crate) async fn wait(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.notify.notified()).await;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut waiters = self
            .routed
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if waiters
            .get(&self.key)
            .is_some_and(|n| Arc::strong_count(n) <= 2)
        {
            waiters.remove(&self.key);
        }
    }
}

/// One `LISTEN` connection for any number of followers of any runs, each woken only
/// when its own run gets events: a server following hundreds of runs holds one
/// connection, not one per follower. Use it with [`plan_exec::store::follow_with`].
pub struct EventsListener {
    _listener: Listener,
    routed: Routed,
}

impl EventsListener {
    /// Waits until events of `run` are committed, or `at_most` passes.
    pub async fn wait(&self, run: &RunId, at_most: Duration) {
        self.routed.wait(run.as_str().to_owned(), at_most).await;
    }
}

impl PostgresStore {
    /// A connection listening for the events of every run ([`EVENTS_CHANNEL`]), shared
    /// by many followers.
    ///
    /// # Errors
    /// [`StoreError`] when the connection cannot be opened.
    pub async fn events_listener(&self) -> Result<EventsListener, StoreError> {
        let routed = Routed::default();
        let on = routed.clone();
        let listener = self
            .listen_with(EVENTS_CHANNEL, "listen for events", move |payload| {
                on.wake(payload);
            })
            .await?;
        Ok(EventsListener {
            _listener: listener,
            routed,
        })
    }
}
