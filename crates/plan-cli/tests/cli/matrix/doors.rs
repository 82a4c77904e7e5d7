//! The doors: each runs a [`Scenario`] through one way into a run, against the one fake
//! model server, and returns the [`Outcome`].

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::trace::v1::Span;
use plan_llm::testing::{FakeOpenAi, FakeReply, FakeRequest};
use serde_json::{Value, json};

use crate::otel::{Receiver, attr};
use crate::serve::{TOKEN, authed, client, json_of};
use crate::support::{Sandbox, agent_server, model_flags, output, stderr, stdout, step_prompt};

/// What a promise asks of a run, whatever the door.
pub(crate) struct Scenario {
    /// The plan the fake model writes (and the file `plan exec` runs).
    pub plan: String,
    /// `--strategy` (`None`: the default, `auto`).
    pub strategy: Option<&'static str>,
    /// `--budget-tokens`.
    pub budget_tokens: Option<u64>,
    /// Replies checked before [`agent_server`]'s (added with `on_first`).
    pub script: fn(&FakeOpenAi),
    /// The step whose first call the resume door holds while it presses Ctrl-C; its
    /// reply must be the default one (`result of ID`).
    pub hold: &'static str,
    /// Export traces to a receiver (the outcome then has the run's spans).
    pub trace: bool,
}

impl Scenario {
    /// The plan's goal, which every door gives as the goal.
    pub fn goal(&self) -> String {
        let plan: Value = serde_json::from_str(&self.plan).unwrap();
        plan["goal"].as_str().unwrap().to_owned()
    }
}

/// What a door returns.
pub(crate) struct Outcome {
    pub door: Door,
    /// The run's final report (`Value::Null` when the door produced none).
    pub report: Value,
    /// The run's events, where the door gives them (`--events`, SSE).
    pub events: Option<Vec<Value>>,
    /// Every request the fake model server received.
    pub requests: Vec<FakeRequest>,
    /// What the door said besides the report: stderr, tool errors, worker logs.
    pub said: String,
    /// Spans exported during the run (only when the scenario traces).
    pub spans: Vec<Span>,
}

impl Outcome {
    /// Requests whose text contains `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.requests
            .iter()
            .filter(|r| r.text().contains(needle))
            .count()
    }

    /// The report's step `id`.
    pub fn step(&self, id: &str) -> Option<&Value> {
        self.report["steps"]
            .as_array()?
            .iter()
            .find(|s| s["id"] == id)
    }

    /// Everything shown for a failure, for assertion messages.
    pub fn context(&self) -> String {
        let events = self.events.as_ref().map_or_else(
            || "(this door gives no events)".to_owned(),
            |es| {
                es.iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            },
        );
        let spans: Vec<String> = self
            .spans
            .iter()
            .map(|s| {
                format!(
                    "{} op={} run={} trace={} root={}",
                    s.name,
                    attr(s, "gen_ai.operation.name").unwrap_or_default(),
                    attr(s, "plan.run.id").unwrap_or_default(),
                    s.trace_id
                        .iter()
                        .take(4)
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>(),
                    s.parent_span_id.is_empty()
                )
            })
            .collect();
        format!(
            "door: {}\n--- report\n{:#}\n--- said\n{}\n--- events\n{events}\n--- requests: {}\n--- spans\n{}",
            self.door.name(),
            self.report,
            self.said,
            self.requests.len(),
            spans.join("\n")
        )
    }
}

/// The ways into a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Door {
    /// `plan run GOAL --json`.
    Run,
    /// `plan exec PLAN.json --json` of the scenario's plan.
    Exec,
    /// `plan run`, Ctrl-C (SIGINT) while a step's model call is in flight, then `plan
    /// resume RUN_ID --json`.
    Resume,
    /// `plan run --approve`, answered `r` on standard input.
    RunApprove,
    /// A run parked for approval (by `plan serve`, `"approve": true`), the server
    /// stopped, then `plan approve RUN_ID --json`.
    Approve,
    /// `plan serve`: `POST /api/runs` (JSON), then `GET /api/runs/ID` until it ends.
    Serve,
    /// `plan mcp` on stdio: the `run` tool, spoken as JSON-RPC.
    Mcp,
    /// `plan worker` on a PostgreSQL store, `plan submit`, `plan wait --json`.
    Worker,
    /// `plan exec PLAN.json` against an unscripted model, then `plan rerun RUN_ID --from
    /// ROOT... --json` against the scenario's: every step runs again, in the re-run.
    Rerun,
}

