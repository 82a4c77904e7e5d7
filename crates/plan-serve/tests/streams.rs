//! Many event streams on one live run, through the HTTP API over a SQLite store: every
//! stream, whenever it connects and from whichever `Last-Event-ID`, gets the run's journal
//! in order, without a gap or a repeat, up to `run_finished`.

use std::sync::Arc;
use std::time::Duration;

use plan_exec::store::RunStore as _;
use plan_llm::testing::{FakeOpenAi, FakeReply};
use plan_llm::{ProviderConfig, ProviderRegistry};
use plan_serve::{PlanService, ServeConfig};
use plan_sqlite::SqliteStore;
use plan_strategies::{RunSpec, Runtime};

/// Four layers of five steps.
fn plan() -> String {
    let mut steps = Vec::new();
    for layer in 0..4 {
        for i in 0..5 {
            let deps: Vec<String> = if layer == 0 {
                Vec::new()
            } else {
                (0..5).map(|j| format!("l{}s{j}", layer - 1)).collect()
            };
            steps.push(serde_json::json!({
                "id": format!("l{layer}s{i}"), "description": format!("Part {i} of layer {layer}"),
                "dependencies": deps,
            }));
        }
    }
    serde_json::json!({"goal": "Twenty parts", "steps": steps}).to_string()
}

/// The `id:` of each event of an SSE body, in order, and whether it ended with
/// `run_finished`.
fn ids_of(body: &str) -> (Vec<u64>, bool) {
    let mut ids = Vec::new();
    let mut last_data = String::new();
    for line in body.lines() {
        if let Some(id) = line.strip_prefix("id:") {
            ids.push(id.trim().parse().unwrap());
        }
        if let Some(data) = line.strip_prefix("data:") {
            last_data = data.to_owned();
        }
    }
    (ids, last_data.contains("\"run_finished\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_of_a_live_run_gets_its_whole_journal_in_order() {
    let fake = FakeOpenAi::start().await;
    fake.on("You are a planner", FakeReply::text(plan()))
        .on("You write the final answer", FakeReply::text("done"))
        .otherwise(FakeReply::text("part done"));
    fake.latency(Duration::from_millis(150));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("runs.sqlite")).unwrap());
    let base_url = fake.base_url();
    let runtime = Runtime::new(
        ProviderRegistry::builtin(),
        ProviderConfig::from_vars([("OPENAI_API_KEY", "sk-test")]),
    );
    let mut defaults = RunSpec::new("openai:fake-model", "dag");
    defaults.base_url = Some(base_url);
    let service = PlanService::new(
        store.clone(),
        Arc::new(runtime),
        defaults,
        ServeConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(plan_serve::serve(listener, service));
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    let v: serde_json::Value = client
        .post(format!("{base}/api/runs"))
        .json(&serde_json::json!({"goal": "Twenty parts", "concurrency": 5}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = v["run_id"].as_str().unwrap().to_owned();
    // Streams join at different moments, some resuming from an event id.
    let mut streams = Vec::new();
    for i in 0..24u64 {
        let (client, url) = (client.clone(), format!("{base}/api/runs/{id}/events"));
        streams.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(25 * i)).await;
            let after = if i % 3 == 0 { i } else { 0 };
            let mut request = client.get(url);
            if after > 0 {
                request = request.header("Last-Event-ID", after.to_string());
            }
            let body = request.send().await.unwrap().text().await.unwrap();
            (after, body)
        }));
    }
    let mut bodies = Vec::new();
    for stream in streams {
        let (after, body) = tokio::time::timeout(Duration::from_secs(60), stream)
            .await
            .expect("a stream ended")
            .unwrap();
        bodies.push((after, body));
    }
    // Ids are journal positions; the entries only the journal holds (the calls recorded
    // for replay) are not streamed.
    let run = plan_core::RunId::new(id);
    let journal = store.events_after(&run, 0, 100_000).await.unwrap();
    let streamed: Vec<u64> = journal
        .iter()
        .filter(|e| !e.event.kind.is_journal_only())
        .map(|e| e.seq)
        .collect();
    for (after, body) in bodies {
        let (ids, ended) = ids_of(&body);
        assert!(ended, "a stream ended without run_finished");
        let expected: Vec<u64> = streamed.iter().copied().filter(|s| *s > after).collect();
        assert_eq!(ids, expected, "a gap or a repeat (after {after})");
    }
    let stored = store.load_run(&run).await.unwrap().unwrap();
    assert_eq!(journal.len(), stored.events.len());
    assert!(stored.events.len() > 60, "{} events", stored.events.len());
}
