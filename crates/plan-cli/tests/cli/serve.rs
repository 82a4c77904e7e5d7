//! `plan serve`: the HTTP API through the binary, against the fake model: auth, bad
//! input, runs, reports, plans, Server-Sent Events with `Last-Event-ID`, cancel and
//! resume, and durable approval across a server restart.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use reqwest_otlp::blocking::{Client, Response};
use serde_json::{Value, json};

use crate::support::browser::{chromium, dump_dom};
use crate::support::{
    DIAMOND, Sandbox, agent_server, expect_code, model_flags, output, stderr, stdout, step_prompt,
};

pub(crate) const TOKEN: &str = "t0k3n-for-tests";

/// A running `plan serve` and its base URL.
pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
}

impl Server {
    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (up to 60 s) for the server to exit by itself.
    pub(crate) fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "plan serve did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start(sb: &Sandbox, model: &[String], extra: &[&str]) -> Server {
    let mut args = vec!["serve".to_owned(), "--addr".into(), "127.0.0.1:0".into()];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args.extend(model.iter().cloned());
    let mut child = sb
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
    Server { child, base }
}

pub(crate) fn client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub(crate) fn authed(
    c: &Client,
    method: &str,
    url: &str,
) -> reqwest_otlp::blocking::RequestBuilder {
    let b = match method {
        "POST" => c.post(url),
        _ => c.get(url),
    };
    b.bearer_auth(TOKEN)
}

