//! A conformance suite for [`RunStore`] implementations (feature `test-support`): the
//! contract that [`RunSession`](crate::session::RunSession), the runners and `plan show` rely on,
//! checked against any store.
//!
//! Run it from your store's tests. It creates its own runs (with fresh ids) and never
//! deletes anything, so it works on an empty store or a shared one.
//!
//! ```
//! use std::sync::Arc;
//! use plan_sqlite::SqliteStore;
//! use plan_exec::conformance::check_store;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SqliteStore::in_memory()?;
//! let report = check_store(Arc::new(store)).await;
//! assert!(report.failed.is_empty(), "{report}");
//! report.into_result()?; // or report.assert_passed() in a test
//! # Ok(()) }
//! ```
//!
//! What it checks:
//! - a created run loads back with its record (timestamps to the millisecond), status
//!   `running` and nothing journaled; an unknown run loads as `None`;
//! - plan revisions: saving a revision again replaces it, revisions load oldest first,
//!   the latest one wins;
//! - events load in the order they were appended, and runs' journals are kept apart;
//! - [`commit_output`](RunStore::commit_output) stores the output with its events, and a
//!   second commit of the same step is rejected without storing its events;
//! - [`set_status`](RunStore::set_status) for `queued`, `running` and
//!   `awaiting_approval`, seen by `load_run` and `list_runs`; an unknown run is an error
//!   (for [`finish_run`](RunStore::finish_run) too);
//! - [`finish_run`](RunStore::finish_run) keeps the status, answer, failure and extras;
//! - [`list_runs`](RunStore::list_runs) lists the newest run first, with `steps_total`
//!   from the latest revision and `steps_done` from the committed outputs;
//! - [`events_after`](RunStore::events_after) numbers events from 1, honours `after` and
//!   `limit`, and agrees with `load_run`;
//! - end to end: a [`Runner`] journaling in the store returns the report that
//!   [`RunReport::from_stored`] builds from the stored run, and [`Runner::resume`] never
//!   runs a step whose output was committed.
#![allow(clippy::panic)]

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use plan_core::{Event, EventKind, Plan, RunId, RunStatus, Step, StepId, Timestamp};

use crate::context::StepContext;
use crate::executor::executor_fn;
use crate::report::RunReport;
use crate::runner::Runner;
use crate::session::SessionBuilder;
use crate::store::{PlanRevision, RunEnd, RunRecord, RunStore, StepOutputRecord, new_run_id};

/// The outcome of [`check_store`]: every check by name, passed or failed with why.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ConformanceReport {
    /// Checks that passed.
    pub passed: Vec<String>,
    /// Checks that failed, with why.
    pub failed: Vec<(String, String)>,
}

impl ConformanceReport {
    fn record(&mut self, name: &str, result: Result<(), String>) {
        match result {
            Ok(()) => self.passed.push(name.to_owned()),
            Err(why) => self.failed.push((name.to_owned(), why)),
        }
    }

    /// Whether every check passed.
    pub fn is_ok(&self) -> bool {
        self.failed.is_empty()
    }

    /// `Ok` when every check passed, else a [`ConformanceFailure`] listing the failures.
    ///
    /// # Errors
    /// When any check failed.
    pub fn into_result(self) -> Result<(), ConformanceFailure> {
        if self.is_ok() {
            Ok(())
        } else {
            Err(ConformanceFailure { report: self })
        }
    }

    /// Panics listing every failed check (for tests).
    ///
    /// # Panics
    /// When any check failed.
    pub fn assert_passed(&self) {
        if !self.is_ok() {
            panic!("{self}");
        }
    }
}

impl fmt::Display for ConformanceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.passed.len() + self.failed.len();
        if self.failed.is_empty() {
            return write!(f, "all {total} run store conformance checks passed");
        }
        write!(
            f,
            "{} of {total} run store conformance checks failed:",
            self.failed.len()
        )?;
        for (name, why) in &self.failed {
            write!(f, "\n  {name}: {why}")?;
        }
        Ok(())
    }
}

/// A store that failed [`check_store`]; its message lists each failed check and why.
#[derive(Debug)]
pub struct ConformanceFailure {
    report: ConformanceReport,
}

