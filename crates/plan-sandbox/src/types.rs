//! The data a sandbox run takes and returns.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use plan_core::CodeLang;
use serde::{Serialize, Serializer};

use super::SandboxError;

/// A program to run: source text in a language, input files and files to read back.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Program {
    /// The program's language.
    pub lang: CodeLang,
    /// The program's source text.
    pub source: String,
    /// Input files written into the work dir before the run: (relative path, contents).
    pub files: Vec<(String, Vec<u8>)>,
    /// Files (relative to the work dir) read back into [`RunOutput::files`] after the run.
    pub collect_paths: Vec<String>,
    /// Environment variables for the program, on top of the sandbox's minimal set.
    pub env: Vec<(String, String)>,
    /// Bytes fed to the program's standard input (empty input when `None`).
    pub stdin: Option<Vec<u8>>,
    /// Run in this existing directory and leave it in place, instead of a fresh temporary
    /// one that is removed after the run (local backends only).
    pub work_dir: Option<PathBuf>,
}

impl Program {
    /// A program in `lang` with the given source text.
    pub fn new(lang: CodeLang, source: impl Into<String>) -> Self {
        Program {
            lang,
            source: source.into(),
            files: Vec::new(),
            collect_paths: Vec::new(),
            env: Vec::new(),
            stdin: None,
            work_dir: None,
        }
    }

    /// A Python 3 program.
    pub fn python(source: impl Into<String>) -> Self {
        Program::new(CodeLang::Python, source)
    }

    /// A bash script.
    pub fn bash(source: impl Into<String>) -> Self {
        Program::new(CodeLang::Bash, source)
    }

    /// Adds an input file at `path` (relative to the work dir, no `..`).
    pub fn with_file(mut self, path: impl Into<String>, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push((path.into(), contents.into()));
        self
    }

    /// Declares a file (relative to the work dir) to read back after the run.
    pub fn collect(mut self, path: impl Into<String>) -> Self {
        self.collect_paths.push(path.into());
        self
    }

    /// Sets an environment variable for the program.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Feeds `bytes` to the program's standard input.
    pub fn with_stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Runs in `dir` (which must exist) and leaves everything the program wrote there.
    ///
    /// When the caller is root, the directory is handed to the sandbox's unprivileged uid
    /// so the program can write to it.
    pub fn in_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = Some(dir.into());
        self
    }
}

/// Resource limits for one run. [`Limits::default`] suits a short generated program.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Wall clock; the whole process tree is killed when it runs out. Default 30 s.
    pub timeout: Duration,
    /// CPU seconds (`RLIMIT_CPU`; `SIGXCPU`, then `SIGKILL` a second later). Default 10.
    pub cpu_secs: u64,
    /// Address space in bytes (`RLIMIT_AS`). Default 512 MiB.
    pub memory_bytes: u64,
    /// Processes and threads the program may add (`RLIMIT_NPROC`, set to what the sandbox
    /// uid already runs plus this). Default 64.
    pub max_processes: u64,
    /// Bytes kept of stdout and of stderr each; more kills the program. Default 1 MiB.
    pub max_output_bytes: usize,
    /// Largest file the program may write (`RLIMIT_FSIZE`), and the cap on each file read
    /// back. Default 16 MiB.
    pub max_file_bytes: u64,
    /// Size of the private `/tmp` (a tmpfs, which is host memory). Default 64 MiB.
    pub tmp_bytes: u64,
    /// Open file descriptors (`RLIMIT_NOFILE`). Default 256.
    pub max_open_files: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(30),
            cpu_secs: 10,
            memory_bytes: 512 << 20,
            max_processes: 64,
            max_output_bytes: 1 << 20,
            max_file_bytes: 16 << 20,
            tmp_bytes: 64 << 20,
            max_open_files: 256,
        }
    }
}

impl Limits {
    /// Sets the wall-clock limit.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Sets the CPU-seconds limit.
    pub fn with_cpu_secs(mut self, secs: u64) -> Self {
        self.cpu_secs = secs;
        self
    }
    /// Sets the memory (address space) limit in bytes.
    pub fn with_memory_bytes(mut self, bytes: u64) -> Self {
        self.memory_bytes = bytes;
        self
    }
    /// Sets the process limit.
    pub fn with_max_processes(mut self, n: u64) -> Self {
        self.max_processes = n;
        self
    }
    /// Sets the per-stream output cap in bytes.
    pub fn with_max_output_bytes(mut self, bytes: usize) -> Self {
        self.max_output_bytes = bytes;
        self
    }
    /// Sets the file-size limit in bytes.
    pub fn with_max_file_bytes(mut self, bytes: u64) -> Self {
        self.max_file_bytes = bytes;
        self
    }
    /// Sets the size of the private `/tmp` in bytes.
    pub fn with_tmp_bytes(mut self, bytes: u64) -> Self {
        self.tmp_bytes = bytes;
        self
    }
    /// Sets the open-file limit.
    pub fn with_max_open_files(mut self, n: u64) -> Self {
        self.max_open_files = n;
        self
    }
}