pub(crate) fn json_of(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub(crate) fn wait_status(c: &Client, s: &Server, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, v) = json_of(
            authed(c, "GET", &format!("{}/api/runs/{id}", s.base))
                .send()
                .unwrap(),
        );
        assert_eq!(code, 200, "{v}");
        if v["status"] == want {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "run {id} never became {want}: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads the run's event stream to its end, which must be its `run_finished`.
pub(crate) fn assert_stream_ends_with_run_finished(c: &Client, s: &Server, id: &str) {
    let mut body = String::new();
    authed(c, "GET", &format!("{}/api/runs/{id}/events", s.base))
        .send()
        .unwrap()
        .read_to_string(&mut body)
        .unwrap();
    let last = body.lines().rfind(|l| l.starts_with("data:")).unwrap();
    assert!(last.contains("\"run_finished\""), "{last}");
}

pub(crate) fn start_run(c: &Client, s: &Server, body: Value) -> String {
    let (code, v) = json_of(
        authed(c, "POST", &format!("{}/api/runs", s.base))
            .json(&body)
            .send()
            .unwrap(),
    );
    assert_eq!(code, 201, "{v}");
    v["run_id"].as_str().unwrap().to_owned()
}

#[test]
fn every_request_needs_the_token_and_a_page_visit_sets_the_cookie() {
    let sb = Sandbox::new();
    let fake = agent_server(DIAMOND);
    let s = start(&sb, &model_flags(&fake), &["--token", TOKEN]);
    let c = client();
    let url = format!("{}/api/runs", s.base);
    let (code, v) = json_of(c.get(&url).send().unwrap());
    assert_eq!(code, 401);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer"),
        "{v}"
    );
    assert_eq!(
        c.get(&url)
            .bearer_auth("wrong")
            .send()
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        c.get(&url)
            .bearer_auth(TOKEN)
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let r = c.get(format!("{url}?token={TOKEN}")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    let r = c.get(&url).header("cookie", pair).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // No CORS headers are sent.
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[test]
fn a_public_address_without_a_token_is_refused() {
    let sb = Sandbox::new();
    let out = output(&mut sb.plan(["serve", "--addr", "0.0.0.0:0"]));
    expect_code(&out, 2);
    assert!(stderr(&out).contains("no token is set"), "{}", stderr(&out));
}

#[test]
fn bad_requests_get_clear_errors() {
    let sb = Sandbox::new();
    let fake = agent_server(DIAMOND);
    let s = start(&sb, &model_flags(&fake), &["--token", TOKEN]);
    let c = client();
    let url = format!("{}/api/runs", s.base);
    let post = |body: &str| {
        json_of(
            authed(&c, "POST", &url)
                .header("content-type", "application/json")
                .body(body.to_owned())
                .send()
                .unwrap(),
        )
    };
    let (code, v) = post("{not json");
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().starts_with("bad request body"),
        "{v}"
    );
    let (code, v) = post(r#"{"goal": "  "}"#);
    assert_eq!(
        (code, v["error"].as_str().unwrap().contains("goal is empty")),
        (400, true)
    );
    let (code, v) = post(r#"{"goal": "g", "approve": "maybe"}"#);
    assert_eq!(code, 422, "{v}");
    let (code, v) = post(r#"{"goal": "g", "colour": "blue"}"#);
    assert_eq!(code, 422, "unknown fields are refused: {v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("`colour` is not a run setting"),
        "{v}"
    );
    let (code, v) = post(&format!(r#"{{"goal": "{}"}}"#, "x".repeat(300 * 1024)));
    assert_eq!(code, 413, "{v}");
    let (code, v) = post(r#"{"goal": "g", "base_url": "http://example.com/v1"}"#);
    assert_eq!(code, 403, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("--allow-base-url"),
        "{v}"
    );
    // A loopback name in the user part is no loopback host.
    let (code, v) = post(r#"{"goal": "g", "base_url": "http://127.0.0.1@example.com/v1"}"#);
    assert_eq!(code, 403, "{v}");
    let (code, v) = post(r#"{"goal": "g", "base_url": "not a url"}"#);
    assert_eq!(code, 400, "{v}");
    // Nonsense settings are refused naming the value, as on the command line.
    for (body, named) in [
        (r#"{"goal": "g", "concurrency": 0}"#, "concurrency = 0"),
        (r#"{"goal": "g", "max_steps": 0}"#, "max_steps = 0"),
        (r#"{"goal": "g", "strategy": "sideways"}"#, "sideways"),
    ] {
        let (code, v) = post(body);
        assert_eq!(code, 422, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(named), "{body}: {v}");
    }
    let (code, v) = json_of(
        authed(&c, "GET", &format!("{url}/nosuchrun"))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 404, "{v}");
}

#[test]
fn a_run_started_over_http_reports_as_the_cli_does_and_streams_its_events() {
    let sb = Sandbox::new();
    let fake = agent_server(DIAMOND);
    let s = start(&sb, &model_flags(&fake), &["--token", TOKEN]);
    let c = client();
    let id = start_run(
        &c,
        &s,
        json!({"goal": "Compare two things", "strategy": "dag"}),
    );
    let report = wait_status(&c, &s, &id, "succeeded");
    assert_eq!(report["steps"].as_array().unwrap().len(), 3);
    // The same object as `plan show --json`.
    let out = output(&mut sb.plan(["show", &id, "--json"]));
    let shown: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(shown["steps"], report["steps"]);
    assert_eq!(shown["answer"], report["answer"]);
    let (_, list) = json_of(
        authed(&c, "GET", &format!("{}/api/runs", s.base))
            .send()
            .unwrap(),
    );
    assert_eq!(list[0]["run_id"], id.as_str());
    assert_eq!(list[0]["steps_done"], 3);

    let plan = |format: &str| {
        let r = authed(
            &c,
            "GET",
            &format!("{}/api/runs/{id}/plan?format={format}", s.base),
        )
        .send()
        .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    assert!(plan("mermaid").1.contains("flowchart"));
    assert!(plan("dot").1.contains("digraph"));
    let (_, json_plan) = plan("json");
    assert_eq!(
        serde_json::from_str::<Value>(&json_plan).unwrap()["steps"][2]["id"],
        "c"
    );
    assert_eq!(plan("svgz").0, 400);

    // Events: stored ones replayed, each with its journal position as the id, ending
    // after run_finished.
    let read = |last: Option<&str>| -> Vec<(u64, Value)> {
        let mut req = authed(&c, "GET", &format!("{}/api/runs/{id}/events", s.base));
        if let Some(last) = last {
            req = req.header("last-event-id", last);
        }
        let mut body = String::new();
        req.send().unwrap().read_to_string(&mut body).unwrap();
        let mut out = Vec::new();
        let mut seq = 0;
        for line in body.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                seq = v.trim().parse().unwrap();
            } else if let Some(v) = line.strip_prefix("data:") {
                out.push((seq, serde_json::from_str(v.trim()).unwrap()));
            }
        }
        out
    };
    let all = read(None);
    assert_eq!(all.first().unwrap().1["event"], "run_started");
    assert_eq!(all.last().unwrap().1["event"], "run_finished");
    // Ids are the journal's sequence numbers: they increase, with gaps where the journal
    // holds entries that are not streamed (the calls recorded for replay).
    assert!(all.windows(2).all(|w| w[1].0 > w[0].0), "ids increase");
    let third = all[2].0.to_string();
    let rest = read(Some(&third));
    assert_eq!(rest.first().unwrap().0, all[3].0);
    assert_eq!(rest.len(), all.len() - 3);
}

#[test]
fn a_live_stream_follows_a_run_and_cancel_then_resume_finish_it() {
    let sb = Sandbox::new();
    let fake = agent_server(DIAMOND);
    fake.latency(Duration::from_millis(400));
    let s = start(&sb, &model_flags(&fake), &["--token", TOKEN]);
    let c = client();
    let id = start_run(
        &c,
        &s,
        json!({"goal": "Compare two things", "strategy": "dag"}),
    );
    let (code, v) = json_of(
        authed(&c, "POST", &format!("{}/api/runs/{id}/cancel", s.base))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 202, "{v}");
    wait_status(&c, &s, &id, "cancelled");
    let (code, v) = json_of(
        authed(&c, "POST", &format!("{}/api/runs/{id}/resume", s.base))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 202, "{v}");
    // The stream, opened while it runs, ends with its run_finished.
    assert_stream_ends_with_run_finished(&c, &s, &id);
    let report = wait_status(&c, &s, &id, "succeeded");
    assert!(
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "completed")
    );
    let (code, _) = json_of(
        authed(&c, "POST", &format!("{}/api/runs/{id}/cancel", s.base))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 409);
}

#[test]
fn approval_waits_in_the_store_and_is_answered_after_a_server_restart() {
    let sb = Sandbox::new();
    let fake = agent_server(DIAMOND);
    let model = model_flags(&fake);
    let c = client();
    let (id, other) = {
        let s = start(&sb, &model, &["--token", TOKEN]);
        let id = start_run(
            &c,
            &s,
            json!({"goal": "Compare two things", "strategy": "dag", "approve": true}),
        );
        let parked = wait_status(&c, &s, &id, "awaiting_approval");
        assert_eq!(parked["plan"]["steps"].as_array().unwrap().len(), 3);
        let other = start_run(
            &c,
            &s,
            json!({"goal": "Compare two things", "approve": true}),
        );
        wait_status(&c, &s, &other, "awaiting_approval");
        (id, other)
    }; // the server stops here
    assert_eq!(
        fake.count(&step_prompt("a")),
        0,
        "no step ran before approval"
    );
    let s = start(&sb, &model, &["--token", TOKEN]);
    let approve = |id: &str, body: Value| {
        json_of(
            authed(&c, "POST", &format!("{}/api/runs/{id}/approve", s.base))
                .json(&body)
                .send()
                .unwrap(),
        )
    };
    // An invalid edit: every problem, and the run keeps waiting.
    let (code, v) = approve(
        &id,
        json!({"plan": {"goal": "g", "steps": [
        {"id": "a", "description": "A", "dependencies": ["b"]},
        {"id": "b", "description": "B", "dependencies": ["a"]},
        {"id": "c", "description": "C", "dependencies": ["zzz"]}]}}),
    );
    assert_eq!(code, 422, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("dependency cycle") && e.contains("zzz"), "{e}");
    wait_status(&c, &s, &id, "awaiting_approval");
    let (code, v) = approve(&id, json!({}));
    assert_eq!(code, 202, "{v}");
    let done = wait_status(&c, &s, &id, "succeeded");
    assert_eq!(fake.count(&step_prompt("a")), 1);
    assert!(
        done["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "completed")
    );
    let (code, _) = approve(&id, json!({}));
    assert_eq!(code, 409, "answered once");
    let (code, v) = json_of(
        authed(&c, "POST", &format!("{}/api/runs/{other}/reject", s.base))
            .json(&json!({"reason": "not now"}))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"], "rejected");
    assert_eq!(v["failure"], "not now");
}

/// `(step id, status)` of every step element in a page's plan drawing.
fn step_elements(dom: &str) -> Vec<(String, String)> {
    let svg = dom
        .split("<svg id=\"dag\"")
        .nth(1)
        .and_then(|rest| rest.split("</svg>").next())
        .unwrap_or_default();
    svg.split("data-step-id=\"")
        .skip(1)
        .map(|rest| {
            let id = rest.split('"').next().unwrap().to_owned();
            let status = rest
                .split("data-status=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap_or_default()
                .to_owned();
            (id, status)
        })
        .collect()
}

#[test]
fn the_web_page_draws_every_step_and_follows_a_live_run_to_the_end() {
    let Some(browser) = chromium() else { return };
    let sb = Sandbox::new();
    let fake = agent_server(DIAMOND);
    let s = start(&sb, &model_flags(&fake), &["--token", TOKEN]);
    let c = client();

    // A finished run: every step drawn, completed; the answer rendered.
    let id = start_run(
        &c,
        &s,
        json!({"goal": "Compare <two> things", "strategy": "dag"}),
    );
    wait_status(&c, &s, &id, "succeeded");
    let dom = dump_dom(
        browser,
        &format!("{}/runs/{id}?token={TOKEN}", s.base),
        3000,
        None,
    );
    let steps = step_elements(&dom);
    assert_eq!(
        steps,
        [("a", "completed"), ("b", "completed"), ("c", "completed")]
            .map(|(a, b)| (a.to_owned(), b.to_owned())),
        "{dom}"
    );
    assert!(
        dom.contains("Compare &lt;two&gt; things"),
        "the goal is escaped"
    );
    assert!(dom.contains("id=\"answer\""), "{dom}");
    // The runs page lists it (escaped) and has the form that starts a run.
    let index = authed(&c, "GET", &format!("{}/", s.base))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(index.contains(&format!("href=\"/runs/{id}\"")), "{index}");
    assert!(index.contains("Compare &lt;two&gt; things") && !index.contains("<two>"));
    assert!(index.contains("<form id=\"start\""));
    assert!(index.contains("data-status=\"succeeded\""));
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("plan-serve-run.png");
    dump_dom(
        browser,
        &format!("{}/runs/{id}?token={TOKEN}", s.base),
        3000,
        Some(&shot),
    );
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 1000,
        "a screenshot at {}",
        shot.display()
    );

    // A live run: the page is opened while steps are still to run, and its script moves
    // every step to completed as the events arrive, without a reload.
    fake.latency(Duration::from_millis(700));
    let id = start_run(
        &c,
        &s,
        json!({"goal": "Compare two things", "strategy": "dag"}),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = json_of(
            authed(&c, "GET", &format!("{}/api/runs/{id}", s.base))
                .send()
                .unwrap(),
        );
        if !v["plan"].is_null() {
            assert!(
                v["steps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["status"] != "completed")
            );
            break;
        }
        assert!(Instant::now() < deadline, "the plan never came");
        std::thread::sleep(Duration::from_millis(20));
    }
    let dom = dump_dom(
        browser,
        &format!("{}/runs/{id}?token={TOKEN}", s.base),
        9000,
        None,
    );
    let steps = step_elements(&dom);
    assert_eq!(steps.len(), 3, "{dom}");
    assert!(steps.iter().all(|(_, st)| st == "completed"), "{steps:?}");
    assert!(
        dom.contains("data-status=\"succeeded\""),
        "the run's status too: {dom}"
    );
}