impl ConformanceFailure {
    /// The full report.
    pub fn report(&self) -> &ConformanceReport {
        &self.report
    }
}

impl fmt::Display for ConformanceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.report.fmt(f)
    }
}

impl std::error::Error for ConformanceFailure {}

/// Runs every check of the [module docs](self) against `store` (it needs a tokio
/// runtime: the end-to-end checks run a [`Runner`]).
pub async fn check_store(store: Arc<dyn RunStore>) -> ConformanceReport {
    let mut report = ConformanceReport::default();
    let s = store.as_ref();
    report.record(
        "a created run loads back with its record",
        create_and_load(s).await,
    );
    report.record("an unknown run loads as none", unknown_run(s).await);
    report.record(
        "plan revisions: same revision replaced, latest wins",
        plan_revisions(s).await,
    );
    report.record(
        "events load in the order appended, per run",
        events_in_order(s).await,
    );
    report.record(
        "commit_output stores the output with its events",
        commit_output(s).await,
    );
    report.record(
        "a second commit of the same step is rejected, its events not stored",
        second_commit_rejected(s).await,
    );
    report.record(
        "set_status: queued, running, awaiting_approval",
        set_status(s).await,
    );
    report.record(
        "change_status moves a run only from the status given; an unknown run is an error",
        change_status(s).await,
    );
    report.record(
        "set_status and finish_run of an unknown run are errors",
        unknown_run_status(s).await,
    );
    report.record(
        "finish_run keeps status, answer, failure and extras",
        finish_run(s).await,
    );
    report.record(
        "list_runs: newest first, steps_total and steps_done",
        list_runs(s).await,
    );
    report.record(
        "events_after: positions from 1, after and limit",
        events_after(s).await,
    );
    report.record(
        "a runner's report equals the report read back from the store",
        runner_round_trip(store.clone()).await,
    );
    report.record(
        "resume never runs a step whose output was committed",
        resume_skips_committed(store).await,
    );
    report
}

// --- helpers ---

fn ensure(cond: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(why()) }
}

/// Now, to the millisecond (what every store must keep).
fn now_ms() -> Timestamp {
    Timestamp::from_unix_millis(Timestamp::now().unix_millis())
}

fn at(ms: u64, run: &RunId, kind: EventKind) -> Event {
    Event::at(Timestamp::from_unix_millis(ms), run.clone(), kind)
}

fn record(goal: &str) -> RunRecord {
    let mut r = RunRecord::new(goal);
    r.created = now_ms();
    r
}

fn plan(goal: &str, steps: &[(&str, &[&str])]) -> Plan {
    Plan::new(
        goal,
        steps
            .iter()
            .map(|(id, deps)| Step::new(*id, format!("Do {id}")).depends_on(deps.iter().copied()))
            .collect(),
    )
}

fn output(step: &str, text: &str, ts: Timestamp) -> StepOutputRecord {
    let mut o = StepOutputRecord::new(step, text);
    o.ts = ts;
    o
}

fn started(ms: u64, run: &RunId, step: &str) -> Event {
    at(
        ms,
        run,
        EventKind::StepStarted {
            step: StepId::new(step),
            attempt: 1,
        },
    )
}

fn completed(ms: u64, run: &RunId, step: &str) -> Event {
    at(
        ms,
        run,
        EventKind::StepCompleted {
            step: StepId::new(step),
            duration_ms: 3,
        },
    )
}

async fn create(store: &dyn RunStore, goal: &str) -> Result<RunRecord, String> {
    let r = record(goal);
    store
        .create_run(&r)
        .await
        .map_err(|e| format!("create_run failed: {e}"))?;
    Ok(r)
}

async fn load(store: &dyn RunStore, run: &RunId) -> Result<crate::store::StoredRun, String> {
    store
        .load_run(run)
        .await
        .map_err(|e| format!("load_run failed: {e}"))?
        .ok_or_else(|| format!("load_run returned none for run `{run}`, which was created"))
}

fn events_json(events: &[Event]) -> Vec<String> {
    events.iter().map(Event::to_json_line).collect()
}

// --- the checks ---

