//! A sandboxed program's run as it is recorded (the sandbox types keep no serde form of
//! their own).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use plan_sandbox::{Isolation, LimitHit, MissingFile, OutputFile, Program, RunOutput};

/// What identifies a program's run for replay: everything that can change its output
/// except the work dir's path and the limits (settings of the run, checked elsewhere).
#[derive(Serialize)]
pub(crate) struct ProgramKey<'a> {
    lang: &'a str,
    source: &'a str,
    files: &'a [(String, Vec<u8>)],
    collect_paths: &'a [String],
    env: &'a [(String, String)],
    stdin: Option<&'a [u8]>,
}

impl<'a> ProgramKey<'a> {
    pub(crate) fn of(program: &'a Program) -> Self {
        Self {
            lang: program.lang.as_str(),
            source: &program.source,
            files: &program.files,
            collect_paths: &program.collect_paths,
            env: &program.env,
            stdin: program.stdin.as_deref(),
        }
    }
}

/// A [`RunOutput`] as recorded.
#[derive(Serialize, Deserialize)]
pub(crate) struct RecordedOutput {
    exit_code: i32,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
    stdout_truncated: bool,
    stderr_truncated: bool,
    limit_hit: Option<String>,
    duration_ms: u64,
    isolation: String,
    files: Vec<(String, Vec<u8>, bool)>,
    missing_files: Vec<(String, String)>,
}

/// `out` as recorded.
pub(crate) fn recorded_output(out: &RunOutput) -> RecordedOutput {
    RecordedOutput {
        exit_code: out.exit_code,
        signal: out.signal,
        stdout: out.stdout.clone(),
        stderr: out.stderr.clone(),
        stdout_truncated: out.stdout_truncated,
        stderr_truncated: out.stderr_truncated,
        limit_hit: out.limit_hit.map(|l| l.as_str().to_owned()),
        duration_ms: u64::try_from(out.duration.as_millis()).unwrap_or(u64::MAX),
        isolation: out.isolation.as_str().to_owned(),
        files: out
            .files
            .iter()
            .map(|f| (f.path.clone(), f.contents.clone(), f.truncated))
            .collect(),
        missing_files: out
            .missing_files
            .iter()
            .map(|m| (m.path.clone(), m.reason.clone()))
            .collect(),
    }
}

/// The [`RunOutput`] a recording holds.
pub(crate) fn recorded_run_output(r: RecordedOutput) -> RunOutput {
    let isolation = if r.isolation == Isolation::Bwrap.as_str() {
        Isolation::Bwrap
    } else {
        Isolation::Process
    };
    let limit_hit = r.limit_hit.as_deref().and_then(|name| {
        [
            LimitHit::Timeout,
            LimitHit::Cpu,
            LimitHit::Memory,
            LimitHit::Pids,
            LimitHit::Output,
            LimitHit::FileSize,
        ]
        .into_iter()
        .find(|l| l.as_str() == name)
    });
    // The sandbox's types are non-exhaustive: built, then filled in field by field.
    let mut out = RunOutput::new(r.exit_code, isolation);
    out.signal = r.signal;
    out.stdout = r.stdout;
    out.stderr = r.stderr;
    out.stdout_truncated = r.stdout_truncated;
    out.stderr_truncated = r.stderr_truncated;
    out.limit_hit = limit_hit;
    out.duration = Duration::from_millis(r.duration_ms);
    out.files = r
        .files
        .into_iter()
        .map(|(path, contents, truncated)| {
            let mut file = OutputFile::new(path, contents);
            file.truncated = truncated;
            file
        })
        .collect();
    out.missing_files = r
        .missing_files
        .into_iter()
        .map(|(path, reason)| MissingFile::new(path, reason))
        .collect();
    out
}
