//! The durable run store: the [`RunStore`] trait, its records, and run ids.

mod follow;
mod prune;

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use plan_core::{Event, Plan, RunId, RunStatus, StepId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

pub use follow::{follow, follow_with};
pub use prune::{Prune, Pruned, PrunedRun, Retention, format_age, keep_pruning, parse_age};

/// What a run was started with: enough to show it and to resume it.
///
/// Never put a secret here: the model is recorded as its `provider:model` spec and its
/// base URL only (user info and query strings are stripped from the URL).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunRecord {
    /// The run's id.
    pub id: RunId,
    /// The goal.
    pub goal: String,
    /// When the run was created.
    pub created: Timestamp,
    /// The strategy (`linear`, `dag`, ...), if any.
    pub strategy: Option<String>,
    /// The model spec (`openai:gpt-4o-mini`), if any.
    pub model: Option<String>,
    /// The model's base URL, if one was given.
    pub base_url: Option<String>,
    /// Run options as the caller wants them kept (JSON), for resume and display.
    pub options: serde_json::Value,
}

impl RunRecord {
    /// A record for a new run with a fresh id.
    pub fn new(goal: impl Into<String>) -> Self {
        Self {
            id: new_run_id(),
            goal: goal.into(),
            created: Timestamp::now(),
            strategy: None,
            model: None,
            base_url: None,
            options: serde_json::Value::Object(Default::default()),
        }
    }

    /// Uses a given id.
    pub fn with_id(mut self, id: RunId) -> Self {
        self.id = id;
        self
    }

    /// Records the strategy.
    pub fn with_strategy(mut self, strategy: impl Into<String>) -> Self {
        self.strategy = Some(strategy.into());
        self
    }

    /// Records the model spec (`provider:model`, never a key).
    pub fn with_model(mut self, spec: impl Into<String>) -> Self {
        self.model = Some(spec.into());
        self
    }

    /// Records the base URL, without any user info or query string.
    pub fn with_base_url(mut self, url: impl AsRef<str>) -> Self {
        self.base_url = Some(strip_secrets(url.as_ref()));
        self
    }

    /// Records run options.
    pub fn with_options(mut self, options: serde_json::Value) -> Self {
        self.options = options;
        self
    }
}

/// Drops `user:password@` and `?query` / `#fragment` from a URL, where keys may hide.
fn strip_secrets(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// A step output as committed to the store. A step counts as done only once this is
/// committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StepOutputRecord {
    /// The step.
    pub step: StepId,
    /// Its output.
    pub output: String,
    /// Attempts it took (the fallback's included).
    pub attempts: u32,
    /// Whether the output came from the step's fallback.
    pub fallback: bool,
    /// The plan revision the step belonged to.
    pub revision: u32,
    /// How long the successful attempt took.
    pub duration_ms: u64,
    /// When it was committed.
    pub ts: Timestamp,
}

impl StepOutputRecord {
    /// A record of `output` for `step`: one attempt, no fallback, revision 0, stamped now.
    pub fn new(step: impl Into<StepId>, output: impl Into<String>) -> Self {
        Self {
            step: step.into(),
            output: output.into(),
            attempts: 1,
            fallback: false,
            revision: 0,
            duration_ms: 0,
            ts: Timestamp::now(),
        }
    }
}

/// How a run ended, as [`RunStore::finish_run`] records it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RunEnd {
    /// The final status.
    pub status: RunStatus,
    /// The answer, when there is one.
    pub answer: Option<String>,
    /// Why it failed, in words.
    pub failure: Option<String>,
    /// Named parts of the report a strategy added (goal tree, critiques, repairs).
    pub extras: serde_json::Map<String, serde_json::Value>,
}

impl RunEnd {
    /// An end with `status` and nothing else.
    pub fn new(status: RunStatus) -> Self {
        Self {
            status,
            answer: None,
            failure: None,
            extras: serde_json::Map::new(),
        }
    }

    /// Sets the answer.
    pub fn with_answer(mut self, answer: Option<String>) -> Self {
        self.answer = answer;
        self
    }