async fn create_and_load(store: &dyn RunStore) -> Result<(), String> {
    let r = record("conformance: round trip")
        .with_strategy("dag")
        .with_model("openai:gpt-4o-mini")
        .with_base_url("https://api.example.com/v1")
        .with_options(serde_json::json!({"concurrency": 3, "nested": {"a": [1, 2]}}));
    store
        .create_run(&r)
        .await
        .map_err(|e| format!("create_run failed: {e}"))?;
    let run = load(store, &r.id).await?;
    ensure(run.record == r, || {
        format!("the record changed: stored {r:?}, loaded {:?}", run.record)
    })?;
    ensure(run.status == RunStatus::Running, || {
        format!("a new run should be `running`, got `{}`", run.status)
    })?;
    ensure(run.answer.is_none() && run.failure.is_none(), || {
        "a new run has an answer or a failure".to_owned()
    })?;
    ensure(
        run.plans.is_empty() && run.outputs.is_empty() && run.events.is_empty(),
        || "a new run has plans, outputs or events".to_owned(),
    )?;
    ensure(run.extras.is_empty(), || "a new run has extras".to_owned())
}

async fn unknown_run(store: &dyn RunStore) -> Result<(), String> {
    match store.load_run(&new_run_id()).await {
        Ok(None) => Ok(()),
        Ok(Some(run)) => Err(format!(
            "load_run of an unknown id returned run `{}`",
            run.record.id
        )),
        Err(e) => Err(format!(
            "load_run of an unknown id should be Ok(None), got an error: {e}"
        )),
    }
}

async fn plan_revisions(store: &dyn RunStore) -> Result<(), String> {
    let r = create(store, "conformance: revisions").await?;
    let first = plan(&r.goal, &[("a", &[])]);
    let replaced = plan(&r.goal, &[("a", &[]), ("b", &["a"])]);
    let second = plan(&r.goal, &[("a", &[]), ("c", &["a"])]);
    for (revision, p) in [(0, &first), (0, &replaced), (1, &second)] {
        store
            .save_plan(&r.id, revision, p)
            .await
            .map_err(|e| format!("save_plan of revision {revision} failed: {e}"))?;
    }
    let run = load(store, &r.id).await?;
    let expected = vec![PlanRevision::new(0, replaced), PlanRevision::new(1, second)];
    ensure(run.plans == expected, || {
        format!(
            "expected revisions 0 (replaced) and 1, oldest first; got {:?}",
            run.plans
                .iter()
                .map(|p| (p.revision, p.plan.steps.len()))
                .collect::<Vec<_>>()
        )
    })?;
    ensure(run.latest_plan().map(|p| p.revision) == Some(1), || {
        "the latest plan is not revision 1".to_owned()
    })
}

async fn events_in_order(store: &dyn RunStore) -> Result<(), String> {
    let a = create(store, "conformance: events a").await?;
    let b = create(store, "conformance: events b").await?;
    let base = now_ms().unix_millis();
    let ea: Vec<Event> = (0..5)
        .map(|i| at(base + i, &a.id, EventKind::progress(i as usize, 5)))
        .collect();
    let eb = vec![at(
        base,
        &b.id,
        EventKind::RunStarted {
            goal: b.goal.clone(),
        },
    )];
    let err = |e| format!("append_events failed: {e}");
    store.append_events(&a.id, &ea[..2]).await.map_err(err)?;
    store.append_events(&b.id, &eb).await.map_err(err)?;
    store.append_events(&a.id, &[]).await.map_err(err)?;
    store.append_events(&a.id, &ea[2..]).await.map_err(err)?;
    let run_a = load(store, &a.id).await?;
    ensure(run_a.events == ea, || {
        format!(
            "expected the 5 events in the order appended, got {:?}",
            events_json(&run_a.events)
        )
    })?;
    let run_b = load(store, &b.id).await?;
    ensure(run_b.events == eb, || {
        format!(
            "another run's events leaked into run b: {:?}",
            events_json(&run_b.events)
        )
    })
}

