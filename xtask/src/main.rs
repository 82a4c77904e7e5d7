//! Developer tasks: `cargo xtask ci | test | examples | bench | fetch-model | invariants |
//! llama-server-test | llama-bench`.

mod examples;
mod fetch_model;
mod invariants;
mod llama;

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flags: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    match args.first().map(String::as_str) {
        Some("ci") => {
            cargo(&["fmt", "--all", "--", "--check"])?;
            lint_while_building()?;
            test()
        }
        Some("test") => {
            match flags.as_slice() {
                [] => {}
                ["--clippy"] => lint_while_building()?,
                other => bail!("usage: cargo xtask test [--clippy], not {other:?}"),
            }
            test()
        }
        Some("examples") => {
            ensure_system_packages()?;
            fetch_model::fetch_model().context("the local_model example needs the model")?;
            examples::run_all()
        }
        Some("invariants") => invariants::check_workspace(),
        Some("fetch-model") => fetch_model::fetch_model(),
        Some("bench") => bench(),
        Some("llama-server-test") => llama::server_test(),
        Some("llama-bench") => llama::side_by_side(),
        _ => bail!(
            "usage: cargo xtask <ci|test [--clippy]|examples|bench|invariants|fetch-model|llama-server-test|llama-bench>"
        ),
    }
}

/// Whether every cargo command of this xtask run compiles the workspace's crates with
/// clippy's lints denied ([`lint_while_building`]).
static CLIPPY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// `--clippy`: the test build compiles the workspace's own crates with `clippy-driver`
/// (what `cargo clippy` runs, as the workspace wrapper) and `-D warnings`, so one build
/// both lints and makes the test binaries. `cargo clippy` would check all ~550
/// dependencies a second time, in check mode, for nothing the build does not already do;
/// the dependencies are compiled by plain rustc either way, so they stay shared with the
/// quick start's build. Benches are built too, as `cargo clippy --all-targets` checks
/// them.
fn lint_while_building() -> Result<()> {
    let driver = Command::new("clippy-driver")
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success());
    if driver.is_none() {
        bail!("--clippy needs clippy-driver: install it with `rustup component add clippy`");
    }
    CLIPPY
        .set("clippy-driver".to_owned())
        .map_err(|_| anyhow::anyhow!("the clippy wrapper was set twice"))
}

/// Installs what the tests need, runs every test of the workspace, then every example
/// (each checks what it shows).
fn test() -> Result<()> {
    let mut phase = Phase::start();
    ensure_system_packages()?;
    fetch_model::fetch_model().context("the embedded model is needed by the tests")?;
    prepare_mcp().context("the MCP tests need their servers and client")?;
    phase.done("installing what the tests need");
    if CLIPPY.get().is_some() {
        // Every target `cargo clippy --all-targets` lints, benches included; the test
        // run below reuses this build.
        let mut build = cargo_command();
        build.args([
            "build",
            "--release",
            "--workspace",
            "--all-targets",
            "--locked",
        ]);
        if std::env::var_os("CI").is_some() {
            build.arg("--timings");
        }
        exec(&mut build).context("the workspace does not build without clippy warnings")?;
        phase.done("the build, linted by clippy");
    }
    let mut test = cargo_command();
    // The release profile: the quick start's `cargo run --release` built the
    // dependencies already, so only the workspace's crates and tests compile here.
    test.args([
        "test",
        "--release",
        "--workspace",
        "--locked",
        "--no-fail-fast",
    ]);
    // In CI, where the clean build's time is what is measured: a report of where it went
    // (target/cargo-timings/), to keep the test command's build short (with --clippy the
    // build above made it).
    if std::env::var_os("CI").is_some() && CLIPPY.get().is_none() {
        test.arg("--timings");
    }
    let fixtures = workspace_root().join("../shared/fixtures/providers");
    if std::env::var_os("PLAN_PROVIDER_FIXTURES").is_none() && fixtures.is_dir() {
        test.env("PLAN_PROVIDER_FIXTURES", &fixtures);
    }
    exec(&mut test)?;
    phase.done("cargo test");
    examples::run_all()?;
    phase.done("the examples");
    Ok(())
}

/// Prints how long each phase of a task took, so CI's log says where its time went.
struct Phase(std::time::Instant);

impl Phase {
    fn start() -> Self {
        Phase(std::time::Instant::now())
    }

    fn done(&mut self, what: &str) {
        eprintln!("xtask: {what} took {:.0} s", self.0.elapsed().as_secs_f64());
        self.0 = std::time::Instant::now();
    }
}

