//! Where run events go: the [`EventSink`] observer trait and ready-made sinks.

use std::sync::{Arc, Mutex, PoisonError};

use plan_core::{Event, EventKind, RunId, Timestamp};
use plan_llm::{Usage, UsageTotals};
use tokio::sync::{mpsc, oneshot};

use crate::error::StoreError;
use crate::store::{StepOutputRecord, StoredRun};

/// Receives every event of a run as it happens.
///
/// Called from the runner's tasks, so it must be quick and must not block: hand the event
/// to a channel or a buffer if more work is needed (see [`event_channel`]). The default
/// does nothing, so an observer implements only what it needs.
pub trait EventSink: Send + Sync {
    /// One event, in the order the run produced it.
    fn on_event(&self, event: &Event) {
        let _ = event;
    }
}

impl<S: EventSink + ?Sized> EventSink for &S {
    fn on_event(&self, event: &Event) {
        (**self).on_event(event);
    }
}

impl<S: EventSink + ?Sized> EventSink for Box<S> {
    fn on_event(&self, event: &Event) {
        (**self).on_event(event);
    }
}

impl<S: EventSink + ?Sized> EventSink for Arc<S> {
    fn on_event(&self, event: &Event) {
        (**self).on_event(event);
    }
}

/// A sink that drops every event.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopSink;

impl EventSink for NoopSink {}

/// A sink that keeps every event in memory; clones share the same log.
#[derive(Clone, Debug, Default)]
pub struct EventLog {
    events: Arc<Mutex<Vec<Event>>>,
}

impl EventLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the events so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// The kinds of the events so far (handy in tests).
    pub fn kinds(&self) -> Vec<EventKind> {
        self.events().into_iter().map(|e| e.kind).collect()
    }
}

impl EventSink for EventLog {
    fn on_event(&self, event: &Event) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event.clone());
        }
    }
}

/// A sink that calls a function for each event.
pub struct FnSink<F>(F);

/// A sink from a closure: `sink_fn(|event| eprintln!("{}", event.to_json_line()))`.
pub fn sink_fn<F: Fn(&Event) + Send + Sync>(f: F) -> FnSink<F> {
    FnSink(f)
}

impl<F: Fn(&Event) + Send + Sync> EventSink for FnSink<F> {
    fn on_event(&self, event: &Event) {
        (self.0)(event);
    }
}

impl<F> std::fmt::Debug for FnSink<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnSink")
    }
}

/// The sending half of [`event_channel`]: an unbounded channel, so the run never waits
/// for the reader.
#[derive(Clone, Debug)]
pub struct ChannelSink(mpsc::UnboundedSender<Event>);

impl EventSink for ChannelSink {
    fn on_event(&self, event: &Event) {
        // A closed receiver means nobody listens any more; the run goes on.
        let _ = self.0.send(event.clone());
    }
}

/// The receiving half of [`event_channel`].
#[derive(Debug)]
pub struct EventReceiver(mpsc::UnboundedReceiver<Event>);

impl EventReceiver {
    /// The next event; `None` once every [`ChannelSink`] clone is dropped (the run is over
    /// and the runner has let go of its sink).
    pub async fn recv(&mut self) -> Option<Event> {
        self.0.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.0.try_recv().ok()
    }
}

/// A channel for events: give the [`ChannelSink`] to a runner, read events from the
/// [`EventReceiver`] in another task (a progress display, an events file).
pub fn event_channel() -> (ChannelSink, EventReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    (ChannelSink(tx), EventReceiver(rx))
}

/// Messages to the task that writes a run's journal to the store.
pub(crate) enum JournalMsg {
    Event(Event),
    Commit {
        output: StepOutputRecord,
        event: Event,
        ack: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Answered once every message before it is written.
    Flush(oneshot::Sender<Result<(), StoreError>>),
}

struct EmitterInner {
    /// The wall-clock time and the runtime's instant when the emitter was made: events
    /// are stamped from the runtime's monotonic clock, so durations read from a journal
    /// are exact (and follow tokio's paused clock in tests).
    anchor: (u64, tokio::time::Instant),
    sink: Arc<dyn EventSink>,
    journal: Option<mpsc::UnboundedSender<JournalMsg>>,
    /// The session's in-memory copy of the journal.
    mirror: Option<Arc<Mutex<StoredRun>>>,
    /// The usage of the `llm_call` events emitted so far.
    usage: Mutex<UsageTotals>,
}

/// Stamps events, counts model usage, and sends each event to the sink and the journal.
#[derive(Clone)]
pub(crate) struct Emitter(Arc<EmitterInner>);

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Emitter")
    }
}

