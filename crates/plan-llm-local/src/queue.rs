//! A first-come, first-served queue for the one engine of a loaded model.
//!
//! A plain `Mutex` hands the lock to whichever waiter the OS wakes first, so a caller can
//! wait behind later ones for as long as they keep arriving. Here each caller takes a
//! [`Ticket`] when it asks (in the order of its request) and is served in ticket order. A
//! ticket dropped before its turn (the caller went away) is skipped without waking
//! anyone; a turn ends when its [`Turn`] is dropped, on a panic too.

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

#[derive(Default)]
struct State {
    /// The next ticket to hand out.
    next: u64,
    /// The ticket being served (or about to be).
    serving: u64,
    /// Tickets given up before their turn, skipped when it comes.
    abandoned: BTreeSet<u64>,
}

impl State {
    /// Ends the current turn: serves the next ticket still wanted.
    fn advance(&mut self) {
        self.serving += 1;
        while self.abandoned.remove(&self.serving) {
            self.serving += 1;
        }
    }
}

/// The queue (see the module docs).
#[derive(Default)]
pub(crate) struct Fifo {
    state: Mutex<State>,
    turn: Condvar,
}

impl Fifo {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The counters are updated in single statements: a panic elsewhere cannot leave
        // them half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place in the queue, behind every ticket taken before.
    pub(crate) fn ticket(self: &Arc<Self>) -> Ticket {
        let mut state = self.lock();
        let number = state.next;
        state.next += 1;
        drop(state);
        Ticket {
            queue: self.clone(),
            number,
            served: false,
        }
    }

    /// Callers waiting for their turn, the one being served included.
    pub(crate) fn len(&self) -> u64 {
        let state = self.lock();
        state.next - state.serving - state.abandoned.len() as u64
    }
}

/// A place in a [`Fifo`]; dropping it before [`Ticket::wait`] gives the place up.
pub(crate) struct Ticket {
    queue: Arc<Fifo>,
    number: u64,
    served: bool,
}

impl Ticket {
    /// Blocks until every earlier ticket has been served or given up.
    pub(crate) fn wait(mut self) -> Turn {
        let queue = self.queue.clone();
        let mut state = queue.lock();
        while state.serving != self.number {
            state = queue
                .turn
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        drop(state);
        self.served = true;
        Turn { queue }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.served {
            return;
        }
        let mut state = self.queue.lock();
        if state.serving == self.number {
            state.advance();
            drop(state);
            self.queue.turn.notify_all();
        } else {
            state.abandoned.insert(self.number);
        }
    }
}

/// The caller's turn: the next ticket is served when it is dropped.
pub(crate) struct Turn {
    queue: Arc<Fifo>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.queue.lock().advance();
        self.queue.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// Callers are served in the order they took their tickets, whatever order their
    /// threads start (and wake) in.
    #[test]
    fn callers_are_served_in_ticket_order() {
        let queue = Arc::new(Fifo::default());
        let first = queue.ticket().wait();
        let tickets: Vec<Ticket> = (0..5).map(|_| queue.ticket()).collect();
        assert_eq!(queue.len(), 6);
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|s| {
            // Started last ticket first: a plain Mutex would likely serve them so.
            for (i, ticket) in tickets.into_iter().enumerate().rev() {
                let tx = tx.clone();
                s.spawn(move || {
                    let _turn = ticket.wait();
                    tx.send(i).unwrap();
                });
            }
            drop(first);
        });
        drop(tx);
        assert_eq!(rx.iter().collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        assert_eq!(queue.len(), 0);
    }

    /// A ticket given up before its turn does not hold up the ones behind it, whether it
    /// is dropped while waiting behind others or when its turn has come.
    #[test]
    fn a_ticket_given_up_is_skipped() {
        let queue = Arc::new(Fifo::default());
        let first = queue.ticket().wait();
        let gone_early = queue.ticket();
        let gone_on_its_turn = queue.ticket();
        let last = queue.ticket();
        drop(gone_early);
        assert_eq!(queue.len(), 3);
        std::thread::scope(|s| {
            let waiter = s.spawn(move || drop(last.wait()));
            drop(first);
            // Its turn has come (the one before it was skipped); nobody claims it.
            drop(gone_on_its_turn);
            waiter.join().unwrap();
        });
        assert_eq!(queue.len(), 0);
        // The queue still serves new callers at once.
        drop(queue.ticket().wait());
    }

    /// A panic during a turn ends it: the next caller is served.
    #[test]
    fn a_panic_ends_the_turn() {
        let queue = Arc::new(Fifo::default());
        let panicked = std::thread::scope(|s| {
            s.spawn(|| {
                let _turn = queue.ticket().wait();
                panic!("boom");
            })
            .join()
        });
        assert!(panicked.is_err());
        drop(queue.ticket().wait());
        assert_eq!(queue.len(), 0);
    }
}
