//! The bubblewrap backend.

use std::io::{Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use nix::sys::memfd::{MFdFlags, memfd_create};
use plan_core::CodeLang;
use tokio::process::Command;

use super::spawn::{AfterExit, finish, install_pre_exec, run_captured, tasks_of_uid};
use super::workdir::{Owner, RunDirs};
use super::{Isolation, Limits, Program, RunOutput, Sandbox, SandboxError};

const INSTALL_HINT: &str = "install it with `apt-get install bubblewrap` (Debian, Ubuntu) or \
    `dnf install bubblewrap` (Fedora), or choose the `process` backend to run unisolated";

/// Where the bubblewrap backend finds things, and whom it runs programs as.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BwrapConfig {
    /// The `bwrap` binary; `None` looks in `/usr/bin`, `/bin` and `PATH`.
    pub bwrap: Option<PathBuf>,
    /// The Python 3 interpreter; must live under `/usr`, the only host tree the sandbox
    /// sees. Default `/usr/bin/python3`.
    pub python: PathBuf,
    /// The bash interpreter; must live under `/usr`. Default `/usr/bin/bash`.
    pub bash: PathBuf,
    /// Where per-run directories are created. Default: the system temp dir.
    pub temp_root: PathBuf,
    /// The uid and gid programs run as when the caller is root (never uid 0). Default
    /// 65534 (`nobody`).
    pub unprivileged: (u32, u32),
}

impl Default for BwrapConfig {
    fn default() -> Self {
        BwrapConfig {
            bwrap: None,
            python: PathBuf::from("/usr/bin/python3"),
            bash: PathBuf::from("/usr/bin/bash"),
            temp_root: std::env::temp_dir(),
            unprivileged: (65534, 65534),
        }
    }
}

impl BwrapConfig {
    /// Uses this `bwrap` binary.
    pub fn with_bwrap(mut self, path: impl Into<PathBuf>) -> Self {
        self.bwrap = Some(path.into());
        self
    }
    /// Creates per-run directories under `dir`.
    pub fn with_temp_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.temp_root = dir.into();
        self
    }
    /// Uses this Python interpreter (under `/usr`).
    pub fn with_python(mut self, path: impl Into<PathBuf>) -> Self {
        self.python = path.into();
        self
    }
    /// Uses this bash interpreter (under `/usr`).
    pub fn with_bash(mut self, path: impl Into<PathBuf>) -> Self {
        self.bash = path.into();
        self
    }
}

/// Runs programs under bubblewrap: namespaces, a seccomp filter, rlimits, an empty
/// environment and, when the caller is root, an unprivileged uid. See the
/// [`Sandbox`](crate::Sandbox) docs for what it blocks.
#[derive(Debug)]
pub struct BwrapSandbox {
    config: BwrapConfig,
    bwrap: PathBuf,
    filters: Vec<Vec<u8>>,
}

impl BwrapSandbox {
    /// Finds `bwrap` and builds the seccomp filters; does not run anything (see
    /// [`BwrapSandbox::probe`]).
    ///
    /// Errors with [`SandboxError::Unavailable`], saying how to install bubblewrap, when the
    /// binary is missing.
    pub fn new(config: BwrapConfig) -> Result<Self, SandboxError> {
        let bwrap = match &config.bwrap {
            Some(p) if p.is_file() => p.clone(),
            Some(p) => {
                return Err(SandboxError::Unavailable {
                    backend: "bwrap",
                    reason: format!("{} does not exist; {INSTALL_HINT}", p.display()),
                });
            }
            None => find_bwrap().ok_or_else(|| SandboxError::Unavailable {
                backend: "bwrap",
                reason: format!("bubblewrap (`bwrap`) is not installed; {INSTALL_HINT}"),
            })?,
        };
        let filters = super::seccomp::filters()?;
        Ok(BwrapSandbox {
            config,
            bwrap,
            filters,
        })
    }

    /// The `bwrap` binary in use.
    pub fn bwrap_path(&self) -> &Path {
        &self.bwrap
    }

    /// Runs a trivial program to tell whether the backend works on this machine.
    ///
    /// Errors say why not: no interpreter, or bubblewrap's own complaint (for example when
    /// unprivileged user namespaces are switched off).
    pub async fn probe(&self) -> Result<(), SandboxError> {
        let program = if self.config.bash.is_file() {
            Program::bash("exit 0")
        } else {
            Program::python("pass")
        };
        let out = match self.run(&program, &Limits::default()).await {
            Ok(out) => out,
            Err(SandboxError::Setup(msg)) => {
                return Err(SandboxError::Unavailable {
                    backend: "bwrap",
                    reason: format!(
                        "bubblewrap cannot create a sandbox here: {msg}; check that user \
                         namespaces are enabled (sysctl kernel.unprivileged_userns_clone=1, \
                         user.max_user_namespaces > 0) or choose the `process` backend"
                    ),
                });
            }
            Err(e) => return Err(e),
        };
        if out.success() {
            Ok(())
        } else {
            Err(SandboxError::Unavailable {
                backend: "bwrap",
                reason: format!(
                    "a trivial program failed under bubblewrap (exit code {}): {}",
                    out.exit_code,
                    out.stderr.trim()
                ),
            })
        }
    }

