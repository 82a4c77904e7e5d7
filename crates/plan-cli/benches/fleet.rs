//! Fleet throughput: a 1,000-step fan-out run (the fake model answering each call in
//! 20 ms, run concurrency 256) driven and executed by 1, 2 and 4 `plan worker` processes
//! over a throwaway PostgreSQL cluster, and the same plan run in one process
//! (`plan run --store postgres://...`) on the same cluster. Prints, for each: the time end
//! to end (submit to the end of `plan wait`, or the whole `plan run`), completed steps per
//! second, the claim-to-start latency of step tasks (queued → claimed, p50/p99), and the
//! statements the database ran per step (`pg_stat_statements`, top-level statements other
//! than transaction control, over the whole run) with the ten most run.
//!
//! `cargo bench -p plan-cli --bench fleet` (part of `cargo xtask bench`); needs
//! PostgreSQL's server binaries (Debian's `postgresql` package, with
//! `pg_stat_statements`). `FLEET_WORKERS=1,4` picks the worker counts,
//! `FLEET_IN_PROCESS=0` skips the in-process run, `FLEET_LOGS=DIR` keeps the workers'
//! logs, `FLEET_PLAN=PATH` runs another build of `plan` (to compare two builds).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plan_core::RunId;
use plan_exec::store::RunStore as _;
use plan_llm::testing::{FakeOpenAi, FakeReply};
use plan_postgres::PostgresStore;
use plan_postgres::testing::{StatementCount, StatementStats, TempCluster};

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
    let bin = std::env::var_os("FLEET_PLAN").unwrap_or_else(|| env!("CARGO_BIN_EXE_plan").into());
    let mut cmd = Command::new(bin);
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

/// The model calls of the run, answered by a fake server.
fn model_server() -> FakeOpenAi {
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
    server
}

/// The flags of the run, for `plan submit` and `plan run` alike.
fn run_args<'a>(url: &'a str, base_url: &'a str) -> Vec<&'a str> {
    vec![
        "--store",
        url,
        "--strategy",
        "dag",
        "--model",
        "openai:fake-model",
        "--base-url",
        base_url,
        "--max-steps",
        "1000",
        "--concurrency",
        "256",
    ]
}

/// What one run cost.
struct Figures {
    steps: usize,
    end_to_end: Duration,
    step_span: Duration,
    claim_ms: Vec<f64>,
    statements: Vec<StatementCount>,
}

impl Figures {
    fn statements_per_step(&self) -> f64 {
        let total: i64 = self.statements.iter().map(|s| s.calls).sum();
        total as f64 / self.steps.max(1) as f64
    }

    fn print_statements(&self) {
        println!(
            "  {:.2} statements per step ({} statements, {} steps); the ten most run, calls per step and mean time:",
            self.statements_per_step(),
            self.statements.iter().map(|s| s.calls).sum::<i64>(),
            self.steps
        );
        for s in self.statements.iter().take(10) {
            let text: String = s.query.split_whitespace().collect::<Vec<_>>().join(" ");
            let text: String = text.chars().take(100).collect();
            println!(
                "    {:6.2} {:6.2} ms  {text}",
                s.calls as f64 / self.steps.max(1) as f64,
                s.mean_ms
            );
        }
    }
}

/// The run's outputs, step-task timings and statement counts, once it ended.
fn measure(
    rt: &tokio::runtime::Runtime,
    url: &str,
    id: &str,
    stats: &StatementStats,
    end_to_end: Duration,
) -> Figures {
    // Counted before this reads anything.
    let statements = stats.counts().expect("the statement counts");
    let (steps, latencies, span) = rt.block_on(async {
        let store = PostgresStore::connect(url).await.unwrap();
        let run = store.load_run(&RunId::new(id)).await.unwrap().unwrap();
        let (lat, span) = store.step_task_timings(&RunId::new(id)).await.unwrap();
        (run.outputs.len(), lat, span)
    });
    let mut claim_ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    if std::env::var_os("FLEET_DEBUG").is_some() {
        let mut worst: Vec<(usize, f64)> = claim_ms.iter().copied().enumerate().collect();
        worst.sort_by(|a, b| b.1.total_cmp(&a.1));
        eprintln!(
            "DEBUG worst claim latencies (queue order, ms): {:?}",
            &worst[..20.min(worst.len())]
        );
    }
    claim_ms.sort_by(f64::total_cmp);
    Figures {
        steps,
        end_to_end,
        step_span: span,
        claim_ms,
        statements,
    }
}

