//! A PostgreSQL store that fails under a run: a fast restart, an 8 s outage (stop, wait,
//! start), every backend terminated, every connection slot taken for a while. `plan run
//! --store postgres://` and a fleet of `plan worker`s ride each out: the run succeeds,
//! and no step whose output was committed before the fault is asked for again.
//!
//! The faults hit the whole cluster, so this file has a cluster of its own (not the one
//! the other PostgreSQL tests share), and its tests take turns on it.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use plan_core::RunId;
use plan_exec::store::RunStore as _;
use plan_llm::testing::FakeOpenAi;
use plan_postgres::PostgresStore;
use plan_postgres::testing::{SKIP_VAR, TempCluster};
use serde_json::Value;

use crate::support::{
    Sandbox, agent_server, expect_code, model_flags, stderr, stdout, step_prompt,
};

/// Six steps, one after the other.
const SIX: &str = r#"{"goal": "Count to six", "steps": [
    {"id": "s1", "description": "Say one", "dependencies": []},
    {"id": "s2", "description": "Say two", "dependencies": ["s1"]},
    {"id": "s3", "description": "Say three", "dependencies": ["s2"]},
    {"id": "s4", "description": "Say four", "dependencies": ["s3"]},
    {"id": "s5", "description": "Say five", "dependencies": ["s4"]},
    {"id": "s6", "description": "Say six", "dependencies": ["s5"]}]}"#;

/// Every model call takes this long, so a fault lands while the run goes on.
const LATENCY: Duration = Duration::from_millis(400);

/// This file's cluster, and the turn of the test holding the guard.
fn cluster() -> Option<(&'static TempCluster, MutexGuard<'static, ()>)> {
    if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
        eprintln!("{SKIP_VAR}=1: skipping a test that needs PostgreSQL");
        return None;
    }
    static CLUSTER: OnceLock<TempCluster> = OnceLock::new();
    static TURN: Mutex<()> = Mutex::new(());
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    // Few connection slots, so that taking them all is quick.
    let cluster = CLUSTER.get_or_init(|| {
        TempCluster::start_with_max_connections(40).expect("a PostgreSQL cluster starts")
    });
    Some((cluster, turn))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The steps of the run whose outputs are committed.
fn committed(url: &str, id: &str) -> HashSet<String> {
    rt().block_on(async {
        let store = PostgresStore::connect(url).await.unwrap();
        let run = store.load_run(&RunId::new(id)).await.unwrap();
        run.map(|r| r.outputs.iter().map(|o| o.step.to_string()).collect())
            .unwrap_or_default()
    })
}

/// The id of the first run in the store at `url`, once there is one.
fn first_run(url: &str) -> String {
    let id = || -> Option<String> {
        rt().block_on(async {
            let store = PostgresStore::connect(url).await.unwrap();
            let runs = store.list_runs().await.unwrap();
            runs.first().map(|r| r.id.to_string())
        })
    };
    until("the run to start", 30, || id().is_some());
    id().unwrap()
}

fn until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the run has `n` committed steps; returns how often each committed step
/// had been asked of the model then.
fn committed_steps(url: &str, id: &str, n: usize, server: &FakeOpenAi) -> HashMap<String, usize> {
    until(&format!("{n} committed steps"), 60, || {
        committed(url, id).len() >= n
    });
    committed(url, id)
        .into_iter()
        .map(|step| {
            let asked = server.count(&step_prompt(&step));
            (step, asked)
        })
        .collect()
}

/// Asserts that no step committed before the fault was asked for again, and that every
/// step is committed once.
#[track_caller]
fn nothing_asked_again(before: &HashMap<String, usize>, server: &FakeOpenAi, url: &str, id: &str) {
    assert!(!before.is_empty());
    for (step, asked) in before {
        assert_eq!(
            server.count(&step_prompt(step)),
            *asked,
            "{step} was committed before the fault and was asked for again"
        );
    }
    assert_eq!(committed(url, id).len(), 6, "every step committed, once");
}

/// A fault the cluster goes through.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// `pg_ctl restart` (fast shutdown, then start) while a write to the run is in
    /// flight.
    Restart,
    /// Stopped for 8 s, then started.
    Outage,
    /// Every client connection terminated while a write to the run is in flight.
    Terminate,
    /// Every connection slot taken (and the other connections ended) for 3 s.
    Exhaust,
}