    /// Sets the failure text.
    pub fn with_failure(mut self, failure: Option<String>) -> Self {
        self.failure = failure;
        self
    }

    /// Sets the report extras.
    pub fn with_extras(mut self, extras: serde_json::Map<String, serde_json::Value>) -> Self {
        self.extras = extras;
        self
    }
}

/// One event of a run's journal with its sequence number within the run (1 for the
/// first), for following a run as it is written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JournalEntry {
    /// Position in the run's journal, from 1.
    pub seq: u64,
    /// The event.
    pub event: Event,
}

impl JournalEntry {
    /// An entry.
    pub fn new(seq: u64, event: Event) -> Self {
        Self { seq, event }
    }
}

/// One line of `plan runs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunSummary {
    /// The run's id.
    pub id: RunId,
    /// The goal.
    pub goal: String,
    /// Where it stands (`running` also for a run whose process died).
    pub status: RunStatus,
    /// When it was created.
    pub created: Timestamp,
    /// When it last changed.
    pub updated: Timestamp,
    /// The strategy, if recorded.
    pub strategy: Option<String>,
    /// The model spec, if recorded.
    pub model: Option<String>,
    /// Steps in the latest plan revision (0 before planning).
    pub steps_total: usize,
    /// Steps with a committed output.
    pub steps_done: usize,
}

impl RunSummary {
    /// The run as `plan runs --json` (and `GET /api/runs`) lists it: `run_id`, `goal`,
    /// `status`, `strategy`, `model`, `created`, `updated`, `steps_total`, `steps_done`.
    pub fn to_listing(&self) -> serde_json::Value {
        serde_json::json!({
            "run_id": self.id, "goal": self.goal, "status": self.status,
            "strategy": self.strategy, "model": self.model,
            "created": self.created, "updated": self.updated,
            "steps_total": self.steps_total, "steps_done": self.steps_done,
        })
    }

    /// A summary of a run created at `created` and not changed since: no strategy or
    /// model recorded, no steps (for stores that count steps themselves).
    pub fn new(id: RunId, goal: impl Into<String>, status: RunStatus, created: Timestamp) -> Self {
        Self {
            id,
            goal: goal.into(),
            status,
            created,
            updated: created,
            strategy: None,
            model: None,
            steps_total: 0,
            steps_done: 0,
        }
    }

    /// The summary of a stored run.
    pub fn of(run: &StoredRun) -> Self {
        let latest = run.latest_plan();
        let steps_done = latest.map_or(0, |p| {
            p.plan
                .steps
                .iter()
                .filter(|s| run.output(s.id.as_str()).is_some())
                .count()
        });
        Self {
            id: run.record.id.clone(),
            goal: run.record.goal.clone(),
            status: run.status,
            created: run.record.created,
            updated: run.updated,
            strategy: run.record.strategy.clone(),
            model: run.record.model.clone(),
            steps_total: latest.map_or(0, |p| p.plan.steps.len()),
            steps_done,
        }
    }
}

/// A plan revision as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PlanRevision {
    /// 0 for the first plan.
    pub revision: u32,
    /// The plan.
    pub plan: Plan,
}

impl PlanRevision {
    /// Revision `revision` of `plan`.
    pub fn new(revision: u32, plan: Plan) -> Self {
        Self { revision, plan }
    }
}

/// Everything stored about a run (`plan show`, resume).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoredRun {
    /// What it was started with.
    pub record: RunRecord,
    /// Where it stands.
    pub status: RunStatus,
    /// The answer, once there is one.
    pub answer: Option<String>,
    /// Why it failed, in words, once it has.
    #[serde(default)]
    pub failure: Option<String>,
    /// Named parts of the report a strategy added (goal tree, critiques, repairs).
    #[serde(default)]
    pub extras: serde_json::Map<String, serde_json::Value>,
    /// When it last changed.
    pub updated: Timestamp,
    /// Every plan revision, oldest first.
    pub plans: Vec<PlanRevision>,
    /// Every committed step output, in commit order.
    pub outputs: Vec<StepOutputRecord>,
    /// Every event, in order.
    pub events: Vec<Event>,
}

