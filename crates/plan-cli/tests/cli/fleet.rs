//! A fleet: `plan submit` queues runs in a PostgreSQL store, `plan worker` processes claim
//! them under leases, and `plan wait` follows them. Workers are killed (`kill -9`) and
//! paused (`SIGSTOP`) in mid-run; the run still succeeds, no finished step is asked for
//! again and no output is committed twice.

use std::collections::HashSet;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use plan_core::{EventKind, RunId};
use plan_exec::store::RunStore as _;
use plan_llm::testing::FakeOpenAi;
use plan_postgres::PostgresStore;
use plan_postgres::testing::TempCluster;
use serde_json::Value;

use crate::support::{Sandbox, agent_server, expect_code, output, stderr, stdout, step_prompt};

/// A fresh database's URL, or `None` when PostgreSQL tests are skipped.
fn database() -> Option<String> {
    TempCluster::shared_or_skip().map(TempCluster::create_database)
}

/// 20 steps in layers of 4, 5, 4, 4 and 3, each step depending on the whole layer before.
fn twenty_steps() -> String {
    let widths = [4, 5, 4, 4, 3];
    let mut steps = Vec::new();
    let mut previous: Vec<String> = Vec::new();
    for (layer, width) in widths.iter().enumerate() {
        let mut this = Vec::new();
        for i in 0..*width {
            let id = format!("l{layer}s{i}");
            steps.push(serde_json::json!({
                "id": id, "description": format!("Do part {i} of layer {layer}"),
                "dependencies": previous,
            }));
            this.push(id);
        }
        previous = this;
    }
    serde_json::json!({"goal": "Do twenty things", "steps": steps}).to_string()
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
        let run = store.load_run(&RunId::new(id)).await.unwrap().unwrap();
        run.outputs.iter().map(|o| o.step.to_string()).collect()
    })
}

fn holder(url: &str, id: &str) -> Option<String> {
    rt().block_on(async {
        let store = PostgresStore::connect(url).await.unwrap();
        store
            .lease_holder(&RunId::new(id))
            .await
            .unwrap()
            .filter(|h| h.live)
            .map(|h| h.worker)
    })
}

struct Fleet<'a> {
    sb: &'a Sandbox,
    url: String,
    workers: Vec<(String, Child)>,
}

impl<'a> Fleet<'a> {
    fn new(sb: &'a Sandbox, url: &str) -> Fleet<'a> {
        Fleet {
            sb,
            url: url.to_owned(),
            workers: Vec::new(),
        }
    }

    fn start(&mut self, name: &str) {
        self.start_with(name, &[]);
    }

    /// Starts a worker with these environment variables.
    fn start_with(&mut self, name: &str, env: &[(&str, &str)]) {
        let log = std::fs::File::create(self.sb.path(&format!("{name}.log"))).unwrap();
        let mut cmd = self.sb.plan([
            "worker",
            "--store",
            &self.url,
            "--name",
            name,
            "--lease-secs",
            "1",
            "--concurrency",
            "2",
        ]);
        cmd.envs(env.iter().copied());
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap();
        self.workers.push((name.to_owned(), child));
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.sb.path(&format!("{name}.log"))).unwrap_or_default()
    }

    fn child(&mut self, name: &str) -> &mut Child {
        &mut self
            .workers
            .iter_mut()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no worker {name}"))
            .1
    }

    fn submit(&self, base_url: &str, goal: &str) -> String {
        let out = output(&mut self.sb.plan([
            "submit",
            "--store",
            &self.url,
            "--strategy",
            "dag",
            "--model",
            "openai:fake-model",
            "--base-url",
            base_url,
            goal,
        ]));
        expect_code(&out, 0);
        let id = stdout(&out).trim().to_owned();
        assert!(
            !id.is_empty() && !id.contains(char::is_whitespace),
            "{id:?}"
        );
        id
    }

