//! Runner benchmark (`cargo bench -p plan-exec --bench workloads`): the reference
//! workloads through the parallel runner and the LLM step executor, against plan-llm's
//! fake OpenAI-compatible server (axum on loopback, 300 ms per call), over real HTTP with
//! plan-llm's OpenAI adapter. Prints a table: makespan, ideal (critical path x latency),
//! ratio, max concurrency at the server, calls and prompt tokens. Then 100,000 no-op steps
//! through the parallel runner: time and peak memory.

use std::time::{Duration, Instant};

use plan_core::{Plan, Step};
use plan_exec::context::StepContext;
use plan_exec::executor::executor_fn;
use plan_exec::llm::LlmStepExecutor;
use plan_exec::policy::{RunOptions, StepPolicy};
use plan_exec::runner::Runner;
use plan_exec::testing::answer_by_step;
use plan_exec::testing::workloads::{Workload, fan_out, reference};
use plan_llm::testing::FakeOpenAi;
use plan_llm::{Flavour, OpenAi};

const LATENCY: Duration = Duration::from_millis(300);

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = FakeOpenAi::start().await;
        answer_by_step(&server).latency(LATENCY);
        let provider = OpenAi::new("fake-model", None)
            .with_base_url(server.base_url())
            .with_flavour(Flavour::compatible());
        let runner = Runner::parallel(LlmStepExecutor::new(provider)).with_options(
            RunOptions::default()
                .with_concurrency(16)
                .with_policy(StepPolicy::default()),
        );

        // Warm the HTTP connection pool (as a long-running process would have it).
        let _ = runner.run(fan_out(8)).await.unwrap();

        println!(
            "{:<20} {:>6} {:>11} {:>9} {:>7} {:>8} {:>6} {:>13}",
            "workload", "steps", "makespan", "ideal", "ratio", "max conc", "calls", "prompt tokens"
        );
        let mut worst: f64 = 0.0;
        for Workload {
            name,
            plan,
            critical_path,
            ..
        } in reference()
        {
            let n = plan.steps.len();
            server.reset();
            let t = Instant::now();
            let report = runner.run(plan).await.unwrap();
            let makespan = t.elapsed();
            assert!(report.is_success(), "{name}: {:?}", report.status);
            let ideal = LATENCY * critical_path;
            let ratio = makespan.as_secs_f64() / ideal.as_secs_f64();
            worst = worst.max(ratio);
            println!(
                "{:<20} {:>6} {:>8.1} ms {:>6} ms {:>7.3} {:>8} {:>6} {:>13}",
                name,
                n,
                makespan.as_secs_f64() * 1000.0,
                ideal.as_millis(),
                ratio,
                server.max_in_flight(),
                server.total_requests(),
                report.usage.prompt_tokens,
            );
        }
        println!("worst ratio: {worst:.3} (goal <= 1.03)");

        // 100,000 no-op steps: a forest where step i depends on step i / 2.
        let n = 100_000;
        let steps: Vec<Step> = (0..n)
            .map(|i| {
                let s = Step::new(format!("n{i}"), "no-op");
                if i == 0 { s } else { s.depends_on([format!("n{}", i / 2)]) }
            })
            .collect();
        let plan = Plan::new("no-op", steps);
        let noop = Runner::parallel(executor_fn(|_: StepContext| async { Ok(String::new()) }))
            .with_options(RunOptions::default().with_concurrency(64));
        let rss_before = peak_rss_kib();
        let reset = reset_peak_rss();
        let t = Instant::now();
        let report = noop.run(plan).await.unwrap();
        let took = t.elapsed();
        assert!(report.is_success());
        let peak = peak_rss_kib();
        println!(
            "100000 no-op steps (binary tree, concurrency 64): {:.0} ms, {:.1} us/step, peak RSS {} MiB{} (before: {} MiB)",
            took.as_secs_f64() * 1000.0,
            took.as_secs_f64() * 1e6 / n as f64,
            peak.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
            if reset { "" } else { " (process peak; could not reset)" },
            rss_before.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
        );
    });
}
