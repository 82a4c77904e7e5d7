//! The door × promise matrix. Every way into a run (a *door*: `plan run`, `plan exec`,
//! `plan resume` after Ctrl-C, `plan run --approve`, `plan approve` of a parked run, the
//! HTTP API of `plan serve`, the `run` tool of `plan mcp`, a fleet worker through `plan
//! submit` + `plan wait`, `plan rerun` of a finished run) must keep every promise of the contract it can carry (verify
//! gates, fallbacks, adaptive replans, token budgets, the retry bound, the hierarchical
//! goal tree, auto routing, trace spans, warnings, the forecast recorded with the run).
//!
//! A door ([`Door`]) takes a [`Scenario`] (the plan the fake model writes, its scripted
//! replies, the run's settings) and returns an [`Outcome`] (the final report, the events
//! where the door has them, the fake server's request log, what the door said, the
//! exported spans). A promise ([`Promise`]) names its scenario and checks an outcome.
//! Each cell is a test of its own, `matrix::DOOR::PROMISE`, generated below; a cell that
//! cannot apply says why in [`not_applicable`]. A new door or promise is one variant and
//! one line in the `matrix!` invocation.

mod doors;
mod promises;

pub(crate) use doors::{Door, Outcome, Scenario};
pub(crate) use promises::{Promise, not_applicable};

/// Runs one cell: the promise's scenario through the door, then the promise's check.
fn cell(door: Door, promise: Promise) {
    if let Some(reason) = not_applicable(door, promise) {
        eprintln!(
            "{} × {}: not applicable: {reason}",
            door.name(),
            promise.name()
        );
        return;
    }
    let scenario = promise.scenario();
    let Some(outcome) = door.run(&scenario) else {
        return;
    };
    if std::env::var_os("PLAN_MATRIX_VERBOSE").is_some() {
        eprintln!(
            "{} × {}\n{}",
            door.name(),
            promise.name(),
            outcome.context()
        );
    }
    promise.check(&outcome);
}

/// One row: a test per promise for `$door`.
macro_rules! row {
    ($door:ident = $D:ident, [$($p:ident = $P:ident),* $(,)?]) => {
        mod $door {
            $(
                #[test]
                fn $p() {
                    super::cell(super::Door::$D, super::Promise::$P);
                }
            )*
        }
    };
}

/// The matrix: every door × every promise, and the lists the table test walks.
macro_rules! matrix {
    (doors: [$($door:ident = $D:ident),* $(,)?], promises: $ps:tt $(,)?) => {
        $( row!($door = $D, $ps); )*
        const DOORS: &[Door] = &[$(Door::$D),*];
        const PROMISES: &[Promise] = &matrix!(@promises $ps);
    };
    (@promises [$($p:ident = $P:ident),* $(,)?]) => { [$(Promise::$P),*] };
}

matrix! {
    doors: [
        run = Run,
        exec = Exec,
        resume = Resume,
        run_approve = RunApprove,
        approve = Approve,
        serve = Serve,
        mcp = Mcp,
        worker = Worker,
        rerun = Rerun,
    ],
    promises: [
        verify_gate = VerifyGate,
        fallback = Fallback,
        adaptive_replan = AdaptiveReplan,
        budget = Budget,
        retry_bound = RetryBound,
        hierarchical_tree = HierarchicalTree,
        auto_route = AutoRoute,
        trace_spans = TraceSpans,
        warnings = Warnings,
        forecast_recorded = ForecastRecorded,
    ],
}

/// The matrix's shape, printed (`--nocapture`): which cells apply and why the others
/// do not. Every door and every promise has a name, and every n.a. a reason.
#[test]
fn table() {
    let mut text = format!("{:<14}", "");
    for p in PROMISES {
        text.push_str(&format!(" {:>17}", p.name()));
    }
    text.push('\n');
    let mut reasons = Vec::new();
    for d in DOORS {
        text.push_str(&format!("{:<14}", d.name()));
        for p in PROMISES {
            let mark = match not_applicable(*d, *p) {
                Some(reason) => {
                    assert!(!reason.trim().is_empty(), "{} × {}", d.name(), p.name());
                    reasons.push(format!("{} × {}: {reason}", d.name(), p.name()));
                    "n.a."
                }
                None => "cell",
            };
            text.push_str(&format!(" {mark:>17}"));
        }
        text.push('\n');
    }
    eprintln!("{text}\n{}", reasons.join("\n"));
}