async fn commit_output(store: &dyn RunStore) -> Result<(), String> {
    let r = create(store, "conformance: commit").await?;
    store
        .save_plan(&r.id, 0, &plan(&r.goal, &[("a", &[]), ("b", &["a"])]))
        .await
        .map_err(|e| format!("save_plan failed: {e}"))?;
    let base = now_ms().unix_millis();
    let mut out = output("a", "the output of a\nwith two lines", now_ms());
    out.attempts = 2;
    out.fallback = true;
    out.revision = 0;
    out.duration_ms = 1234;
    let events = vec![started(base, &r.id, "a"), completed(base + 1, &r.id, "a")];
    store
        .commit_output(&r.id, &out, &events)
        .await
        .map_err(|e| format!("commit_output failed: {e}"))?;
    let run = load(store, &r.id).await?;
    ensure(run.outputs == vec![out.clone()], || {
        format!(
            "the committed output changed: committed {out:?}, loaded {:?}",
            run.outputs
        )
    })?;
    ensure(run.events == events, || {
        format!(
            "the events committed with the output are missing: {:?}",
            events_json(&run.events)
        )
    })
}

async fn second_commit_rejected(store: &dyn RunStore) -> Result<(), String> {
    let r = create(store, "conformance: second commit").await?;
    let base = now_ms().unix_millis();
    let first = output("a", "first", now_ms());
    let events = vec![started(base, &r.id, "a"), completed(base + 1, &r.id, "a")];
    store
        .commit_output(&r.id, &first, &events)
        .await
        .map_err(|e| format!("commit_output failed: {e}"))?;
    let again = output("a", "second", now_ms());
    let stray = vec![completed(base + 2, &r.id, "a")];
    if store.commit_output(&r.id, &again, &stray).await.is_ok() {
        return Err(
            "a second commit of step `a` succeeded: it must be an error (a completed step \
             is never redone)"
                .to_owned(),
        );
    }
    let run = load(store, &r.id).await?;
    ensure(run.outputs == vec![first], || {
        format!("the rejected commit changed the outputs: {:?}", run.outputs)
    })?;
    ensure(run.events == events, || {
        format!(
            "the rejected commit's events were stored (commit_output must be atomic): {:?}",
            events_json(&run.events)
        )
    })
}

async fn change_status(store: &dyn RunStore) -> Result<(), String> {
    let r = create(store, "conformance: change status").await?;
    store
        .set_status(&r.id, RunStatus::AwaitingApproval)
        .await
        .map_err(|e| format!("set_status failed: {e}"))?;
    let moved = store
        .change_status(&r.id, RunStatus::AwaitingApproval, RunStatus::Running)
        .await
        .map_err(|e| format!("change_status failed: {e}"))?;
    ensure(moved, || {
        "change_status from the run's own status said it did not move".to_owned()
    })?;
    let again = store
        .change_status(&r.id, RunStatus::AwaitingApproval, RunStatus::Running)
        .await
        .map_err(|e| format!("change_status failed: {e}"))?;
    ensure(!again, || {
        "change_status from a status the run no longer has said it moved".to_owned()
    })?;
    let run = load(store, &r.id).await?;
    ensure(run.status == RunStatus::Running, || {
        format!("after change_status, load_run says `{}`", run.status)
    })?;
    let unknown = new_run_id();
    ensure(
        store
            .change_status(&unknown, RunStatus::AwaitingApproval, RunStatus::Running)
            .await
            .is_err(),
        || "change_status of an unknown run did not fail".to_owned(),
    )
}

async fn set_status(store: &dyn RunStore) -> Result<(), String> {
    let r = create(store, "conformance: status").await?;
    for status in [
        RunStatus::Queued,
        RunStatus::AwaitingApproval,
        RunStatus::Running,
    ] {
        store
            .set_status(&r.id, status)
            .await
            .map_err(|e| format!("set_status `{status}` failed: {e}"))?;
        let run = load(store, &r.id).await?;
        ensure(run.status == status, || {
            format!("set `{status}`, load_run says `{}`", run.status)
        })?;
        let listed = store
            .list_runs()
            .await
            .map_err(|e| format!("list_runs failed: {e}"))?;
        let summary = listed.iter().find(|s| s.id == r.id);
        ensure(summary.map(|s| s.status) == Some(status), || {
            format!(
                "set `{status}`, list_runs says {:?}",
                summary.map(|s| s.status)
            )
        })?;
    }
    Ok(())
}