impl Emitter {
    pub(crate) fn noop() -> Self {
        Self::to_sink(Arc::new(NoopSink))
    }

    pub(crate) fn to_sink(sink: Arc<dyn EventSink>) -> Self {
        Self::new(sink, None, None)
    }

    pub(crate) fn new(
        sink: Arc<dyn EventSink>,
        journal: Option<mpsc::UnboundedSender<JournalMsg>>,
        mirror: Option<Arc<Mutex<StoredRun>>>,
    ) -> Self {
        Self(Arc::new(EmitterInner {
            anchor: (Timestamp::now().unix_millis(), tokio::time::Instant::now()),
            sink,
            journal,
            mirror,
            usage: Mutex::new(UsageTotals::default()),
        }))
    }

    fn remember(&self, f: impl FnOnce(&mut StoredRun)) {
        if let Some(mirror) = &self.0.mirror {
            f(&mut mirror
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner));
        }
    }

    /// Now, by the emitter's monotonic clock.
    pub(crate) fn now(&self) -> Timestamp {
        let (wall, instant) = self.0.anchor;
        let elapsed = u64::try_from(instant.elapsed().as_millis()).unwrap_or(u64::MAX);
        Timestamp::from_unix_millis(wall.saturating_add(elapsed))
    }

    /// An event of `run`, stamped now by the emitter's clock.
    pub(crate) fn event(&self, run: &RunId, kind: EventKind) -> Event {
        Event::at(self.now(), run.clone(), kind)
    }

    pub(crate) fn emit(&self, run: &RunId, kind: EventKind) {
        let event = self.event(run, kind);
        self.count(&event.kind);
        self.0.sink.on_event(&event);
        self.remember(|m| m.events.push(event.clone()));
        if let Some(journal) = &self.0.journal {
            let _ = journal.send(JournalMsg::Event(event));
        }
    }

    /// Journals an event that event sinks never see ([`EventKind::is_journal_only`]).
    pub(crate) fn journal_only(&self, run: &RunId, kind: EventKind) {
        let event = self.event(run, kind);
        self.remember(|m| m.events.push(event.clone()));
        if let Some(journal) = &self.0.journal {
            let _ = journal.send(JournalMsg::Event(event));
        }
    }

    /// Waits until everything sent so far is written to the store.
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        let Some(journal) = &self.0.journal else {
            return Ok(());
        };
        let (ack, done) = oneshot::channel();
        journal
            .send(JournalMsg::Flush(ack))
            .map_err(|_| StoreError::new("the run journal stopped before the events were saved"))?;
        done.await
            .map_err(|_| StoreError::new("the run journal stopped before the events were saved"))?
    }

    /// Commits a step's output together with its `step_completed` event, then tells the
    /// sink. Without a store it only tells the sink.
    pub(crate) async fn commit(
        &self,
        output: StepOutputRecord,
        event: Event,
    ) -> Result<(), StoreError> {
        let output_copy = output.clone();
        if let Some(journal) = &self.0.journal {
            let (ack, done) = oneshot::channel();
            journal
                .send(JournalMsg::Commit {
                    output,
                    event: event.clone(),
                    ack,
                })
                .map_err(|_| {
                    StoreError::new("the run journal stopped before the output was saved")
                })?;
            done.await.map_err(|_| {
                StoreError::new("the run journal stopped before the output was saved")
            })??;
        }
        self.remember(|m| {
            m.outputs.push(output_copy);
            m.events.push(event.clone());
        });
        self.0.sink.on_event(&event);
        Ok(())
    }

    fn count(&self, kind: &EventKind) {
        if let EventKind::LlmCall {
            prompt_tokens,
            completion_tokens,
            ..
        } = kind
        {
            self.0
                .usage
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .add_call(Usage::new(*prompt_tokens, *completion_tokens));
        }
    }

    /// The usage of the `llm_call` events emitted so far.
    pub(crate) fn usage(&self) -> UsageTotals {
        *self.0.usage.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
