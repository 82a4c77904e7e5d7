//! Shared helpers: running the built `plan` binary in an isolated environment.

#![allow(dead_code)]

pub mod browser;
pub mod pty;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use plan_llm::testing::{FakeOpenAi, FakeReply};

/// An isolated home for one test: config, data and working directories of its own, so no
/// user configuration or run store leaks in.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["home", "config", "data", "work", "cache"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        Sandbox { dir }
    }

    /// The working directory commands run in.
    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// A path in the working directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.work().join(name)
    }

    /// Writes a file in the working directory.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The run store every command of this sandbox uses by default.
    pub fn store(&self) -> PathBuf {
        self.dir.path().join("data/plan/runs.sqlite")
    }

    /// `plan ARGS` with a clean environment rooted in this sandbox.
    pub fn plan<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_plan"));
        cmd.args(args)
            .current_dir(self.work())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path().join("home"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("XDG_DATA_HOME", self.dir.path().join("data"))
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .env("OPENAI_API_KEY", "sk-test-secret-0000")
            .stdin(Stdio::null());
        // The embedded model, when a test needs it, comes from the shared cache.
        for var in ["PLAN_MODEL_PATH", "PLAN_MODEL_DIR"] {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        cmd
    }
}

/// Runs a command to completion.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

/// The exit code (panics when killed by a signal).
pub fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {out:?}"))
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit code, showing both streams when it differs.
#[track_caller]
pub fn expect_code(out: &Output, expected: i32) {
    assert_eq!(
        out.status.code(),
        Some(expected),
        "exit status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// The JSON lines of an events file.
pub fn read_events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// A fake model server that plays every part the strategies need: planner, reviewer,
/// decomposer, step worker (it echoes the step id), verifier and writer of the answer.
pub fn agent_server(plan: &str) -> FakeOpenAi {
    let server = FakeOpenAi::start_detached();
    let planned = format!(r#"{{"answer": null, "plan": {plan}}}"#);
    server
        .on("You decide how to meet a goal", FakeReply::text(planned))
        .on("You are a planner", FakeReply::text(plan))
        .on(
            "You review plans",
            FakeReply::text(r#"{"approved": true, "issues": []}"#),
        )
        .on(
            "You break goals down",
            FakeReply::with(|r| {
                if r.text().contains("This goal is part of a larger one") {
                    FakeReply::text(r#"{"atomic": true, "subgoals": []}"#)
                } else {
                    FakeReply::text(
                        r#"{"atomic": false, "subgoals": [
                        {"id": "gather", "goal": "Gather the facts", "dependencies": []},
                        {"id": "write", "goal": "Write the summary", "dependencies": ["gather"]}]}"#,
                    )
                }
            }),
        )
        .on(
            "You write the final answer",
            FakeReply::text("FINAL ANSWER: all done"),
        )
        .on("Check to make", FakeReply::text("PASS: looks right"))
        .otherwise(FakeReply::with(|r| {
            FakeReply::text(format!("result of {}", step_id(&r.text()).unwrap_or("?")))
        }));
    server
}

/// The step id in a step prompt (`Your step (`id`):`).
pub fn step_id(text: &str) -> Option<&str> {
    let start = text.find("Your step (`")? + "Your step (`".len();
    let end = text[start..].find('`')? + start;
    Some(&text[start..end])
}

/// The needle that matches the prompt of step `id`.
pub fn step_prompt(id: &str) -> String {
    format!("Your step (`{id}`)")
}

/// Three steps: `a` and `b` in parallel, then `c`.
pub const DIAMOND: &str = r#"{"goal": "Compare two things", "steps": [
    {"id": "a", "description": "Describe the first thing", "dependencies": []},
    {"id": "b", "description": "Describe the second thing", "dependencies": []},
    {"id": "c", "description": "Compare them", "dependencies": ["a", "b"]}]}"#;

/// Model flags pointing at a fake server.
pub fn model_flags(server: &FakeOpenAi) -> Vec<String> {
    vec![
        "--model".into(),
        "openai:fake-model".into(),
        "--base-url".into(),
        server.base_url(),
    ]
}

/// Waits until `path` holds an event named `name` (or panics after `secs`).
pub fn wait_for_event(path: &Path, name: &str, secs: u64) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            for line in text.lines() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                    && v["event"] == name
                {
                    return v;
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {name} event in {} after {secs}s",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Stores a run of `record` planned with `plan` and stopped for approval, as `plan serve`
/// or the library's `Agent::plan_for_approval` leave it, in the sandbox's store; returns
/// its id.
pub fn park(sb: &Sandbox, record: plan_exec::store::RunRecord, plan: &plan_core::Plan) -> String {
    std::fs::create_dir_all(sb.store().parent().unwrap()).unwrap();
    let store = plan_sqlite::SqliteStore::open(sb.store()).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let session = plan_exec::session::SessionBuilder::new()
                .store(std::sync::Arc::new(store))
                .create(record)
                .await
                .unwrap();
            session.plan_created(plan, 0).await.unwrap();
            session
                .set_status(plan_core::RunStatus::AwaitingApproval)
                .await
                .unwrap();
            session.id().to_string()
        })
}

/// Holds a fake server's request until released (a test interrupts the run meanwhile),
/// off the server's executor, so that other requests are answered: start the server on a
/// multi-thread runtime ([`FakeOpenAi::start`]) and call [`Hold::wait_here`] in a reply.
#[derive(Clone, Default)]
pub struct Hold(std::sync::Arc<(std::sync::Mutex<(bool, bool)>, std::sync::Condvar)>);

impl Hold {
    pub fn wait_here(&self) {
        tokio::task::block_in_place(|| {
            let (lock, cv) = &*self.0;
            let mut s = lock.lock().unwrap();
            s.0 = true;
            cv.notify_all();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !s.1 && std::time::Instant::now() < deadline {
                s = cv
                    .wait_timeout(s, std::time::Duration::from_millis(50))
                    .unwrap()
                    .0;
            }
        });
    }

    pub fn holding(&self) -> bool {
        self.0.0.lock().unwrap().0
    }

    pub fn release(&self) {
        self.0.0.lock().unwrap().1 = true;
        self.0.1.notify_all();
    }
}