async fn unknown_run_status(store: &dyn RunStore) -> Result<(), String> {
    let id = new_run_id();
    ensure(
        store.set_status(&id, RunStatus::Running).await.is_err(),
        || "set_status of an unknown run succeeded: it must be an error".to_owned(),
    )?;
    ensure(
        store
            .finish_run(&id, &RunEnd::new(RunStatus::Failed))
            .await
            .is_err(),
        || "finish_run of an unknown run succeeded: it must be an error".to_owned(),
    )
}

async fn finish_run(store: &dyn RunStore) -> Result<(), String> {
    let ok = create(store, "conformance: finish ok").await?;
    let base = now_ms().unix_millis();
    let journal = vec![at(
        base,
        &ok.id,
        EventKind::RunFinished {
            status: RunStatus::Succeeded,
            answer: Some("42".into()),
        },
    )];
    store
        .append_events(&ok.id, &journal)
        .await
        .map_err(|e| format!("append_events failed: {e}"))?;
    let mut extras = serde_json::Map::new();
    extras.insert(
        "critiques".into(),
        serde_json::json!([{"approved": true, "issues": []}]),
    );
    extras.insert(
        "tree".into(),
        serde_json::json!({"goal": "g", "children": []}),
    );
    let end = RunEnd::new(RunStatus::Succeeded)
        .with_answer(Some("42".into()))
        .with_extras(extras.clone());
    store
        .finish_run(&ok.id, &end)
        .await
        .map_err(|e| format!("finish_run failed: {e}"))?;
    let run = load(store, &ok.id).await?;
    ensure(run.status == RunStatus::Succeeded, || {
        format!("finished `succeeded`, loaded `{}`", run.status)
    })?;
    ensure(run.answer.as_deref() == Some("42"), || {
        format!("the answer was not kept: {:?}", run.answer)
    })?;
    ensure(run.failure.is_none(), || {
        format!("a failure appeared: {:?}", run.failure)
    })?;
    ensure(run.extras == extras, || {
        format!(
            "the extras changed: {}",
            serde_json::Value::Object(run.extras.clone())
        )
    })?;
    ensure(run.events == journal, || {
        "finish_run changed the journal".to_owned()
    })?;

    let failed = create(store, "conformance: finish failed").await?;
    let end = RunEnd::new(RunStatus::Failed).with_failure(Some(
        "step `a` failed: no route to host; check the network".into(),
    ));
    store
        .finish_run(&failed.id, &end)
        .await
        .map_err(|e| format!("finish_run failed: {e}"))?;
    let run = load(store, &failed.id).await?;
    ensure(
        run.status == RunStatus::Failed
            && run.answer.is_none()
            && run.failure == end.failure
            && run.extras.is_empty(),
        || {
            format!(
                "finished `failed` with a failure text, loaded status `{}`, answer {:?}, \
                 failure {:?}, extras {:?}",
                run.status, run.answer, run.failure, run.extras
            )
        },
    )
}

