//! Issue 23, item 3: the model-free run operations in one place (`Runs`: reject, wait,
//! cancel, check a run can be continued) and the handle of a started run
//! (`Agent::start`), over a SQLite store and the scripted model of `support`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use plan_core::{EventKind, RunId, RunStatus};
use plan_exec::context::CancelToken;
use plan_exec::error::StoreError;
use plan_exec::session::SessionBuilder;
use plan_exec::store::{RunRecord, RunStore};
use plan_llm::{Capabilities, ScriptedModel};
use plan_sqlite::SqliteStore;
use plan_strategies::{
    Agent, AgentBuilder, Approval, CancelRequests, Cancelling, Continuation, RunSpec, Runs,
    RunsError, StrategyError, StrategyKind, WaitFor,
};
use support::{Fake, no_retries, plan_json};

const THREE: &[(&str, &str, &[&str])] = &[
    ("search", "Find the frameworks", &[]),
    ("compare", "Compare them", &["search"]),
    ("check", "Check the table", &["compare"]),
];

/// A store in a fresh temporary directory (kept alive with it).
fn store() -> (tempfile::TempDir, Arc<dyn RunStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("runs.db")).unwrap();
    (dir, Arc::new(store))
}

/// A fake that plans THREE and answers every call after `latency`.
fn fake(latency: Duration) -> Fake {
    let mut caps = Capabilities::default();
    caps.json_schema = true;
    Fake::with_model(
        ScriptedModel::new()
            .with_capabilities(caps)
            .with_latency(latency),
    )
    .plan(plan_json(THREE))
}

fn agent(fake: &Fake, store: &Arc<dyn RunStore>) -> AgentBuilder {
    Agent::builder()
        .provider(fake.model.clone())
        .strategy(StrategyKind::Linear)
        .run_options(no_retries())
        .store(store.clone())
}

/// An agent whose runs stop for approval of their plan.
fn approving(fake: &Fake, store: &Arc<dyn RunStore>) -> Agent {
    let mut spec = RunSpec::new("scripted", "linear");
    spec.approve = Approval::Plan;
    agent(fake, store).spec(spec).build().unwrap()
}

/// A run parked awaiting approval; its id.
async fn parked(store: &Arc<dyn RunStore>) -> RunId {
    let report = approving(&fake(Duration::ZERO), store)
        .start("wait for me")
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::AwaitingApproval);
    report.run_id
}

// --- Agent::start ---

#[tokio::test]
async fn a_started_run_has_its_id_at_once_and_its_report_when_awaited() {
    let (_dir, store) = store();
    let fake = fake(Duration::from_millis(30));
    let mut run = agent(&fake, &store)
        .build()
        .unwrap()
        .start("compare the frameworks")
        .await
        .unwrap();
    let id = run.id().clone();
    // The run is in the store before it ends.
    let stored = store
        .load_run(&id)
        .await
        .unwrap()
        .expect("the run is stored");
    assert_eq!(stored.status, RunStatus::Running);
    assert!(!run.is_finished());
    let mut events = run.events().expect("the events, once");
    assert!(run.events().is_none(), "the events are taken once");

    let report = run.await.unwrap();
    assert_eq!(report.run_id, id);
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.answer.as_deref(), Some("THE ANSWER"));

    let mut seen = Vec::new();
    while let Some(event) = events.recv().await {
        assert_eq!(event.run, id, "every event names the run");
        seen.push(event.kind);
    }
    assert!(matches!(seen.first(), Some(EventKind::RunStarted { .. })));
    assert!(matches!(seen.last(), Some(EventKind::RunFinished { .. })));
    let steps = seen
        .iter()
        .filter(|k| matches!(k, EventKind::StepCompleted { .. }))
        .count();
    assert_eq!(steps, 3);
}

#[tokio::test]
async fn a_started_run_that_asks_for_approval_parks_after_planning() {
    let (_dir, store) = store();
    let fake = fake(Duration::ZERO);
    let report = approving(&fake, &store)
        .start("wait for me")
        .await
        .unwrap()
        .join()
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::AwaitingApproval);
    assert_eq!(report.plan.as_ref().unwrap().steps.len(), 3);
    assert!(
        fake.step_requests().is_empty(),
        "nothing ran before approval"
    );
    let stored = store.load_run(&report.run_id).await.unwrap().unwrap();
    assert_eq!(stored.status, RunStatus::AwaitingApproval);
}

