//! Headless Chromium for the web view's tests: the DOM of a page once it settled
//! ([`dump_dom`]), or a page held open and asked questions while it lives ([`LivePage`],
//! over the DevTools protocol on a pipe).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Headless Chromium, or `None` (with a notice) where it is not installed; CI installs it
/// (`cargo xtask test`).
pub fn chromium() -> Option<&'static str> {
    let found = std::process::Command::new("chromium")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("chromium");
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "chromium is not installed: `cargo xtask test` installs it"
    );
    eprintln!("notice: chromium is not installed; the browser tests are skipped here");
    None
}

/// The DOM of `url` once the page settled: Chromium's virtual time (`ms` of it) does not
/// advance while a request is open, so a live page stays open until its event stream
/// ends (a fresh profile, no sandbox as root).
pub fn dump_dom(browser: &str, url: &str, ms: u64, screenshot: Option<&Path>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        &format!("--user-data-dir={}", profile.path().display()),
        &format!("--virtual-time-budget={ms}"),
        "--window-size=1200,700",
    ]);
    match screenshot {
        Some(path) => cmd.arg(format!("--screenshot={}", path.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd.arg(url).output().unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A page open in headless Chromium, driven over the DevTools protocol on a pipe
/// (`--remote-debugging-pipe`: Chromium reads commands on descriptor 3 and answers on 4,
/// each message JSON ended by a NUL; a shell puts two FIFOs there). The browser is killed
/// when this is dropped.
pub struct LivePage {
    child: Child,
    to: std::fs::File,
    from: BufReader<std::fs::File>,
    next: u64,
    session: String,
    _dir: tempfile::TempDir,
}

impl LivePage {
    /// Opens `url` in `browser` (see [`chromium`]).
    pub fn open(browser: &str, url: &str) -> LivePage {
        let dir = tempfile::tempdir().unwrap();
        let (cmds, answers) = (dir.path().join("cmds"), dir.path().join("answers"));
        for fifo in [&cmds, &answers] {
            let made = Command::new("mkfifo").arg(fifo).status().unwrap();
            assert!(made.success(), "mkfifo {}", fifo.display());
        }
        let profile = dir.path().join("profile");
        let child = Command::new("sh")
            .args([
                "-c",
                r#"exec "$0" "$@" 3<"$CDP_CMDS" 4>"$CDP_ANSWERS""#,
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-pipe",
                &format!("--user-data-dir={}", profile.display()),
                "--window-size=1200,700",
                "about:blank",
            ])
            .env("CDP_CMDS", &cmds)
            .env("CDP_ANSWERS", &answers)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The shell opens the commands FIFO first, then the answers one; opening them in
        // the same order here meets it.
        let to = std::fs::OpenOptions::new().write(true).open(&cmds).unwrap();
        let from = BufReader::new(std::fs::File::open(&answers).unwrap());
        let mut page = LivePage {
            child,
            to,
            from,
            next: 0,
            session: String::new(),
            _dir: dir,
        };
        let target = page.call("Target.createTarget", json!({"url": url}));
        let target = target["targetId"].as_str().unwrap().to_owned();
        let attached = page.call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        page.session = attached["sessionId"].as_str().unwrap().to_owned();
        page
    }

    /// Sends one command (to the page once attached) and returns its result, skipping the
    /// events that come before it.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let mut message = json!({"id": self.next, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        loop {
            let mut buf = Vec::new();
            let n = self.from.read_until(0, &mut buf).unwrap();
            assert!(n > 0, "chromium closed its DevTools pipe during {method}");
            buf.pop_if(|b| *b == 0);
            let answer: Value = serde_json::from_slice(&buf).unwrap();
            if answer["id"] == json!(self.next) {
                assert!(answer["error"].is_null(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page (JSON-serialisable values).
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        assert!(
            r["exceptionDetails"].is_null(),
            "{expression}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Asks the page `expression` until its value is truthy (up to 60 s), and returns it;
    /// `what` names the wait in the panic.
    pub fn wait_for(&mut self, expression: &str, what: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.eval(expression);
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {what}: {}",
                self.eval("document.body.outerHTML")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LivePage {
    /// Asks the browser to close (so it ends its helper processes itself), and kills it
    /// if it has not within 10 s.
    fn drop(&mut self) {
        let close = json!({"id": self.next + 1, "method": "Browser.close"});
        let mut bytes = serde_json::to_vec(&close).unwrap_or_default();
        bytes.push(0);
        let _ = self.to.write_all(&bytes);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
