//! `plan plan`, a three-step `plan exec` and a `plan run` of at most three steps through
//! the binary against a real llama-cpp-python server (`python -m llama_cpp.server`)
//! serving the embedded model's own GGUF (issue 26, part 4), with the `openai:`,
//! `openai-compatible:` and `llama-cpp-python:` specs. Every request goes through a
//! recording proxy, so the tests see what each spec sent: planning in the server's native
//! schema mode (`json_object` with the schema beside it), never `json_schema`, which
//! llama-cpp-python refuses.
//!
//! A 135M-parameter model writes poor plans: the tests check what plan promises (a valid
//! plan, or a failure that says why), not the model's judgement.
//!
//! Needs `PLAN_LLAMA_SERVER_URL` (the server's `/v1` base URL): `cargo xtask
//! llama-server-test` builds llama-cpp-python, starts the server, sets it and runs these
//! tests. Without it they are skipped, saying so, unless `PLAN_REQUIRE_LLAMA_SERVER` is
//! set (as the xtask sets it), where they fail.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::support::{Sandbox, code, output, stderr, stdout};

const GOAL: &str = "Plan a birthday party";

/// Three steps: `a` and `b` in parallel, then `c`.
const THREE_STEPS: &str = r#"{"goal": "Plan a birthday party", "steps": [
    {"id": "guests", "description": "List five friends to invite", "dependencies": []},
    {"id": "food", "description": "Choose three dishes to serve", "dependencies": []},
    {"id": "invite", "description": "Write a one-line invitation naming the food", "dependencies": ["guests", "food"]}]}"#;

/// The real server's base URL, or `None` (the test is skipped) when none is given.
fn server_url() -> Option<String> {
    if let Some(url) = std::env::var("PLAN_LLAMA_SERVER_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        return Some(url);
    }
    assert!(
        std::env::var_os("PLAN_REQUIRE_LLAMA_SERVER").is_none(),
        "PLAN_LLAMA_SERVER_URL is not set: run `cargo xtask llama-server-test`, which builds llama-cpp-python, serves the embedded model's GGUF and runs these tests against it"
    );
    eprintln!(
        "notice: PLAN_LLAMA_SERVER_URL is not set; the real llama-cpp-python server tests are skipped here. Run `cargo xtask llama-server-test` to run them."
    );
    None
}

/// One request the proxy passed on: its method, path and JSON body (`Null` when none).
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    body: Value,
}

/// A loopback HTTP proxy in front of the real server that records every request and
/// passes the reply back as it comes (streamed replies included). Each request is sent
/// on a connection of its own with `Connection: close`, so the reply ends where the
/// upstream connection does.
struct Recorder {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    fn start(upstream_url: &str) -> Recorder {
        let rest = upstream_url
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("PLAN_LLAMA_SERVER_URL is not http://: {upstream_url}"));
        let (upstream, base_path) = rest.split_once('/').unwrap_or((rest, ""));
        let upstream = upstream.to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/{base_path}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let upstream = upstream.clone();
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    if let Err(e) = relay(client, &upstream, &log) {
                        eprintln!("recording proxy: {e}");
                    }
                });
            }
        });
        Recorder { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The chat completion requests.
    fn chats(&self) -> Vec<Value> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == "POST" && s.path.ends_with("/chat/completions"))
            .map(|s| s.body)
            .collect()
    }

    fn asked_for_models(&self) -> bool {
        self.seen()
            .iter()
            .any(|s| s.method == "GET" && s.path.ends_with("/models"))
    }
}

/// Passes one request from `client` to `upstream` and the whole reply back.
fn relay(client: TcpStream, upstream: &str, log: &Mutex<Vec<Seen>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = String::new();
    reader.read_line(&mut head)?;
    let mut parts = head.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let (name, value) = line.trim_end().split_once(':').unwrap_or((&line, ""));
        let name = name.trim().to_ascii_lowercase();
        match name.as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "connection" | "host" | "keep-alive" => continue,
            _ => {}
        }
        headers.push(line.trim_end().to_owned());
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    log.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let mut server = TcpStream::connect(upstream)?;
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {upstream}\r\nConnection: close\r\n");
    for h in headers {
        request.push_str(&h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    server.write_all(request.as_bytes())?;
    server.write_all(&body)?;
    let mut client = client;
    std::io::copy(&mut server, &mut client)?;
    client.shutdown(std::net::Shutdown::Both)
}

/// `plan ARGS --model SPEC --base-url URL` in a fresh sandbox.
fn plan(spec: &str, url: &str, args: &[&str], sb: &Sandbox) -> std::process::Output {
    output(
        sb.plan(args)
            .args(["--model", spec, "--base-url", url])
            .env_remove("OPENAI_API_KEY"),
    )
}

/// A valid plan: steps with distinct non-empty ids, dependencies that name other steps,
/// no cycle, at most `most` steps.
#[track_caller]
fn assert_valid_plan(plan: &Value, most: usize) {
    let steps = plan["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps: {plan}"));
    assert!(!steps.is_empty() && steps.len() <= most, "{plan:#}");
    let ids: Vec<&str> = steps.iter().map(|s| s["id"].as_str().unwrap()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "duplicate ids: {plan:#}");
    assert!(ids.iter().all(|id| !id.trim().is_empty()), "{plan:#}");
    let deps: HashMap<&str, Vec<&str>> = steps
        .iter()
        .map(|s| {
            let deps = s["dependencies"]
                .as_array()
                .map(|d| d.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            (s["id"].as_str().unwrap(), deps)
        })
        .collect();
    for (id, ds) in &deps {
        for d in ds {
            assert!(
                unique.contains(d) && d != id,
                "`{id}` depends on `{d}`: {plan:#}"
            );
        }
    }
    // Kahn's algorithm: every step is reached when there is no cycle.
    let mut done: HashSet<&str> = HashSet::new();
    while done.len() < ids.len() {
        let ready: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| !done.contains(id) && deps[id].iter().all(|d| done.contains(d)))
            .collect();
        assert!(!ready.is_empty(), "a dependency cycle: {plan:#}");
        done.extend(ready);
    }
}

