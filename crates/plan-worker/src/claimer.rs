//! Claiming step tasks on a thread of its own: a worker's runtime is busy with the steps
//! it runs and the runs it drives, and a claim that waited its turn there would leave new
//! tasks queued for tens of milliseconds. The claimer listens for new tasks
//! (`NOTIFY plan_steps`) and claims as many as the worker has room for, in one statement,
//! on its own runtime and connections, and hands them to the worker.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plan_core::RunId;
use plan_exec::error::StoreError;
use plan_postgres::{PostgresStore, StepClaim};
use tokio::sync::{Notify, mpsc};

/// What the worker and its claimer share.
struct Shared {
    /// Free step slots.
    room: AtomicUsize,
    /// Set when the last claim filled every free slot: tasks may be left to claim once a
    /// slot frees.
    saturated: AtomicBool,
    stop: AtomicBool,
    wake: Notify,
    /// Runs this worker cannot serve.
    skip: Mutex<Vec<RunId>>,
}

/// The worker's side of its claimer thread: claimed tasks arrive on [`Claimer::next`],
/// each to run holding a [`Slot`]. Dropping it stops the thread.
pub(crate) struct Claimer {
    shared: Arc<Shared>,
    claims: mpsc::UnboundedReceiver<Vec<StepClaim>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Claimer {
    /// Starts claiming for `worker` from `store` (through a pool of the claimer's own),
    /// at most `room` tasks held at once, under leases of `ttl`; looks without a
    /// notification every `poll`.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be listened to.
    pub(crate) fn start(
        store: &PostgresStore,
        worker: &str,
        room: usize,
        ttl: Duration,
        poll: Duration,
    ) -> Result<Claimer, StoreError> {
        // Claims are not retried through an outage (the claimer looks again after
        // `poll`, and a stop must not wait for the database).
        let store = store.with_own_pool()?.with_outage_bound(Duration::ZERO);
        let shared = Arc::new(Shared {
            room: AtomicUsize::new(room),
            saturated: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            wake: Notify::new(),
            skip: Mutex::new(Vec::new()),
        });
        let (tx, claims) = mpsc::unbounded_channel();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let (on, worker) = (shared.clone(), worker.to_owned());
        let thread = std::thread::Builder::new()
            .name("plan-step-claimer".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(StoreError::new(format!(
                            "cannot start the step claimer: {e}"
                        ))));
                        return;
                    }
                };
                rt.block_on(claim_loop(store, worker, ttl, poll, on, tx, ready_tx));
            })
            .map_err(|e| StoreError::new(format!("cannot start the step claimer: {e}")))?;
        let mut claimer = Claimer {
            shared,
            claims,
            thread: Some(thread),
        };
        match ready.recv() {
            Ok(Ok(())) => Ok(claimer),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                claimer.thread.take();
                Err(StoreError::new("the step claimer stopped at start"))
            }
        }
    }

    /// The next tasks claimed.
    pub(crate) async fn next(&mut self) -> Option<Vec<StepClaim>> {
        self.claims.recv().await
    }

    /// The slot of a claimed task: freed when dropped (its step ran), and tasks left for
    /// want of one are claimed then.
    pub(crate) fn slot(&self) -> Slot {
        Slot {
            shared: self.shared.clone(),
        }
    }

    /// The worker's step slots, for a driver that runs its own run's steps when one is
    /// free ([`Slots::try_take`]).
    pub(crate) fn slots(&self) -> Slots {
        Slots {
            shared: self.shared.clone(),
        }
    }

    /// Passes over the tasks of `run` from now on (this worker cannot serve it).
    pub(crate) fn skip(&self, run: RunId) {
        let mut skip = self.shared.skip.lock().unwrap_or_else(|e| e.into_inner());
        if !skip.contains(&run) {
            skip.push(run);
        }
        drop(skip);
        self.shared.wake.notify_one();
    }
}

/// The step slots of a worker, shared by its claimer and its drivers ([`Claimer::slots`]).
#[derive(Clone)]
pub(crate) struct Slots {
    shared: Arc<Shared>,
}

impl Slots {
    /// A free slot, taken now, or `None` when every slot is held (or the claimer is
    /// claiming with the free ones).
    pub(crate) fn try_take(&self) -> Option<Slot> {
        self.shared
            .room
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |room| {
                room.checked_sub(1)
            })
            .ok()
            .map(|_| Slot {
                shared: self.shared.clone(),
            })
    }
}

/// A claimed task's step slot ([`Claimer::slot`]).
pub(crate) struct Slot {
    shared: Arc<Shared>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.room.fetch_add(1, Ordering::SeqCst);
        if self.shared.saturated.swap(false, Ordering::SeqCst) {
            self.shared.wake.notify_one();
        }
    }
}

impl Drop for Claimer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
        // The thread ends within one claim; it is not waited for.
        drop(self.thread.take());
    }
}

async fn claim_loop(
    store: PostgresStore,
    worker: String,
    ttl: Duration,
    poll: Duration,
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Vec<StepClaim>>,
    ready: std::sync::mpsc::Sender<Result<(), StoreError>>,
) {
    let listener = match store.steps_listener().await {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut unreachable = false;
    let mut look = true;
    while !shared.stop.load(Ordering::SeqCst) {
        // The free slots are reserved for this claim (a driver running its own steps
        // takes none meanwhile); those it leaves are given back.
        let room = if look {
            shared.room.swap(0, Ordering::SeqCst)
        } else {
            0
        };
        if look && room == 0 {
            // Tasks may wait for a slot: the next one freed wakes this loop.
            shared.saturated.store(true, Ordering::SeqCst);
        }
        if look && room > 0 {
            let skip = shared
                .skip
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            match store.claim_steps(&worker, ttl, &skip, room).await {
                Ok(claimed) => {
                    crate::back_again(&worker, &mut unreachable);
                    // Fewer than asked for: none are left until more are announced.
                    look = claimed.len() == room;
                    shared
                        .room
                        .fetch_add(room - claimed.len(), Ordering::SeqCst);
                    if look {
                        shared.saturated.store(true, Ordering::SeqCst);
                    }
                    if !claimed.is_empty() && tx.send(claimed).is_err() {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    shared.room.fetch_add(room, Ordering::SeqCst);
                    // Tried again after `poll`, or when the listener is back.
                    crate::cannot_claim(&worker, &e, &mut unreachable);
                }
            }
        }
        tokio::select! {
            () = listener.wait(poll) => look = true,
            () = shared.wake.notified() => look = true,
        }
    }
}
