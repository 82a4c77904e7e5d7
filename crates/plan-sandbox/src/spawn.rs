//! Starting a sandboxed child with rlimits, capturing capped output and enforcing the wall
//! clock: shared by the bwrap and process backends.

use std::os::fd::RawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::Notify;

use super::{LimitHit, Limits, SandboxError};

/// How long to wait for the pipes to close once the child has exited (a leftover
/// background process may hold them open under the process backend).
const PIPE_GRACE: Duration = Duration::from_millis(250);

/// Sets the limits, marks every inherited fd above 2 close-on-exec except `keep_fds`, and
/// sets no-new-privileges, in the child just before it execs.
#[allow(unsafe_code)]
pub(crate) fn install_pre_exec(
    cmd: &mut Command,
    limits: &Limits,
    extra_procs: u64,
    keep_fds: Vec<RawFd>,
) {
    let nofile = limits.max_open_files.max(16);
    let rlimits = [
        (libc::RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
        (
            libc::RLIMIT_CPU,
            limits.cpu_secs.max(1),
            limits.cpu_secs.max(1) + 1,
        ),
        (
            libc::RLIMIT_NPROC,
            limits.max_processes.saturating_add(extra_procs),
            limits.max_processes.saturating_add(extra_procs),
        ),
        (
            libc::RLIMIT_FSIZE,
            limits.max_file_bytes,
            limits.max_file_bytes,
        ),
        (libc::RLIMIT_NOFILE, nofile, nofile),
        (libc::RLIMIT_CORE, 0, 0),
    ];
    let closure = move || -> std::io::Result<()> {
        // Only async-signal-safe calls from here on: no allocation, no locks.
        for (resource, soft, hard) in rlimits {
            let lim = libc::rlimit {
                rlim_cur: soft as libc::rlim_t,
                rlim_max: hard as libc::rlim_t,
            };
            // SAFETY: setrlimit reads a valid, initialised rlimit struct we own.
            if unsafe { libc::setrlimit(resource, &lim) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 4;
        // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on fds; std's own
        // exec-error pipe keeps working because nothing is closed before exec.
        let r = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                CLOSE_RANGE_CLOEXEC,
            )
        };
        if r != 0 {
            for fd in 3..nofile.min(65536) as RawFd {
                // SAFETY: fcntl on any integer is safe; unknown fds fail with EBADF.
                unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            }
        }
        for &fd in &keep_fds {
            // SAFETY: as above; clears close-on-exec on an fd we passed on purpose.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) takes integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls (setrlimit, syscall, fcntl, prctl) on data moved into it; it does not
    // allocate or take locks.
    unsafe {
        cmd.pre_exec(closure);
    }
}

/// What a finished child left behind.
#[derive(Debug)]
pub(crate) struct Captured {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr: Vec<u8>,
    pub stderr_truncated: bool,
    /// Which limit *we* enforced by killing: `Timeout` or `Output`.
    pub killed_for: Option<LimitHit>,
    pub duration: Duration,
}

#[derive(Default)]
struct Stream {
    buf: Vec<u8>,
    truncated: bool,
}

async fn drain<R: AsyncRead + Unpin>(mut r: R, cap: usize, s: &mut Stream, overflow: &Notify) {
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(s.buf.len());
                if n > room {
                    s.buf.extend_from_slice(&chunk[..room]);
                    if !s.truncated {
                        s.truncated = true;
                        overflow.notify_one();
                    }
                } else {
                    s.buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }
}

/// Kills the child's process group unless disarmed (on drop: the run was cancelled).
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn kill(&self) {
        if let Some(pgid) = self.0 {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How a backend wants its child treated after it exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AfterExit {
    /// Kill what is left of the process group (the process backend).
    KillGroup,
    /// Nothing can be left (bwrap tears its pid namespace down).
    Nothing,
}

/// Spawns `cmd` in its own process group, feeds stdin, captures capped output and kills the
/// group at the wall-clock limit or when the output passes its cap.
pub(crate) async fn run_captured(
    mut cmd: Command,
    stdin: Option<&[u8]>,
    limits: &Limits,
    after: AfterExit,
) -> Result<Captured, SandboxError> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0)
    .kill_on_drop(true);
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let mut child = cmd
        .spawn()
        .map_err(|e| SandboxError::io("starting the sandbox process", e))?;
    let mut guard = GroupGuard(
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw),
    );
    let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(SandboxError::Setup(
            "the child's output pipes are missing".to_owned(),
        ));
    };
    let input = child.stdin.take();
    let overflow = Notify::new();
    let cap = limits.max_output_bytes;
    let mut so = Stream::default();
    let mut se = Stream::default();
    let mut status = None;
    let mut exited_at = None;
    let mut killed_for = None;
    {
        let feed = async {
            if let (Some(mut w), Some(bytes)) = (input, stdin) {
                let _ = w.write_all(bytes).await;
            }
        };
        let readers = async {
            futures::join!(
                drain(out, cap, &mut so, &overflow),
                drain(err, cap, &mut se, &overflow),
                feed
            );
        };
        tokio::pin!(readers);
        let mut readers_done = false;
        let far = deadline + Duration::from_secs(86_400 * 365);
        loop {
            let grace_at = exited_at
                .map(|t: tokio::time::Instant| t + PIPE_GRACE)
                .unwrap_or(far);
            tokio::select! {
                () = &mut readers, if !readers_done => readers_done = true,
                s = child.wait(), if status.is_none() => {
                    let s = s.map_err(|e| SandboxError::io("waiting for the sandbox process", e))?;
                    status = Some((s, start.elapsed()));
                    exited_at = Some(tokio::time::Instant::now());
                }
                () = tokio::time::sleep_until(deadline), if status.is_none() && killed_for.is_none() => {
                    killed_for = Some(LimitHit::Timeout);
                    guard.kill();
                }
                () = overflow.notified(), if status.is_none() && killed_for.is_none() => {
                    killed_for = Some(LimitHit::Output);
                    guard.kill();
                }
                () = tokio::time::sleep_until(grace_at), if status.is_some() && !readers_done => break,
            }
            if status.is_some() && readers_done {
                break;
            }
        }
    }
    if after == AfterExit::KillGroup {
        guard.kill();
    }
    guard.0 = None;
    let Some((status, duration)) = status else {
        return Err(SandboxError::Setup(
            "the sandbox process vanished".to_owned(),
        ));
    };
    if killed_for.is_none() && (so.truncated || se.truncated) {
        killed_for = Some(LimitHit::Output);
    }
    Ok(Captured {
        status,
        stdout: so.buf,
        stdout_truncated: so.truncated,
        stderr: se.buf,
        stderr_truncated: se.truncated,
        killed_for,
        duration,
    })
}

/// The exit code (`128 + signal` for a signal) and the signal of a status.
pub(crate) fn code_and_signal(status: ExitStatus) -> (i32, Option<i32>) {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(sig)) => (128 + sig, Some(sig)),
        (None, None) => (-1, None),
    }
}