impl StoredRun {
    /// A run just created from `record`: status `running`, nothing journaled yet.
    pub fn new(record: RunRecord) -> Self {
        Self {
            updated: record.created,
            record,
            status: RunStatus::Running,
            answer: None,
            failure: None,
            extras: serde_json::Map::new(),
            plans: Vec::new(),
            outputs: Vec::new(),
            events: Vec::new(),
        }
    }

    /// The latest plan revision.
    pub fn latest_plan(&self) -> Option<&PlanRevision> {
        self.plans.iter().max_by_key(|p| p.revision)
    }

    /// The committed output of a step.
    pub fn output(&self, step: &str) -> Option<&StepOutputRecord> {
        self.outputs.iter().find(|o| o.step.as_str() == step)
    }

    /// How many attempts each step has started, counted from the events.
    pub fn attempts(&self, step: &str) -> u32 {
        self.events
            .iter()
            .filter(|e| {
                matches!(&e.kind, plan_core::EventKind::StepStarted { step: s, .. } if s.as_str() == step)
            })
            .count() as u32
    }
}

/// Where runs are journaled: the run, every plan revision, every event and every step
/// output. Async and object-safe so that a server database can implement it. Only a
/// [`RunSession`](crate::session::RunSession) writes to it, from one task per run, in order.
///
/// Implement it for your own database; `plan_exec::conformance::check_store` (feature
/// `test-support`) checks an implementation against the contract the runners rely on.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// Records a new run (status `running`).
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError>;

    /// Records a plan revision (0 for the first plan).
    async fn save_plan(&self, run: &RunId, revision: u32, plan: &Plan) -> Result<(), StoreError>;

    /// Appends events.
    async fn append_events(&self, run: &RunId, events: &[Event]) -> Result<(), StoreError>;

    /// Commits a step's output together with `events` (the ones before it and its
    /// `step_completed`), atomically. Committing an output twice for the same step is an
    /// error: a completed step is never redone.
    async fn commit_output(
        &self,
        run: &RunId,
        output: &StepOutputRecord,
        events: &[Event],
    ) -> Result<(), StoreError>;

    /// Records where a run stands while it is not over (`queued`, `running`,
    /// `awaiting_approval`).
    async fn set_status(&self, run: &RunId, status: RunStatus) -> Result<(), StoreError>;

    /// Moves a run to `to` only if its status is `from`, and says whether it did: of two
    /// callers answering the same approval, one wins and the other is told. An unknown run
    /// is an error.
    ///
    /// The default reads the status, then writes it, which is not atomic: a store that
    /// several processes share should do both in one statement (the SQLite and PostgreSQL
    /// stores do).
    async fn change_status(
        &self,
        run: &RunId,
        from: RunStatus,
        to: RunStatus,
    ) -> Result<bool, StoreError> {
        let stored = self
            .load_run(run)
            .await?
            .ok_or_else(|| StoreError::new(format!("no run `{run}` in the run store")))?;
        if stored.status != from {
            return Ok(false);
        }
        self.set_status(run, to).await?;
        Ok(true)
    }

    /// Records how a run ended: its status, answer, failure and report extras.
    async fn finish_run(&self, run: &RunId, end: &RunEnd) -> Result<(), StoreError>;

    /// Every run, newest first.
    async fn list_runs(&self) -> Result<Vec<RunSummary>, StoreError>;

    /// Everything about a run; `Ok(None)` when there is no such run.
    async fn load_run(&self, run: &RunId) -> Result<Option<StoredRun>, StoreError>;

    /// Which worker holds each running step of a run, for stores shared by a fleet of
    /// workers (step id → worker name). The default: none (one process runs its runs).
    async fn step_holders(
        &self,
        run: &RunId,
    ) -> Result<std::collections::HashMap<StepId, String>, StoreError> {
        let _ = run;
        Ok(std::collections::HashMap::new())
    }

    /// The run's events after position `after` (0 for all), oldest first, at most
    /// `limit`: how live views follow a run as it is written.
    async fn events_after(
        &self,
        run: &RunId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError>;

    /// Deletes the ended runs `rule` selects (their last activity, `updated`, before
    /// [`Prune::older_than`]), each with everything stored about it (plans, events,
    /// outputs, and whatever else the store keeps per run), in one transaction; with
    /// [`Prune::dry_run`], deletes nothing. Returns the runs deleted (or that would be).
    ///
    /// A run that has not ended (`queued`, `running`, `awaiting_approval`) is never
    /// deleted; see [`Prune`] for which ended ones are. A store shared by a fleet also
    /// keeps a run whose lease is live, whatever its status says.
    ///
    /// The default refuses with an error saying this store cannot prune, so stores
    /// written before this method existed still compile.
    async fn prune(&self, rule: &Prune) -> Result<Pruned, StoreError> {
        let _ = rule;
        Err(prune::cannot_prune())
    }
}