/// Runs every benchmark; each prints its figures (the embedded model's beside llama.cpp's),
/// and the real llama-cpp-python server tests.
fn bench() -> Result<()> {
    ensure_system_packages()?;
    fetch_model::fetch_model()?;
    for (krate, bench) in [
        ("plan-core", "schedule"),
        ("plan-core", "large_plan"),
        ("plan-exec", "workloads"),
        ("plan-sandbox", "sandbox"),
        ("plan-strategies", "planned_workloads"),
        ("plan-strategies", "adaptive_failure"),
        ("plan-strategies", "forecast"),
        ("plan-strategies", "replay"),
        ("plan-cli", "grounded_research"),
        ("plan-cli", "fleet"),
        ("plan-cli", "sse_fanout"),
    ] {
        cargo(&["bench", "--locked", "-p", krate, "--bench", bench])?;
    }
    // The embedded model's bench, then llama.cpp's speed beside it, then the CLI against
    // a real llama-cpp-python server (its ~10-minute build is too long for CI).
    llama::side_by_side()?;
    llama::server_test()
}

/// Installs the pinned MCP servers (npm) and the Python MCP SDK (a venv) the tests use,
/// under the target dir where the tests look for them, so no test waits on a download.
fn prepare_mcp() -> Result<()> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .map(|t| {
            if t.is_absolute() {
                t
            } else {
                workspace_root().join(t)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"));
    exec(
        Command::new("bash")
            .arg(workspace_root().join("testdata/mcp/prepare.sh"))
            .arg(target.join("tmp").join("mcp-test"))
            .arg("all"),
    )
}

/// Whether `python3` can make a venv (Debian's needs python3-venv for ensurepip).
fn python_has_venv() -> bool {
    Command::new("python3")
        .args(["-c", "import ensurepip, venv"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// System packages the tests need: bubblewrap for the sandbox, Debian's python3 (visible
/// inside the sandbox, unlike pyenv's), PostgreSQL's server for the PostgreSQL store,
/// node and npm for the MCP servers the MCP tests run, and python3-venv for the MCP client
/// they drive `plan mcp` with.
fn ensure_system_packages() -> Result<()> {
    let mut missing: Vec<&str> = [
        ("bwrap", "bubblewrap"),
        ("/usr/bin/python3", "python3"),
        ("node", "nodejs"),
        ("npm", "npm"),
        // plan serve's browser test
        ("chromium", "chromium"),
    ]
    .into_iter()
    .filter(|(bin, _)| !on_path(bin))
    .map(|(_, pkg)| pkg)
    .collect();
    if !has_postgres_server() {
        missing.push("postgresql");
    }
    if !python_has_venv() {
        missing.push("python3-venv");
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "the tests need these Debian packages: {}; install them (sudo apt-get install -y {}) and run again",
            missing.join(", "),
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    exec(Command::new("apt-get").arg("update").arg("-q"))?;
    exec(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Whether PostgreSQL's server binaries are installed where Debian puts them
/// (`/usr/lib/postgresql/<version>/bin`, not on PATH) or on PATH: the PostgreSQL store's
/// tests start a throwaway cluster with them.
fn has_postgres_server() -> bool {
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.path().join("bin/initdb").is_file());
    debian || (on_path("initdb") && on_path("pg_ctl"))
}

fn on_path(bin: &str) -> bool {
    if bin.contains('/') {
        return std::path::Path::new(bin).exists();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default()
}

fn exec(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} failed ({status})", cmd.get_program());
    }
    Ok(())
}

fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// A cargo command without the package variables `cargo run` set for xtask itself: build
/// scripts that watch them (ring's, through `rerun-if-env-changed`) would otherwise see
/// xtask's values, differ from the build of xtask, and rebuild on every call.
fn cargo_command() -> Command {
    let mut cmd = Command::new(cargo_bin());
    for (key, _) in std::env::vars_os() {
        if let Some(key) = key.to_str()
            && (key.starts_with("CARGO_PKG_")
                || matches!(
                    key,
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_MANIFEST_LINKS"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_BIN_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                ))
        {
            cmd.env_remove(key);
        }
    }
    if let Some(driver) = CLIPPY.get() {
        // As `cargo clippy -- -D warnings` passes them (each argument followed by the
        // separator clippy-driver splits on).
        cmd.env("RUSTC_WORKSPACE_WRAPPER", driver).env(
            "CLIPPY_ARGS",
            "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__",
        );
    }
    cmd
}

fn cargo(args: &[&str]) -> Result<()> {
    let status = cargo_command()
        .args(args)
        .status()
        .context("could not start cargo")?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