/// Which limit (besides timeout and output, which we enforce ourselves) explains a failed
/// program, from its signal, its duration and the interpreter's own error message.
pub(crate) fn classify(
    exit_code: i32,
    signal: Option<i32>,
    stderr: &[u8],
    duration: Duration,
    limits: &Limits,
) -> Option<LimitHit> {
    if exit_code == 0 {
        return None;
    }
    match signal {
        Some(libc::SIGXCPU) => return Some(LimitHit::Cpu),
        Some(libc::SIGXFSZ) => return Some(LimitHit::FileSize),
        Some(libc::SIGKILL) if duration >= Duration::from_secs(limits.cpu_secs) => {
            return Some(LimitHit::Cpu);
        }
        _ => {}
    }
    // Look at the end of stderr, where an interpreter reports what killed it.
    let tail = &stderr[stderr.len().saturating_sub(4096)..];
    let tail = String::from_utf8_lossy(tail);
    if tail.contains("MemoryError")
        || tail.contains("Cannot allocate memory")
        || tail.contains("cannot allocate memory")
        || tail.contains("xmalloc: cannot allocate")
    {
        return Some(LimitHit::Memory);
    }
    if tail.contains("File too large") {
        return Some(LimitHit::FileSize);
    }
    if tail.contains("BlockingIOError")
        || (tail.contains("fork") && tail.contains("Resource temporarily unavailable"))
    {
        return Some(LimitHit::Pids);
    }
    None
}

/// Turns a captured child into a [`RunOutput`](super::RunOutput), reading declared files.
pub(crate) fn finish(
    captured: Captured,
    isolation: super::Isolation,
    dirs: &super::workdir::RunDirs,
    program: &super::Program,
    limits: &Limits,
) -> super::RunOutput {
    let (mut exit_code, mut signal) = code_and_signal(captured.status);
    if isolation == super::Isolation::Bwrap && signal.is_none() && (129..=192).contains(&exit_code)
    {
        // bwrap reports a child killed by signal n as exit code 128 + n.
        signal = Some(exit_code - 128);
    }
    if signal.is_some() && exit_code < 128 {
        exit_code = 128 + signal.unwrap_or(0);
    }
    let limit_hit = captured.killed_for.or_else(|| {
        classify(
            exit_code,
            signal,
            &captured.stderr,
            captured.duration,
            limits,
        )
    });
    let (files, missing_files) = dirs.collect(&program.collect_paths, limits.max_file_bytes);
    super::RunOutput {
        exit_code,
        signal,
        stdout: String::from_utf8_lossy(&captured.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&captured.stderr).into_owned(),
        stdout_truncated: captured.stdout_truncated,
        stderr_truncated: captured.stderr_truncated,
        limit_hit,
        duration: captured.duration,
        isolation,
        files,
        missing_files,
    }
}

/// Tasks (processes and threads) the host already runs as real uid `uid`.
///
/// `RLIMIT_NPROC` counts every task of the uid, not just the sandbox's, so the limit is
/// set to this many plus the program's allowance: a caller with hundreds of processes of
/// its own can still start a sandbox, and concurrent runs each get their allowance.
pub(crate) fn tasks_of_uid(uid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let uid = uid.to_string();
    let mut tasks = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let mut real_uid = None;
        let mut threads = 1;
        for line in status.lines() {
            if let Some(rest) = line.strip_prefix("Uid:") {
                real_uid = rest.split_whitespace().next().map(str::to_owned);
            } else if let Some(rest) = line.strip_prefix("Threads:") {
                threads = rest.trim().parse().unwrap_or(1);
            }
        }
        if real_uid.as_deref() == Some(uid.as_str()) {
            tasks += threads;
        }
    }
    tasks
}
