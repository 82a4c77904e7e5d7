//! `POST /api/runs` bodies: every run setting a request may name reaches the run (its
//! budget too, in the server and on a fleet), and an unknown field or a nonsense value is
//! refused with 422 naming it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use plan_core::RunId;
use plan_exec::context::CancelToken;
use plan_exec::store::RunRecord;
use plan_llm::testing::{FakeOpenAi, FakeReply};
use plan_llm::{ProviderConfig, ProviderRegistry};
use plan_serve::{Fleet, Held, PlanService, ServeConfig};
use plan_sqlite::SqliteStore;
use plan_strategies::{RunSpec, Runtime};
use serde_json::{Value, json};

const PLAN: &str = r#"{"goal": "Two parts", "steps": [
    {"id": "a", "description": "First part", "dependencies": []},
    {"id": "b", "description": "Second part", "dependencies": ["a"]}]}"#;

/// The default spec of a server: the fake model at `fake`, the DAG strategy.
fn on(fake: &FakeOpenAi) -> RunSpec {
    let mut defaults = RunSpec::new("openai:fake-model", "dag");
    defaults.base_url = Some(fake.base_url());
    defaults
}

/// A server on loopback over a fresh store with `defaults`; its base URL.
async fn serve(defaults: RunSpec, fleet: Option<Arc<dyn Fleet>>) -> (String, tempfile::TempDir) {
    serve_with(defaults, fleet, ServeConfig::default()).await
}

/// As [`serve`], with this configuration.
async fn serve_with(
    defaults: RunSpec,
    fleet: Option<Arc<dyn Fleet>>,
    config: ServeConfig,
) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("runs.sqlite")).unwrap());
    let runtime = Runtime::new(
        ProviderRegistry::builtin(),
        ProviderConfig::from_vars([("OPENAI_API_KEY", "sk-test")]),
    );
    let mut service = PlanService::new(store, Arc::new(runtime), defaults, config);
    if let Some(fleet) = fleet {
        service = service.with_fleet(fleet);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(plan_serve::serve(listener, service));
    (format!("http://{addr}"), dir)
}

async fn fake_model() -> FakeOpenAi {
    let fake = FakeOpenAi::start().await;
    fake.on("You are a planner", FakeReply::text(PLAN))
        .on(
            "You write the final answer",
            FakeReply::text("both parts done"),
        )
        .otherwise(FakeReply::text("part done"));
    fake
}