impl Fault {
    /// Strikes the cluster while run `id` in the database at `url` goes on.
    fn strike(self, cluster: &TempCluster, url: &str, id: &str) {
        // An instant fault is made to land on a write in flight: the run's next write
        // waits for a lock held from here when it strikes.
        let in_flight = || cluster.stall_writes(url, id).unwrap();
        match self {
            Fault::Restart => {
                let _stalled = in_flight();
                cluster.restart().unwrap();
            }
            Fault::Outage => {
                cluster.stop().unwrap();
                // The outage itself: the database is away this long.
                std::thread::sleep(Duration::from_secs(8));
                cluster.start_again().unwrap();
            }
            Fault::Terminate => {
                let _stalled = in_flight();
                let ended = cluster.terminate_backends().unwrap();
                assert!(ended > 1, "the run's connections were ended");
            }
            Fault::Exhaust => {
                let held = cluster.hold_every_connection().unwrap();
                assert!(held.count > 0);
                // The exhaustion itself: nobody else gets a connection for this long.
                std::thread::sleep(Duration::from_secs(3));
                drop(held);
            }
        }
    }
}

/// `plan run --store URL --json` of the six steps against `server`, with `env` set, its
/// output piped.
fn spawn_plan_run(sb: &Sandbox, url: &str, server: &FakeOpenAi, env: (&str, &str)) -> Child {
    let mut args = vec![
        "run".to_owned(),
        "--store".into(),
        url.to_owned(),
        "--strategy".into(),
        "dag".into(),
        "--json".into(),
        "--quiet".into(),
    ];
    args.extend(model_flags(server));
    args.push("Count to six".into());
    sb.plan(&args)
        .env(env.0, env.1)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `plan run --store URL --json` of the six steps, striking `fault` once two steps are
/// committed: it must succeed, asking for no committed step again.
fn plan_run_through(fault: Fault) {
    let Some((cluster, _turn)) = cluster() else {
        return;
    };
    let url = cluster.create_database();
    let sb = Sandbox::new();
    let server = agent_server(SIX);
    server.latency(LATENCY);
    let child = spawn_plan_run(&sb, &url, &server, ("RUST_LOG", "plan_postgres=info"));
    let id = first_run(&url);
    let before = committed_steps(&url, &id, 2, &server);
    fault.strike(cluster, &url, &id);
    let out = child.wait_with_output().unwrap();
    expect_code(&out, 0);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["status"], "succeeded", "{fault:?}: {report}");
    assert_eq!(report["run_id"], id.as_str());
    // The fault landed: a call failed, and was retried until the database answered.
    let said = stderr(&out);
    assert!(
        said.contains("the database cannot be reached") && said.contains("answers again"),
        "{fault:?}: {said}"
    );
    nothing_asked_again(&before, &server, &url, &id);
}

#[test]
fn plan_run_rides_out_a_fast_restart() {
    plan_run_through(Fault::Restart);
}

#[test]
fn plan_run_rides_out_an_8_s_outage() {
    plan_run_through(Fault::Outage);
}

#[test]
fn plan_run_rides_out_every_backend_terminated() {
    plan_run_through(Fault::Terminate);
}

#[test]
fn plan_run_rides_out_every_connection_slot_taken() {
    plan_run_through(Fault::Exhaust);
}

/// Workers, killed when dropped.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn worker(sb: &Sandbox, url: &str, name: &str) -> Child {
    let log = std::fs::File::create(sb.path(&format!("{name}.log"))).unwrap();
    sb.plan([
        "worker",
        "--store",
        url,
        "--name",
        name,
        "--lease-secs",
        "1",
        "--concurrency",
        "2",
    ])
    .env("RUST_LOG", "plan_worker=info,plan_postgres=info")
    .stdout(Stdio::null())
    .stderr(log)
    .spawn()
    .unwrap()
}

