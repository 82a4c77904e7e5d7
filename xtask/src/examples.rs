//! `cargo xtask examples` (and the end of `cargo xtask test`): runs every example of the
//! examples crate, each under a time limit. Each example checks what it shows and exits
//! non-zero when the behaviour is wrong, so running it is a test.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{cargo_command, workspace_root};

/// The most one example may take (the slowest, `local_model`, takes a few seconds).
const TIMEOUT: Duration = Duration::from_secs(180);

/// Builds the examples, runs each, prints `examples: N passed, M failed` and fails if any
/// failed or timed out.
pub fn run_all() -> Result<()> {
    let names = example_names()?;
    let binaries = build()?;
    let started = Instant::now();
    let mut failed = Vec::new();
    for name in &names {
        let Some(binary) = binaries.get(name) else {
            eprintln!("xtask: example {name}: cargo built no binary for it");
            failed.push(name.clone());
            continue;
        };
        let t = Instant::now();
        match run_one(binary) {
            Ok(run) if run.status.is_some_and(|s| s.success()) => {
                eprintln!(
                    "xtask: example {name}: ok ({:.1} s)",
                    t.elapsed().as_secs_f64()
                );
            }
            Ok(run) => {
                let why = match run.status {
                    Some(status) => format!("failed ({status})"),
                    None => format!("timed out after {} s and was killed", TIMEOUT.as_secs()),
                };
                eprintln!("xtask: example {name}: {why}");
                eprintln!("--- stdout of {name} ---\n{}", run.stdout);
                eprintln!("--- stderr of {name} ---\n{}", run.stderr);
                failed.push(name.clone());
            }
            Err(e) => {
                eprintln!("xtask: example {name}: {e:#}");
                failed.push(name.clone());
            }
        }
    }
    eprintln!(
        "examples: {} passed, {} failed ({:.1} s)",
        names.len() - failed.len(),
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        bail!("these examples failed: {}", failed.join(", "));
    }
    Ok(())
}

/// The examples, by file name, from `examples/examples/`.
fn example_names() -> Result<Vec<String>> {
    let dir = workspace_root().join("examples/examples");
    let mut names = Vec::new();
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            names.push(stem.to_owned());
        }
    }
    names.sort();
    if names.is_empty() {
        bail!("no examples in {}", dir.display());
    }
    Ok(names)
}

/// Builds every example; returns each one's executable, from cargo's JSON messages.
///
/// They are built as `cargo test --release --workspace` builds them (it builds the
/// examples too), so after the test command they are all fresh: a build of the examples
/// package alone would unify features differently and compile dependencies again.
fn build() -> Result<BTreeMap<String, PathBuf>> {
    let out = cargo_command()
        .args([
            "test",
            "--release",
            "--workspace",
            "--locked",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .context("could not start cargo")?;
    if !out.status.success() {
        bail!("building the examples failed ({})", out.status);
    }
    let mut binaries = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let is_example = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "example"));
        if msg["reason"] == "compiler-artifact"
            && is_example
            && let (Some(name), Some(exe)) =
                (msg["target"]["name"].as_str(), msg["executable"].as_str())
        {
            binaries.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    Ok(binaries)
}

struct Run {
    /// `None` when it timed out.
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

/// Runs one example offline (no `PLAN_MODEL`) from the workspace root, killing its whole
/// process group if it outlives [`TIMEOUT`].
fn run_one(binary: &PathBuf) -> Result<Run> {
    let mut cmd = Command::new(binary);
    cmd.current_dir(workspace_root())
        .env_remove("PLAN_MODEL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start {}", binary.display()))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            kill(&mut child);
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Run {
        status,
        stdout: collect(&stdout),
        stderr: collect(&stderr),
    })
}

/// Reads a pipe to its end on a thread of its own.
fn drain(pipe: Option<impl Read + Send + 'static>) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

/// What a pipe carried, unless a process the example left behind still holds it open.
fn collect(rx: &Receiver<String>) -> String {
    rx.recv_timeout(Duration::from_secs(5)).unwrap_or_else(|_| {
        "(not collected: a process the example started still holds the pipe open)".to_owned()
    })
}

/// Kills the example and everything it started (its process group).
fn kill(child: &mut Child) {
    #[cfg(unix)]
    {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .status();
    }
    let _ = child.kill();
    let _ = child.wait();
}