async fn post(base: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/api/runs"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// The report of run `id` once it has ended: its event stream ends after `run_finished`.
async fn finished_report(base: &str, id: &str) -> Value {
    let client = reqwest::Client::new();
    let events = tokio::time::timeout(
        Duration::from_secs(60),
        client
            .get(format!("{base}/api/runs/{id}/events"))
            .send()
            .await
            .unwrap()
            .text(),
    )
    .await
    .expect("the run's event stream never ended")
    .unwrap();
    assert!(events.contains("\"run_finished\""), "{events}");
    client
        .get(format!("{base}/api/runs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The server's key goes to its own endpoint and to those the operator named; a loopback
/// endpoint a client chose gets a run with no key, and the spec of that run says so (so
/// a worker or a resume does not send one either).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_chosen_endpoint_never_gets_the_servers_key() {
    let own = fake_model().await;
    let chosen = fake_model().await;
    let (base, _dir) = serve(on(&own), None).await;
    let (code, v) = post(&base, json!({"goal": "Two parts"})).await;
    assert_eq!(code, 201, "{v}");
    finished_report(&base, v["run_id"].as_str().unwrap()).await;
    assert!(
        own.requests()
            .iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer sk-test")),
        "the server's own endpoint gets its key"
    );
    let (code, v) = post(
        &base,
        json!({"goal": "Two parts", "base_url": chosen.base_url()}),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let report = finished_report(&base, v["run_id"].as_str().unwrap()).await;
    assert_eq!(report["status"], "succeeded", "{report}");
    let seen = chosen.requests();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|r| r.authorization.is_none()),
        "{:?}",
        seen.iter().map(|r| &r.authorization).collect::<Vec<_>>()
    );

    // Named by the operator: the key goes there.
    let named = fake_model().await;
    let config = ServeConfig::default()
        .with_allowed_base_url(&named.base_url())
        .unwrap();
    let (base, _dir) = serve_with(on(&own), None, config).await;
    let (code, v) = post(
        &base,
        json!({"goal": "Two parts", "base_url": named.base_url()}),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    finished_report(&base, v["run_id"].as_str().unwrap()).await;
    assert!(
        named
            .requests()
            .iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer sk-test"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_budget_in_the_body_stops_the_run() {
    let fake = fake_model().await;
    let (base, _dir) = serve(on(&fake), None).await;
    let (code, v) = post(&base, json!({"goal": "Two parts", "budget_tokens": 5})).await;
    assert_eq!(code, 201, "{v}");
    let report = finished_report(&base, v["run_id"].as_str().unwrap()).await;
    assert_ne!(report["status"], "succeeded", "{report}");
    let failure = report["failure"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(failure.contains("budget"), "{report}");
    // The same request without the budget succeeds: the budget stopped it.
    let (code, v) = post(&base, json!({"goal": "Two parts"})).await;
    assert_eq!(code, 201, "{v}");
    let report = finished_report(&base, v["run_id"].as_str().unwrap()).await;
    assert_eq!(report["status"], "succeeded", "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_setting_is_taken_and_nonsense_is_refused_naming_it() {
    let fake = fake_model().await;
    let (base, _dir) = serve(on(&fake), None).await;
    let (code, v) = post(
        &base,
        json!({"goal": "Two parts", "strategy": "adaptive", "max_steps": 5, "max_replans": 0,
               "max_depth": 2, "reflection_rounds": 1, "concurrency": 1,
               "step_timeout_secs": 60, "approve": false, "budget_tokens": 100000}),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let report = finished_report(&base, v["run_id"].as_str().unwrap()).await;
    assert_eq!(report["status"], "succeeded", "{report}");
    for (body, named) in [
        (
            json!({"goal": "g", "max_step": 3}),
            "`max_step` is not a run setting (did you mean `max_steps`?)",
        ),
        (
            json!({"goal": "g", "concurrency": 0}),
            "concurrency = 0: must be at least 1",
        ),
        (
            json!({"goal": "g", "max_replans": -1}),
            "max_replans = -1: must be a whole number",
        ),
        (json!({"goal": "g", "budget_usd": -1}), "budget_usd = -1"),
        (
            json!({"goal": "g", "approve": "maybe"}),
            "approve = \"maybe\"",
        ),
        (json!({"goal": 7}), "goal = 7: must be a string"),
        (json!({"strategy": "dag"}), "goal is missing"),
        (json!(["goal"]), "the body is an array: send an object"),
        // The fake model's price is not known: a dollar budget cannot be metered.
        (
            json!({"goal": "g", "budget_usd": 0.5}),
            "a budget in dollars needs the price of openai:fake-model",
        ),
    ] {
        let (code, v) = post(&base, body.clone()).await;
        assert_eq!(code, 422, "{body}: {v}");
        let e = v["error"].as_str().unwrap();
        assert!(e.contains(named), "{body}: {e}");
    }
}

/// A fleet that keeps what it is given.
#[derive(Default)]
struct Queue(Mutex<Vec<RunRecord>>);

#[async_trait]
impl Fleet for Queue {
    async fn submit(&self, record: RunRecord) -> Result<RunId, String> {
        let id = record.id.clone();
        self.0.lock().unwrap().push(record);
        Ok(id)
    }

    async fn cancel(&self, _run: &RunId) -> Result<bool, String> {
        Ok(false)
    }

    async fn requeue(&self, _run: &RunId) -> Result<bool, String> {
        Ok(false)
    }

    async fn hold(&self, _run: &RunId, _cancel: CancelToken) -> Result<Held, String> {
        Err("not in this test".to_owned())
    }

    async fn wait_for_events(&self, _run: &RunId, at_most: Duration) {
        tokio::time::sleep(at_most).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_fleet_the_queued_run_carries_the_requested_budget() {
    let queue = Arc::new(Queue::default());
    // A model on its provider's own API has a list price: dollars can be metered.
    let defaults = RunSpec::new("openai:gpt-4o-mini", "dag");
    let (base, _dir) = serve(defaults, Some(queue.clone())).await;
    let (code, v) = post(
        &base,
        json!({"goal": "Two parts", "budget_tokens": 900, "budget_usd": 0.25,
               "concurrency": 2}),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["status"], "queued");
    let record = queue.0.lock().unwrap().pop().unwrap();
    assert_eq!(record.id.as_str(), v["run_id"].as_str().unwrap());
    let spec = RunSpec::from_record(&record).unwrap();
    assert_eq!(spec.budget.tokens, Some(900));
    assert_eq!(spec.budget.usd, Some(0.25));
    assert_eq!(spec.limits.concurrency, 2);
    assert_eq!(spec.model, "openai:gpt-4o-mini");
    // A dollar budget the server cannot price is refused before it is queued.
    let (code, v) = post(
        &base,
        json!({"goal": "Two parts", "model": "openai:fake-model", "budget_usd": 0.25}),
    )
    .await;
    assert_eq!(code, 422, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("needs the price of openai:fake-model"),
        "{v}"
    );
    assert!(queue.0.lock().unwrap().is_empty(), "nothing was queued");

    // A loopback endpoint the client chose is queued with no key for the worker to use.
    let (code, v) = post(
        &base,
        json!({"goal": "Two parts", "base_url": "http://127.0.0.1:9/v1"}),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let record = queue.0.lock().unwrap().pop().unwrap();
    assert!(RunSpec::from_record(&record).unwrap().no_keys);
}
