//! Helpers for the sandbox escape and abuse suite.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use plan_sandbox::{BwrapConfig, BwrapSandbox, Limits, Program, RunOutput, Sandbox};
use tokio::sync::{Mutex, MutexGuard};

/// Sandbox runs share the sandbox uid's process count (`RLIMIT_NPROC`), so a fork bomb in
/// one test would starve the others: runs in this binary take turns.
pub async fn turn() -> MutexGuard<'static, ()> {
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    LOCK.get_or_init(|| Mutex::new(())).lock().await
}

/// A fresh directory for per-run dirs, so a test can check that nothing is left behind.
pub fn temp_root(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("plan-sandbox-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The bubblewrap backend, or `None` (with a visible notice) when it is unavailable and
/// `PLAN_SKIP_SANDBOX_TESTS=1`. Without bubblewrap the suite fails: always under `CI`,
/// elsewhere unless skipping was asked for.
pub async fn bwrap_in(root: Option<PathBuf>) -> Option<BwrapSandbox> {
    let mut config = BwrapConfig::default();
    if let Some(root) = root {
        config = config.with_temp_root(root);
    }
    let result = match BwrapSandbox::new(config) {
        Ok(s) => {
            let _turn = turn().await;
            s.probe().await.map(|()| s)
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(s) => Some(s),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!(
                "the bubblewrap sandbox must work in CI (install the Debian package `bubblewrap`): {e}"
            )
        }
        Err(e) if std::env::var("PLAN_SKIP_SANDBOX_TESTS").as_deref() == Ok("1") => {
            eprintln!("NOTICE: sandbox escape test skipped (PLAN_SKIP_SANDBOX_TESTS=1): {e}");
            None
        }
        Err(e) => panic!(
            "the bubblewrap sandbox is unavailable: {e}\ninstall it (apt-get install bubblewrap) \
             or set PLAN_SKIP_SANDBOX_TESTS=1 to skip the sandbox escape tests"
        ),
    }
}

pub async fn bwrap() -> Option<BwrapSandbox> {
    bwrap_in(None).await
}

/// Python helpers every escape program starts with: `attempt(f)` prints `ok` or `errno N`,
/// `sys_(nr, *args)` makes a raw system call.
pub const PRELUDE: &str = r#"
import ctypes, errno, os, socket, sys
_libc = ctypes.CDLL(None, use_errno=True)
def attempt(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return f"errno {e.errno}"
def sys_(nr, *args):
    r = _libc.syscall(nr, *[ctypes.c_long(a) for a in args])
    return "ok" if r >= 0 else f"errno {ctypes.get_errno()}"
"#;

pub fn py(body: &str) -> Program {
    Program::python(format!("{PRELUDE}\n{body}"))
}

pub fn quick() -> Limits {
    Limits::default().with_timeout(Duration::from_secs(20))
}

pub async fn run(s: &impl Sandbox, program: Program, limits: Limits) -> RunOutput {
    let _turn = turn().await;
    s.run(&program, &limits)
        .await
        .expect("the sandbox ran the program")
}

/// Whether a host process has `marker` in its command line.
pub fn process_with_marker(marker: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(marker) {
                return true;
            }
        }
    }
    false
}

/// Host processes running as `uid`.
pub fn processes_of_uid(uid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let uid_line = status.lines().find(|l| l.starts_with("Uid:"));
        if uid_line.and_then(|l| l.split_whitespace().nth(1)) == Some(uid.to_string().as_str()) {
            n += 1;
        }
    }
    n
}

/// Waits up to `within` for no host process to carry `marker`.
pub async fn gone(marker: &str, within: Duration) -> bool {
    let end = std::time::Instant::now() + within;
    loop {
        if !process_with_marker(marker) {
            return true;
        }
        if std::time::Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The host uid of a process with `marker` in its command line.
pub fn host_uid_of(marker: &str) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if !String::from_utf8_lossy(&cmd)
            .replace('\0', " ")
            .contains(marker)
        {
            continue;
        }
        let status = std::fs::read_to_string(e.path().join("status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("Uid:"))?;
        return line.split_whitespace().nth(1)?.parse().ok();
    }
    None
}
