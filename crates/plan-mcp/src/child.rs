//! Starting a stdio MCP server as a child process: its own process group, a minimal
//! environment (no API keys), and, on Linux, a group that dies with this process even when
//! it is killed with `SIGKILL`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use rmcp::transport::TokioChildProcess;

use crate::McpServerConfig;
use crate::spec::passes;

/// On Linux the server runs under `sh` (as `sh -c GUARD PROGRAM ARGS...`), which the
/// kernel sends `SIGTERM` when this process dies (`PR_SET_PDEATHSIG`), and which then kills
/// its whole process group: the server and whatever it started (`npx` runs the server as a
/// grandchild). The server keeps the shell's stdin, stdout and stderr (an asynchronous
/// command's stdin would otherwise be /dev/null, hence fd 3), and the shell exits with the
/// server's status.
#[cfg(target_os = "linux")]
const GUARD: &str = r#"trap 'kill -KILL 0' TERM; exec 3<&0; "$0" "$@" <&3 3<&- & wait $!"#;

/// Spawns the server in its own process group (so its children die with it), killed when
/// dropped, with stdin and stdout piped to the MCP transport and stderr captured. Its
/// environment is only what [`passes`] lets through from this process, plus the
/// configuration's `env`.
///
/// # Errors
/// `NotFound` when `program` is not an executable file (on `PATH`, as the child's `PATH`
/// finds it, for a bare name); the spawn's error otherwise.
pub(crate) fn spawn(
    program: &str,
    args: &[String],
    config: &McpServerConfig,
) -> std::io::Result<(TokioChildProcess, Option<tokio::process::ChildStderr>)> {
    let env = environment(std::env::vars_os(), config);
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone());
    let resolved = resolve(program, path.as_deref()).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            if program.contains('/') {
                format!("`{program}` is not an executable file")
            } else {
                format!("`{program}` is not found on PATH")
            },
        )
    })?;
    let mut command = guarded(&resolved, args);
    command.env_clear().envs(env).kill_on_drop(true);
    let mut wrapped = process_wrap::tokio::CommandWrap::from(command);
    wrapped.wrap(process_wrap::tokio::KillOnDrop);
    #[cfg(unix)]
    wrapped.wrap(process_wrap::tokio::ProcessGroup::leader());
    TokioChildProcess::builder(wrapped)
        .stderr(std::process::Stdio::piped())
        .spawn()
}

/// The command that runs `program args...`: under the guard shell on Linux (which dies
/// with this process, see [`GUARD`]), as itself elsewhere.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // pre_exec, the one way to set the parent-death signal of a child
fn guarded(program: &Path, args: &[String]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("/bin/sh");
    command.arg("-c").arg(GUARD).arg(program).args(args);
    // SAFETY: the closure runs in the child between fork and exec and only makes the
    // prctl system call, which is async-signal-safe. The signal is sent when the thread
    // that spawned the child exits: a runtime's worker thread, which outlives its tasks.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
    command
}

#[cfg(not(target_os = "linux"))]
fn guarded(program: &Path, args: &[String]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    command.args(args);
    command
}

/// The child's environment: the variables of `vars` (this process's) that [`passes`]
/// lets through, then the configuration's `env` over them.
fn environment(
    vars: impl Iterator<Item = (OsString, OsString)>,
    config: &McpServerConfig,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = vars
        .filter(|(k, _)| {
            k.to_str()
                .is_some_and(|k| passes(k, &config.env_pass) && !config.env.contains_key(k))
        })
        .collect();
    env.extend(
        config
            .env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v))),
    );
    env
}

/// `program` as a path to an executable file: itself when it names a path, else the first
/// match in `path`'s directories.
fn resolve(program: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return is_executable(&p).then_some(p);
    }
    std::env::split_paths(path?)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Iterator<Item = (OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn the_environment_keeps_the_basics_and_drops_keys() {
        let config = McpServerConfig::command("server", vec![])
            .with_env_pass("GITHUB_TOKEN")
            .with_env("MODE", "test")
            .with_env("HOME", "/srv/mcp");
        let env = environment(
            vars(&[
                ("PATH", "/usr/bin"),
                ("HOME", "/root"),
                ("LC_ALL", "C.UTF-8"),
                ("OPENAI_API_KEY", "sk-secret"),
                ("ANTHROPIC_API_KEY", "sk-ant-secret"),
                ("PGPASSWORD", "hunter2"),
                ("PLAN_SERVE_TOKEN", "t"),
                ("GITHUB_TOKEN", "ghp_passed"),
            ]),
            &config,
        );
        let names: Vec<(&str, &str)> = env
            .iter()
            .map(|(k, v)| (k.to_str().unwrap(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                ("PATH", "/usr/bin"),
                ("LC_ALL", "C.UTF-8"),
                ("GITHUB_TOKEN", "ghp_passed"),
                ("HOME", "/srv/mcp"),
                ("MODE", "test"),
            ]
        );
    }

    #[test]
    fn programs_are_found_on_the_childs_path() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("my-server");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        let plain = dir.path().join("not-executable");
        std::fs::write(&plain, "").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let path = std::env::join_paths(["/nonexistent", dir.path().to_str().unwrap()]).unwrap();
        assert_eq!(resolve("my-server", Some(&path)), Some(exe.clone()));
        assert_eq!(resolve("not-executable", Some(&path)), None);
        assert_eq!(resolve("my-server", None), None);
        assert_eq!(resolve(exe.to_str().unwrap(), None), Some(exe));
        assert_eq!(resolve(plain.to_str().unwrap(), None), None);
    }
}
