//! The sandbox that plan's code steps run in: the [`Sandbox`] trait (documented there), the
//! program, limits and outcome types, and the Linux backends.
//!
//! plan-exec's code step executor and plan-tools' `run_code` tool take any
//! `Arc<dyn Sandbox>`; [`SandboxChoice`] is what a user picks (`--sandbox` in the CLI) and
//! [`LazySandbox`] opens it on first use.
//!
//! # Features
//! - `backends` (default): the Linux backends, [`BwrapSandbox`] (bubblewrap with a seccomp
//!   filter built by `seccompiler`) and [`ProcessSandbox`]; they need `nix` and
//!   `seccompiler`. Without it the trait and types stay, and opening a [`SandboxChoice`]
//!   other than `none` says that this build has no backend. Library crates depend on
//!   plan-sandbox with `default-features = false`; the binary that runs code steps turns
//!   `backends` on.
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

#[cfg(all(target_os = "linux", feature = "backends"))]
mod bwrap;
mod choice;
mod error;
mod lazy;
#[cfg(all(target_os = "linux", feature = "backends"))]
mod process;
#[cfg(all(target_os = "linux", feature = "backends"))]
mod seccomp;
#[cfg(all(target_os = "linux", feature = "backends"))]
mod spawn;
mod types;
#[cfg(all(target_os = "linux", feature = "backends"))]
mod workdir;

use std::sync::Arc;

use async_trait::async_trait;

pub use choice::{ParseSandboxChoiceError, SandboxChoice};
pub use error::SandboxError;
pub use lazy::LazySandbox;
pub use types::{
    Isolation, LimitHit, Limits, MissingFile, OutputFile, Program, RunOutput, check_relative,
};

#[cfg(all(target_os = "linux", feature = "backends"))]
pub use bwrap::{BwrapConfig, BwrapSandbox};
#[cfg(all(target_os = "linux", feature = "backends"))]
pub use process::ProcessSandbox;

/// Runs untrusted programs: the sandbox trait, implemented by each backend.
///
/// A [`Program`] (Python 3 or bash source, input files, files to read back) runs under
/// [`Limits`] (wall clock, CPU seconds, memory, processes, output bytes, file size, `/tmp`
/// size) and yields a [`RunOutput`]: exit code or signal, capped stdout and stderr with
/// truncation flags, duration, the [`LimitHit`] if any, the collected files and the
/// [`Isolation`] it ran under.
///
/// # Backends
///
/// - [`BwrapSandbox`] (`bwrap`, the default on Linux) drives the system bubblewrap binary:
///   every namespace unshared (no network at all), a read-only view of `/usr` only, a
///   private size-capped `/tmp`, a private writable `/work`, an empty environment, a
///   seccomp filter (built in Rust, passed by fd) that denies non-`AF_UNIX` sockets,
///   `ptrace`, `process_vm_*`, `io_uring_*`, `bpf`, `perf_event_open`, keyrings,
///   `userfaultfd`, mount and namespace calls and `TIOCSTI`; rlimits; and, when the caller
///   is root, an unprivileged uid (65534) so that the program never runs as host root.
///   [`BwrapSandbox::probe`] says whether it works on this machine, and why not.
/// - [`ProcessSandbox`] (`process`) applies the same limits to a plain child process and
///   isolates nothing. It is only used when chosen explicitly, and every result says
///   [`Isolation::Process`].
///
/// [`SandboxChoice`] is what a user picks (`auto`, `bwrap`, `process`, `none`, as in the
/// CLI's `--sandbox`); [`SandboxChoice::open`] turns it into a backend or an error that says
/// what to install.
///
/// # Adding a hosted backend
///
/// The trait is shaped after what hosted sandboxes (E2B, HopX and the like) offer: create a
/// sandbox, write files, run a command with a timeout and environment, read stdout, stderr,
/// the exit code and files, kill. A hosted backend implements [`Sandbox::run`] as:
/// create a sandbox (its template fixes the interpreter); write [`Program::source`] and each
/// of [`Program::files`] into its working directory; run the interpreter on the source with
/// [`Program::env`] and [`Limits::timeout`]; cut stdout and stderr at
/// [`Limits::max_output_bytes`]; read back each of [`Program::collect_paths`] into
/// [`RunOutput::files`]; kill the sandbox (also when the future is dropped). Limits the
/// service cannot enforce are documented by the backend, and [`Sandbox::isolation`] names
/// it. Local-only features ([`Program::in_dir`]) return [`SandboxError::Unsupported`].
///
/// ```no_run
/// # async fn demo() -> Result<(), plan_sandbox::SandboxError> {
/// use plan_sandbox::{Limits, Program, SandboxChoice};
/// use std::time::Duration;
///
/// let sandbox = SandboxChoice::Auto.open().await?;
/// let program = Program::python("open('out.txt', 'w').write('hi'); print(6 * 7)")
///     .collect("out.txt");
/// let out = sandbox
///     .run(&program, &Limits::default().with_timeout(Duration::from_secs(5)))
///     .await?;
/// assert_eq!(out.stdout, "42\n");
/// assert_eq!(out.files[0].contents, b"hi");
/// # Ok(()) }
/// ```
///
/// # The trait
///
/// Object safe; implementations are `Send + Sync`, and dropping the returned future kills
/// whatever the run started.
#[async_trait]
pub trait Sandbox: Send + Sync {
    /// The isolation this backend gives; every [`RunOutput`] repeats it.
    fn isolation(&self) -> Isolation;

    /// Runs `program` under `limits` and returns what happened.
    ///
    /// A program that fails, is killed or hits a limit is an `Ok` result (see
    /// [`RunOutput::limit_hit`]); `Err` means the sandbox itself could not run it.
    async fn run(&self, program: &Program, limits: &Limits) -> Result<RunOutput, SandboxError>;

    /// Whether programs can run at all, checked before work is spent on writing one
    /// (a code step asks this before asking the model). The default says yes; a backend
    /// that is set up lazily ([`LazySandbox`]) sets up here and reports why it cannot.
    async fn ready(&self) -> Result<(), SandboxError> {
        Ok(())
    }
}

#[async_trait]
impl<S: Sandbox + ?Sized> Sandbox for &S {
    fn isolation(&self) -> Isolation {
        (**self).isolation()
    }
    async fn run(&self, program: &Program, limits: &Limits) -> Result<RunOutput, SandboxError> {
        (**self).run(program, limits).await
    }
    async fn ready(&self) -> Result<(), SandboxError> {
        (**self).ready().await
    }
}

#[async_trait]
impl<S: Sandbox + ?Sized> Sandbox for Box<S> {
    fn isolation(&self) -> Isolation {
        (**self).isolation()
    }
    async fn run(&self, program: &Program, limits: &Limits) -> Result<RunOutput, SandboxError> {
        (**self).run(program, limits).await
    }
    async fn ready(&self) -> Result<(), SandboxError> {
        (**self).ready().await
    }
}

#[async_trait]
impl<S: Sandbox + ?Sized> Sandbox for Arc<S> {
    fn isolation(&self) -> Isolation {
        (**self).isolation()
    }
    async fn run(&self, program: &Program, limits: &Limits) -> Result<RunOutput, SandboxError> {
        (**self).run(program, limits).await
    }
    async fn ready(&self) -> Result<(), SandboxError> {
        (**self).ready().await
    }
}