async fn list_runs(store: &dyn RunStore) -> Result<(), String> {
    let base = now_ms().unix_millis();
    let mut ids = Vec::new();
    for (i, goal) in [
        "conformance: list 1",
        "conformance: list 2",
        "conformance: list 3",
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = RunRecord::new(goal);
        r.created = Timestamp::from_unix_millis(base + i as u64);
        store
            .create_run(&r)
            .await
            .map_err(|e| format!("create_run failed: {e}"))?;
        ids.push(r.id);
    }
    let err = |e| format!("save_plan failed: {e}");
    // Run 2: three steps, two done.
    let p2 = plan("g", &[("a", &[]), ("b", &[]), ("c", &["a", "b"])]);
    store.save_plan(&ids[1], 0, &p2).await.map_err(err)?;
    // Run 3: revised from one step to four; one done.
    store
        .save_plan(&ids[2], 0, &plan("g", &[("a", &[])]))
        .await
        .map_err(err)?;
    let p3 = plan(
        "g",
        &[("a", &[]), ("x", &["a"]), ("y", &["a"]), ("z", &["x", "y"])],
    );
    store.save_plan(&ids[2], 1, &p3).await.map_err(err)?;
    let commit = |run: RunId, step: &'static str| async move {
        let t = base + 10;
        store
            .commit_output(
                &run,
                &output(step, "done", now_ms()),
                &[started(t, &run, step), completed(t + 1, &run, step)],
            )
            .await
            .map_err(|e| format!("commit_output failed: {e}"))
    };
    commit(ids[1].clone(), "a").await?;
    commit(ids[1].clone(), "b").await?;
    commit(ids[2].clone(), "a").await?;

    let listed = store
        .list_runs()
        .await
        .map_err(|e| format!("list_runs failed: {e}"))?;
    let ours: Vec<_> = listed.iter().filter(|s| ids.contains(&s.id)).collect();
    let order: Vec<&RunId> = ours.iter().map(|s| &s.id).collect();
    let newest_first: Vec<&RunId> = ids.iter().rev().collect();
    ensure(order == newest_first, || {
        format!("expected the three runs newest first {newest_first:?}, listed {order:?}")
    })?;
    let counts: Vec<(usize, usize)> = ours.iter().map(|s| (s.steps_total, s.steps_done)).collect();
    ensure(counts == [(4, 1), (3, 2), (0, 0)], || {
        format!(
            "expected (steps_total, steps_done) of (4, 1), (3, 2), (0, 0) newest first, got \
             {counts:?}"
        )
    })?;
    ensure(ours.iter().all(|s| s.status == RunStatus::Running), || {
        "a listed run is not `running`".to_owned()
    })?;
    ensure(
        ours.last().map(|s| s.goal.as_str()) == Some("conformance: list 1"),
        || "the listed goal is wrong".to_owned(),
    )
}

async fn events_after(store: &dyn RunStore) -> Result<(), String> {
    let r = create(store, "conformance: events_after").await?;
    let base = now_ms().unix_millis();
    let appended: Vec<Event> = (0..5)
        .map(|i| at(base + i, &r.id, EventKind::progress(i as usize, 5)))
        .collect();
    store
        .append_events(&r.id, &appended)
        .await
        .map_err(|e| format!("append_events failed: {e}"))?;
    let committed = vec![
        started(base + 5, &r.id, "a"),
        completed(base + 6, &r.id, "a"),
    ];
    store
        .commit_output(&r.id, &output("a", "out", now_ms()), &committed)
        .await
        .map_err(|e| format!("commit_output failed: {e}"))?;
    let all: Vec<Event> = appended.iter().chain(&committed).cloned().collect();

    let id = &r.id;
    let read = |after: u64, limit: usize| async move {
        store
            .events_after(id, after, limit)
            .await
            .map_err(|e| format!("events_after({after}, {limit}) failed: {e}"))
    };
    let whole = read(0, 100).await?;
    let seqs: Vec<u64> = whole.iter().map(|e| e.seq).collect();
    ensure(seqs == (1..=7).collect::<Vec<u64>>(), || {
        format!("expected positions 1..=7 (committed events count too), got {seqs:?}")
    })?;
    let events: Vec<Event> = whole.into_iter().map(|e| e.event).collect();
    ensure(events == all, || {
        "events_after(0, ..) does not return the journal in order".to_owned()
    })?;
    let page = read(3, 2).await?;
    let got: Vec<(u64, Event)> = page.into_iter().map(|e| (e.seq, e.event)).collect();
    let want = vec![(4, all[3].clone()), (5, all[4].clone())];
    ensure(got == want, || {
        format!(
            "events_after(3, 2) should return positions 4 and 5, got {:?}",
            got.iter().map(|(s, _)| s).collect::<Vec<_>>()
        )
    })?;
    ensure(read(7, 10).await?.is_empty(), || {
        "events_after(7, ..) of a 7-event journal is not empty".to_owned()
    })?;
    let loaded = load(store, &r.id).await?;
    ensure(loaded.events == all, || {
        "load_run's events disagree with events_after".to_owned()
    })
}