    fn interpreter(
        &self,
        lang: CodeLang,
    ) -> Result<(&Path, &'static [&'static str]), SandboxError> {
        let (path, args, name, package): (&Path, &'static [&'static str], _, _) = match lang {
            CodeLang::Python => (&self.config.python, &["-I", "-B"], "python", "python3"),
            CodeLang::Bash => (
                &self.config.bash,
                &["--noprofile", "--norc"],
                "bash",
                "bash",
            ),
            other => {
                return Err(SandboxError::InvalidProgram(format!(
                    "language `{other}` is not supported; use python or bash"
                )));
            }
        };
        if !path.starts_with("/usr/") {
            return Err(SandboxError::NoInterpreter {
                lang: name.to_owned(),
                reason: format!(
                    "{} is outside /usr, the only host directory the sandbox sees; use the \
                     system interpreter (apt-get install {package})",
                    path.display()
                ),
            });
        }
        if !path.is_file() {
            return Err(SandboxError::NoInterpreter {
                lang: name.to_owned(),
                reason: format!(
                    "{} does not exist; install the system package (apt-get install \
                     {package}); interpreters outside /usr (such as pyenv's) are not visible \
                     inside the sandbox",
                    path.display()
                ),
            });
        }
        Ok((path, args))
    }
}

fn find_bwrap() -> Option<PathBuf> {
    let mut candidates = vec![PathBuf::from("/usr/bin/bwrap"), PathBuf::from("/bin/bwrap")];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("bwrap")));
    }
    candidates.into_iter().find(|p| p.is_file())
}

fn memfd_with(bytes: &[u8]) -> Result<OwnedFd, SandboxError> {
    let fd = memfd_create(c"plan-seccomp", MFdFlags::MFD_CLOEXEC)
        .map_err(|e| SandboxError::io("creating the seccomp memfd", e.into()))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)
        .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
        .map_err(|e| SandboxError::io("writing the seccomp filter", e))?;
    Ok(OwnedFd::from(file))
}

#[async_trait]
impl Sandbox for BwrapSandbox {
    fn isolation(&self) -> Isolation {
        Isolation::Bwrap
    }

    async fn run(&self, program: &Program, limits: &Limits) -> Result<RunOutput, SandboxError> {
        let (interp, interp_args) = self.interpreter(program.lang)?;
        let root = nix::unistd::geteuid().is_root();
        let owner = root.then_some(Owner {
            uid: self.config.unprivileged.0,
            gid: self.config.unprivileged.1,
        });
        let dirs = RunDirs::prepare(&self.config.temp_root, program, owner)?;
        let fds = self
            .filters
            .iter()
            .map(|f| memfd_with(f))
            .collect::<Result<Vec<_>, _>>()?;

        let mut cmd = Command::new(&self.bwrap);
        cmd.env_clear();
        for a in [
            "--unshare-all",
            "--unshare-user",
            "--die-with-parent",
            "--new-session",
            "--disable-userns",
            "--assert-userns-disabled",
        ] {
            cmd.arg(a);
        }
        cmd.args(["--uid", "65534", "--gid", "65534", "--cap-drop", "ALL"]);
        cmd.args(["--ro-bind", "/usr", "/usr"]);
        for (target, link) in [
            ("usr/lib", "/lib"),
            ("usr/lib64", "/lib64"),
            ("usr/bin", "/bin"),
            ("usr/sbin", "/sbin"),
        ] {
            cmd.args(["--symlink", target, link]);
        }
        for p in ["/etc/alternatives", "/etc/ld.so.cache", "/etc/localtime"] {
            cmd.args(["--ro-bind-try", p, p]);
        }
        cmd.args([
            "--proc",
            "/proc",
            "--ro-bind",
            "/proc/sys",
            "/proc/sys",
            "--dev",
            "/dev",
        ]);
        cmd.arg("--size")
            .arg(limits.tmp_bytes.max(4096).to_string());
        cmd.args(["--tmpfs", "/tmp"]);
        cmd.arg("--bind").arg(&dirs.work).arg("/work");
        cmd.arg("--ro-bind").arg(&dirs.program_dir).arg("/program");
        cmd.args(["--chdir", "/work", "--clearenv"]);
        cmd.args(["--setenv", "PATH", "/usr/bin:/bin"]);
        cmd.args(["--setenv", "HOME", "/work"]);
        cmd.args(["--setenv", "TMPDIR", "/tmp"]);
        cmd.args(["--setenv", "LANG", "C.UTF-8"]);
        for (k, v) in &program.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(SandboxError::InvalidProgram(format!(
                    "environment variable `{k}` has an invalid name or value"
                )));
            }
            cmd.arg("--setenv").arg(k).arg(v);
        }
        cmd.args(["--hostname", "sandbox"]);
        for fd in &fds {
            cmd.arg("--add-seccomp-fd").arg(fd.as_raw_fd().to_string());
        }
        cmd.args(["--remount-ro", "/", "--"]);
        cmd.arg(interp).args(interp_args);
        cmd.arg(format!("/program/{}", dirs.script_name));
        if let Some(o) = owner {
            // Never run the program as host root: bwrap itself starts unprivileged.
            cmd.uid(o.uid).gid(o.gid);
        }
        let run_as = owner.map_or_else(|| nix::unistd::getuid().as_raw(), |o| o.uid);
        install_pre_exec(
            &mut cmd,
            limits,
            // bwrap's own two processes, and whatever the uid already runs.
            2 + tasks_of_uid(run_as),
            fds.iter().map(AsRawFd::as_raw_fd).collect(),
        );
        let captured =
            run_captured(cmd, program.stdin.as_deref(), limits, AfterExit::Nothing).await;
        drop(fds);
        let captured = captured?;
        if captured.killed_for.is_none()
            && captured.status.code() == Some(1)
            && captured.stderr.starts_with(b"bwrap: ")
        {
            let msg = String::from_utf8_lossy(&captured.stderr).trim().to_owned();
            return Err(SandboxError::Setup(msg));
        }
        Ok(finish(captured, Isolation::Bwrap, &dirs, program, limits))
    }
}