/// Every planning request (the planner's system prompt) is in llama-cpp-python's native
/// schema mode: `json_object` with the plan schema beside it. Without the schema the
/// server constrains the reply to some JSON object only, and a small model then writes
/// anything but a plan.
#[track_caller]
fn assert_planning_in_schema_mode(requests: &[Value]) {
    let planning: Vec<&Value> = requests
        .iter()
        .filter(|r| {
            r["messages"][0]["content"]
                .as_str()
                .is_some_and(|s| s.starts_with("You are a planner"))
        })
        .collect();
    assert!(!planning.is_empty(), "no planning request: {requests:#?}");
    for (i, r) in planning.iter().enumerate() {
        let format = &r["response_format"];
        assert!(
            format["type"] == "json_object" && format["schema"]["properties"]["steps"].is_object(),
            "planning request {} of {} asks for {format} rather than json_object with the plan schema",
            i + 1,
            planning.len()
        );
    }
    for r in requests {
        assert_ne!(
            r["response_format"]["type"], "json_schema",
            "llama-cpp-python refuses json_schema"
        );
    }
}

/// The server identified itself: the generic specs ask `GET /v1/models` first, the
/// llama-cpp-python spec knows its server already.
#[track_caller]
fn assert_detection(spec: &str, recorder: &Recorder) {
    let asked = recorder.asked_for_models();
    if spec.starts_with("llama-cpp-python:") {
        assert!(!asked, "{spec} asked the server who it is");
    } else {
        assert!(asked, "{spec} did not ask the server who it is");
    }
}

/// A failed command's error: exit 1, an `error:` line that says what was wrong, no panic.
#[track_caller]
fn assert_clear_failure(out: &std::process::Output) {
    let err = stderr(out);
    assert_eq!(code(out), 1, "{err}");
    assert!(err.contains("error:") && !err.contains("panicked"), "{err}");
}

fn plan_plan(spec: &str) {
    let Some(url) = server_url() else { return };
    let recorder = Recorder::start(&url);
    let sb = Sandbox::new();
    let out = plan(
        spec,
        &recorder.url,
        &["plan", GOAL, "--format", "json"],
        &sb,
    );
    eprintln!("{spec}: plan plan exited {}\n{}", code(&out), stderr(&out));
    if code(&out) == 0 {
        let plan: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_valid_plan(&plan, 10_000);
    } else {
        assert_clear_failure(&out);
    }
    assert_detection(spec, &recorder);
    assert_planning_in_schema_mode(&recorder.chats());
}

fn plan_exec(spec: &str) {
    let Some(url) = server_url() else { return };
    let recorder = Recorder::start(&url);
    let sb = Sandbox::new();
    let file = sb.write("three.json", THREE_STEPS);
    let file = file.to_str().unwrap();
    let out = plan(spec, &recorder.url, &["exec", file, "--json"], &sb);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["status"], "succeeded", "{v:#}");
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3, "{v:#}");
    for s in steps {
        assert_eq!(s["status"], "completed", "{s}");
        assert!(
            !s["output"].as_str().unwrap_or_default().trim().is_empty(),
            "{s}"
        );
    }
    assert_detection(spec, &recorder);
    // A step of a given plan is free text: no structured-output mode asked for.
    assert!(recorder.chats().len() >= 3);
}

fn plan_run(spec: &str) {
    let Some(url) = server_url() else { return };
    let recorder = Recorder::start(&url);
    let sb = Sandbox::new();
    let out = plan(
        spec,
        &recorder.url,
        &[
            "run",
            GOAL,
            "--strategy",
            "dag",
            "--max-steps",
            "3",
            "--json",
        ],
        &sb,
    );
    eprintln!("{spec}: plan run exited {}\n{}", code(&out), stderr(&out));
    if code(&out) == 0 {
        let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(v["status"], "succeeded", "{v:#}");
        assert_valid_plan(&v["plan"], 3);
        assert!(
            !v["answer"].as_str().unwrap_or_default().trim().is_empty(),
            "{v:#}"
        );
    } else {
        assert_clear_failure(&out);
    }
    assert_detection(spec, &recorder);
    assert_planning_in_schema_mode(&recorder.chats());
}

#[test]
fn plan_plan_with_the_openai_spec() {
    plan_plan("openai:smollm2");
}

#[test]
fn plan_plan_with_the_openai_compatible_spec() {
    plan_plan("openai-compatible:smollm2");
}

#[test]
fn plan_plan_with_the_llama_cpp_python_spec() {
    plan_plan("llama-cpp-python:smollm2");
}

#[test]
fn plan_exec_of_three_steps_with_the_openai_spec() {
    plan_exec("openai:smollm2");
}

#[test]
fn plan_exec_of_three_steps_with_the_openai_compatible_spec() {
    plan_exec("openai-compatible:smollm2");
}

#[test]
fn plan_exec_of_three_steps_with_the_llama_cpp_python_spec() {
    plan_exec("llama-cpp-python:smollm2");
}

#[test]
fn plan_run_with_the_openai_spec() {
    plan_run("openai:smollm2");
}

#[test]
fn plan_run_with_the_openai_compatible_spec() {
    plan_run("openai-compatible:smollm2");
}

#[test]
fn plan_run_with_the_llama_cpp_python_spec() {
    plan_run("llama-cpp-python:smollm2");
}
