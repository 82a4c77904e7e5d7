//! The SQLite run store through the public API.

use plan_core::{Event, EventKind, RunId, RunStatus, StepId};
use plan_exec::runner::Runner;
use plan_exec::store::{RunRecord, RunStore, StepOutputRecord, new_run_id};
use plan_sqlite::SqliteStore;

use crate::support::*;

#[tokio::test]
async fn a_run_is_journaled_listed_and_loadable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/runs.db");
    let store = SqliteStore::open(&path).unwrap();
    let probe = Probe::default();
    let runner = Runner::parallel(probe.executor(|_| std::time::Duration::from_millis(1)))
        .with_store(store.clone());
    let record = RunRecord::new("test goal")
        .with_model("openai:gpt-4o-mini")
        .with_base_url("https://user:sk-secret@api.example.com/v1?api_key=sk-secret")
        .with_strategy("dag")
        .with_options(serde_json::json!({"concurrency": 4}));
    let id = record.id.clone();
    let report = runner
        .run_with_record(record, plan(&[("a", &[]), ("b", &["a"])]))
        .await
        .unwrap();
    assert_eq!(report.run_id, id);

    // Reopen, as `plan runs` / `plan show` would.
    let store = SqliteStore::open(&path).unwrap();
    let runs = store.list_runs().await.unwrap();
    assert_eq!(runs.len(), 1);
    let summary = &runs[0];
    assert_eq!(summary.id, id);
    assert_eq!(summary.status, RunStatus::Succeeded);
    assert_eq!((summary.steps_done, summary.steps_total), (2, 2));
    assert_eq!(summary.model.as_deref(), Some("openai:gpt-4o-mini"));

    let run = store.load_run(&id).await.unwrap().unwrap();
    assert_eq!(run.record.goal, "test goal");
    assert_eq!(
        run.record.base_url.as_deref(),
        Some("https://api.example.com/v1")
    );
    assert_eq!(run.record.options["concurrency"], 4);
    assert_eq!(Some(run.latest_plan().unwrap().plan.clone()), report.plan);
    assert_eq!(run.outputs.len(), 2);
    assert_eq!(run.output("b").unwrap().output, "out(b)<-[a]");
    let names: Vec<&str> = run.events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(names.first(), Some(&"run_started"));
    assert_eq!(names.last(), Some(&"run_finished"));
    assert_eq!(names.iter().filter(|n| **n == "step_completed").count(), 2);
    // Nothing secret anywhere in the file.
    drop(store);
    let bytes = std::fs::read(&path).unwrap();
    let wal = std::fs::read(path.with_extension("db-wal")).unwrap_or_default();
    for b in [&bytes, &wal] {
        assert!(!String::from_utf8_lossy(b).contains("sk-secret"));
    }
    assert!(store_missing_run_is_none(&path).await);
}

async fn store_missing_run_is_none(path: &std::path::Path) -> bool {
    let store = SqliteStore::open(path).unwrap();
    store.load_run(&RunId::new("nope")).await.unwrap().is_none()
}

#[tokio::test]
async fn an_output_is_committed_once() {
    let store = SqliteStore::in_memory().unwrap();
    let record = RunRecord::new("g");
    store.create_run(&record).await.unwrap();
    let out = StepOutputRecord::new("a", "x");
    let ev = Event::now(
        record.id.clone(),
        EventKind::StepCompleted {
            step: StepId::new("a"),
            duration_ms: 5,
        },
    );
    store
        .commit_output(&record.id, &out, std::slice::from_ref(&ev))
        .await
        .unwrap();
    let err = store
        .commit_output(&record.id, &out, &[ev])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("step `a`"), "{err}");
    let run = store.load_run(&record.id).await.unwrap().unwrap();
    assert_eq!(run.outputs.len(), 1);
    assert_eq!(run.events.len(), 1, "the failed commit left nothing behind");
}

#[tokio::test]
async fn runs_list_newest_first_and_ids_sort_by_time() {
    let store = SqliteStore::in_memory().unwrap();
    let mut ids = Vec::new();
    for goal in ["one", "two", "three"] {
        let r = RunRecord::new(goal);
        ids.push(r.id.clone());
        store.create_run(&r).await.unwrap();
    }
    let listed: Vec<RunId> = store
        .list_runs()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    ids.reverse();
    assert_eq!(listed, ids);
    assert!(new_run_id() > ids[0]);
}

#[tokio::test]
async fn a_strategy_can_drive_a_run_with_revisions_through_the_session() {
    use plan_exec::runner::PlanRun;
    use plan_exec::session::SessionBuilder;
    let store = SqliteStore::in_memory().unwrap();
    let log = plan_exec::events::EventLog::new();
    let probe = Probe::default();
    let runner = Runner::parallel(probe.executor(|_| std::time::Duration::from_millis(1)));
    let sessions = SessionBuilder::new()
        .store(std::sync::Arc::new(store.clone()))
        .event_sink(std::sync::Arc::new(log.clone()));
    let record = RunRecord::new("test goal").with_strategy("adaptive");
    let id = record.id.clone();
    let session = sessions.create(record).await.unwrap();
    let first = plan(&[("a", &[]), ("b", &["a"])]);
    session.plan_created(&first, 0).await.unwrap();
    let report = runner
        .execute(&session, PlanRun::new(id.clone(), first))
        .await
        .unwrap();
    assert!(report.is_success());

    // A revision keeps `a` and `b` and adds `c`: only `c` runs.
    let second = plan(&[("a", &[]), ("b", &["a"]), ("c", &["b"])]);
    session
        .replanned(&second, 1, "more to do", vec!["a".into(), "b".into()])
        .await
        .unwrap();
    let report = runner
        .execute(
            &session,
            PlanRun::new(id.clone(), second)
                .with_revision(1)
                .with_completed(report.completed_outputs()),
        )
        .await
        .unwrap();
    assert!(report.is_success());
    assert_eq!(report.output("c"), Some("out(c)<-[b]"));
    assert_eq!((probe.calls("a"), probe.calls("c")), (1, 1));
    let finished = session
        .finish(RunStatus::Succeeded, Some("the answer".into()), None)
        .await
        .unwrap();

    let run = store.load_run(&id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.answer.as_deref(), Some("the answer"));
    assert_eq!(run.plans.len(), 2);
    assert_eq!(run.output("c").unwrap().revision, 1);
    let stored: Vec<&str> = run.events.iter().map(|e| e.kind.name()).collect();
    let seen: Vec<&str> = log.events().iter().map(|e| e.kind.name()).collect();
    assert_eq!(stored, seen, "the journal holds every event, in order");
    assert_eq!(stored.first(), Some(&"run_started"));
    assert_eq!(stored.last(), Some(&"run_finished"));
    // The report of the live session and of the stored run are the same object.
    let reread = plan_exec::report::RunReport::from_stored(&run);
    assert_eq!(
        serde_json::to_value(&finished).unwrap(),
        serde_json::to_value(&reread).unwrap()
    );
    assert_eq!(reread.replans, 1);
    assert!(reread.step("a").unwrap().reused);
    assert_eq!(reread.step("c").unwrap().attempts, 1);
}