fn logs(dir: &Path, names: &[&str]) -> String {
    names
        .iter()
        .map(|n| {
            let log = std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default();
            format!("--- {n}\n{log}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A run submitted to two workers, striking `fault` once two steps are committed: `plan
/// wait` sees it succeed, and no committed step was asked for again.
fn fleet_through(fault: Fault) {
    let Some((cluster, _turn)) = cluster() else {
        return;
    };
    let url = cluster.create_database();
    let sb = Sandbox::new();
    let server = agent_server(SIX);
    server.latency(LATENCY);
    let names = ["w1", "w2"];
    let _workers = Workers(names.iter().map(|n| worker(&sb, &url, n)).collect());
    let out = sb
        .plan([
            "submit",
            "--store",
            &url,
            "--strategy",
            "dag",
            "--model",
            "openai:fake-model",
            "--base-url",
            &server.base_url(),
            "Count to six",
        ])
        .output()
        .unwrap();
    expect_code(&out, 0);
    let id = stdout(&out).trim().to_owned();
    let before = committed_steps(&url, &id, 2, &server);
    fault.strike(cluster, &url, &id);
    let out = sb
        .plan(["wait", &id, "--json", "--timeout", "90", "--store", &url])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "plan wait: {}\n{}",
        stderr(&out),
        logs(&sb.work(), &names)
    );
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["status"], "succeeded", "{fault:?}: {report}");
    // The fault landed on the run's driver: its write was retried.
    let said = logs(&sb.work(), &names);
    assert!(
        said.contains("the database cannot be reached"),
        "{fault:?}: {said}"
    );
    nothing_asked_again(&before, &server, &url, &id);
}

#[test]
fn a_fleet_rides_out_a_fast_restart() {
    fleet_through(Fault::Restart);
}

#[test]
fn a_fleet_rides_out_every_backend_terminated() {
    fleet_through(Fault::Terminate);
}

#[test]
fn a_fleet_rides_out_an_8_s_outage() {
    fleet_through(Fault::Outage);
}

#[test]
fn a_fleet_rides_out_every_connection_slot_taken() {
    fleet_through(Fault::Exhaust);
}

/// Past its bound (`PLAN_DB_OUTAGE_SECS`, 2 s here), `plan run` stops as interrupted
/// (exit 130) with its `--json` report, saying for how long the database was
/// unreachable and how to continue; once the database is back, `plan resume` finishes
/// the run without asking again for a step committed before the outage.
#[test]
fn past_the_bound_plan_run_stops_interrupted_and_resumes() {
    let Some((cluster, _turn)) = cluster() else {
        return;
    };
    let url = cluster.create_database();
    let sb = Sandbox::new();
    let server = agent_server(SIX);
    server.latency(LATENCY);
    let child = spawn_plan_run(&sb, &url, &server, ("PLAN_DB_OUTAGE_SECS", "2"));
    let id = first_run(&url);
    let before = committed_steps(&url, &id, 2, &server);
    cluster.stop().unwrap();
    let out = child.wait_with_output().unwrap();
    cluster.start_again().unwrap();
    expect_code(&out, 130);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["run_id"], id.as_str(), "{report}");
    assert_ne!(report["status"], "succeeded", "{report}");
    let failure = report["failure"].as_str().unwrap_or_default();
    assert!(
        failure.contains("unreachable for") && failure.contains("longer than the 2 s"),
        "{report}"
    );
    assert!(stderr(&out).contains("plan resume"), "{}", stderr(&out));

    // The stopped process could not give its lease up: it expires, then the run
    // continues here.
    until("the stopped process's lease to expire", 30, || {
        rt().block_on(async {
            let store = PostgresStore::connect(&url).await.unwrap();
            store
                .lease_holder(&RunId::new(&id))
                .await
                .unwrap()
                .is_none_or(|h| !h.live)
        })
    });
    let mut args = vec![
        "resume".to_owned(),
        id.clone(),
        "--store".into(),
        url.clone(),
        "--json".into(),
        "--quiet".into(),
    ];
    args.extend(model_flags(&server));
    let out = sb.plan(&args).output().unwrap();
    expect_code(&out, 0);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["status"], "succeeded", "{report}");
    nothing_asked_again(&before, &server, &url, &id);
}

/// Nonsense in `PLAN_DB_OUTAGE_SECS` is refused, naming it.
#[test]
fn a_nonsense_outage_bound_is_named() {
    let sb = Sandbox::new();
    let out = sb
        .plan(["runs", "--store", "postgres://plan@127.0.0.1:9/plan"])
        .env("PLAN_DB_OUTAGE_SECS", "a minute")
        .output()
        .unwrap();
    expect_code(&out, 2);
    assert!(
        stderr(&out).contains("PLAN_DB_OUTAGE_SECS=a minute: give a whole number of seconds"),
        "{}",
        stderr(&out)
    );
}
