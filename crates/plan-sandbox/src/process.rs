//! The unisolated process backend: limits only.

use std::path::PathBuf;

use async_trait::async_trait;
use plan_core::CodeLang;
use tokio::process::Command;

use super::spawn::{AfterExit, finish, install_pre_exec, run_captured, tasks_of_uid};
use super::workdir::{Owner, RunDirs};
use super::{Isolation, Limits, Program, RunOutput, Sandbox, SandboxError};

/// Runs programs as plain child processes with rlimits, a wall-clock kill of the process
/// group, capped output, an empty environment and, when the caller is root, uid 65534.
///
/// **No isolation**: the program sees the host's files, network and processes, and a
/// daemon that leaves the process group survives. Every result says
/// [`Isolation::Process`]. Use it only where bubblewrap cannot run and the code is trusted.
#[derive(Clone, Debug)]
pub struct ProcessSandbox {
    temp_root: PathBuf,
}

impl Default for ProcessSandbox {
    fn default() -> Self {
        ProcessSandbox {
            temp_root: std::env::temp_dir(),
        }
    }
}

impl ProcessSandbox {
    /// A process backend creating its run directories in the system temp dir.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates per-run directories under `dir`.
    pub fn with_temp_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.temp_root = dir.into();
        self
    }
}

fn find_interpreter(names: &[&str]) -> Option<PathBuf> {
    let mut dirs = vec![PathBuf::from("/usr/bin"), PathBuf::from("/bin")];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    for dir in dirs {
        for name in names {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

#[async_trait]
impl Sandbox for ProcessSandbox {
    fn isolation(&self) -> Isolation {
        Isolation::Process
    }

    async fn run(&self, program: &Program, limits: &Limits) -> Result<RunOutput, SandboxError> {
        let (names, args, package): (&[&str], &[&str], _) = match program.lang {
            CodeLang::Python => (&["python3"], &["-I", "-B"], "python3"),
            CodeLang::Bash => (&["bash"], &["--noprofile", "--norc"], "bash"),
            other => {
                return Err(SandboxError::InvalidProgram(format!(
                    "language `{other}` is not supported; use python or bash"
                )));
            }
        };
        let interp = find_interpreter(names).ok_or_else(|| SandboxError::NoInterpreter {
            lang: program.lang.to_string(),
            reason: format!(
                "{} is not on PATH; install it (apt-get install {package})",
                names[0]
            ),
        })?;
        let root = nix::unistd::geteuid().is_root();
        let owner = root.then_some(Owner {
            uid: 65534,
            gid: 65534,
        });
        let dirs = RunDirs::prepare(&self.temp_root, program, owner)?;
        let mut cmd = Command::new(&interp);
        cmd.args(args)
            .arg(dirs.program_dir.join(dirs.script_name))
            .current_dir(&dirs.work)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &dirs.work)
            .env("LANG", "C.UTF-8");
        for (k, v) in &program.env {
            cmd.env(k, v);
        }
        if let Some(o) = owner {
            cmd.uid(o.uid).gid(o.gid);
        }
        let run_as = owner.map_or_else(|| nix::unistd::getuid().as_raw(), |o| o.uid);
        install_pre_exec(&mut cmd, limits, tasks_of_uid(run_as), Vec::new());
        let captured =
            run_captured(cmd, program.stdin.as_deref(), limits, AfterExit::KillGroup).await?;
        Ok(finish(captured, Isolation::Process, &dirs, program, limits))
    }
}
