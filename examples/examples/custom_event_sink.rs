//! An event sink of your own: implement `plan_exec::events::EventSink` to watch a run as it
//! happens. This one counts events per kind and writes a progress line on stderr; a real
//! one might feed metrics or a UI. Sinks are called from the runner's tasks, so they must
//! be quick: count, format, or hand the event to a channel.
//!
//!     cargo run -p plan-examples --example custom_event_sink

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use plan_core::{Event, EventKind};
use plan_exec::events::EventSink;
use plan_llm::{Purpose, Reply, ScriptedModel};
use plan_strategies::Agent;

/// Counts events by kind and prints progress.
#[derive(Default)]
struct Counter {
    counts: Mutex<BTreeMap<&'static str, usize>>,
    progress: Mutex<Vec<(usize, usize)>>,
}

impl EventSink for Counter {
    fn on_event(&self, event: &Event) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(event.kind.name())
            .or_default() += 1;
        match &event.kind {
            EventKind::Progress {
                done,
                total,
                percent,
            } => {
                eprintln!("[{:>3.0}%] {done}/{total} steps", percent);
                self.progress
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((*done, *total));
            }
            EventKind::StepStarted { step, attempt } => {
                eprintln!("       {step} started (attempt {attempt})");
            }
            _ => {}
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let model = ScriptedModel::new()
        .when_purpose(
            Purpose::Plan,
            Reply::text(
                r#"{"goal": "trip", "steps": [
                {"id": "trains", "description": "Find trains from Paris to Lyon", "dependencies": []},
                {"id": "hotels", "description": "Find hotels in Lyon", "dependencies": []},
                {"id": "budget", "description": "Add up the cost", "dependencies": ["trains", "hotels"]}
            ]}"#,
            ),
        )
        .when_purpose(
            Purpose::Synthesize, Reply::text("Train at 9:00, hotel by the river, 240 EUR."))
        .otherwise(Reply::text("found some"));
    let counter = Arc::new(Counter::default());
    let agent = Agent::builder()
        .provider(model)
        .event_sink(counter.clone())
        .build()?;
    let report = agent.run("Plan a weekend in Lyon").await?;
    println!("{}\n", report.answer.as_deref().unwrap_or("(no answer)"));

    let counts = counter
        .counts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for (kind, n) in &counts {
        println!("{kind:<15} {n}");
    }

    anyhow::ensure!(report.is_success(), "the run failed: {:?}", report.failure);
    let count = |kind: &str| counts.get(kind).copied().unwrap_or(0);
    anyhow::ensure!(
        count("run_started") == 1 && count("run_finished") == 1,
        "{counts:?}"
    );
    anyhow::ensure!(count("plan_created") == 1, "{counts:?}");
    anyhow::ensure!(
        count("step_started") == 3 && count("step_completed") == 3,
        "{counts:?}"
    );
    // One planning call, three steps, one answer.
    anyhow::ensure!(count("llm_call") == 5, "{counts:?}");
    // The sink saw exactly the events the report holds.
    let total: usize = counts.values().sum();
    anyhow::ensure!(
        total == report.events.len(),
        "the sink saw {total} events, the report has {}",
        report.events.len()
    );
    let progress = counter.progress.lock().unwrap_or_else(|e| e.into_inner());
    anyhow::ensure!(
        progress.last() == Some(&(3, 3)),
        "progress should end at 3/3: {progress:?}"
    );
    Ok(())
}