    fn wait(&self, id: &str) -> Value {
        let out = output(&mut self.sb.plan([
            "wait",
            id,
            "--json",
            "--timeout",
            "60",
            "--store",
            &self.url,
        ]));
        if out.status.code() != Some(0) {
            // Everything needed to tell why: the journal and what each worker said.
            let journal = rt().block_on(async {
                let store = PostgresStore::connect(&self.url).await.unwrap();
                let run = store.load_run(&RunId::new(id)).await.unwrap().unwrap();
                run.events
                    .iter()
                    .enumerate()
                    .map(|(i, e)| format!("{} {}", i + 1, e.to_json_line()))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            let logs: Vec<String> = self
                .workers
                .iter()
                .map(|(name, _)| format!("--- {name}\n{}", self.log(name)))
                .collect();
            panic!(
                "plan wait {id}: {}\n{}\njournal:\n{journal}\n{}",
                out.status,
                stderr(&out),
                logs.join("\n")
            );
        }
        serde_json::from_str(&stdout(&out)).unwrap()
    }
}

impl Drop for Fleet<'_> {
    fn drop(&mut self) {
        for (_, child) in &mut self.workers {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends a signal (`KILL`, `TERM`, `STOP`, `CONT`) with kill(1).
fn signal(child: &Child, sig: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} failed");
}

/// `plan run` of the twenty steps on the store at `url`, quiet, with `extra` flags.
fn plan_run(sb: &Sandbox, url: &str, base_url: &str, extra: &[&str]) -> std::process::Command {
    let mut args = vec![
        "run",
        "--store",
        url,
        "--strategy",
        "dag",
        "--model",
        "openai:fake-model",
        "--base-url",
        base_url,
        "--quiet",
    ];
    args.extend(extra);
    args.push("Do twenty things");
    let mut cmd = sb.plan(args);
    cmd.stdout(Stdio::null());
    cmd
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

/// How long every model call takes once a test [`hold`]s the runs: longer than any test
/// looks, so a held run cannot end meanwhile however slow the machine is.
const HELD: Duration = Duration::from_secs(120);

/// Holds the runs served by `server` where they are: every model call asked for from now
/// on takes [`HELD`] (calls already in flight end as before), so a test can look at a
/// run, signal or cancel it without racing its end.
fn hold(server: &FakeOpenAi) {
    server.latency(HELD);
}

/// When (unix ms, from its journal) the run's `n`th step completed, and when it ended.
fn nth_completion_and_end(url: &str, id: &str, n: usize) -> (u64, u64) {
    rt().block_on(async {
        let store = PostgresStore::connect(url).await.unwrap();
        let run = store.load_run(&RunId::new(id)).await.unwrap().unwrap();
        let at = |f: &dyn Fn(&EventKind) -> bool, nth: usize| {
            run.events
                .iter()
                .filter(|e| f(&e.kind))
                .nth(nth)
                .map(|e| e.ts.unix_millis())
                .unwrap_or_else(|| panic!("run {id} has no such event"))
        };
        (
            at(&|k| matches!(k, EventKind::StepCompleted { .. }), n - 1),
            at(&|k| matches!(k, EventKind::RunFinished { .. }), 0),
        )
    })
}

fn until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn submit_needs_a_postgres_store() {
    let sb = Sandbox::new();
    for cmd in [vec!["submit", "Do a thing"], vec!["worker"]] {
        let out = output(&mut sb.plan(cmd));
        expect_code(&out, 2);
        assert!(
            stderr(&out).contains("a fleet needs a postgres:// store"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn a_run_survives_kill_9_of_the_worker_holding_it_at_several_points() {
    let Some(url) = database() else { return };
    let sb = Sandbox::new();
    let server = agent_server(&twenty_steps());
    server.latency(Duration::from_millis(150));
    let mut fleet = Fleet::new(&sb, &url);
    for name in ["w1", "w2", "w3"] {
        fleet.start(name);
    }
    let id = fleet.submit(&server.base_url(), "Do twenty things");
    // Each step finished before a kill, with how often it had been asked for then.
    let mut finished_before_a_kill: std::collections::HashMap<String, usize> =
        std::collections::HashMap::new();
    let mut fresh = 4;
    for at in [3, 9, 15] {
        until(&format!("{at} committed steps"), 60, || {
            committed(&url, &id).len() >= at
        });
        let Some(victim) = holder(&url, &id) else {
            break; // the run ended already
        };
        signal(fleet.child(&victim), "KILL");
        let _ = fleet.child(&victim).wait();
        for step in committed(&url, &id) {
            let asked = server.count(&step_prompt(&step));
            finished_before_a_kill.entry(step).or_insert(asked);
        }
        fleet.start(&format!("w{fresh}"));
        fresh += 1;
    }
    let report = fleet.wait(&id);
    assert_eq!(report["status"], "succeeded", "{report}");
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 20);
    assert!(steps.iter().all(|s| s["status"] == "completed"), "{report}");
    assert_eq!(committed(&url, &id).len(), 20, "each output committed once");
    assert!(finished_before_a_kill.len() >= 3);
    for (step, asked) in &finished_before_a_kill {
        assert_eq!(
            server.count(&step_prompt(step)),
            *asked,
            "step {step} had finished before a kill and was asked for again"
        );
    }
    // Someone else took the run over after each kill.
    let takeovers = (1..fresh)
        .map(|i| fleet.log(&format!("w{i}")))
        .filter(|log| log.contains("claimed a run") && log.contains("status=running"))
        .count();
    assert!(takeovers >= 1, "no worker took a run over");
    // SIGTERM stops a worker cleanly.
    let (name, _) = fleet.workers.last().unwrap();
    let name = name.clone();
    signal(fleet.child(&name), "TERM");
    let status = fleet.child(&name).wait().unwrap();
    assert!(status.success(), "{status:?}: {}", fleet.log(&name));
    assert!(fleet.log(&name).contains("worker stopped"));
}

#[test]
fn a_paused_worker_loses_its_lease_and_its_late_writes_are_refused() {
    let Some(url) = database() else { return };
    let sb = Sandbox::new();
    let server = agent_server(&twenty_steps());
    server.latency(Duration::from_millis(100));
    let mut fleet = Fleet::new(&sb, &url);
    fleet.start("sleepy");
    let id = fleet.submit(&server.base_url(), "Do twenty things");
    until("2 committed steps", 60, || committed(&url, &id).len() >= 2);
    // Not one more step ends before the pause, however long sending it takes.
    hold(&server);
    signal(fleet.child("sleepy"), "STOP");
    let paused_at: Vec<(String, usize)> = committed(&url, &id)
        .into_iter()
        .map(|step| {
            let asked = server.count(&step_prompt(&step));
            (step, asked)
        })
        .collect();
    server.latency(Duration::from_millis(100));
    // The lease (1 s) runs out; another worker takes the run and finishes it.
    fleet.start("awake");
    let report = fleet.wait(&id);
    assert_eq!(report["status"], "succeeded", "{report}");
    let done = committed(&url, &id);
    signal(fleet.child("sleepy"), "CONT");
    // The paused worker wakes up with steps in flight: its writes are refused.
    until("the paused worker to notice", 30, || {
        fleet.log("sleepy").contains("lost the lease")
            || fleet.log("sleepy").contains("no longer holds the lease")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        committed(&url, &id),
        done,
        "nothing written after the takeover"
    );
    let after = output(&mut sb.plan(["show", &id, "--json", "--store", &url]));
    let after: Value = serde_json::from_str(&stdout(&after)).unwrap();
    assert_eq!(after["status"], "succeeded");
    assert_eq!(after["answer"], report["answer"]);
    for (step, asked) in &paused_at {
        assert_eq!(
            server.count(&step_prompt(step)),
            *asked,
            "{step} had finished before the pause and was asked for again"
        );
    }
}

#[test]
fn two_runs_submitted_at_once_both_progress() {
    let Some(url) = database() else { return };
    let sb = Sandbox::new();
    let server = agent_server(&twenty_steps());
    server.latency(Duration::from_millis(100));
    let mut fleet = Fleet::new(&sb, &url);
    let first = fleet.submit(&server.base_url(), "Do twenty things");
    let second = fleet.submit(&server.base_url(), "Do twenty things again");
    fleet.start("only");
    until("both runs to progress", 60, || {
        committed(&url, &first).len() >= 2 && committed(&url, &second).len() >= 2
    });
    // `plan show` names the worker running each running step.
    until("a running step with its worker", 30, || {
        let out = output(&mut sb.plan(["show", &first, "--json", "--store", &url]));
        let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["status"] == "running" && s["worker"] == "only")
            || v["status"] != "running"
    });
    let out = output(&mut sb.plan(["show", &first, "--json", "--store", &url]));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "running" || s.get("worker").is_none()),
        "only running steps name a worker: {v}"
    );
    assert_eq!(fleet.wait(&first)["status"], "succeeded");
    assert_eq!(fleet.wait(&second)["status"], "succeeded");
    // Both runs had committed steps before either had finished (read from their journals,
    // not from when this test happened to look).
    let (first_progressed, first_ended) = nth_completion_and_end(&url, &first, 2);
    let (second_progressed, second_ended) = nth_completion_and_end(&url, &second, 2);
    assert!(
        first_progressed.max(second_progressed) < first_ended.min(second_ended),
        "one run ended before the other progressed: first {first_progressed}..{first_ended}, \
         second {second_progressed}..{second_ended}"
    );
}

#[test]
fn a_submitted_run_can_wait_for_approval_and_runs_once_approved() {
    let Some(url) = database() else { return };
    let sb = Sandbox::new();
    let server = agent_server(&twenty_steps());
    let mut fleet = Fleet::new(&sb, &url);
    fleet.start("w1");
    fleet.start("w2");
    let out = output(&mut sb.plan([
        "submit",
        "--store",
        &url,
        "--strategy",
        "dag",
        "--model",
        "openai:fake-model",
        "--base-url",
        &server.base_url(),
        "Do twenty things",
        "--approve",
    ]));
    expect_code(&out, 0);
    let id = stdout(&out).trim().to_owned();
    let show = || -> Value {
        let out = output(&mut sb.plan(["show", &id, "--json", "--store", &url]));
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    until("the run to wait for approval", 30, || {
        show()["status"] == "awaiting_approval"
    });
    assert_eq!(show()["plan"]["steps"].as_array().unwrap().len(), 20);
    // Waiting for approval is not an end; no step has run.
    let out = output(&mut sb.plan(["wait", &id, "--timeout", "1", "--store", &url]));
    expect_code(&out, 124);
    std::thread::sleep(Duration::from_millis(1500)); // past any lease: no worker takes it
    assert_eq!(server.count(&step_prompt("l0s0")), 0);
    assert_eq!(show()["status"], "awaiting_approval");
    let out = output(&mut sb.plan(["approve", &id, "--json", "--store", &url]));
    expect_code(&out, 0);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(
        server.count(&step_prompt("l0s0")),
        1,
        "run once, by the approver"
    );
    assert_eq!(committed(&url, &id).len(), 20);
}

/// `plan run` on a shared store holds its run under a lease: workers leave it alone while
/// it lives, `plan resume` refuses a run a live process holds, and when the process is
/// killed a worker continues the run without redoing a finished step.
#[test]
fn plan_run_on_postgres_holds_its_run_and_a_worker_continues_it_after_kill_9() {
    let Some(url) = database() else { return };
    let sb = Sandbox::new();
    let server = agent_server(&twenty_steps());
    server.latency(Duration::from_millis(300));
    let mut fleet = Fleet::new(&sb, &url);
    fleet.start("w1");
    let mut run = plan_run(&sb, &url, &server.base_url(), &[])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let id = first_run(&url);
    until("3 committed steps", 60, || committed(&url, &id).len() >= 3);
    // The run cannot end while the test looks at it and kills it.
    hold(&server);
    let driver = holder(&url, &id).expect("plan run holds its run's lease");
    assert!(driver.starts_with("plan-run@"), "{driver}");
    // `plan show` names it as the runner of its running steps.
    until("plan show to name the driver of a running step", 20, || {
        let out = output(&mut sb.plan(["show", &id, "--json", "--store", &url]));
        let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["status"] == "running" && s["worker"] == driver.as_str())
    });
    // Another process may not take it meanwhile.
    let out = output(&mut sb.plan(["resume", &id, "--store", &url]));
    expect_code(&out, 2);
    assert!(
        stderr(&out).contains("is being run by `plan-run@"),
        "{}",
        stderr(&out)
    );
    assert!(
        !fleet.log("w1").contains("claimed a run"),
        "{}",
        fleet.log("w1")
    );
    signal(&run, "KILL");
    let _ = run.wait();
    let finished: Vec<(String, usize)> = committed(&url, &id)
        .into_iter()
        .map(|s| {
            let asked = server.count(&step_prompt(&s));
            (s, asked)
        })
        .collect();
    server.latency(Duration::from_millis(300));
    let report = fleet.wait(&id);
    assert_eq!(report["status"], "succeeded", "{report}");
    assert_eq!(committed(&url, &id).len(), 20, "each output committed once");
    for (step, asked) in &finished {
        assert_eq!(
            server.count(&step_prompt(step)),
            *asked,
            "step {step} had finished before the kill and was asked for again"
        );
    }
    let log = fleet.log("w1");
    assert!(
        log.contains("claimed a run") && log.contains("status=running"),
        "{log}"
    );
}

/// `plan serve` on a PostgreSQL store queues the runs started over HTTP for the workers;
/// their events stream through the store; cancel and resume go through it too.
#[test]
fn plan_serve_on_postgres_queues_runs_for_the_workers() {
    use crate::serve::{
        TOKEN, assert_stream_ends_with_run_finished, authed, client, json_of, start, start_run,
        wait_status,
    };
    let Some(url) = database() else { return };
    let sb = Sandbox::new();
    let fake = agent_server(&twenty_steps());
    let model = crate::support::model_flags(&fake);
    let s = start(&sb, &model, &["--token", TOKEN, "--store", &url]);
    let c = client();
    // No worker yet: the run waits in the queue, and cancelling it ends it unrun.
    let id = start_run(
        &c,
        &s,
        serde_json::json!({"goal": "Do twenty things", "strategy": "dag"}),
    );
    let (_, v) = json_of(
        authed(&c, "GET", &format!("{}/api/runs/{id}", s.base))
            .send()
            .unwrap(),
    );
    assert_eq!(v["status"], "queued", "{v}");
    let (code, v) = json_of(
        authed(&c, "POST", &format!("{}/api/runs/{id}/cancel", s.base))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 202, "{v}");
    let mut fleet = Fleet::new(&sb, &url);
    fleet.start("w1");
    wait_status(&c, &s, &id, "cancelled");
    assert_eq!(
        fake.count(&step_prompt("l0s0")),
        0,
        "a cancelled run ran nothing"
    );
    // Resume queues it again, and the worker runs it; the stream ends with run_finished.
    let (code, v) = json_of(
        authed(&c, "POST", &format!("{}/api/runs/{id}/resume", s.base))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 202, "{v}");
    assert_eq!(v["status"], "queued", "{v}");
    assert_stream_ends_with_run_finished(&c, &s, &id);
    let report = wait_status(&c, &s, &id, "succeeded");
    assert_eq!(report["steps"].as_array().unwrap().len(), 20);
    assert!(
        fleet.log("w1").contains("claimed a run"),
        "{}",
        fleet.log("w1")
    );
    // A run started while the worker is up runs there too.
    let second = start_run(
        &c,
        &s,
        serde_json::json!({"goal": "Do twenty things", "strategy": "dag"}),
    );
    wait_status(&c, &s, &second, "succeeded");
    assert_eq!(committed(&url, &second).len(), 20);
    // One that asks for approval is planned by the worker and waits; approving it runs it
    // (in the server, under a lease), once.
    let asked = fake.count(&step_prompt("l0s0"));
    let third = start_run(
        &c,
        &s,
        serde_json::json!({"goal": "Do twenty things", "strategy": "dag", "approve": true}),
    );
    wait_status(&c, &s, &third, "awaiting_approval");
    assert_eq!(
        fake.count(&step_prompt("l0s0")),
        asked,
        "nothing ran before approval"
    );
    let (code, v) = json_of(
        authed(&c, "POST", &format!("{}/api/runs/{third}/approve", s.base))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 202, "{v}");
    wait_status(&c, &s, &third, "succeeded");
    assert_eq!(committed(&url, &third).len(), 20);
    assert_eq!(fake.count(&step_prompt("l0s0")), asked + 1, "run once");
    // The server gives the lease up when the run ends (it would otherwise run 5 s).
    until("the server to give its lease up", 3, || {
        holder(&url, &third).is_none()
    });
}

/// A run's trace continues across the workers: its context is kept in the store, the
/// worker taking the run over after a kill continues it, and the steps that other workers
/// run are spans of the same trace.
#[test]
fn a_runs_trace_continues_across_workers() {
    use crate::otel::{Receiver, attr};
    let Some(url) = database() else { return };
    let sb = Sandbox::new();
    let server = agent_server(&twenty_steps());
    server.latency(Duration::from_millis(150));
    let receiver = Receiver::start();
    let endpoint = receiver.endpoint();
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
    let mut fleet = Fleet::new(&sb, &url);
    for name in ["w1", "w2", "w3"] {
        fleet.start_with(name, &env);
    }
    let id = fleet.submit(&server.base_url(), "Do twenty things");
    until("5 committed steps", 60, || committed(&url, &id).len() >= 5);
    if let Some(victim) = holder(&url, &id) {
        signal(fleet.child(&victim), "KILL");
        let _ = fleet.child(&victim).wait();
        fleet.start_with("w4", &env);
    }
    let report = fleet.wait(&id);
    assert_eq!(report["status"], "succeeded", "{report}");
    // The trace the run was given when it was queued.
    let context = rt().block_on(async {
        let store = PostgresStore::connect(&url).await.unwrap();
        let run = store.load_run(&RunId::new(&id)).await.unwrap().unwrap();
        run.record.options["traceparent"]
            .as_str()
            .unwrap()
            .to_owned()
    });
    let trace = context.split('-').nth(1).unwrap().to_owned();
    // Stop the workers cleanly, so they export what they hold.
    let names: Vec<String> = fleet.workers.iter().map(|(n, _)| n.clone()).collect();
    for name in &names {
        let child = fleet.child(name);
        if child.try_wait().unwrap().is_none() {
            signal(child, "TERM");
            let _ = child.wait();
        }
    }
    let spans = receiver.spans();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let drivers: Vec<_> = spans
        .iter()
        .filter(|s| {
            s.name == "invoke_workflow plan"
                && attr(s, "plan.run.id").as_deref() == Some(id.as_str())
        })
        .collect();
    assert!(!drivers.is_empty(), "no run span was exported");
    assert!(
        drivers
            .iter()
            .all(|s| hex(&s.trace_id) == trace && !s.parent_span_id.is_empty()),
        "every process driving the run continues its trace {trace}"
    );
    let steps: Vec<_> = spans
        .iter()
        .filter(|s| {
            s.name.starts_with("execute_step ")
                && attr(s, "plan.run.id").as_deref() == Some(id.as_str())
        })
        .collect();
    assert!(steps.len() >= 10, "{} step spans", steps.len());
    assert!(
        steps.iter().all(|s| hex(&s.trace_id) == trace),
        "a step span left the trace"
    );
    let workers: HashSet<String> = steps
        .iter()
        .filter_map(|s| attr(s, "plan.worker"))
        .collect();
    assert!(workers.len() >= 2, "steps ran on {workers:?}");
    // Model calls made for the steps on the workers are inside the same trace.
    assert!(
        spans
            .iter()
            .filter(|s| s.name.starts_with("chat"))
            .all(|s| hex(&s.trace_id) == trace),
        "a model call left the trace"
    );
}

/// The worker driving a run runs the steps it has room for itself, each claimed as it is
/// queued; the steps beyond its room are claimed by the rest of the fleet.
#[test]
fn the_driving_worker_runs_the_steps_it_has_room_for_and_the_fleet_the_rest() {
    let Some(url) = database() else { return };
    let sb = Sandbox::new();
    let server = agent_server(&twenty_steps());
    // Long enough that a layer's steps (run concurrency 4) overlap on two slots a worker.
    server.latency(Duration::from_millis(100));
    let mut fleet = Fleet::new(&sb, &url);
    fleet.start("w1");
    fleet.start("w2");
    let id = fleet.submit(&server.base_url(), "Do twenty things");
    let report = fleet.wait(&id);
    assert_eq!(report["status"], "succeeded", "{report}");
    let (driver, tasks) = rt().block_on(async {
        let store = PostgresStore::connect(&url).await.unwrap();
        let run = RunId::new(&id);
        let driver = store.lease_holder(&run).await.unwrap().unwrap().worker;
        (driver, store.step_task_claims(&run).await.unwrap())
    });
    assert_eq!(tasks.len(), 20, "one task a step: {tasks:?}");
    // Claimed in the statement that queued it: run by the driver itself.
    let by_driver = tasks
        .iter()
        .filter(|t| t.when_queued && t.worker.as_deref() == Some(driver.as_str()))
        .count();
    let by_fleet = tasks.iter().filter(|t| !t.when_queued).count();
    assert!(
        by_driver >= 5,
        "{driver} ran {by_driver} steps itself: {tasks:?}"
    );
    assert!(by_fleet >= 5, "the fleet ran {by_fleet} steps: {tasks:?}");
    assert!(
        tasks.iter().all(|t| t.worker.is_some() && t.token >= 1),
        "every step ran: {tasks:?}"
    );
}

/// A `plan run` that uses what only its machine has (here, a built-in file tool) is not
/// taken over by a worker when its process dies: the worker says why, once, and `plan
/// resume` continues the run where it started.
#[test]
fn a_run_with_local_tools_is_left_to_plan_resume_where_it_started() {
    let Some(url) = database() else { return };
    let sb = Sandbox::new();
    let server = agent_server(&twenty_steps());
    server.latency(Duration::from_millis(300));
    let mut fleet = Fleet::new(&sb, &url);
    fleet.start("w1");
    let mut run = plan_run(&sb, &url, &server.base_url(), &["--tools", "read_file"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let id = first_run(&url);
    until("3 committed steps", 60, || committed(&url, &id).len() >= 3);
    // The run cannot end before the kill, however long sending it takes.
    hold(&server);
    signal(&run, "KILL");
    let _ = run.wait();
    server.latency(Duration::from_millis(300));
    // Its lease runs out (5 s); the worker claims it, sees what it needs, and leaves it.
    until("the worker to leave the run", 30, || {
        fleet
            .log("w1")
            .contains("was started by `plan run` with tools or agents")
    });
    let before = committed(&url, &id);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(committed(&url, &id), before, "a worker ran its steps");
    let asked: Vec<(String, usize)> = before
        .iter()
        .map(|s| (s.clone(), server.count(&step_prompt(s))))
        .collect();
    let out = output(&mut sb.plan([
        "resume",
        &id,
        "--tools",
        "read_file",
        "--json",
        "--store",
        &url,
    ]));
    expect_code(&out, 0);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(committed(&url, &id).len(), 20);
    // The remaining steps were offered the tool again.
    let last = server
        .requests()
        .into_iter()
        .rfind(|r| r.text().contains(&step_prompt("l4s0")))
        .expect("the last layer ran");
    assert!(last.tools().contains(&"read_file"), "{:?}", last.tools());
    for (step, n) in asked {
        assert_eq!(
            server.count(&step_prompt(&step)),
            n,
            "step {step} ran again"
        );
    }
    assert_eq!(
        fleet.log("w1").matches("was started by `plan run`").count(),
        1,
        "said once"
    );
}

/// A cancellation asked through the store (what `POST /api/runs/ID/cancel` of a fleet
/// server does) stops a `plan run` holding the run, which says so.
#[test]
fn a_cancel_request_through_the_store_stops_plan_run() {
    let Some(url) = database() else { return };
    let sb = Sandbox::new();
    let server = agent_server(&twenty_steps());
    server.latency(Duration::from_millis(300));
    let run = plan_run(&sb, &url, &server.base_url(), &[])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = first_run(&url);
    until("a committed step", 60, || !committed(&url, &id).is_empty());
    // The run cannot end before the cancellation reaches it (at its next lease renewal).
    hold(&server);
    let asked = rt().block_on(async {
        let store = PostgresStore::connect(&url).await.unwrap();
        store.request_cancel(&RunId::new(&id)).await.unwrap()
    });
    assert!(asked);
    let out = run.wait_with_output().unwrap();
    expect_code(&out, 130);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("note: run {id} was cancelled through the store")),
        "{err}"
    );
    let out = output(&mut sb.plan(["show", &id, "--json", "--store", &url]));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["status"], "cancelled", "{v}");
    assert!(committed(&url, &id).len() < 20, "it stopped before the end");
}

#[test]
fn a_fleet_run_replays_with_zero_requests_with_the_steps_its_workers_ran() {
    let Some(url) = database() else { return };
    let sb = Sandbox::new();
    let server = agent_server(&twenty_steps());
    let mut fleet = Fleet::new(&sb, &url);
    let id = fleet.submit(&server.base_url(), "Do twenty things");
    fleet.start("one");
    fleet.start("two");
    assert_eq!(fleet.wait(&id)["status"], "succeeded");
    let before = server.total_requests();
    let out = output(&mut sb.plan(["replay", &id, "--json", "--store", &url]));
    let said = format!("{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(
        server.total_requests(),
        before,
        "the replay made requests\n{said}"
    );
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["faithful"], true, "{said}");
    // A planning call, twenty steps and the synthesis: the steps' calls came back from
    // the workers that ran them.
    assert_eq!(v["calls_recorded"], 22, "{said}");
    assert_eq!(v["calls_served"], 22, "{said}");
}

#[test]
fn a_fleet_run_made_with_record_requests_keeps_the_workers_requests_in_full() {
    let Some(url) = database() else { return };
    let sb = Sandbox::new();
    let server = agent_server(&twenty_steps());
    let mut fleet = Fleet::new(&sb, &url);
    let out = output(&mut sb.plan([
        "submit",
        "--store",
        &url,
        "--strategy",
        "dag",
        "--model",
        "openai:fake-model",
        "--base-url",
        &server.base_url(),
        "--record-requests",
        "Do twenty things",
    ]));
    expect_code(&out, 0);
    let id = stdout(&out).trim().to_owned();
    fleet.start("one");
    assert_eq!(fleet.wait(&id)["status"], "succeeded");
    let steps_in_full = rt().block_on(async {
        let store = PostgresStore::connect(&url).await.unwrap();
        let run = store.load_run(&RunId::new(&id)).await.unwrap().unwrap();
        run.events
            .iter()
            .filter(|e| match &e.kind {
                EventKind::CallRecorded { call } => call.step.is_some() && call.request.is_some(),
                _ => false,
            })
            .count()
    });
    assert_eq!(
        steps_in_full, 20,
        "every step's call, recorded by a worker, in full"
    );
}
