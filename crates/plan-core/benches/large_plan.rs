//! Large plan files (`cargo bench -p plan-core --bench large_plan`): what `plan graph
//! PLAN.json --format mermaid --max-steps 200000` does with a 100,000-step file — parse the
//! JSON, validate it (every problem listed), render Mermaid — timed, with the process's
//! peak resident memory. Target: under 10 s and 600 MB.

use std::time::Instant;

use plan_core::{Limits, Plan, PlanGraph, render_mermaid};

/// Layers of `width` steps; each step depends on two steps of the layer before.
fn layered_json(layers: usize, width: usize) -> String {
    let mut steps = Vec::with_capacity(layers * width);
    for l in 0..layers {
        for w in 0..width {
            let deps = if l == 0 {
                String::new()
            } else {
                let a = (l - 1) * width + w;
                let b = (l - 1) * width + (w + 1) % width;
                format!(r#""s{a}", "s{b}""#)
            };
            steps.push(format!(
                r#"{{"id": "s{}", "description": "Step {} of layer {l}", "dependencies": [{deps}]}}"#,
                l * width + w,
                w
            ));
        }
    }
    format!(
        r#"{{"goal": "A large plan", "steps": [{}]}}"#,
        steps.join(",\n")
    )
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
    for (layers, width) in [(100, 100), (1000, 100)] {
        let steps = layers * width;
        let json = layered_json(layers, width);
        let t0 = Instant::now();
        let plan = Plan::from_json(&json).expect("the generated plan parses");
        let parsed = t0.elapsed();
        let graph = PlanGraph::with_limits(plan, &Limits::with_max_steps(200_000))
            .expect("the generated plan is valid");
        let validated = t0.elapsed();
        let mermaid = render_mermaid(&graph, None);
        let total = t0.elapsed();
        println!(
            "large_plan: {steps:>7} steps ({:.1} MB of JSON): parse {:>7.1} ms, validate {:>7.1} ms, mermaid {:>7.1} ms ({:.1} MB), total {:.2} s, peak RSS {:.0} MiB",
            json.len() as f64 / 1e6,
            parsed.as_secs_f64() * 1e3,
            (validated - parsed).as_secs_f64() * 1e3,
            (total - validated).as_secs_f64() * 1e3,
            mermaid.len() as f64 / 1e6,
            total.as_secs_f64(),
            peak_rss_mib().unwrap_or(f64::NAN)
        );
    }
}
