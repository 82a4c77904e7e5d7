//! Validate and fully schedule a random DAG of 100,000 steps, as a runner would: take the
//! ready set, complete it, repeat until done.
//!
//! Run with `cargo bench -p plan-core --bench schedule`. Besides criterion's timings it
//! prints the peak heap memory of one validate-and-schedule pass, measured by a counting
//! global allocator (the only `unsafe` in the crate, confined to this bench).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use plan_core::{Limits, Plan, PlanGraph, Scheduler, Step};

const STEPS: usize = 100_000;
const DEPS_PER_STEP: usize = 3;
const SEED: u64 = 0x5eed_2026;

/// Counts live and peak heap bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` unchanged and only updates counters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                    - layout.size();
                PEAK.fetch_max(live, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// A random DAG: step `i` depends on up to `DEPS_PER_STEP` distinct earlier steps, biased
/// towards recent ones so the graph is deep as well as wide.
fn random_plan() -> Plan {
    let mut state = SEED;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let steps = (0..STEPS)
        .map(|i| {
            let mut deps: Vec<String> = Vec::with_capacity(DEPS_PER_STEP);
            if i > 0 {
                for _ in 0..DEPS_PER_STEP {
                    let r = next() as usize;
                    // Half the dependencies within the last 1,000 steps, half anywhere.
                    let d = if r & 1 == 0 {
                        i - 1 - (r >> 1) % i.min(1_000)
                    } else {
                        (r >> 1) % i
                    };
                    let id = format!("s{d}");
                    if !deps.contains(&id) {
                        deps.push(id);
                    }
                }
            }
            Step::new(format!("s{i}"), format!("step number {i}")).depends_on(deps)
        })
        .collect();
    Plan::new("benchmark", steps)
}

/// Validates and schedules to the end; returns the number of ready-set rounds.
fn validate_and_schedule(plan: Plan) -> usize {
    let graph = match PlanGraph::with_limits(plan, &Limits::with_max_steps(STEPS)) {
        Ok(graph) => graph,
        Err(e) => panic!("the benchmark plan is invalid: {e}"),
    };
    schedule(&graph)
}

fn schedule(graph: &PlanGraph) -> usize {
    let mut scheduler = Scheduler::from_graph(graph);
    let mut rounds = 0;
    while !scheduler.is_finished() {
        let ready = scheduler.take_ready();
        assert!(!ready.is_empty(), "the scheduler stalled");
        for i in ready {
            scheduler.complete(i);
        }
        rounds += 1;
    }
    rounds
}

/// CPU time of this thread in nanoseconds (Linux `/proc/thread-self/schedstat`), so the
/// figures mean something on a loaded machine; `None` elsewhere.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Best of a few passes: wall and CPU time of validation and of scheduling, and the peak
/// heap above the input plan.
fn report_once(plan: &Plan) {
    let mut best: Option<(u64, u64, u64, u64, usize)> = None;
    let mut rounds = 0;
    let mut peak = 0;
    for _ in 0..3 {
        let input = plan.clone();
        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let (c0, t0) = (thread_cpu_ns().unwrap_or(0), Instant::now());
        let graph = match PlanGraph::with_limits(input, &Limits::with_max_steps(STEPS)) {
            Ok(graph) => graph,
            Err(e) => panic!("the benchmark plan is invalid: {e}"),
        };
        let (c1, t1) = (thread_cpu_ns().unwrap_or(0), Instant::now());
        rounds = schedule(&graph);
        let (c2, t2) = (thread_cpu_ns().unwrap_or(0), Instant::now());
        drop(graph);
        peak = peak.max(PEAK.load(Ordering::Relaxed) - before);
        let wall_v = (t1 - t0).as_nanos() as u64;
        let wall_s = (t2 - t1).as_nanos() as u64;
        let this = (c2 - c0, c1 - c0, c2 - c1, wall_v + wall_s, 0);
        if best.is_none_or(|b| this.0 < b.0) {
            best = Some(this);
        }
    }
    if let Some((cpu, cpu_v, cpu_s, wall, _)) = best {
        println!(
            "validate + schedule {STEPS} steps ({rounds} ready-set rounds), best of 3: \
             cpu {:.1} ms (validate {:.1} ms, schedule {:.1} ms), wall {:.1} ms",
            ms(cpu),
            ms(cpu_v),
            ms(cpu_s),
            ms(wall)
        );
    }
    println!(
        "peak heap: {:.1} MB above the input plan; {:.1} MB for the whole process so far",
        peak as f64 / 1e6,
        PEAK.load(Ordering::Relaxed) as f64 / 1e6
    );
}

fn benches(c: &mut Criterion) {
    let plan = random_plan();
    report_once(&plan);
    let mut group = c.benchmark_group("schedule_100k");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("validate_and_schedule", |b| {
        b.iter_batched(
            || plan.clone(),
            |p| black_box(validate_and_schedule(p)),
            BatchSize::LargeInput,
        )
    });
    let graph = match PlanGraph::with_limits(plan.clone(), &Limits::with_max_steps(STEPS)) {
        Ok(graph) => graph,
        Err(e) => panic!("the benchmark plan is invalid: {e}"),
    };
    group.bench_function("validate", |b| {
        b.iter_batched(
            || plan.clone(),
            |p| black_box(PlanGraph::with_limits(p, &Limits::with_max_steps(STEPS)).is_ok()),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("schedule", |b| b.iter(|| black_box(schedule(&graph))));
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
