//! Shared helpers: running the built `plan` binary in an isolated environment.

#![allow(dead_code)]

pub mod fake_openai;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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