#[tokio::test]
async fn cancelling_the_handle_stops_the_run_and_it_can_be_resumed() {
    let (_dir, store) = store();
    let fake = fake(Duration::from_millis(200));
    let mut run = agent(&fake, &store)
        .build()
        .unwrap()
        .start("compare the frameworks")
        .await
        .unwrap();
    // Cancelled while its first step waits on the model, once the plan is made.
    let mut events = run.events().expect("the events");
    while let Some(event) = events.recv().await {
        if matches!(event.kind, EventKind::StepStarted { .. }) {
            break;
        }
    }
    run.cancel();
    let report = run.await.unwrap();
    assert_eq!(report.status, RunStatus::Cancelled);
    let runs = Runs::new(store.clone());
    let continuable = runs
        .check_continuable(&report.run_id, Continuation::Resume)
        .await
        .unwrap();
    assert_eq!(continuable.stored.status, RunStatus::Cancelled);
    assert_eq!(continuable.spec.strategy, "linear");

    let resumed = agent(&fake, &store)
        .build()
        .unwrap()
        .resume(&report.run_id)
        .await
        .unwrap();
    assert_eq!(resumed.status, RunStatus::Succeeded);
}

/// A run cancelled while its planning call waits on the model ends `cancelled` (not an
/// error) at once, and can be resumed.
#[tokio::test]
async fn cancelling_while_the_plan_is_made_ends_the_run_cancelled() {
    let (_dir, store) = store();
    let fake = fake(Duration::from_secs(30));
    let run = agent(&fake, &store)
        .build()
        .unwrap()
        .start("compare the frameworks")
        .await
        .unwrap();
    run.cancel();
    let report = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the run stopped waiting on the model")
        .unwrap();
    assert_eq!(report.status, RunStatus::Cancelled);
    assert!(report.plan.is_none(), "no plan was made");
    Runs::new(store.clone())
        .check_continuable(&report.run_id, Continuation::Resume)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_empty_goal_is_refused_before_a_run_exists() {
    let (_dir, store) = store();
    let e = agent(&fake(Duration::ZERO), &store)
        .build()
        .unwrap()
        .start("  ")
        .await
        .unwrap_err();
    assert!(matches!(e, StrategyError::Config(_)), "{e}");
    assert!(e.to_string().contains("the goal is empty"), "{e}");
    assert!(store.list_runs().await.unwrap().is_empty());
}

// --- Runs::reject ---

#[tokio::test]
async fn reject_ends_a_waiting_run_once_with_its_reason() {
    let (_dir, store) = store();
    let id = parked(&store).await;
    let runs = Runs::new(store.clone());
    let report = runs
        .reject(&id, Some("too costly".to_owned()))
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Rejected);
    assert_eq!(report.failure.as_deref(), Some("too costly"));
    assert_eq!(
        store.load_run(&id).await.unwrap().unwrap().status,
        RunStatus::Rejected
    );

    let e = runs.reject(&id, None).await.unwrap_err();
    assert!(
        matches!(
            e,
            RunsError::NotAwaitingApproval {
                status: RunStatus::Rejected,
                ..
            }
        ),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains(id.as_str()) && text.contains("rejected, not awaiting approval"),
        "{text}"
    );
    // The agent's reject is the same operation, in the agent's errors.
    let e = approving(&fake(Duration::ZERO), &store)
        .reject(&id, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            StrategyError::Exec(plan_exec::error::ExecError::NotAwaitingApproval { .. })
        ),
        "{e}"
    );
}

#[tokio::test]
async fn reject_without_a_reason_says_nothing_was_run() {
    let (_dir, store) = store();
    let id = parked(&store).await;
    let report = Runs::new(store)
        .reject(&id, Some("   ".to_owned()))
        .await
        .unwrap();
    assert_eq!(
        report.failure.as_deref(),
        Some(plan_strategies::DEFAULT_REJECTION)
    );
}

#[tokio::test]
async fn reject_of_an_unknown_run_names_it() {
    let (_dir, store) = store();
    let e = Runs::new(store)
        .reject(&RunId::new("nosuchrun"), None)
        .await
        .unwrap_err();
    assert!(matches!(e, RunsError::NotFound(_)), "{e}");
    assert!(e.to_string().contains("no run `nosuchrun`"), "{e}");
}

// --- Runs::wait ---