impl Door {
    pub fn name(self) -> &'static str {
        match self {
            Door::Run => "run",
            Door::Exec => "exec",
            Door::Resume => "resume",
            Door::RunApprove => "run --approve",
            Door::Approve => "approve",
            Door::Serve => "serve",
            Door::Mcp => "mcp",
            Door::Worker => "worker",
            Door::Rerun => "rerun",
        }
    }

    /// Runs `sc` through this door; `None` when the door is skipped here (a worker
    /// without PostgreSQL outside CI), having said why.
    pub fn run(self, sc: &Scenario) -> Option<Outcome> {
        let w = World::new(sc);
        Some(match self {
            Door::Run => cli_run(&w, sc, self, &[], None),
            Door::Exec => exec(&w, sc),
            Door::Resume => resume(&w, sc),
            Door::RunApprove => cli_run(&w, sc, self, &["--approve"], Some("r\n")),
            Door::Approve => approve(&w, sc),
            Door::Serve => serve(&w, sc),
            Door::Mcp => mcp(&w, sc),
            Door::Worker => worker(&w, sc)?,
            Door::Rerun => rerun(&w, sc),
        })
    }
}

/// One cell's world: a sandbox, the fake model server scripted for the scenario and,
/// when it traces, an OTLP receiver.
struct World {
    sb: Sandbox,
    server: FakeOpenAi,
    receiver: Option<Receiver>,
}

impl World {
    fn new(sc: &Scenario) -> World {
        let server = agent_server(&sc.plan);
        (sc.script)(&server);
        server.latency(Duration::from_millis(5));
        World {
            sb: Sandbox::new(),
            server,
            receiver: sc.trace.then(Receiver::start),
        }
    }

    /// `plan ARGS` in the sandbox, exporting traces when the scenario traces.
    fn plan<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = self.sb.plan(args);
        if let Some(r) = &self.receiver {
            cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", r.endpoint())
                .env("OTEL_BSP_SCHEDULE_DELAY", "100");
        }
        cmd
    }

    /// The model flags and the scenario's run flags.
    fn flags(&self, sc: &Scenario) -> Vec<String> {
        let mut v = model_flags(&self.server);
        v.extend(budget_flags(sc));
        if let Some(s) = sc.strategy {
            v.extend(["--strategy".to_owned(), s.to_owned()]);
        }
        v
    }

    /// The report of run `id` (or of the newest run) in `store` (default: the sandbox's).
    fn stored_report(&self, id: Option<&str>, store: Option<&str>) -> Value {
        let with_store = |mut args: Vec<String>| {
            if let Some(s) = store {
                args.extend(["--store".to_owned(), s.to_owned()]);
            }
            args
        };
        let id = match id {
            Some(id) => id.to_owned(),
            None => {
                let out = output(
                    &mut self
                        .sb
                        .plan(with_store(vec!["runs".into(), "--json".into()])),
                );
                match serde_json::from_str::<Value>(&stdout(&out)) {
                    Ok(v) => match v[0]["run_id"].as_str() {
                        Some(id) => id.to_owned(),
                        None => return Value::Null,
                    },
                    Err(_) => return Value::Null,
                }
            }
        };
        let out = output(
            &mut self
                .sb
                .plan(with_store(vec!["show".into(), id, "--json".into()])),
        );
        serde_json::from_str(&stdout(&out)).unwrap_or(Value::Null)
    }

    /// The outcome, with the run's spans once they are exported (the processes that
    /// export them must still be alive or have exited gracefully).
    fn outcome(
        &self,
        door: Door,
        report: Value,
        events: Option<Vec<Value>>,
        said: String,
    ) -> Outcome {
        let spans = match (&self.receiver, report["run_id"].as_str()) {
            (Some(r), Some(id)) => spans_of(r, id),
            _ => Vec::new(),
        };
        Outcome {
            door,
            report,
            events,
            requests: self.server.requests(),
            said,
            spans,
        }
    }
}