/// The plan run in one process, `plan run --store postgres://...`.
fn in_process(rt: &tokio::runtime::Runtime, cluster: &TempCluster, server: &FakeOpenAi) -> Figures {
    let url = cluster.create_database();
    let stats = StatementStats::enable(&url).expect("pg_stat_statements");
    let home = tempfile::tempdir().unwrap();
    // The store's tables first, so that the count is the run's.
    rt.block_on(PostgresStore::connect(&url)).unwrap();
    stats.reset().unwrap();
    let started = Instant::now();
    let base_url = server.base_url();
    let mut args = vec!["run", "--json"];
    args.extend(run_args(&url, &base_url));
    args.push("A thousand parts");
    let out = plan(home.path()).args(&args).output().unwrap();
    let wall = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let id = report["run_id"].as_str().expect("the run's id").to_owned();
    measure(rt, &url, &id, &stats, wall)
}

/// The plan submitted to `workers` worker processes.
fn fleet(
    rt: &tokio::runtime::Runtime,
    cluster: &TempCluster,
    server: &FakeOpenAi,
    workers: usize,
) -> Figures {
    let url = cluster.create_database();
    let stats = StatementStats::enable(&url).expect("pg_stat_statements");
    let home = tempfile::tempdir().unwrap();
    rt.block_on(PostgresStore::connect(&url)).unwrap();
    // Counted from the workers' start: what they run while idle is part of the cost.
    stats.reset().unwrap();
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
                        std::fs::File::create(std::path::Path::new(&dir).join(format!("b{i}.log")))
                            .unwrap(),
                    ),
                    None => Stdio::null(),
                })
                .spawn()
                .unwrap()
        })
        .collect();
    let base_url = server.base_url();
    let started = Instant::now();
    let mut args = vec!["submit"];
    args.extend(run_args(&url, &base_url));
    args.push("A thousand parts");
    let out = plan(home.path()).args(&args).output().unwrap();
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
    let figures = measure(rt, &url, &id, &stats, wall);
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    figures
}

fn main() {
    let cluster = TempCluster::start_with_statement_stats()
        .expect("a PostgreSQL cluster with pg_stat_statements (install postgresql)");
    let server = model_server();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("fleet: {STEPS}-step fan-out, fake model at 20 ms per call, run concurrency 256");
    let local = (std::env::var("FLEET_IN_PROCESS").as_deref() != Ok("0"))
        .then(|| in_process(&rt, &cluster, &server));
    if let Some(f) = &local {
        println!(
            "in process (plan run --store postgres://): {} steps, {:.1} s end to end",
            f.steps,
            f.end_to_end.as_secs_f64()
        );
        f.print_statements();
    }
    let counts: Vec<usize> = std::env::var("FLEET_WORKERS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 4]);
    for workers in counts {
        let f = fleet(&rt, &cluster, &server, workers);
        let beside = match &local {
            Some(l) => format!(
                " ({:.2}x the {:.1} s in process)",
                f.end_to_end.as_secs_f64() / l.end_to_end.as_secs_f64().max(1e-9),
                l.end_to_end.as_secs_f64()
            ),
            None => String::new(),
        };
        println!(
            "{workers} worker(s): {} steps, {:.1} s end to end{beside}; {:.1} s of step work ({:.0} steps/s); claim-to-start p50 {:.1} ms, p99 {:.1} ms",
            f.steps,
            f.end_to_end.as_secs_f64(),
            f.step_span.as_secs_f64(),
            f.steps as f64 / f.step_span.as_secs_f64().max(1e-9),
            percentile(&f.claim_ms, 0.5),
            percentile(&f.claim_ms, 0.99),
        );
        f.print_statements();
    }
}
