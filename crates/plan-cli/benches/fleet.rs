//! Fleet throughput: a 1,000-step fan-out run (the fake model answering each call in
//! 20 ms, run concurrency 256) driven and executed by 1, 2 and 4 `plan worker` processes
//! over a throwaway PostgreSQL cluster. Prints completed steps per second and the
//! claim-to-start latency of step tasks (queued → claimed, p50/p99).
//!
//! `cargo bench -p plan-cli --bench fleet` (part of `cargo xtask bench`); needs
//! PostgreSQL's server binaries (Debian's `postgresql` package).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plan_core::RunId;
use plan_exec::RunStore as _;
use plan_llm::testing::{FakeOpenAi, FakeReply};
use plan_postgres::PostgresStore;
use plan_postgres::testing::TempCluster;

const STEPS: usize = 1000;

fn fan_out() -> String {
    let mut steps: Vec<serde_json::Value> = (0..STEPS - 1)
        .map(|i| serde_json::json!({"id": format!("s{i}"), "description": format!("Part {i}"), "dependencies": []}))
        .collect();
    steps.push(serde_json::json!({
        "id": "join", "description": "Put the parts together",
        "dependencies": (0..STEPS - 1).map(|i| format!("s{i}")).collect::<Vec<_>>(),
    }));
    serde_json::json!({"goal": "A thousand parts", "steps": steps}).to_string()
}

fn plan(home: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plan"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("OPENAI_API_KEY", "sk-bench")
        .stdin(Stdio::null());
    cmd
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let cluster = TempCluster::start().expect("a PostgreSQL cluster (install postgresql)");
    let server = FakeOpenAi::start_detached();
    let plan_json = fan_out();
    server
        .on(
            "You decide how to meet a goal",
            FakeReply::text(format!(r#"{{"answer": null, "plan": {plan_json}}}"#)),
        )
        .on("You are a planner", FakeReply::text(plan_json.clone()))
        .on(
            "You write the final answer",
            FakeReply::text("all parts done"),
        )
        .otherwise(FakeReply::text("part done"));
    server.latency(Duration::from_millis(20));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("fleet: {STEPS}-step fan-out, fake model at 20 ms per call, run concurrency 256");
    let counts: Vec<usize> = std::env::var("FLEET_WORKERS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 4]);
    for workers in counts {
        let url = cluster.create_database();
        let home = tempfile::tempdir().unwrap();
        let mut children: Vec<Child> = (0..workers)
            .map(|i| {
                plan(home.path())
                    .args([
                        "worker",
                        "--store",
                        &url,
                        "--name",
                        &format!("b{i}"),
                        "--concurrency",
                        &(256 / workers).max(8).to_string(),
                    ])
                    .stdout(Stdio::null())
                    .stderr(match std::env::var_os("FLEET_LOGS") {
                        Some(dir) => Stdio::from(
                            std::fs::File::create(
                                std::path::Path::new(&dir).join(format!("b{i}.log")),
                            )
                            .unwrap(),
                        ),
                        None => Stdio::null(),
                    })
                    .spawn()
                    .unwrap()
            })
            .collect();
        let started = Instant::now();
        let out = plan(home.path())
            .args([
                "submit",
                "--store",
                &url,
                "--strategy",
                "dag",
                "--model",
                "openai:fake-model",
                "--base-url",
                &server.base_url(),
                "--max-steps",
                "1000",
                "--concurrency",
                "256",
                "A thousand parts",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let out = plan(home.path())
            .args(["wait", &id, "--json", "--timeout", "120", "--store", &url])
            .output()
            .unwrap();
        let wall = started.elapsed();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (done, latencies, span) = rt.block_on(async {
            let store = PostgresStore::connect(&url).await.unwrap();
            let run = store.load_run(&RunId::new(&id)).await.unwrap().unwrap();
            let (lat, span) = store.step_task_timings(&RunId::new(&id)).await.unwrap();
            (run.outputs.len(), lat, span)
        });
        for c in &mut children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        println!(
            "{workers} worker(s): {done} steps in {:.1} s of step work ({:.0} steps/s; {:.1} s end to end with planning and synthesis); claim-to-start p50 {:.1} ms, p99 {:.1} ms",
            span.as_secs_f64(),
            done as f64 / span.as_secs_f64().max(1e-9),
            wall.as_secs_f64(),
            percentile(&ms, 0.5),
            percentile(&ms, 0.99),
        );
    }
}
