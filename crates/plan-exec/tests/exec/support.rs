//! Shared helpers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plan_core::{EventKind, Plan, Step};
use plan_exec::context::StepContext;
use plan_exec::error::StepError;
use plan_exec::executor::{StepExecutor, executor_fn};

/// A plan from `(id, deps)` pairs; descriptions are `do <id>`.
pub fn plan(steps: &[(&str, &[&str])]) -> Plan {
    Plan::new(
        "test goal",
        steps
            .iter()
            .map(|(id, deps)| Step::new(*id, format!("do {id}")).depends_on(deps.iter().copied()))
            .collect(),
    )
}

/// Counts calls per step and the most steps running at once.
#[derive(Clone, Default)]
pub struct Probe {
    calls: Arc<Mutex<HashMap<String, usize>>>,
    order: Arc<Mutex<Vec<String>>>,
    running: Arc<AtomicUsize>,
    max_running: Arc<AtomicUsize>,
}

impl Probe {
    pub fn calls(&self, id: &str) -> usize {
        self.calls.lock().unwrap().get(id).copied().unwrap_or(0)
    }
    pub fn total_calls(&self) -> usize {
        self.calls.lock().unwrap().values().sum()
    }
    pub fn order(&self) -> Vec<String> {
        self.order.lock().unwrap().clone()
    }
    pub fn max_running(&self) -> usize {
        self.max_running.load(Ordering::SeqCst)
    }

    /// An executor that sleeps `latency(step id)` and returns `out(<id>)` plus the ids of
    /// the dependency outputs it saw.
    pub fn executor(
        &self,
        latency: impl Fn(&str) -> Duration + Send + Sync + 'static,
    ) -> impl StepExecutor + 'static {
        let probe = self.clone();
        let latency = Arc::new(latency);
        executor_fn(move |ctx: StepContext| {
            let probe = probe.clone();
            let latency = latency.clone();
            async move {
                let id = ctx.step().id.to_string();
                *probe.calls.lock().unwrap().entry(id.clone()).or_default() += 1;
                probe.order.lock().unwrap().push(id.clone());
                let now = probe.running.fetch_add(1, Ordering::SeqCst) + 1;
                probe.max_running.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(latency(&id)).await;
                probe.running.fetch_sub(1, Ordering::SeqCst);
                let seen: Vec<String> = ctx
                    .dependencies()
                    .iter()
                    .map(|d| d.id.to_string())
                    .collect();
                Ok::<_, StepError>(format!("out({id})<-[{}]", seen.join(",")))
            }
        })
    }
}

/// The names of the events, in order.
pub fn names(kinds: &[EventKind]) -> Vec<&'static str> {
    kinds.iter().map(EventKind::name).collect()
}

/// Position of the first event matching `f`.
pub fn position(kinds: &[EventKind], f: impl Fn(&EventKind) -> bool) -> usize {
    kinds.iter().position(f).expect("event not found")
}

pub fn started(step: &str) -> impl Fn(&EventKind) -> bool + '_ {
    move |k| matches!(k, EventKind::StepStarted { step: s, .. } if s.as_str() == step)
}

pub fn completed(step: &str) -> impl Fn(&EventKind) -> bool + '_ {
    move |k| matches!(k, EventKind::StepCompleted { step: s, .. } if s.as_str() == step)
}
