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
use std::time::{Duration, Instant, SystemTime};

use plan_core::{EventKind, RunId};
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

/// Where a run's time went, from the journal's event times and the bench's own clock:
/// milliseconds since the bench started the run (`plan submit` or `plan run`).
#[derive(Default)]
struct Timeline {
    /// `plan submit` returned (the fleet only).
    submitted: Option<f64>,
    /// The run's record was created.
    created: f64,
    /// Its driver began (`run_started`).
    started: f64,
    /// The first step began.
    first_step: f64,
    /// The last step of the fan-out completed (before the join).
    fanned_out: f64,
    /// The join began, and completed.
    join_started: f64,
    joined: f64,
    /// `run_finished` was journaled.
    finished: f64,
    /// `plan wait` (or `plan run`) returned.
    returned: f64,
}

impl Timeline {
    fn of(run: &plan_exec::store::StoredRun, start: SystemTime, returned: Duration) -> Self {
        let at = |t: plan_core::Timestamp| {
            t.system_time()
                .duration_since(start)
                .map_or_else(|e| -e.duration().as_secs_f64(), |d| d.as_secs_f64())
                * 1000.0
        };
        let mut tl = Timeline {
            created: at(run.record.created),
            returned: returned.as_secs_f64() * 1000.0,
            ..Timeline::default()
        };
        for e in &run.events {
            let t = at(e.ts);
            match &e.kind {
                EventKind::RunStarted { .. } if tl.started == 0.0 => tl.started = t,
                EventKind::StepStarted { step, .. } => {
                    if tl.first_step == 0.0 {
                        tl.first_step = t;
                    }
                    if step.as_str() == "join" {
                        tl.join_started = t;
                    }
                }
                EventKind::StepCompleted { step, .. } if step.as_str() == "join" => tl.joined = t,
                EventKind::StepCompleted { .. } => tl.fanned_out = tl.fanned_out.max(t),
                EventKind::RunFinished { .. } => tl.finished = t,
                _ => {}
            }
        }
        tl
    }

    fn print(&self) {
        let submitted = self
            .submitted
            .map(|t| format!("submitted {t:.0}, "))
            .unwrap_or_default();
        println!(
            "  timeline (ms from start): {submitted}created {:.0}, driver started {:.0}, first step {:.0}, fan-out done {:.0}, join {:.0}-{:.0}, finished {:.0}, returned {:.0}",
            self.created,
            self.started,
            self.first_step,
            self.fanned_out,
            self.join_started,
            self.joined,
            self.finished,
            self.returned
        );
    }
}

/// CPU time so far, in clock ticks (1/100 s): of this bench's children that ended (the
/// `plan` processes: `/proc/self/stat`'s cutime and cstime), and of the cluster (its
/// postmaster, the backends it reaped, and those still open).
#[derive(Clone, Copy, Default)]
struct Cpu {
    plan: u64,
    postgres: u64,
}

impl Cpu {
    /// Fields 14-17 (utime, stime, cutime, cstime) of `/proc/PID/stat`, and the parent.
    fn stat(pid: &str) -> Option<([u64; 4], String)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the command's closing parenthesis: state, ppid, ... (field 3 on).
        let rest: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
        let num = |i: usize| rest.get(i - 3).and_then(|v| v.parse().ok()).unwrap_or(0);
        Some((
            [num(14), num(15), num(16), num(17)],
            rest.get(1)?.to_string(),
        ))
    }

    fn now(port: u16) -> Cpu {
        let own = Self::stat("self").map_or(0, |(t, _)| t[2] + t[3]);
        let flag = format!("-p\0{port}\0");
        let mut postmaster = None;
        let mut procs = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if let Some((t, ppid)) = Self::stat(&pid) {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmd).contains(&flag) {
                    postmaster = Some((pid.clone(), t));
                }
                procs.push((t, ppid));
            }
        }
        let postgres = postmaster.map_or(0, |(pm, t)| {
            t.iter().sum::<u64>()
                + procs
                    .iter()
                    .filter(|(_, ppid)| *ppid == pm)
                    .map(|(t, _)| t[0] + t[1])
                    .sum::<u64>()
        });
        Cpu {
            plan: own,
            postgres,
        }
    }

    /// With `FLEET_DEBUG`: each process of the cluster whose CPU time is 50 ms or more,
    /// with its title (`postgres: USER DB HOST idle`, or a background process).
    fn print_busiest(port: u16) {
        let flag = format!("-p\0{port}\0");
        let mut postmaster = None;
        let mut procs = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if let Some((t, ppid)) = Self::stat(&pid) {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                if cmd.contains(&flag.replace('\0', " ")) {
                    postmaster = Some(pid.clone());
                }
                procs.push((pid, t, ppid, cmd));
            }
        }
        let Some(pm) = postmaster else { return };
        let activity = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-At", "-c"])
            .arg("SELECT pid, left(regexp_replace(query, '\\s+', ' ', 'g'), 90) FROM pg_stat_activity")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for (pid, t, ppid, cmd) in procs {
            if ppid == pm && t[0] + t[1] >= 5 {
                let last = activity
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{pid}|")))
                    .unwrap_or("");
                let cmd: String = cmd.split_whitespace().take(4).collect::<Vec<_>>().join(" ");
                eprintln!(
                    "DEBUG {pid} {:.2} s {cmd}: {last}",
                    (t[0] + t[1]) as f64 / 100.0
                );
            }
        }
    }

    fn since(self, before: Cpu) -> String {
        format!(
            "cpu: plan processes {:.2} s, PostgreSQL {:.2} s",
            (self.plan - before.plan) as f64 / 100.0,
            self.postgres.saturating_sub(before.postgres) as f64 / 100.0
        )
    }
}

/// What one run cost.
struct Figures {
    cpu: String,
    steps: usize,
    timeline: Timeline,
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
    start: SystemTime,
    end_to_end: Duration,
) -> Figures {
    // Counted before this reads anything.
    let statements = stats.counts().expect("the statement counts");
    let (run, latencies, span) = rt.block_on(async {
        let store = PostgresStore::connect(url).await.unwrap();
        let run = store.load_run(&RunId::new(id)).await.unwrap().unwrap();
        let (lat, span) = store.step_task_timings(&RunId::new(id)).await.unwrap();
        (run, lat, span)
    });
    let steps = run.outputs.len();
    let timeline = Timeline::of(&run, start, end_to_end);
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
        cpu: String::new(),
        steps,
        timeline,
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
    let cpu = Cpu::now(cluster.port());
    let (started, start) = (Instant::now(), SystemTime::now());
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
    let mut figures = measure(rt, &url, &id, &stats, start, wall);
    figures.cpu = Cpu::now(cluster.port()).since(cpu);
    figures
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
    let cpu = Cpu::now(cluster.port());
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
    let (started, start) = (Instant::now(), SystemTime::now());
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
    let submitted = started.elapsed();
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
    if std::env::var_os("FLEET_DEBUG").is_some() {
        Cpu::print_busiest(cluster.port());
    }
    let mut figures = measure(rt, &url, &id, &stats, start, wall);
    figures.timeline.submitted = Some(submitted.as_secs_f64() * 1000.0);
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    figures.cpu = Cpu::now(cluster.port()).since(cpu);
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
        f.timeline.print();
        println!("  {}", f.cpu);
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
        f.timeline.print();
        println!("  {}", f.cpu);
        f.print_statements();
    }
}