/// Which limit stopped (or, for memory, processes and file size, thwarted) a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitHit {
    /// The wall clock ran out and the process tree was killed.
    Timeout,
    /// The CPU-seconds limit killed it.
    Cpu,
    /// An allocation failed at the memory limit and the program failed.
    Memory,
    /// A fork failed at the process limit and the program failed.
    Pids,
    /// stdout or stderr passed the output cap; the program was killed.
    Output,
    /// A write passed the file-size limit (`EFBIG` or `SIGXFSZ`) and the program failed.
    FileSize,
}

impl LimitHit {
    /// The name used in the CLI's JSON (`timeout`, `cpu`, `memory`, `pids`, `output`,
    /// `file_size`).
    pub fn as_str(self) -> &'static str {
        match self {
            LimitHit::Timeout => "timeout",
            LimitHit::Cpu => "cpu",
            LimitHit::Memory => "memory",
            LimitHit::Pids => "pids",
            LimitHit::Output => "output",
            LimitHit::FileSize => "file_size",
        }
    }
}

impl fmt::Display for LimitHit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for LimitHit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// How isolated a run was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Isolation {
    /// bubblewrap namespaces plus seccomp, rlimits and an unprivileged uid.
    Bwrap,
    /// A plain child process with rlimits only: unisolated.
    Process,
}

impl Isolation {
    /// The name used in the CLI's JSON (`bwrap`, `process`).
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Bwrap => "bwrap",
            Isolation::Process => "process",
        }
    }

    /// Whether the program was isolated from the host at all.
    pub fn is_isolated(self) -> bool {
        self != Isolation::Process
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Isolation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A declared file read back from the work dir after the run.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutputFile {
    /// The path as declared (relative to the work dir).
    pub path: String,
    /// Its contents, at most [`Limits::max_file_bytes`].
    pub contents: Vec<u8>,
    /// Whether the contents were cut at the limit.
    pub truncated: bool,
}

impl OutputFile {
    /// The file at `path` (as declared) with its whole `contents`.
    pub fn new(path: impl Into<String>, contents: impl Into<Vec<u8>>) -> Self {
        Self {
            path: path.into(),
            contents: contents.into(),
            truncated: false,
        }
    }

    /// Marks the contents as cut at the limit.
    pub fn mark_truncated(mut self) -> Self {
        self.truncated = true;
        self
    }
}

/// A declared file that could not be read back, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MissingFile {
    /// The path as declared.
    pub path: String,
    /// Why it was not read: absent, a symlink, not a regular file, an invalid path.
    pub reason: String,
}

impl MissingFile {
    /// The declared file at `path` could not be read back, because of `reason`.
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// What happened to a program.
///
/// Serializes to the CLI's `plan sandbox run --json` object: `exit_code`, `signal`,
/// `stdout`, `stderr`, `truncated`, `limit_hit`, `duration_ms`, `isolation`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunOutput {
    /// The exit code; `128 + signal` when a signal killed the program.
    pub exit_code: i32,
    /// The signal that killed the program, if one did. Under bwrap a program that exits
    /// with `128 + n` itself is indistinguishable from one killed by signal `n`.
    pub signal: Option<i32>,
    /// Standard output (lossy UTF-8), at most [`Limits::max_output_bytes`].
    pub stdout: String,
    /// Standard error (lossy UTF-8), at most [`Limits::max_output_bytes`].
    pub stderr: String,
    /// Whether stdout was cut at the cap.
    pub stdout_truncated: bool,
    /// Whether stderr was cut at the cap.
    pub stderr_truncated: bool,
    /// The limit that stopped the program, if any.
    pub limit_hit: Option<LimitHit>,
    /// From start to exit.
    pub duration: Duration,
    /// How isolated the run was.
    pub isolation: Isolation,
    /// The declared files that were read back.
    pub files: Vec<OutputFile>,
    /// The declared files that could not be read back.
    pub missing_files: Vec<MissingFile>,
}

