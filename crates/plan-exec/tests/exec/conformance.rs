//! The SQLite store passes the run store conformance suite, in memory and in a file.

use std::sync::Arc;

use plan_exec::conformance::check_store;
use plan_sqlite::SqliteStore;

#[tokio::test]
async fn sqlite_in_memory_passes_the_store_conformance_suite() {
    let store = SqliteStore::in_memory().unwrap();
    let report = check_store(Arc::new(store)).await;
    report.assert_passed();
    assert!(report.passed.len() >= 13, "{:?}", report.passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_passes_the_store_conformance_suite_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    check_store(Arc::new(SqliteStore::open(&path).unwrap()))
        .await
        .assert_passed();
    // Again on the same file, reopened: the checks do not depend on an empty store.
    check_store(Arc::new(SqliteStore::open(&path).unwrap()))
        .await
        .assert_passed();
}

/// A store that breaks two rules: it ignores a second commit of a step instead of
/// refusing it, and lists runs oldest first.
struct Sloppy(SqliteStore);

#[async_trait::async_trait]
impl plan_exec::store::RunStore for Sloppy {
    async fn create_run(
        &self,
        run: &plan_exec::store::RunRecord,
    ) -> Result<(), plan_exec::error::StoreError> {
        self.0.create_run(run).await
    }
    async fn save_plan(
        &self,
        run: &plan_core::RunId,
        revision: u32,
        plan: &plan_core::Plan,
    ) -> Result<(), plan_exec::error::StoreError> {
        self.0.save_plan(run, revision, plan).await
    }
    async fn append_events(
        &self,
        run: &plan_core::RunId,
        events: &[plan_core::Event],
    ) -> Result<(), plan_exec::error::StoreError> {
        self.0.append_events(run, events).await
    }
    async fn commit_output(
        &self,
        run: &plan_core::RunId,
        output: &plan_exec::store::StepOutputRecord,
        events: &[plan_core::Event],
    ) -> Result<(), plan_exec::error::StoreError> {
        let _ = self.0.commit_output(run, output, events).await;
        Ok(())
    }
    async fn set_status(
        &self,
        run: &plan_core::RunId,
        status: plan_core::RunStatus,
    ) -> Result<(), plan_exec::error::StoreError> {
        self.0.set_status(run, status).await
    }
    async fn finish_run(
        &self,
        run: &plan_core::RunId,
        end: &plan_exec::store::RunEnd,
    ) -> Result<(), plan_exec::error::StoreError> {
        self.0.finish_run(run, end).await
    }
    async fn list_runs(
        &self,
    ) -> Result<Vec<plan_exec::store::RunSummary>, plan_exec::error::StoreError> {
        let mut runs = self.0.list_runs().await?;
        runs.reverse();
        Ok(runs)
    }
    async fn load_run(
        &self,
        run: &plan_core::RunId,
    ) -> Result<Option<plan_exec::store::StoredRun>, plan_exec::error::StoreError> {
        self.0.load_run(run).await
    }
    async fn events_after(
        &self,
        run: &plan_core::RunId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<plan_exec::store::JournalEntry>, plan_exec::error::StoreError> {
        self.0.events_after(run, after, limit).await
    }
}

#[tokio::test]
async fn a_store_that_breaks_the_contract_fails_the_checks_it_breaks() {
    let report = check_store(Arc::new(Sloppy(SqliteStore::in_memory().unwrap()))).await;
    let failed: Vec<&str> = report.failed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        failed,
        [
            "a second commit of the same step is rejected, its events not stored",
            "list_runs: newest first, steps_total and steps_done",
        ],
        "{report}"
    );
    let text = report.into_result().unwrap_err().to_string();
    assert!(
        text.starts_with("2 of 14 run store conformance checks failed:"),
        "{text}"
    );
    assert!(text.contains("must be an error"), "{text}");
}
