//! Test support (feature `test-support`): the real MCP servers and client that tests use,
//! installed at pinned versions under the target dir by `testdata/mcp/prepare.sh`.
//!
//! The helpers panic with a message that says what to install when node/npm or Python's
//! venv are missing: a test that needs a real server fails rather than passing untested.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The pinned version of both npm servers.
pub const SERVERS_VERSION: &str = "2026.8.31";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Where the servers and the venv live: `<target>/tmp/mcp-test` (kept between runs).
pub fn test_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let target = exe
        .ancestors()
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("tmp").join("mcp-test")
}

fn prepare(what: &str) -> PathBuf {
    let dir = test_dir();
    let script = repo_root().join("testdata/mcp/prepare.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .arg(what)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "installing the MCP test {what} failed ({}); {}\n{}",
        out.status,
        "`cargo xtask test` installs node, npm and python3-venv",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// The npm prefix holding the pinned servers (installed on first use).
pub fn npm_prefix() -> PathBuf {
    prepare("npm").join("npm")
}

/// The `--mcp` spec of `@modelcontextprotocol/server-everything`, run by `npx`.
pub fn everything_spec() -> String {
    npx_spec("mcp-server-everything", &[])
}

/// The `--mcp` spec of `@modelcontextprotocol/server-filesystem` over `root`, run by `npx`.
pub fn filesystem_spec(root: &Path) -> String {
    npx_spec("mcp-server-filesystem", &[&root.display().to_string()])
}

/// `npx` running a pinned server's binary from the prefix, offline.
pub fn npx_spec(bin: &str, args: &[&str]) -> String {
    let prefix = npm_prefix();
    let mut spec = format!(
        "npx --offline --prefix '{}' --no -- {bin}",
        prefix.display()
    );
    for a in args {
        spec.push_str(&format!(" '{a}'"));
    }
    spec
}

/// The Python interpreter of a venv with the official MCP SDK (installed on first use).
pub fn mcp_python() -> PathBuf {
    prepare("python").join("venv").join("bin").join("python")
}
