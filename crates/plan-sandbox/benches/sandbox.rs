//! Per-run sandbox overhead: start to exit of `python3 -c pass`, plain vs. through the
//! process and bubblewrap backends; prints the median and spread of 30 runs each.
//!
//! `cargo bench -p plan-sandbox --bench sandbox`

use std::time::{Duration, Instant};

use plan_sandbox::{BwrapConfig, BwrapSandbox, Limits, ProcessSandbox, Program, Sandbox};

const RUNS: usize = 30;

fn summary(name: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = samples[samples.len() / 2];
    println!(
        "{name:<28} median {:>7.2} ms   min {:>7.2} ms   max {:>7.2} ms   ({} runs)",
        ms(median),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
        samples.len()
    );
    median
}

async fn through(sandbox: &dyn Sandbox) -> Vec<Duration> {
    let program = Program::python("pass");
    let limits = Limits::default();
    let mut samples = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        let out = sandbox.run(&program, &limits).await.expect("sandbox run");
        assert!(out.success(), "{out:?}");
        samples.push(start.elapsed());
    }
    samples
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut plain = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        let status = std::process::Command::new("/usr/bin/python3")
            .args(["-c", "pass"])
            .status()
            .expect("run /usr/bin/python3");
        assert!(status.success());
        plain.push(start.elapsed());
    }
    let base = summary("plain python3 -c pass", plain);
    let process = summary("process backend", through(&ProcessSandbox::new()).await);
    println!(
        "{:<28} {:+.2} ms per run",
        "  overhead",
        (process.as_secs_f64() - base.as_secs_f64()) * 1000.0
    );
    match BwrapSandbox::new(BwrapConfig::default()) {
        Ok(bwrap) => {
            let median = summary("bwrap backend", through(&bwrap).await);
            println!(
                "{:<28} {:+.2} ms per run",
                "  overhead",
                (median.as_secs_f64() - base.as_secs_f64()) * 1000.0
            );
        }
        Err(e) => println!("bwrap backend unavailable: {e}"),
    }
}