#[tokio::test]
async fn wait_follows_a_run_to_its_end() {
    let (_dir, store) = store();
    let fake = fake(Duration::from_millis(40));
    let run = agent(&fake, &store)
        .build()
        .unwrap()
        .start("compare the frameworks")
        .await
        .unwrap();
    let id = run.id().clone();
    let runs = Runs::new(store.clone());
    let waited = runs
        .wait(&id, WaitFor::End, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(waited.status, RunStatus::Succeeded);
    assert_eq!(waited.answer.as_deref(), Some("THE ANSWER"));
    assert_eq!(run.await.unwrap().status, RunStatus::Succeeded);
}

#[tokio::test]
async fn waiting_for_approval_is_not_an_end_unless_asked() {
    let (_dir, store) = store();
    let id = parked(&store).await;
    let runs = Runs::new(store.clone());
    let e = runs
        .wait(&id, WaitFor::End, Some(Duration::from_millis(300)))
        .await
        .unwrap_err();
    match &e {
        RunsError::StillWaiting { run, status, .. } => {
            assert_eq!(run, &id);
            assert_eq!(*status, RunStatus::AwaitingApproval);
        }
        other => panic!("not a timeout: {other}"),
    }
    assert!(
        e.to_string()
            .contains(&format!("run `{id}` is still awaiting_approval")),
        "{e}"
    );
    let stopped = runs
        .wait(&id, WaitFor::EndOrApproval, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(stopped.status, RunStatus::AwaitingApproval);
}

#[tokio::test]
async fn wait_sees_a_run_stop_for_approval_while_it_waits() {
    let (_dir, store) = store();
    let fake = fake(Duration::from_millis(150));
    let run = approving(&fake, &store).start("wait for me").await.unwrap();
    let runs = Runs::new(store.clone());
    let stopped = runs
        .wait(
            run.id(),
            WaitFor::EndOrApproval,
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(stopped.status, RunStatus::AwaitingApproval);
    run.await.unwrap();
}

#[tokio::test]
async fn wait_goes_on_through_an_approval_to_the_end() {
    let (_dir, store) = store();
    let id = parked(&store).await;
    let runs = Runs::new(store.clone());
    let waiter = {
        let (runs, id) = (runs.clone(), id.clone());
        tokio::spawn(async move {
            runs.wait(&id, WaitFor::End, Some(Duration::from_secs(30)))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let approved = agent(&fake(Duration::ZERO), &store)
        .build()
        .unwrap()
        .approve(&id, None)
        .await
        .unwrap();
    assert_eq!(approved.status, RunStatus::Succeeded);
    let waited = waiter.await.unwrap().unwrap();
    assert_eq!(waited.status, RunStatus::Succeeded);
}

#[tokio::test]
async fn wait_for_an_unknown_run_says_so() {
    let (_dir, store) = store();
    let e = Runs::new(store)
        .wait(&RunId::new("nosuchrun"), WaitFor::End, None)
        .await
        .unwrap_err();
    assert!(matches!(e, RunsError::NotFound(_)), "{e}");
}

// --- Runs::cancel and track ---

#[tokio::test]
async fn cancel_stops_a_run_tracked_in_this_process() {
    let (_dir, store) = store();
    let fake = fake(Duration::from_millis(200));
    let run = agent(&fake, &store)
        .build()
        .unwrap()
        .start("compare the frameworks")
        .await
        .unwrap();
    let runs = Runs::new(store.clone());
    let tracked = runs.track(run.id(), run.cancel_token().clone()).unwrap();
    assert!(runs.is_running_here(run.id()));
    // Twice is refused: one process continues a run once.
    let e = runs.track(run.id(), CancelToken::new()).unwrap_err();
    assert!(matches!(e, RunsError::Running(_)), "{e}");
    let e = runs
        .check_continuable(run.id(), Continuation::Resume)
        .await
        .unwrap_err();
    assert!(matches!(e, RunsError::Running(_)), "{e}");

    assert_eq!(runs.cancel(run.id()).await.unwrap(), Cancelling::Here);
    let report = run.await.unwrap();
    assert_eq!(report.status, RunStatus::Cancelled);
    drop(tracked);
    assert!(!runs.is_running_here(&report.run_id));
}

/// A shared store's cancel requests: answers as told, and counts them.
struct Remote {
    answer: bool,
    asked: AtomicUsize,
}

#[async_trait::async_trait]
impl CancelRequests for Remote {
    async fn request_cancel(&self, _run: &RunId) -> Result<bool, StoreError> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        Ok(self.answer)
    }
}

#[tokio::test]
async fn cancel_of_a_run_elsewhere_goes_through_the_shared_store_or_says_why_not() {
    let (_dir, store) = store();
    let id = parked(&store).await;
    let e = Runs::new(store.clone()).cancel(&id).await.unwrap_err();
    assert!(
        matches!(
            e,
            RunsError::NotRunningHere {
                status: RunStatus::AwaitingApproval,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("not running in this process"), "{e}");

    let yes = Arc::new(Remote {
        answer: true,
        asked: AtomicUsize::new(0),
    });
    let runs = Runs::new(store.clone()).cancel_requests(yes.clone());
    assert_eq!(runs.cancel(&id).await.unwrap(), Cancelling::Requested);
    assert_eq!(yes.asked.load(Ordering::SeqCst), 1);

    let no = Arc::new(Remote {
        answer: false,
        asked: AtomicUsize::new(0),
    });
    let e = Runs::new(store.clone())
        .cancel_requests(no)
        .cancel(&id)
        .await
        .unwrap_err();
    assert!(matches!(e, RunsError::NotCancellable { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("only a queued or running run can be cancelled"),
        "{e}"
    );
    let e = runs.cancel(&RunId::new("nosuchrun")).await.unwrap_err();
    assert!(matches!(e, RunsError::NotFound(_)), "{e}");
    assert_eq!(
        yes.asked.load(Ordering::SeqCst),
        1,
        "an unknown run is not asked for"
    );
}

// --- Runs::check_continuable ---

#[tokio::test]
async fn check_continuable_names_the_run_its_status_and_what_to_do() {
    let (_dir, store) = store();
    let runs = Runs::new(store.clone());
    let waiting = parked(&store).await;

    let e = runs
        .check_continuable(&waiting, Continuation::Resume)
        .await
        .unwrap_err();
    assert!(matches!(e, RunsError::AwaitsApproval(_)), "{e}");
    assert!(
        e.to_string().contains(waiting.as_str()) && e.to_string().contains("approve it"),
        "{e}"
    );
    let ok = runs
        .check_continuable(&waiting, Continuation::Approve)
        .await
        .unwrap();
    assert_eq!(ok.stored.status, RunStatus::AwaitingApproval);

    let done = agent(&fake(Duration::ZERO), &store)
        .build()
        .unwrap()
        .run("compare the frameworks")
        .await
        .unwrap();
    let e = runs
        .check_continuable(&done.run_id, Continuation::Resume)
        .await
        .unwrap_err();
    assert!(matches!(e, RunsError::AlreadySucceeded(_)), "{e}");
    let e = runs
        .check_continuable(&done.run_id, Continuation::Approve)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            RunsError::NotAwaitingApproval {
                status: RunStatus::Succeeded,
                ..
            }
        ),
        "{e}"
    );

    let e = runs
        .check_continuable(&RunId::new("nosuchrun"), Continuation::Resume)
        .await
        .unwrap_err();
    assert!(matches!(e, RunsError::NotFound(_)), "{e}");
}

#[tokio::test]
async fn a_run_whose_spec_does_not_load_cannot_be_continued() {
    let (_dir, store) = store();
    // A run recorded by a newer version, with a spec this build cannot read.
    let record = RunRecord::new("from the future")
        .with_options(serde_json::json!({"spec": {"version": 999}}));
    let session = SessionBuilder::new()
        .store(store.clone())
        .create(record)
        .await
        .unwrap();
    let id = session.id().clone();
    session
        .finish(RunStatus::Failed, None, Some("crashed".to_owned()))
        .await
        .unwrap();
    let e = Runs::new(store)
        .check_continuable(&id, Continuation::Resume)
        .await
        .unwrap_err();
    assert!(matches!(e, RunsError::Spec { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("cannot continue run `{id}`: ")),
        "{e}"
    );
}

// --- Runs::report ---

#[tokio::test]
async fn report_is_the_stored_runs_report() {
    let (_dir, store) = store();
    let report = agent(&fake(Duration::ZERO), &store)
        .build()
        .unwrap()
        .run("compare the frameworks")
        .await
        .unwrap();
    let read = Runs::new(store).report(&report.run_id).await.unwrap();
    assert_eq!(read.to_json_pretty(), report.to_json_pretty());
}

#[test]
fn the_facade_and_the_handle_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Runs>();
    send_sync::<RunsError>();
    send::<plan_strategies::RunHandle>();
    send::<plan_strategies::Tracked>();
}

#[tokio::test]
async fn a_run_that_ended_is_given_a_moment_to_let_go_here() {
    let (_dir, store) = store();
    let runs = Runs::new(store.clone());
    // Its status is stored before its task lets go of the registration.
    let ended = agent(&fake(Duration::ZERO), &store)
        .build()
        .unwrap()
        .plan_for_approval("wait for me")
        .await
        .unwrap();
    runs.reject(&ended.run_id, None).await.unwrap();
    let id = ended.run_id;
    let tracked = runs.track(&id, CancelToken::new()).unwrap();
    let letting_go = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(tracked);
    });
    let e = runs.cancel(&id).await.unwrap_err();
    assert!(
        matches!(
            e,
            RunsError::NotRunningHere {
                status: RunStatus::Rejected,
                ..
            }
        ),
        "a run that ended is not cancelled: {e}"
    );
    letting_go.await.unwrap();

    // One that stays registered is still running here (a continuation under way).
    let _held = runs.track(&id, CancelToken::new()).unwrap();
    let e = runs
        .check_continuable(&id, Continuation::Resume)
        .await
        .unwrap_err();
    assert!(matches!(e, RunsError::Running(_)), "{e}");
}
