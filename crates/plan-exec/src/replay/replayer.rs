//! [`Replayer`]: serves a run's recorded calls by request, and notes where a replay
//! leaves the recording.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Mutex, PoisonError};

use plan_core::{CallKind, Event, EventKind, RecordedCall, StepId};

use crate::store::StoredRun;

/// The recorded calls of one run, served by request hash: identical requests get their
/// replies in the order they were recorded.
pub struct Replayer {
    state: Mutex<State>,
}

struct State {
    calls: Vec<RecordedCall>,
    used: Vec<bool>,
    by_key: HashMap<String, VecDeque<usize>>,
    served: usize,
    divergences: Vec<Divergence>,
}

impl std::fmt::Debug for Replayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("Replayer")
            .field("recorded", &s.calls.len())
            .field("served", &s.served)
            .finish_non_exhaustive()
    }
}

impl Replayer {
    /// The calls recorded in `events`, in journal order.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let calls: Vec<RecordedCall> = events
            .into_iter()
            .filter_map(|e| match &e.kind {
                EventKind::CallRecorded { call } => Some(call.clone()),
                _ => None,
            })
            .collect();
        let mut by_key: HashMap<String, VecDeque<usize>> = HashMap::new();
        for (i, c) in calls.iter().enumerate() {
            by_key.entry(c.key.clone()).or_default().push_back(i);
        }
        Self {
            state: Mutex::new(State {
                used: vec![false; calls.len()],
                calls,
                by_key,
                served: 0,
                divergences: Vec::new(),
            }),
        }
    }

    /// The calls `stored` recorded.
    pub fn of(stored: &StoredRun) -> Self {
        Self::from_events(&stored.events)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many calls the run recorded.
    pub fn recorded(&self) -> usize {
        self.lock().calls.len()
    }

    /// How many of them were served so far.
    pub fn served(&self) -> usize {
        self.lock().served
    }

    /// The first request the recording did not hold, if there was one.
    pub fn divergence(&self) -> Option<Divergence> {
        self.lock().divergences.first().cloned()
    }

    /// The recorded calls nobody asked for (the replay made fewer calls than the run).
    pub fn unserved(&self) -> Vec<RecordedCall> {
        let s = self.lock();
        s.calls
            .iter()
            .zip(&s.used)
            .filter(|(_, used)| !**used)
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// The capabilities the model named `name` had when the run shaped its next call:
    /// those recorded with the first of its calls not served yet (the last one's once all
    /// are; the first model's when no call names it; the defaults when none was
    /// recorded). A model's capabilities can change during a run, as an adapter learns
    /// what its server takes.
    pub fn capabilities(&self, name: &str) -> plan_llm::Capabilities {
        let s = self.lock();
        let named = |c: &RecordedCall| {
            c.reply
                .pointer("/by/name")
                .and_then(serde_json::Value::as_str)
                == Some(name)
        };
        let models: Vec<(&RecordedCall, bool)> = s
            .calls
            .iter()
            .zip(s.used.iter().copied())
            .filter(|(c, _)| c.kind == CallKind::Model && c.reply.get("by").is_some())
            .collect();
        let pick = |only_named: bool| {
            let mine = || models.iter().filter(|(c, _)| !only_named || named(c));
            mine()
                .find(|(_, used)| !used)
                .or_else(|| mine().next_back())
                .map(|(c, _)| *c)
        };
        let found = pick(true).or_else(|| pick(false));
        let flag = |key: &str| {
            found
                .and_then(|c| c.reply.pointer(&format!("/by/capabilities/{key}")))
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false)
        };
        plan_llm::Capabilities::default()
            .with_streaming(flag("streaming"))
            .with_json_schema(flag("json_schema"))
            .with_json_object(flag("json_object"))
            .with_tools(flag("tools"))
    }

    /// Every tool the run's model calls were offered (by name, the first spec recorded
    /// for each), in name order: what a replay offers in their place, so that its
    /// requests list the same tools without their servers being started.
    pub fn tool_specs(&self) -> Vec<plan_llm::ToolSpec> {
        let s = self.lock();
        let mut specs: std::collections::BTreeMap<String, plan_llm::ToolSpec> =
            std::collections::BTreeMap::new();
        for c in s.calls.iter().filter(|c| c.kind == CallKind::Model) {
            let Some(tools) = c.reply.pointer("/by/tools").and_then(|t| t.as_array()) else {
                continue;
            };
            for t in tools {
                if let Ok(spec) = serde_json::from_value::<plan_llm::ToolSpec>(t.clone()) {
                    specs.entry(spec.name.clone()).or_insert(spec);
                }
            }
        }
        specs.into_values().collect()
    }

    /// The reply recorded for the request with `key`, or the divergence.
    pub(crate) fn serve(
        &self,
        kind: CallKind,
        purpose: &str,
        step: Option<&StepId>,
        key: &str,
        request: serde_json::Value,
    ) -> Result<serde_json::Value, Box<Divergence>> {
        let mut s = self.lock();
        let found = s.by_key.get_mut(key).and_then(VecDeque::pop_front);
        if let Some(i) = found {
            s.used[i] = true;
            s.served += 1;
            return Ok(s.calls[i].reply.clone());
        }
        // The recorded call this one stands in for: the first unserved one for the same
        // step and purpose, else for the same purpose.
        let same = |c: &RecordedCall, with_step: bool| {
            c.kind == kind
                && c.purpose.as_deref() == Some(purpose)
                && (!with_step || c.step.as_ref() == step)
        };
        let nearest = [true, false].into_iter().find_map(|with_step| {
            s.calls
                .iter()
                .zip(&s.used)
                .find(|(c, used)| !**used && same(c, with_step))
                .map(|(c, _)| c.clone())
        });
        let divergence = Divergence {
            kind,
            purpose: purpose.to_owned(),
            step: step.cloned(),
            recorded_request: nearest.as_ref().and_then(|c| c.request.clone()),
            had_counterpart: nearest.is_some(),
            request,
            reason: None,
        };
        s.divergences.push(divergence.clone());
        Err(Box::new(divergence))
    }
}