fn budget_flags(sc: &Scenario) -> Vec<String> {
    sc.budget_tokens
        .map(|n| vec!["--budget-tokens".to_owned(), n.to_string()])
        .unwrap_or_default()
}

/// Waits (up to 15 s) until the receiver has the run's root span and step and model call
/// spans in its trace; returns every span received.
fn spans_of(r: &Receiver, run: &str) -> Vec<Span> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let spans = r.spans();
        let complete = spans
            .iter()
            .filter(|s| attr(s, "plan.run.id").as_deref() == Some(run))
            .any(|root| {
                let in_trace = |op: &str| {
                    spans.iter().any(|s| {
                        s.trace_id == root.trace_id
                            && attr(s, "gen_ai.operation.name").as_deref() == Some(op)
                    })
                };
                in_trace("invoke_agent") && in_trace("chat")
            });
        if complete || Instant::now() > deadline {
            return spans;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A report printed on stdout, if there is one.
fn report_in(text: &str) -> Option<Value> {
    serde_json::from_str::<Value>(text.trim())
        .ok()
        .filter(|v| v.get("run_id").is_some())
}

/// The events of an events file, if it was written.
fn events_in(path: &Path) -> Option<Vec<Value>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
    )
}

fn said(out: &std::process::Output) -> String {
    format!("exit {:?}\n{}", out.status.code(), stderr(out))
}

