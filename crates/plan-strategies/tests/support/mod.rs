//! Shared helpers: a scripted model that plays planner, critic, decomposer, step worker
//! and writer, and records what each was asked.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plan_core::{Event, EventKind};
use plan_exec::policy::{RunOptions, StepPolicy};
use plan_llm::{Capabilities, LlmError, Purpose, Reply, Request, Role, ScriptedModel};

/// What a step worker answers for a step id.
pub type StepFn = Arc<dyn Fn(&str, &Request) -> Result<String, String> + Send + Sync>;

#[derive(Default)]
struct Queues {
    plans: VecDeque<String>,
    critiques: VecDeque<String>,
    decompositions: HashMap<String, String>,
    default_decomposition: Option<String>,
}

/// A fake model with a role per system prompt.
#[derive(Clone)]
pub struct Fake {
    queues: Arc<Mutex<Queues>>,
    steps: Arc<Mutex<StepFn>>,
    pub model: ScriptedModel,
}

pub fn user_text(r: &Request) -> String {
    r.messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.clone())
        .unwrap_or_default()
}

pub fn system_text(r: &Request) -> String {
    r.messages
        .iter()
        .find(|m| m.role == Role::System)
        .map(|m| m.content.clone())
        .unwrap_or_default()
}

/// The step id of a step request (`Your step (`a`)` or `Check to make (step `a`)`).
pub fn step_of(r: &Request) -> Option<String> {
    let u = user_text(r);
    for marker in ["Your step (`", "Check to make (step `"] {
        if let Some(i) = u.find(marker) {
            let rest = &u[i + marker.len()..];
            return rest.find('`').map(|j| rest[..j].to_owned());
        }
    }
    None
}

pub fn is_planner(r: &Request) -> bool {
    matches!(
        r.purpose,
        Some(Purpose::Plan | Purpose::Replan | Purpose::Improve)
    )
}

/// Whether the request is for `purpose`.
pub fn is_for(r: &Request, purpose: Purpose) -> bool {
    r.purpose == Some(purpose)
}

impl Fake {
    pub fn new() -> Self {
        Self::with_model(ScriptedModel::new())
    }

    /// A fake over a model configured by the caller (capabilities, streaming).
    pub fn with_model(model: ScriptedModel) -> Self {
        let queues: Arc<Mutex<Queues>> = Arc::default();
        let steps: Arc<Mutex<StepFn>> = Arc::new(Mutex::new(Arc::new(|id: &str, _: &Request| {
            Ok(format!("output of {id}"))
        })));
        let (q, s) = (queues.clone(), steps.clone());
        let model = model.respond_with(move |r: &Request| {
            let mut q = q.lock().unwrap();
            if is_planner(r) {
                return match q.plans.pop_front() {
                    Some(p) => Reply::text(p),
                    None => Reply::error(LlmError::Config("no plan scripted".into())),
                };
            }
            if is_for(r, Purpose::Critique) {
                return match q.critiques.pop_front() {
                    Some(c) => Reply::text(c),
                    None => Reply::text(r#"{"approved": true, "issues": []}"#),
                };
            }
            if is_for(r, Purpose::Decompose) {
                let u = user_text(r);
                let goal = u
                    .lines()
                    .rev()
                    .find_map(|l| l.strip_prefix("Goal: "))
                    .unwrap_or_default()
                    .to_owned();
                return match q
                    .decompositions
                    .get(&goal)
                    .or(q.default_decomposition.as_ref())
                {
                    Some(d) => Reply::text(d.clone()),
                    None => Reply::text(r#"{"atomic": true, "subgoals": []}"#),
                };
            }
            if is_for(r, Purpose::Synthesize) {
                return Reply::text("THE ANSWER");
            }
            drop(q);
            let f = s.lock().unwrap().clone();
            let id = step_of(r).unwrap_or_default();
            match f(&id, r) {
                Ok(out) => Reply::text(out),
                Err(e) => Reply::error(LlmError::BadRequest {
                    provider: "fake".into(),
                    status: 400,
                    message: e,
                }),
            }
        });
        Self {
            queues,
            steps,
            model,
        }
    }

    /// A fake whose provider cannot stream (plan-then-run).
    pub fn non_streaming() -> Self {
        let mut caps = Capabilities::default();
        caps.json_schema = true;
        Self::with_model(ScriptedModel::new().with_capabilities(caps))
    }

    pub fn plan(self, text: impl Into<String>) -> Self {
        self.queues.lock().unwrap().plans.push_back(text.into());
        self
    }

    pub fn critique(self, text: impl Into<String>) -> Self {
        self.queues.lock().unwrap().critiques.push_back(text.into());
        self
    }

    pub fn decompose(self, goal: &str, text: impl Into<String>) -> Self {
        self.queues
            .lock()
            .unwrap()
            .decompositions
            .insert(goal.to_owned(), text.into());
        self
    }

    pub fn decompose_default(self, text: impl Into<String>) -> Self {
        self.queues.lock().unwrap().default_decomposition = Some(text.into());
        self
    }

    pub fn steps(
        self,
        f: impl Fn(&str, &Request) -> Result<String, String> + Send + Sync + 'static,
    ) -> Self {
        *self.steps.lock().unwrap() = Arc::new(f);
        self
    }

    pub fn requests(&self) -> Vec<Request> {
        self.model.requests()
    }

    /// Step ids of the step requests, in order.
    pub fn step_requests(&self) -> Vec<String> {
        self.requests().iter().filter_map(step_of).collect()
    }

    pub fn planner_requests(&self) -> Vec<Request> {
        self.requests().into_iter().filter(is_planner).collect()
    }
}

/// Run options for tests: no retries, so failures are immediate.
pub fn no_retries() -> RunOptions {
    RunOptions::default().with_policy(StepPolicy::default().with_retries(0))
}

pub fn names(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}

pub fn find(events: &[Event], f: impl Fn(&EventKind) -> bool) -> Option<&Event> {
    events.iter().find(|e| f(&e.kind))
}

pub fn position(events: &[Event], f: impl Fn(&EventKind) -> bool) -> Option<usize> {
    events.iter().position(|e| f(&e.kind))
}

pub fn plan_json(steps: &[(&str, &str, &[&str])]) -> String {
    let steps: Vec<serde_json::Value> = steps
        .iter()
        .map(|(id, d, deps)| serde_json::json!({"id": id, "description": d, "dependencies": deps}))
        .collect();
    serde_json::json!({"goal": "g", "steps": steps}).to_string()
}

pub const SLOW: Duration = Duration::from_millis(40);