impl RunOutput {
    /// What a backend of your own returns for a program that exited with `exit_code`
    /// under `isolation`: no signal, empty output, no limit hit, no files, zero
    /// duration. Add the rest with the `with_*` methods.
    ///
    /// ```
    /// use std::time::Duration;
    /// use plan_sandbox::{Isolation, OutputFile, RunOutput};
    ///
    /// let out = RunOutput::new(0, Isolation::Bwrap)
    ///     .with_stdout("42\n")
    ///     .with_duration(Duration::from_millis(12))
    ///     .with_file(OutputFile::new("out.txt", "hi"));
    /// assert!(out.success());
    /// assert_eq!(out.file("out.txt").map(|f| f.contents.as_slice()), Some(&b"hi"[..]));
    /// ```
    pub fn new(exit_code: i32, isolation: Isolation) -> Self {
        Self {
            exit_code,
            signal: None,
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            limit_hit: None,
            duration: Duration::ZERO,
            isolation,
            files: Vec::new(),
            missing_files: Vec::new(),
        }
    }

    /// Killed by `signal`: sets the signal and the exit code `128 + signal`.
    pub fn killed_by(mut self, signal: i32) -> Self {
        self.signal = Some(signal);
        self.exit_code = 128 + signal;
        self
    }

    /// Sets standard output.
    pub fn with_stdout(mut self, stdout: impl Into<String>) -> Self {
        self.stdout = stdout.into();
        self
    }

    /// Sets standard error.
    pub fn with_stderr(mut self, stderr: impl Into<String>) -> Self {
        self.stderr = stderr.into();
        self
    }

    /// Marks stdout as cut at the output cap.
    pub fn mark_stdout_truncated(mut self) -> Self {
        self.stdout_truncated = true;
        self
    }

    /// Marks stderr as cut at the output cap.
    pub fn mark_stderr_truncated(mut self) -> Self {
        self.stderr_truncated = true;
        self
    }

    /// Records the limit that stopped the program.
    pub fn with_limit_hit(mut self, limit: LimitHit) -> Self {
        self.limit_hit = Some(limit);
        self
    }

    /// Sets the time from start to exit.
    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// Adds a declared file that was read back.
    pub fn with_file(mut self, file: OutputFile) -> Self {
        self.files.push(file);
        self
    }

    /// Adds a declared file that could not be read back.
    pub fn with_missing_file(mut self, file: MissingFile) -> Self {
        self.missing_files.push(file);
        self
    }

    /// Whether the program exited with code 0 and no limit was hit.
    pub fn success(&self) -> bool {
        self.exit_code == 0 && self.signal.is_none() && self.limit_hit.is_none()
    }

    /// Whether stdout or stderr was cut.
    pub fn truncated(&self) -> bool {
        self.stdout_truncated || self.stderr_truncated
    }

    /// A declared file's contents by path.
    pub fn file(&self, path: &str) -> Option<&OutputFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

impl Serialize for RunOutput {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Json<'a> {
            exit_code: i32,
            signal: Option<i32>,
            stdout: &'a str,
            stderr: &'a str,
            truncated: bool,
            limit_hit: Option<LimitHit>,
            duration_ms: u128,
            isolation: Isolation,
        }
        Json {
            exit_code: self.exit_code,
            signal: self.signal,
            stdout: &self.stdout,
            stderr: &self.stderr,
            truncated: self.truncated(),
            limit_hit: self.limit_hit,
            duration_ms: self.duration.as_millis(),
            isolation: self.isolation,
        }
        .serialize(s)
    }
}

/// Checks that `path` names a file inside a program's work dir: not empty, not absolute,
/// no `..`. [`Program`]s check their file names with it; callers that take file names
/// from elsewhere (a model's declared outputs) check them the same way.
///
/// Errors: [`SandboxError::InvalidProgram`] naming the path.
pub fn check_relative(path: &str) -> Result<(), SandboxError> {
    let bad = |why: &str| {
        Err(SandboxError::InvalidProgram(format!(
            "file path `{path}` {why}; use a relative path inside the work dir"
        )))
    };
    if path.is_empty() || path.contains('\0') {
        return bad("is empty or contains NUL");
    }
    let mut normal = 0;
    for c in Path::new(path).components() {
        match c {
            Component::Normal(_) => normal += 1,
            Component::CurDir => {}
            Component::ParentDir => return bad("contains `..`"),
            Component::RootDir | Component::Prefix(_) => return bad("is absolute"),
        }
    }
    if normal == 0 {
        return bad("names no file");
    }
    Ok(())
}