/// A call a replay made that the recording does not hold: the first place where the
/// current code, prompts or settings act differently from the recorded run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Divergence {
    /// A model, a tool or a program.
    pub kind: CallKind,
    /// What it was for (a model call's purpose, a tool's name, a program's language).
    pub purpose: String,
    /// The step it served, if any.
    pub step: Option<StepId>,
    /// The request as the replay made it.
    pub request: serde_json::Value,
    /// The request the run made in its place, when the run recorded requests in full.
    pub recorded_request: Option<serde_json::Value>,
    /// Whether the run made a call of this kind and purpose (for this step) at all.
    pub had_counterpart: bool,
    /// Why the recorded reply could not be used, when it was found but is unreadable.
    pub reason: Option<String>,
}

impl Divergence {
    pub(crate) fn unreadable(reason: String) -> Box<Self> {
        Box::new(Self {
            kind: CallKind::Model,
            purpose: String::new(),
            step: None,
            request: serde_json::Value::Null,
            recorded_request: None,
            had_counterpart: true,
            reason: Some(reason),
        })
    }

    /// A line-by-line diff of the recorded request against the replay's (`-` recorded,
    /// `+` now), when the run recorded requests in full.
    pub fn request_diff(&self) -> Option<String> {
        let before = serde_json::to_string_pretty(self.recorded_request.as_ref()?).ok()?;
        let after = serde_json::to_string_pretty(&self.request).ok()?;
        let diff = similar::TextDiff::from_lines(&before, &after);
        Some(
            diff.unified_diff()
                .context_radius(2)
                .header("recorded", "replay")
                .to_string(),
        )
    }
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(reason) = &self.reason {
            return write!(f, "a recorded reply cannot be read: {reason}");
        }
        write!(f, "the {} call", self.kind.as_str())?;
        if !self.purpose.is_empty() {
            write!(f, " for `{}`", self.purpose)?;
        }
        if let Some(step) = &self.step {
            write!(f, " of step `{step}`")?;
        }
        if self.had_counterpart {
            f.write_str(" made a request that differs from the one the run recorded")
        } else {
            f.write_str(" was never made by the recorded run")
        }
    }
}