/// An executor that echoes its step and its inputs, and remembers which steps it ran.
fn echo(ran: Arc<Mutex<Vec<String>>>) -> impl crate::executor::StepExecutor + 'static {
    executor_fn(move |ctx: StepContext| {
        let ran = ran.clone();
        async move {
            let id = ctx.step().id.to_string();
            ran.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(id.clone());
            let inputs: Vec<&str> = ctx
                .dependencies()
                .iter()
                .map(|d| d.output.as_str())
                .collect();
            Ok(format!("{id}[{}]", inputs.join(",")))
        }
    })
}

fn json(report: &RunReport) -> Result<serde_json::Value, String> {
    serde_json::to_value(report).map_err(|e| format!("cannot encode the report: {e}"))
}

async fn runner_round_trip(store: Arc<dyn RunStore>) -> Result<(), String> {
    let ran = Arc::new(Mutex::new(Vec::new()));
    let runner =
        Runner::parallel(echo(ran)).with_sessions(SessionBuilder::new().store(store.clone()));
    let record = record("conformance: runner")
        .with_strategy("dag")
        .with_model("scripted:conformance");
    let p = plan(
        &record.goal,
        &[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])],
    );
    let report = runner
        .run_with_record(record, p)
        .await
        .map_err(|e| format!("the runner failed: {e}"))?;
    ensure(report.is_success(), || {
        format!("the run did not succeed: {:?}", report.failure)
    })?;
    let stored = load(store.as_ref(), &report.run_id).await?;
    ensure(stored.status == RunStatus::Succeeded, || {
        format!("the stored status is `{}`, not `succeeded`", stored.status)
    })?;
    let (live, read_back) = (json(&report)?, json(&RunReport::from_stored(&stored))?);
    ensure(live == read_back, || {
        format!("the runner returned\n{live}\nbut the store gives\n{read_back}")
    })
}

async fn resume_skips_committed(store: Arc<dyn RunStore>) -> Result<(), String> {
    // A run that died after committing step `a`.
    let r = create(store.as_ref(), "conformance: resume").await?;
    let p = plan(&r.goal, &[("a", &[]), ("b", &["a"])]);
    let base = now_ms().unix_millis();
    store
        .append_events(
            &r.id,
            &[
                at(
                    base,
                    &r.id,
                    EventKind::RunStarted {
                        goal: r.goal.clone(),
                    },
                ),
                at(
                    base + 1,
                    &r.id,
                    EventKind::PlanCreated {
                        plan: p.clone(),
                        revision: 0,
                    },
                ),
            ],
        )
        .await
        .map_err(|e| format!("append_events failed: {e}"))?;
    store
        .save_plan(&r.id, 0, &p)
        .await
        .map_err(|e| format!("save_plan failed: {e}"))?;
    store
        .commit_output(
            &r.id,
            &output("a", "stored-a", now_ms()),
            &[
                started(base + 2, &r.id, "a"),
                completed(base + 3, &r.id, "a"),
            ],
        )
        .await
        .map_err(|e| format!("commit_output failed: {e}"))?;

    let ran = Arc::new(Mutex::new(Vec::new()));
    let runner = Runner::parallel(echo(ran.clone()))
        .with_sessions(SessionBuilder::new().store(store.clone()));
    let report = runner
        .resume(&r.id)
        .await
        .map_err(|e| format!("resume failed: {e}"))?;
    let ran = ran.lock().unwrap_or_else(PoisonError::into_inner).clone();
    ensure(ran == ["b"], || {
        format!("resume should run only `b`, it ran {ran:?}")
    })?;
    ensure(report.is_success(), || {
        format!("the resumed run did not succeed: {:?}", report.failure)
    })?;
    ensure(report.output("b") == Some("b[stored-a]"), || {
        format!(
            "`b` should see the stored output of `a`, its output is {:?}",
            report.output("b")
        )
    })?;
    let stored = load(store.as_ref(), &r.id).await?;
    ensure(stored.outputs.len() == 2, || {
        format!(
            "expected 2 committed outputs, found {}",
            stored.outputs.len()
        )
    })?;
    let (live, read_back) = (json(&report)?, json(&RunReport::from_stored(&stored))?);
    ensure(live == read_back, || {
        format!("resume returned\n{live}\nbut the store gives\n{read_back}")
    })
}