#[async_trait]
impl<S: RunStore + ?Sized> RunStore for std::sync::Arc<S> {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        (**self).create_run(run).await
    }
    async fn save_plan(&self, run: &RunId, revision: u32, plan: &Plan) -> Result<(), StoreError> {
        (**self).save_plan(run, revision, plan).await
    }
    async fn append_events(&self, run: &RunId, events: &[Event]) -> Result<(), StoreError> {
        (**self).append_events(run, events).await
    }
    async fn commit_output(
        &self,
        run: &RunId,
        output: &StepOutputRecord,
        events: &[Event],
    ) -> Result<(), StoreError> {
        (**self).commit_output(run, output, events).await
    }
    async fn set_status(&self, run: &RunId, status: RunStatus) -> Result<(), StoreError> {
        (**self).set_status(run, status).await
    }
    async fn change_status(
        &self,
        run: &RunId,
        from: RunStatus,
        to: RunStatus,
    ) -> Result<bool, StoreError> {
        (**self).change_status(run, from, to).await
    }
    async fn finish_run(&self, run: &RunId, end: &RunEnd) -> Result<(), StoreError> {
        (**self).finish_run(run, end).await
    }
    async fn events_after(
        &self,
        run: &RunId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        (**self).events_after(run, after, limit).await
    }
    async fn list_runs(&self) -> Result<Vec<RunSummary>, StoreError> {
        (**self).list_runs().await
    }
    async fn step_holders(
        &self,
        run: &RunId,
    ) -> Result<std::collections::HashMap<StepId, String>, StoreError> {
        (**self).step_holders(run).await
    }
    async fn load_run(&self, run: &RunId) -> Result<Option<StoredRun>, StoreError> {
        (**self).load_run(run).await
    }
    async fn prune(&self, rule: &Prune) -> Result<Pruned, StoreError> {
        (**self).prune(rule).await
    }
}

const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A new run id: 13 characters, the creation time in milliseconds (9 base-32 digits) then
/// 20 random bits (4 digits), so ids sort by creation time and do not collide across
/// processes. Within a process they are strictly increasing.
pub fn new_run_id() -> RunId {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = Timestamp::now().unix_millis();
    let mut prev = LAST.load(Ordering::Relaxed);
    let ms = loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(p) => prev = p,
        }
    };
    let random: u64 = rand::random::<u64>() & 0xF_FFFF;
    let mut id = String::with_capacity(13);
    for shift in (0..9).rev() {
        id.push(CROCKFORD[((ms >> (shift * 5)) & 31) as usize] as char);
    }
    for shift in (0..4).rev() {
        id.push(CROCKFORD[((random >> (shift * 5)) & 31) as usize] as char);
    }
    RunId::new(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_sort_by_time_and_are_unique() {
        let ids: Vec<RunId> = (0..1000).map(|_| new_run_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, ids);
        assert!(ids.iter().all(|id| id.as_str().len() == 13));
    }

    #[test]
    fn secrets_are_stripped_from_urls() {
        assert_eq!(
            strip_secrets("https://user:sk-123@api.example.com/v1?key=abc#x"),
            "https://api.example.com/v1"
        );
        assert_eq!(
            strip_secrets("http://localhost:8080"),
            "http://localhost:8080"
        );
    }
}
