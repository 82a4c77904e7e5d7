//! Recording the calls a run makes outside itself, and replaying a run from them.
//!
//! Every model call, tool call and sandboxed program of a run is journaled with its reply
//! as a [`CallRecorded`](plan_core::EventKind::CallRecorded) event (journal only: never
//! sent to event sinks), keyed by a SHA-256 hash of the request. Replaying re-drives the
//! run's strategy and runner with every reply served from that journal, by request, so a
//! replay makes no call at all; a request the recording does not hold is a
//! [`Divergence`], named by its kind, purpose and step (with a diff of the request when
//! the run recorded requests in full).
//!
//! Which calls are recorded or replayed is decided per task: [`recording`] and
//! [`replaying`] set it for a future, the runner carries it into each step's task with the
//! step's id, and the three call sites — [`JournaledModel`] (every model of an agent),
//! plan-tools' `ToolSet` and the code step executor — look it up ([`call`]).

mod key;
mod model;
mod program;
mod replayer;
mod sandbox;

use std::future::Future;
use std::sync::Arc;

use plan_core::{CallKind, RecordedCall, StepId};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::session::RunSession;

pub use key::request_key;
pub use model::{JournaledModel, ReplayModel};
pub(crate) use program::{ProgramKey, RecordedOutput, recorded_output, recorded_run_output};
pub use replayer::{Divergence, Replayer};
pub use sandbox::ReplaySandbox;

/// What the current task does with the calls it makes.
#[derive(Clone)]
enum Mode {
    /// Make them, and journal each with its reply.
    Record { target: Target, full_requests: bool },
    /// Serve each from the recording; make none.
    Replay(Arc<Replayer>),
}

/// Where recorded calls go.
#[derive(Clone)]
enum Target {
    /// The run's journal.
    Session(RunSession),
    /// Someone who carries them to the run's journal (a fleet worker running a step of a
    /// run another process drives).
    Sink(Arc<dyn Fn(RecordedCall) + Send + Sync>),
}

impl Target {
    fn record(&self, call: RecordedCall) {
        match self {
            Target::Session(session) => session.record_call(call),
            Target::Sink(sink) => sink(call),
        }
    }
}

/// The mode of the current task and the step it runs, if any.
#[derive(Clone)]
pub(crate) struct Scope {
    mode: Mode,
    step: Option<StepId>,
}

tokio::task_local! {
    static SCOPE: Scope;
}

/// The current task's scope, if a run set one.
pub(crate) fn current() -> Option<Scope> {
    SCOPE.try_with(Clone::clone).ok()
}

/// Runs `fut` recording every call it makes (model, tool, program) in `session`'s
/// journal; with `full_requests`, each request is kept in full as well as its hash. Inside
/// a [`replaying`] scope it changes nothing: a replay records nothing.
pub async fn recording<F: Future>(session: &RunSession, full_requests: bool, fut: F) -> F::Output {
    if current().is_some_and(|s| matches!(s.mode, Mode::Replay(_))) {
        return fut.await;
    }
    let scope = Scope {
        mode: Mode::Record {
            target: Target::Session(session.clone()),
            full_requests,
        },
        step: None,
    };
    SCOPE.scope(scope, fut).await
}

/// Runs `fut`, the work of step `step` of a run journaled elsewhere, handing each call it
/// makes to `sink` with its reply: a fleet worker sends them back with the step's result,
/// and the process that drives the run journals them ([`forward`]).
pub async fn recording_into<F: Future>(
    sink: Arc<dyn Fn(RecordedCall) + Send + Sync>,
    step: StepId,
    full_requests: bool,
    fut: F,
) -> F::Output {
    let scope = Scope {
        mode: Mode::Record {
            target: Target::Sink(sink),
            full_requests,
        },
        step: Some(step),
    };
    SCOPE.scope(scope, fut).await
}

/// Whether the current task records requests in full (see [`recording`]): what a step
/// run elsewhere is told, so its calls are recorded as the run's are.
pub fn records_full_requests() -> bool {
    matches!(
        current(),
        Some(Scope {
            mode: Mode::Record {
                full_requests: true,
                ..
            },
            ..
        })
    )
}

/// Journals `call`, made on the current task's behalf somewhere else (a fleet worker's
/// [`recording_into`]), as the current task's own calls are journaled; a no-op when the
/// current task records nothing.
pub fn forward(call: RecordedCall) {
    if let Some(Scope {
        mode: Mode::Record { target, .. },
        ..
    }) = current()
    {
        target.record(call);
    }
}

