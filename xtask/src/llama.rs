//! llama.cpp beside the embedded model (issue 26, parts 4 and 5), through llama-cpp-python
//! from PyPI, built from source into a venv under the target dir:
//! - `cargo xtask llama-server-test` serves the embedded model's own GGUF with
//!   `python -m llama_cpp.server` and runs the CLI's real-server tests
//!   (`crates/plan-cli/tests/cli/llama_server.rs`) against it;
//! - `cargo xtask bench` (and `cargo xtask llama-bench` alone) prints the embedded
//!   model's prefill and decode speed beside llama.cpp's on the same file, threads and
//!   prompts ([`side_by_side`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use plan_llm_local::{FetchOptions, ModelStore};

/// The llama-cpp-python release installed (the one issue 26 was written against).
const VERSION: &str = "0.3.36";

/// llama.cpp's build: AVX2 without native tuning (native builds have crashed on these
/// machines) and without OpenMP (its spinning threads fight the other processes on two
/// cores); no tests, examples or llama.cpp's own server (llama-cpp-python has its own),
/// no libcurl (models are files here).
const CMAKE_ARGS: &str = "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON \
-DGGML_F16C=ON -DGGML_OPENMP=OFF -DGGML_BLAS=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF";

/// The context the server is started with (the size issue 26's session used).
const N_CTX: u32 = 2048;

/// How long the server may take to answer `GET /v1/models` after it starts.
const SERVER_START: Duration = Duration::from_secs(180);

/// `cargo xtask llama-server-test`: installs llama-cpp-python, serves the embedded
/// model's GGUF, runs the real-server tests against it, stops the server.
pub fn server_test() -> Result<()> {
    let model = model_path()?;
    let python = install()?;
    let server = Server::start(&python, &model)?;
    let mut test = crate::cargo_command();
    test.args([
        "test",
        "--release",
        "--locked",
        "-p",
        "plan-cli",
        "--test",
        "cli",
        "llama_server",
        // One at a time: llama-cpp-python answers `GET /v1/models` only between
        // completions, so a spec that asks the server who it is while another test's
        // completion runs waits past its 5 s and is not recognised.
        "--",
        "--test-threads=1",
    ])
    .env("PLAN_LLAMA_SERVER_URL", &server.url)
    .env("PLAN_REQUIRE_LLAMA_SERVER", "1");
    let started = Instant::now();
    let result = crate::exec(&mut test);
    eprintln!(
        "xtask: the real-server tests took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    drop(server);
    result
}

/// Runs the embedded model's bench (its output shown as it comes), then llama.cpp's
/// speed on the same file, threads and prompts, and prints both with their ratios.
pub fn side_by_side() -> Result<()> {
    let mut bench = crate::cargo_command();
    bench.args([
        "bench",
        "--locked",
        "-p",
        "plan-llm-local",
        "--bench",
        "local_model",
    ]);
    let embedded = parse_embedded(&tee(&mut bench)?);
    let python = install()?;
    let script = crate::workspace_root().join("xtask/scripts/llama_speed.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(model_path()?)
        .args(["--threads", "1", "2"])
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start {}", python.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", script.display(), out.status);
    }
    let llama = parse_llama(&String::from_utf8_lossy(&out.stdout))?;
    println!("{}", table(&embedded, &llama));
    Ok(())
}

/// Speed figures of one model at one thread count.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Speed {
    threads: u32,
    /// Prompt (prefill) tokens per second.
    prefill: f64,
    /// Reply (decode) tokens per second.
    decode: f64,
    /// Tokens in the prefill prompt, to check that both read the same prompt.
    prompt_tokens: Option<u64>,
}

/// The figures in the local_model bench's output: under each `threads=T` line, `prompt:
/// X tok/s (N tokens in ...)` and `decode, free text: Y tok/s`.
fn parse_embedded(output: &str) -> Vec<Speed> {
    let mut figures: Vec<Speed> = Vec::new();
    for line in output.lines() {
        let line = line.trim();
        if let Some(t) = line.strip_prefix("threads=") {
            if let Ok(threads) = t.trim().parse() {
                figures.push(Speed {
                    threads,
                    ..Speed::default()
                });
            }
            continue;
        }
        let Some(current) = figures.last_mut() else {
            continue;
        };
        if let Some(rest) = line.strip_prefix("prompt:") {
            current.prefill = rate(rest).unwrap_or_default();
            current.prompt_tokens = rest
                .split_once('(')
                .and_then(|(_, r)| r.split_whitespace().next())
                .and_then(|n| n.parse().ok());
        } else if let Some(rest) = line.strip_prefix("decode, free text:") {
            current.decode = rate(rest).unwrap_or_default();
        }
    }
    figures
}