/// `plan run GOAL --json` with `extra` flags, `stdin` written to its standard input.
fn cli_run(w: &World, sc: &Scenario, door: Door, extra: &[&str], stdin: Option<&str>) -> Outcome {
    let events = w.sb.path("events.jsonl");
    let mut args = vec![
        "run".to_owned(),
        sc.goal(),
        "--json".into(),
        "--events".into(),
        events.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args.extend(w.flags(sc));
    let out = match stdin {
        None => output(&mut w.plan(&args)),
        Some(text) => {
            let mut child = w
                .plan(&args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        }
    };
    let report = report_in(&stdout(&out)).unwrap_or_else(|| w.stored_report(None, None));
    w.outcome(door, report, events_in(&events), said(&out))
}

/// `plan exec PLAN.json --json`.
fn exec(w: &World, sc: &Scenario) -> Outcome {
    let file = w.sb.write("plan.json", &sc.plan);
    let events = w.sb.path("events.jsonl");
    let mut args = vec![
        "exec".to_owned(),
        file.display().to_string(),
        "--json".into(),
        "--events".into(),
        events.display().to_string(),
    ];
    args.extend(w.flags(sc));
    let out = output(&mut w.plan(&args));
    let report = report_in(&stdout(&out)).unwrap_or_else(|| w.stored_report(None, None));
    w.outcome(Door::Exec, report, events_in(&events), said(&out))
}

/// `plan exec` of the scenario's plan on an unscripted model (every step succeeds), then
/// `plan rerun --from` each of its first steps on the scenario's model: the re-run runs
/// every step again under the parent's recorded spec, and the promises are checked on
/// it.
fn rerun(w: &World, sc: &Scenario) -> Outcome {
    let parent_server = agent_server(&sc.plan);
    let file = w.sb.write("plan.json", &sc.plan);
    let mut args = vec![
        "exec".to_owned(),
        file.display().to_string(),
        "--json".into(),
    ];
    args.extend(model_flags(&parent_server));
    args.extend(budget_flags(sc));
    if let Some(s) = sc.strategy {
        args.extend(["--strategy".to_owned(), s.to_owned()]);
    }
    let out = output(&mut w.plan(&args));
    let parent = report_in(&stdout(&out))
        .unwrap_or_else(|| panic!("the parent run printed no report\n{}", said(&out)));
    let id = parent["run_id"].as_str().unwrap().to_owned();
    let plan: Value = serde_json::from_str(&sc.plan).unwrap();
    let events = w.sb.path("events.jsonl");
    let mut args = vec![
        "rerun".to_owned(),
        id,
        "--json".into(),
        "--events".into(),
        events.display().to_string(),
        "--base-url".into(),
        w.server.base_url(),
    ];
    for s in plan["steps"].as_array().unwrap() {
        if s["dependencies"].as_array().is_none_or(Vec::is_empty) {
            args.extend(["--from".to_owned(), s["id"].as_str().unwrap().to_owned()]);
        }
    }
    let out = output(&mut w.plan(&args));
    let report = report_in(&stdout(&out)).unwrap_or_else(|| w.stored_report(None, None));
    w.outcome(Door::Rerun, report, events_in(&events), said(&out))
}

/// Holds the first model call of one step until released: the run is then surely in the
/// middle of a step when it is interrupted. It blocks the fake server's thread, so no
/// other call is answered meanwhile either.
#[derive(Clone, Default)]
struct Gate {
    state: Arc<(Mutex<(bool, bool)>, Condvar)>,
}

impl Gate {
    /// Holds the first call for `step`, answering it (and later ones) by default.
    fn install(server: &FakeOpenAi, step: &str) -> Gate {
        let gate = Gate::default();
        let g = gate.clone();
        let reply = format!("result of {step}");
        server.on_first(
            &step_prompt(step),
            FakeReply::with(move |_| {
                g.hold_once();
                FakeReply::text(reply.clone())
            }),
        );
        gate
    }

    fn hold_once(&self) {
        let (lock, cv) = &*self.state;
        let mut s = lock.lock().unwrap();
        if s.0 {
            return;
        }
        s.0 = true;
        cv.notify_all();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !s.1 && Instant::now() < deadline {
            s = cv.wait_timeout(s, Duration::from_millis(50)).unwrap().0;
        }
    }

    fn held(&self) -> bool {
        self.state.0.lock().unwrap().0
    }

    fn release(&self) {
        let (lock, cv) = &*self.state;
        lock.lock().unwrap().1 = true;
        cv.notify_all();
    }
}

/// `plan run`, SIGINT while step `hold`'s call is in flight, then `plan resume`.
fn resume(w: &World, sc: &Scenario) -> Outcome {
    let gate = Gate::install(&w.server, sc.hold);
    let first_events = w.sb.path("first.jsonl");
    let mut args = vec![
        "run".to_owned(),
        sc.goal(),
        "--json".into(),
        "--events".into(),
        first_events.display().to_string(),
    ];
    args.extend(w.flags(sc));
    let mut child = w
        .plan(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The run reaches the held call, or ends before it (a budget spent in planning).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !gate.held() && child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the first run neither reached step `{}` nor ended",
            sc.hold
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let interrupted = gate.held();
    if interrupted {
        signal(&child, "INT");
        // Ctrl-C stops waiting on the model: the process exits while the held call (and
        // any call queued behind it on the fake server's one thread, such as a planning
        // re-prompt) is still unanswered. The gate opens by itself after a minute.
        let deadline = Instant::now() + Duration::from_secs(45);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            child.try_wait().unwrap().is_some(),
            "after Ctrl-C the run kept waiting on a model call in flight"
        );
    }
    gate.release();
    let first = child.wait_with_output().unwrap();
    let mut said = format!(
        "--- first run (interrupted: {interrupted})\n{}",
        said(&first)
    );
    if interrupted {
        assert_eq!(
            first.status.code(),
            Some(130),
            "Ctrl-C in mid-run exits 130\n{said}"
        );
    }
    let run = events_in(&first_events)
        .unwrap_or_default()
        .iter()
        .find(|e| e["event"] == "run_started")
        .and_then(|e| e["run"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("the first run started no run\n{said}"));
    let events = w.sb.path("events.jsonl");
    let out = output(&mut w.plan([
        "resume",
        &run,
        "--json",
        "--events",
        events.to_str().unwrap(),
    ]));
    said.push_str(&format!("\n--- plan resume\n{}", self::said(&out)));
    let report = report_in(&stdout(&out)).unwrap_or_else(|| w.stored_report(Some(&run), None));
    w.outcome(Door::Resume, report, events_in(&events), said)
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

/// A running `plan serve`, killed on drop.
struct Serve {
    child: Child,
    base: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `plan serve` with the scenario's model on the sandbox's store (the budget is the run
/// request's: [`post_run`]).
fn start_serve(w: &World) -> Serve {
    let mut args = vec![
        "serve".to_owned(),
        "--addr".into(),
        "127.0.0.1:0".into(),
        "--token".into(),
        TOKEN.into(),
    ];
    args.extend(model_flags(&w.server));
    let mut child = w
        .plan(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("plan serve exited").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Serve { child, base }
}

/// `POST /api/runs` with the scenario's goal, strategy and budget (and `more`); the run's
/// id, or the response when it was refused.
fn post_run(
    c: &reqwest_otlp::blocking::Client,
    s: &Serve,
    sc: &Scenario,
    more: Value,
) -> Result<String, String> {
    let mut body = json!({"goal": sc.goal()});
    if let Some(strategy) = sc.strategy {
        body["strategy"] = json!(strategy);
    }
    if let Some(tokens) = sc.budget_tokens {
        body["budget_tokens"] = json!(tokens);
    }
    if let Some(more) = more.as_object() {
        for (k, v) in more {
            body[k] = v.clone();
        }
    }
    let (code, v) = json_of(
        authed(c, "POST", &format!("{}/api/runs", s.base))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap(),
    );
    match v["run_id"].as_str() {
        Some(id) if code == 201 => Ok(id.to_owned()),
        _ => Err(format!("POST /api/runs: {code} {v}")),
    }
}

/// Polls `GET /api/runs/ID` until its status is one of `until`.
fn poll(c: &reqwest_otlp::blocking::Client, s: &Serve, id: &str, until: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, v) = json_of(
            authed(c, "GET", &format!("{}/api/runs/{id}", s.base))
                .send()
                .unwrap(),
        );
        assert_eq!(code, 200, "GET /api/runs/{id}: {v}");
        if until.iter().any(|u| v["status"] == *u) {
            return v;
        }
        assert!(Instant::now() < deadline, "run {id} never ended: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const ENDED: &[&str] = &["succeeded", "failed", "cancelled", "rejected"];

/// The run's events from `GET /api/runs/ID/events` (SSE, ending after `run_finished`).
fn sse_events(c: &reqwest_otlp::blocking::Client, s: &Serve, id: &str) -> Vec<Value> {
    let mut body = String::new();
    let _ = authed(c, "GET", &format!("{}/api/runs/{id}/events", s.base))
        .send()
        .unwrap()
        .read_to_string(&mut body);
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .collect()
}

/// The HTTP API of `plan serve`.
fn serve(w: &World, sc: &Scenario) -> Outcome {
    let s = start_serve(w);
    let c = client();
    let id = match post_run(&c, &s, sc, json!({})) {
        Ok(id) => id,
        Err(refused) => return w.outcome(Door::Serve, Value::Null, None, refused),
    };
    let report = poll(&c, &s, &id, ENDED);
    let events = sse_events(&c, &s, &id);
    // Spans are collected while the server lives (it exports them in batches).
    let outcome = w.outcome(Door::Serve, report, Some(events), String::new());
    drop(s);
    outcome
}

/// A run parked for approval by `plan serve`, then `plan approve` once the server is
/// gone.
fn approve(w: &World, sc: &Scenario) -> Outcome {
    let s = start_serve(w);
    let c = client();
    let id = match post_run(&c, &s, sc, json!({"approve": true})) {
        Ok(id) => id,
        Err(refused) => return w.outcome(Door::Approve, Value::Null, None, refused),
    };
    let mut until = vec!["awaiting_approval"];
    until.extend(ENDED);
    let parked = poll(&c, &s, &id, &until);
    drop(s);
    if parked["status"] != "awaiting_approval" {
        let said = format!("the run never waited for approval: {}", parked["status"]);
        return w.outcome(Door::Approve, parked, None, said);
    }
    let events = w.sb.path("events.jsonl");
    let out = output(&mut w.plan([
        "approve",
        &id,
        "--json",
        "--events",
        events.to_str().unwrap(),
    ]));
    let report = report_in(&stdout(&out)).unwrap_or_else(|| w.stored_report(Some(&id), None));
    w.outcome(Door::Approve, report, events_in(&events), said(&out))
}

/// `plan mcp` on stdio, spoken to line by line (JSON-RPC 2.0): initialize, the `run`
/// tool, then end of input.
fn mcp(w: &World, sc: &Scenario) -> Outcome {
    let log = w.sb.path("mcp.log");
    let mut args = vec!["mcp".to_owned()];
    args.extend(model_flags(&w.server));
    let mut child = w
        .plan(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut send = |v: Value| {
        writeln!(stdin, "{v}").unwrap();
        stdin.flush().unwrap();
    };
    let mut answer = |id: u64| -> Value {
        loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("plan mcp ended before answering request {id}"))
                .unwrap();
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("plan mcp wrote a line that is not JSON ({e}): {line}"));
            if v["id"] == id {
                return v;
            }
        }
    };
    send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {},
        "clientInfo": {"name": "matrix", "version": "0"}}}),
    );
    let init = answer(1);
    assert!(init["result"].is_object(), "initialize: {init}");
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let mut arguments = json!({"goal": sc.goal(), "wait_secs": 120});
    if let Some(strategy) = sc.strategy {
        arguments["strategy"] = json!(strategy);
    }
    if let Some(tokens) = sc.budget_tokens {
        arguments["budget_tokens"] = json!(tokens);
    }
    send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "run", "arguments": arguments}}));
    let reply = answer(2);
    // End of input ends the server (which flushes its spans).
    drop(stdin);
    let result = &reply["result"];
    let texts: Vec<&str> = result["content"]
        .as_array()
        .map(|c| c.iter().filter_map(|b| b["text"].as_str()).collect())
        .unwrap_or_default();
    let mut said = format!("tools/call run: isError {}\n", result["isError"]);
    said.push_str(&texts.join("\n"));
    if reply.get("error").is_some() {
        said.push_str(&format!("\nJSON-RPC error: {}", reply["error"]));
    }
    // A run that ended in an error is in the store: its report is read back.
    let report = match result.get("structuredContent") {
        Some(v) if v.get("run_id").is_some() && v["status"] != "running" => v.clone(),
        _ => w.stored_report(None, None),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    said.push_str(&format!(
        "\n--- plan mcp stderr\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    ));
    w.outcome(Door::Mcp, report, None, said)
}

/// A fresh database of the shared throwaway cluster, or why there is none.
fn database() -> Result<String, String> {
    if std::env::var(plan_postgres::testing::SKIP_VAR).is_ok_and(|v| v == "1") {
        return Err(format!("{}=1", plan_postgres::testing::SKIP_VAR));
    }
    std::panic::catch_unwind(plan_postgres::testing::TempCluster::shared)
        .map(|cluster| cluster.create_database())
        .map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "the cluster did not start".to_owned())
        })
}

