//! A run store of your own: implement `plan_exec::store::RunStore` (here over a
//! `Mutex<HashMap>`), prove it with the store conformance suite
//! (`plan_exec::conformance::check_store`, feature `test-support`), then journal an
//! agent's run in it and read the report back with `RunReport::from_stored`, as
//! `plan show` would.
//!
//! A server database (PostgreSQL, ...) implements the same nine methods; the runner, the
//! run session and every strategy work with it unchanged.
//!
//!     cargo run -p plan-examples --example custom_store

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::ensure;
use async_trait::async_trait;
use plan_core::{Event, Plan, RunId, RunStatus, Timestamp};
use plan_exec::conformance::check_store;
use plan_exec::error::StoreError;
use plan_exec::report::RunReport;
use plan_exec::store::{
    JournalEntry, PlanRevision, RunEnd, RunRecord, RunStore, RunSummary, StepOutputRecord,
    StoredRun,
};
use plan_llm::{Purpose, Reply, ScriptedModel};
use plan_strategies::Agent;

/// Every run in memory, as `load_run` returns it. One lock makes each call atomic, which
/// is what `commit_output` needs: the output and its events land together or not at all.
#[derive(Default)]
pub struct MemoryStore {
    runs: Mutex<HashMap<RunId, StoredRun>>,
}

impl MemoryStore {
    fn lock(&self) -> MutexGuard<'_, HashMap<RunId, StoredRun>> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `f` to a run, or fails naming the run.
    fn with_run<T>(
        &self,
        run: &RunId,
        f: impl FnOnce(&mut StoredRun) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut runs = self.lock();
        let stored = runs.get_mut(run).ok_or_else(|| {
            StoreError::new(format!(
                "no run `{run}` in the memory store; list the runs to see which exist"
            ))
        })?;
        let out = f(stored)?;
        stored.updated = Timestamp::now();
        Ok(out)
    }
}

#[async_trait]
impl RunStore for MemoryStore {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let mut runs = self.lock();
        if runs.contains_key(&run.id) {
            return Err(StoreError::new(format!(
                "run `{}` exists already; create runs with fresh ids",
                run.id
            )));
        }
        runs.insert(run.id.clone(), StoredRun::new(run.clone()));
        Ok(())
    }

    async fn save_plan(&self, run: &RunId, revision: u32, plan: &Plan) -> Result<(), StoreError> {
        self.with_run(run, |r| {
            r.plans.retain(|p| p.revision != revision);
            r.plans.push(PlanRevision::new(revision, plan.clone()));
            r.plans.sort_by_key(|p| p.revision);
            Ok(())
        })
    }

    async fn append_events(&self, run: &RunId, events: &[Event]) -> Result<(), StoreError> {
        self.with_run(run, |r| {
            r.events.extend_from_slice(events);
            Ok(())
        })
    }

    async fn commit_output(
        &self,
        run: &RunId,
        output: &StepOutputRecord,
        events: &[Event],
    ) -> Result<(), StoreError> {
        self.with_run(run, |r| {
            if r.output(output.step.as_str()).is_some() {
                return Err(StoreError::new(format!(
                    "step `{}` of run `{run}` has an output already; a completed step is \
                     never redone",
                    output.step
                )));
            }
            r.events.extend_from_slice(events);
            r.outputs.push(output.clone());
            Ok(())
        })
    }

    async fn set_status(&self, run: &RunId, status: RunStatus) -> Result<(), StoreError> {
        self.with_run(run, |r| {
            r.status = status;
            Ok(())
        })
    }

    async fn finish_run(&self, run: &RunId, end: &RunEnd) -> Result<(), StoreError> {
        self.with_run(run, |r| {
            r.status = end.status;
            r.answer.clone_from(&end.answer);
            r.failure.clone_from(&end.failure);
            r.extras.clone_from(&end.extras);
            Ok(())
        })
    }

    async fn list_runs(&self) -> Result<Vec<RunSummary>, StoreError> {
        let runs = self.lock();
        let mut list: Vec<RunSummary> = runs.values().map(RunSummary::of).collect();
        // Newest first; ids break ties (they sort by creation time too).
        list.sort_by(|a, b| (b.created, &b.id).cmp(&(a.created, &a.id)));
        Ok(list)
    }

    async fn load_run(&self, run: &RunId) -> Result<Option<StoredRun>, StoreError> {
        Ok(self.lock().get(run).cloned())
    }

    async fn events_after(
        &self,
        run: &RunId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let runs = self.lock();
        let Some(r) = runs.get(run) else {
            return Ok(Vec::new());
        };
        Ok(r.events
            .iter()
            .enumerate()
            .skip(usize::try_from(after).unwrap_or(usize::MAX))
            .take(limit)
            .map(|(i, e)| JournalEntry::new(i as u64 + 1, e.clone()))
            .collect())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // 1. The store keeps the contract the runners rely on.
    let report = check_store(Arc::new(MemoryStore::default())).await;
    println!("{report}");
    report.into_result()?;

    // 2. An agent journals its run in it.
    let store = Arc::new(MemoryStore::default());
    let agent = Agent::builder()
        .provider(offline_model())
        .store(store.clone())
        .build()?;
    let live = agent.run("Write a haiku about Rust").await?;
    ensure!(live.is_success(), "the run failed: {:?}", live.failure);

    // 3. Read it back, as `plan show` would: the same report.
    let stored = store
        .load_run(&live.run_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("run {} is not in the store", live.run_id))?;
    let shown = RunReport::from_stored(&stored);
    ensure!(
        serde_json::to_value(&shown)? == serde_json::to_value(&live)?,
        "the report read back differs from the one the run returned"
    );
    let listed = store.list_runs().await?;
    ensure!(
        listed.len() == 1 && listed[0].steps_done == 3 && listed[0].steps_total == 3,
        "the store lists {listed:?}"
    );
    println!("\nrun {} read back from the memory store:", shown.run_id);
    println!("{}", shown.to_json_pretty());
    Ok(())
}

/// A scripted model: a three-step plan, a line per step, and the answer.
fn offline_model() -> ScriptedModel {
    ScriptedModel::new()
        .when_purpose(
            Purpose::Plan,
            Reply::text(
                r#"{"goal": "haiku", "steps": [
                {"id": "line1", "description": "Write five syllables about safety", "dependencies": []},
                {"id": "line2", "description": "Write seven syllables about speed", "dependencies": []},
                {"id": "line3", "description": "Write five syllables about joy", "dependencies": ["line1", "line2"]}
            ]}"#,
            ),
        )
        .when_purpose(
            Purpose::Synthesize,
            Reply::text("Borrow checker hums\nzero-cost abstractions fly\ncargo builds, I smile"),
        )
        .otherwise(Reply::text("a line of the haiku"))
}