/// The number before ` tok/s` in `text`.
fn rate(text: &str) -> Option<f64> {
    text.split_once("tok/s")?
        .0
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// The JSON lines `llama_speed.py` prints.
fn parse_llama(output: &str) -> Result<Vec<Speed>> {
    output
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("llama_speed.py printed {line:?}"))?;
            let number = |key: &str| {
                v[key]
                    .as_f64()
                    .with_context(|| format!("llama_speed.py printed no {key} in {line}"))
            };
            Ok(Speed {
                threads: number("threads")? as u32,
                prefill: number("prefill_tok_s")?,
                decode: number("decode_tok_s")?,
                prompt_tokens: v["prompt_tokens"].as_u64(),
            })
        })
        .collect()
}

/// The side-by-side table: per thread count, both models' prefill and decode speed and
/// the ratios embedded / llama.cpp (above 1: the embedded model is faster).
fn table(embedded: &[Speed], llama: &[Speed]) -> String {
    let mut out = format!(
        "embedded model vs llama.cpp (llama-cpp-python {VERSION}, AVX2 build) on the same GGUF and prompts\n\
         {:<8} {:>14} {:>14} {:>7}   {:>14} {:>14} {:>7}\n",
        "threads", "prefill plan", "llama.cpp", "ratio", "decode plan", "llama.cpp", "ratio"
    );
    let ratio = |a: f64, b: f64| {
        if a > 0.0 && b > 0.0 {
            format!("{:.2}x", a / b)
        } else {
            "?".to_owned()
        }
    };
    for l in llama {
        let e = embedded
            .iter()
            .find(|e| e.threads == l.threads)
            .copied()
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<8} {:>10.0} t/s {:>10.0} t/s {:>7}   {:>10.1} t/s {:>10.1} t/s {:>7}\n",
            l.threads,
            e.prefill,
            l.prefill,
            ratio(e.prefill, l.prefill),
            e.decode,
            l.decode,
            ratio(e.decode, l.decode),
        ));
        if let (Some(a), Some(b)) = (e.prompt_tokens, l.prompt_tokens)
            && a != b
        {
            out.push_str(&format!(
                "  warning: the prompts differ ({a} tokens embedded, {b} llama.cpp): \
                 xtask/scripts/llama_speed.py no longer matches the local_model bench\n"
            ));
        }
    }
    if embedded.is_empty() {
        out.push_str(
            "  warning: no figures found in the local_model bench's output (its format changed?)\n",
        );
    }
    out.push_str(
        "(prefill: prompt tokens/s; decode: reply tokens/s; llama.cpp's from its perf counters)",
    );
    out
}

/// Runs `cmd`, echoing its standard output as it comes, and returns that output.
fn tee(cmd: &mut Command) -> Result<String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {:?}", cmd.get_program()))?;
    let mut all = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            all.push_str(&line);
            all.push('\n');
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{:?} failed ({status})", cmd.get_program());
    }
    Ok(all)
}

/// The embedded model's GGUF, fetched into the cache if missing.
fn model_path() -> Result<PathBuf> {
    ModelStore::default()
        .ensure(&FetchOptions::default(), &mut |_| {})
        .context("the embedded model's GGUF is needed: `cargo xtask fetch-model`")
}

/// The target dir (`CARGO_TARGET_DIR` or the workspace's `target/`).
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(t) if t.is_absolute() => t,
        Some(t) => crate::workspace_root().join(t),
        None => crate::workspace_root().join("target"),
    }
}