/// A `plan worker` on a PostgreSQL store; the run is queued with `plan submit` and
/// followed with `plan wait --json`. Skipped (`None`) without PostgreSQL unless `CI` is
/// set, where that fails.
fn worker(w: &World, sc: &Scenario) -> Option<Outcome> {
    let url = match database() {
        Ok(url) => url,
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "the worker door needs PostgreSQL under CI: {why}"
            );
            eprintln!("worker door skipped: no PostgreSQL ({why})");
            return None;
        }
    };
    let log = w.sb.path("worker.log");
    let mut worker = w
        .plan([
            "worker",
            "--store",
            &url,
            "--name",
            "w1",
            "--lease-secs",
            "2",
            "--concurrency",
            "2",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut args = vec![
        "submit".to_owned(),
        sc.goal(),
        "--store".into(),
        url.clone(),
    ];
    args.extend(w.flags(sc));
    let submitted = output(&mut w.plan(&args));
    let mut said = format!("--- plan submit\n{}", self::said(&submitted));
    let id = stdout(&submitted).trim().to_owned();
    let report = if submitted.status.success() && !id.is_empty() {
        let out = output(&mut w.plan(["wait", &id, "--json", "--timeout", "60", "--store", &url]));
        said.push_str(&format!("\n--- plan wait\n{}", self::said(&out)));
        report_in(&stdout(&out)).unwrap_or_else(|| w.stored_report(Some(&id), Some(&url)))
    } else {
        Value::Null
    };
    // Spans are collected while the worker lives; then it stops gracefully.
    let mut outcome = w.outcome(Door::Worker, report, None, String::new());
    signal(&worker, "TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    while worker.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = worker.kill();
    let _ = worker.wait();
    said.push_str(&format!(
        "\n--- plan worker\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    ));
    outcome.said = said;
    // And what it exported on its way out.
    if let Some(r) = &w.receiver {
        outcome.spans = r.spans();
    }
    Some(outcome)
}
