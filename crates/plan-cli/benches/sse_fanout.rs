//! `plan serve` fan-out: 200 clients follow one run of 100 steps over Server-Sent Events.
//! Prints the added latency per event (written to the journal → read by a client; only
//! events written after the client connected) as p50/p99, and the server's memory (RSS)
//! before and at its peak: on a SQLite store (the run in the server, streams polling the
//! store), then on PostgreSQL (the run on a `plan worker`, streams woken by `NOTIFY`).
//!
//! `cargo bench -p plan-cli --bench sse_fanout` (part of `cargo xtask bench`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use plan_llm::testing::{FakeOpenAi, FakeReply};

/// Streams by default; `SSE_CLIENTS=N` sets another number.
const CLIENTS: usize = 200;

fn client_count() -> usize {
    std::env::var("SSE_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CLIENTS)
}
const STEPS: usize = 100;

/// Ten layers of ten steps, each depending on the layer before.
fn plan() -> String {
    let mut steps = Vec::new();
    for layer in 0..STEPS / 10 {
        for i in 0..10 {
            let deps: Vec<String> = if layer == 0 {
                Vec::new()
            } else {
                (0..10).map(|j| format!("l{}s{j}", layer - 1)).collect()
            };
            steps.push(serde_json::json!({
                "id": format!("l{layer}s{i}"), "description": format!("Part {i} of layer {layer}"),
                "dependencies": deps,
            }));
        }
    }
    serde_json::json!({"goal": "A hundred parts", "steps": steps}).to_string()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    fanout(None);
    let cluster = plan_postgres::testing::TempCluster::start()
        .expect("a PostgreSQL cluster (install postgresql)");
    fanout(Some(&cluster.create_database()));
}

/// One fan-out: on SQLite when `store` is `None`, else on that PostgreSQL store with one
/// worker running the run.
fn fanout(store: Option<&str>) {
    let fake = FakeOpenAi::start_detached();
    let plan_json = plan();
    fake.on("You are a planner", FakeReply::text(plan_json))
        .on("You write the final answer", FakeReply::text("done"))
        .otherwise(FakeReply::text("part done"));
    fake.latency(Duration::from_millis(20));
    let home = tempfile::tempdir().unwrap();
    let plan = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_plan"));
        cmd.args(args)
            .env("HOME", home.path())
            .env("XDG_DATA_HOME", home.path().join("data"))
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .env("OPENAI_API_KEY", "sk-bench")
            .env_remove("PLAN_STORE")
            .stdout(Stdio::null());
        cmd
    };
    let base_url = fake.base_url();
    let mut args = vec![
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--model",
        "openai:fake-model",
        "--base-url",
        &base_url,
    ];
    if let Some(url) = store {
        args.extend(["--store", url]);
    }
    let mut server = plan(&args).stderr(Stdio::piped()).spawn().unwrap();
    let mut worker = store.map(|url| {
        plan(&["worker", "--store", url, "--concurrency", "16"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    });
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("plan serve exited").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let client = reqwest_otlp::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let idle = rss_kib(server.id());
    let v: serde_json::Value = client
        .post(format!("{base}/api/runs"))
        .json(
            &serde_json::json!({"goal": "A hundred parts", "strategy": "dag", "max_steps": STEPS, "concurrency": 10}),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = v["run_id"].as_str().expect("a run id").to_owned();
    let latencies: Arc<Mutex<Vec<u64>>> = Arc::default();
    let counts: Arc<Mutex<Vec<usize>>> = Arc::default();
    let clients: Vec<_> = (0..client_count())
        .map(|_| {
            let (client, url) = (client.clone(), format!("{base}/api/runs/{id}/events"));
            let (latencies, counts) = (latencies.clone(), counts.clone());
            std::thread::spawn(move || {
                let connected = now_ms();
                let body = client.get(url).send().unwrap();
                let mut mine = Vec::new();
                let mut n = 0;
                for line in BufReader::new(body).lines() {
                    let line = line.unwrap();
                    let Some(data) = line.strip_prefix("data:") else {
                        continue;
                    };
                    let received = now_ms();
                    n += 1;
                    let v: serde_json::Value = serde_json::from_str(data.trim()).unwrap();
                    let ts = v["ts"]
                        .as_str()
                        .and_then(plan_core::Timestamp::parse_rfc3339);
                    if let Some(ts) = ts.map(|t| t.unix_millis()).filter(|t| *t >= connected) {
                        mine.push(received.saturating_sub(ts));
                    }
                }
                latencies.lock().unwrap().extend(mine);
                counts.lock().unwrap().push(n);
            })
        })
        .collect();
    let pid = server.id();
    let peak = Arc::new(Mutex::new(idle));
    let sampling = {
        let peak = peak.clone();
        std::thread::spawn(move || {
            for _ in 0..6000 {
                let r = rss_kib(pid);
                let mut p = peak.lock().unwrap();
                *p = (*p).max(r);
                drop(p);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    for c in clients {
        c.join().unwrap();
    }
    let _ = server.kill();
    let _ = server.wait();
    if let Some(w) = worker.as_mut() {
        let _ = w.kill();
        let _ = w.wait();
    }
    drop(sampling);
    let mut ms = latencies.lock().unwrap().clone();
    ms.sort_unstable();
    let counts = counts.lock().unwrap().clone();
    println!(
        "plan serve SSE fan-out on {}: {} streams on one run of {STEPS} steps (fake model at 20 ms per call)",
        if store.is_some() {
            "PostgreSQL (run on a worker, streams woken by NOTIFY)"
        } else {
            "SQLite (run in the server, streams polling every 50 ms)"
        },
        client_count()
    );
    println!(
        "events per stream: {} to {}; live events measured: {}",
        counts.iter().min().unwrap_or(&0),
        counts.iter().max().unwrap_or(&0),
        ms.len()
    );
    println!(
        "added latency per event (journal write to client read): p50 {} ms, p99 {} ms",
        percentile(&ms, 0.5),
        percentile(&ms, 0.99)
    );
    println!(
        "server RSS: {:.1} MiB idle, {:.1} MiB at peak",
        idle as f64 / 1024.0,
        *peak.lock().unwrap() as f64 / 1024.0
    );
}