/// Runs `fut` with every call it makes served by `replayer` instead.
pub async fn replaying<F: Future>(replayer: Arc<Replayer>, fut: F) -> F::Output {
    let scope = Scope {
        mode: Mode::Replay(replayer),
        step: None,
    };
    SCOPE.scope(scope, fut).await
}

/// `fut` in `scope` (the spawning task's), for step `step`: how the runner carries the
/// scope into a step's task.
pub(crate) async fn in_step<F: Future>(scope: Option<Scope>, step: StepId, fut: F) -> F::Output {
    match scope {
        Some(mut scope) => {
            scope.step = Some(step);
            SCOPE.scope(scope, fut).await
        }
        None => fut.await,
    }
}

/// What a call site does with one call.
pub enum Call<R> {
    /// Make it; then [`Recorder::done`] journals the reply (when recording).
    Make(Recorder),
    /// Do not make it: here is the recorded reply.
    Served(R),
}

/// Journals one call's reply once it is made.
pub struct Recorder {
    record: Option<Box<(Target, RecordedCall)>>,
}

impl Recorder {
    fn off() -> Self {
        Self { record: None }
    }

    /// Whether the reply will be journaled (what it costs to describe it is then worth it).
    pub fn is_on(&self) -> bool {
        self.record.is_some()
    }

    /// Journals `reply` (a no-op outside a recording scope).
    pub fn done<T: Serialize, E: Serialize>(self, reply: &Result<T, E>) {
        self.done_with(reply, None);
    }

    /// Journals `reply` with `about` beside it (what answered: a model's name and
    /// capabilities).
    pub fn done_with<T: Serialize, E: Serialize>(
        self,
        reply: &Result<T, E>,
        about: Option<serde_json::Value>,
    ) {
        let Some(record) = self.record else {
            return;
        };
        let (target, mut call) = *record;
        let mut value = match reply {
            Ok(v) => serde_json::json!({ "ok": v }),
            Err(e) => serde_json::json!({ "err": e }),
        };
        if let (Some(about), Some(map)) = (about, value.as_object_mut()) {
            map.insert("by".to_owned(), about);
        }
        call.reply = value;
        target.record(call);
    }
}

/// Decides what to do with a call of `kind` for `purpose` whose request is `request`:
/// outside any scope, make it; recording, make it and journal the reply; replaying,
/// serve the recorded reply (or the error `diverged` makes of the divergence).
pub fn call<Q, T, E>(
    kind: CallKind,
    purpose: &str,
    request: &Q,
    diverged: impl FnOnce(&Divergence) -> E,
) -> Call<Result<T, E>>
where
    Q: Serialize,
    T: DeserializeOwned,
    E: DeserializeOwned,
{
    let Some(scope) = current() else {
        return Call::Make(Recorder::off());
    };
    let (key, value) = request_key(kind, request);
    match scope.mode {
        Mode::Record {
            target,
            full_requests,
        } => {
            let mut call = RecordedCall::new(kind, key, serde_json::Value::Null)
                .with_purpose(purpose)
                .with_step(scope.step);
            if full_requests {
                call = call.with_request(value);
            }
            Call::Make(Recorder {
                record: Some(Box::new((target, call))),
            })
        }
        Mode::Replay(replayer) => {
            let served = replayer
                .serve(kind, purpose, scope.step.as_ref(), &key, value)
                .and_then(decode::<T, E>);
            Call::Served(served.unwrap_or_else(|d| Err(diverged(&d))))
        }
    }
}

/// A recorded reply (`{"ok": ...}` or `{"err": ...}`) as the caller's result.
fn decode<T: DeserializeOwned, E: DeserializeOwned>(
    reply: serde_json::Value,
) -> Result<Result<T, E>, Box<Divergence>> {
    let bad = |e: serde_json::Error| Divergence::unreadable(e.to_string());
    match reply {
        serde_json::Value::Object(mut m) => {
            if let Some(ok) = m.remove("ok") {
                Ok(Ok(serde_json::from_value(ok).map_err(bad)?))
            } else if let Some(err) = m.remove("err") {
                Ok(Err(serde_json::from_value(err).map_err(bad)?))
            } else {
                Err(Divergence::unreadable("neither `ok` nor `err`".to_owned()))
            }
        }
        _ => Err(Divergence::unreadable("not an object".to_owned())),
    }
}