/// Installs llama-cpp-python [`VERSION`] with its server into
/// `target/llama-cpp-python/venv` (kept while the version and build flags stay the same)
/// and returns the venv's python.
fn install() -> Result<PathBuf> {
    let dir = target_dir().join("llama-cpp-python");
    let venv = dir.join("venv");
    let python = venv.join("bin/python");
    let marker = venv.join(".installed");
    let wanted = format!("llama-cpp-python[server]=={VERSION}\nCMAKE_ARGS={CMAKE_ARGS}\n");
    if python.is_file() && std::fs::read_to_string(&marker).is_ok_and(|m| m == wanted) {
        return Ok(python);
    }
    if !on_path("cc") || !on_path("c++") {
        bail!(
            "building llama-cpp-python needs a C and C++ compiler: install them (apt-get install -y build-essential) and run again"
        );
    }
    eprintln!(
        "xtask: building llama-cpp-python {VERSION} from source into {} (several minutes on 2 cores)",
        venv.display()
    );
    let started = Instant::now();
    if venv.exists() {
        std::fs::remove_dir_all(&venv)
            .with_context(|| format!("could not remove {}", venv.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    crate::exec(Command::new("python3").arg("-m").arg("venv").arg(&venv))
        .context("python3 cannot make a venv: install python3-venv")?;
    // Built from source (no wheel cache: it would not know the build flags), at the
    // lowest priority, as the machine may be measuring something else.
    crate::exec(
        Command::new("nice")
            .args(["-n", "19"])
            .arg(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-cache-dir",
            ])
            .arg(format!("llama-cpp-python[server]=={VERSION}"))
            .env("CMAKE_ARGS", CMAKE_ARGS)
            .env("CMAKE_BUILD_PARALLEL_LEVEL", "2"),
    )
    .context("llama-cpp-python did not build")?;
    std::fs::write(&marker, wanted)?;
    eprintln!(
        "xtask: llama-cpp-python {VERSION} installed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(python)
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// `python -m llama_cpp.server` serving one GGUF on a free loopback port; stopped when
/// dropped.
struct Server {
    child: Child,
    /// The OpenAI base URL (`http://127.0.0.1:PORT/v1`).
    url: String,
}

impl Server {
    /// Starts the server and waits until it answers `GET /v1/models`.
    fn start(python: &Path, model: &Path) -> Result<Server> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log_path = target_dir().join("llama-cpp-python/server.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("could not create {}", log_path.display()))?;
        let started = Instant::now();
        // No --chat_format: the server then renders the GGUF's own template, as the
        // embedded model does (SmolLM2's is ChatML with a default system message when a
        // conversation has none; `--chat_format chatml` would drop that message).
        let child = Command::new(python)
            .args(["-m", "llama_cpp.server", "--model"])
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--n_ctx", &N_CTX.to_string()])
            // One thread, not two: the tests check behaviour, not speed, and llama.cpp's
            // two threads wait for each other at every step, so on two cores shared with
            // anything else (a build, the test binary) its decode fell from about 75 tok/s
            // to 1-9 tok/s here.
            .args(["--n_threads", "1", "--n_threads_batch", "1"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("could not start {}", python.display()))?;
        let mut server = Server {
            child,
            url: format!("http://127.0.0.1:{port}/v1"),
        };
        loop {
            if models_answer(port) {
                break;
            }
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "llama_cpp.server exited ({status}) before answering; its log, {}:\n{}",
                    log_path.display(),
                    tail(&log_path)
                );
            }
            if started.elapsed() > SERVER_START {
                bail!(
                    "llama_cpp.server did not answer GET /v1/models within {} s; its log, {}:\n{}",
                    SERVER_START.as_secs(),
                    log_path.display(),
                    tail(&log_path)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "xtask: llama_cpp.server answered at {} after {:.1} s",
            server.url,
            started.elapsed().as_secs_f64()
        );
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `GET /v1/models` on the port answers 200.
fn models_answer(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request =
        format!("GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.1 200")
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const BENCH: &str = "plan-llm-local benchmark (best of 2 runs; noisy on a shared machine)
threads=1
  load: 0.20 s (weights 0.10 s, tokenizer+grammar tables 0.10 s)
  prompt: 81 tok/s (351 tokens in 4.33 s)
  decode, free text: 54.2 tok/s (129 tokens)
  decode, JSON schema: 40.1 tok/s (80 tokens incl. forced, 2.00 s)
threads=2
  load: 0.20 s (weights 0.10 s, tokenizer+grammar tables 0.10 s)
  prompt: 135 tok/s (351 tokens in 2.60 s)
  decode, free text: 90.0 tok/s (129 tokens)
three parallel DAG steps (threads=2, prompts of [1, 2, 3] tokens, up to 64 reply tokens each)
";

    #[test]
    fn the_embedded_figures_are_read_per_thread_count() {
        let figures = parse_embedded(BENCH);
        assert_eq!(
            figures,
            [
                Speed {
                    threads: 1,
                    prefill: 81.0,
                    decode: 54.2,
                    prompt_tokens: Some(351)
                },
                Speed {
                    threads: 2,
                    prefill: 135.0,
                    decode: 90.0,
                    prompt_tokens: Some(351)
                },
            ]
        );
    }

    #[test]
    fn the_table_shows_ratios_and_warns_of_different_prompts() {
        let llama = parse_llama(
            r#"{"threads": 1, "prompt_tokens": 351, "prefill_tok_s": 67.5, "decode_tok_s": 37.4, "decode_tokens": 128}
{"threads": 2, "prompt_tokens": 350, "prefill_tok_s": 112.5, "decode_tok_s": 62.1, "decode_tokens": 128}"#,
        )
        .unwrap();
        let table = table(&parse_embedded(BENCH), &llama);
        assert!(
            table.contains("1.20x") && table.contains("1.45x"),
            "{table}"
        );
        assert_eq!(
            table.matches("warning: the prompts differ").count(),
            1,
            "{table}"
        );
    }
}
