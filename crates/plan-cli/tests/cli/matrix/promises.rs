//! The promises: each names the scenario that puts it to the test and checks the outcome
//! a door returns.

use plan_llm::testing::{FakeOpenAi, FakeReply};
use serde_json::Value;

use super::{Door, Outcome, Scenario};
use crate::otel::attr;
use crate::support::{DIAMOND, step_prompt};

/// The promises of the contract every door should keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Promise {
    /// A `verify` step whose model answer is FAIL fails the run.
    VerifyGate,
    /// A failing step's fallback output is used, and the report says it was a fallback.
    Fallback,
    /// Under `--strategy adaptive` a failed step leads to a replan that keeps finished
    /// outputs.
    AdaptiveReplan,
    /// A small `--budget-tokens` stops the run, which does not succeed, naming the budget.
    Budget,
    /// A server answering 500 to a step's calls gets at most the retry layer's attempts
    /// (4, README "Retries happen in one place", `RetryPolicy::default`) for that step.
    RetryBound,
    /// Under `--strategy hierarchical` the report has the goal tree.
    HierarchicalTree,
    /// Under the default strategy (`auto`) the report says the route taken.
    AutoRoute,
    /// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the run is a trace: its `invoke_workflow`
    /// span, step spans and model call spans.
    TraceSpans,
    /// A change made to the model's plan (a repaired unknown dependency) is in the
    /// report's `warnings`.
    Warnings,
    /// The run's report, as the store keeps it (the serve and worker doors read it back
    /// from there), has the `forecast` of its plan and the `actual` of what it took.
    ForecastRecorded,
}

/// Why a cell does not apply, or `None` when it does.
pub(crate) fn not_applicable(door: Door, promise: Promise) -> Option<&'static str> {
    match (door, promise) {
        (Door::Exec, Promise::HierarchicalTree) => Some(
            "`plan exec` runs a given plan as written: the goal tree is made by hierarchical \
             planning (decomposition), and exec makes no planning call",
        ),
        (Door::Exec, Promise::AutoRoute) => Some(
            "`plan exec` runs a given plan and never routes it: auto runs as dag there and the \
             report says so (cmd/run.rs `exec`)",
        ),
        (Door::Exec, Promise::Warnings) => Some(
            "a plan file is validated, never repaired: an invalid one is refused with exit 2 \
             (DESIGN: an invalid plan file is a usage error), so no change to a model's plan \
             can be warned about",
        ),
        (Door::Rerun, Promise::HierarchicalTree) => Some(
            "`plan rerun` runs the parent's plan, as written: the goal tree is made by \
             hierarchical planning (decomposition), and a re-run makes no planning call",
        ),
        (Door::Rerun, Promise::AutoRoute) => Some(
            "`plan rerun` runs the parent's plan and never routes it: the parent here is a \
             `plan exec` run, which runs auto as dag",
        ),
        (Door::Rerun, Promise::Warnings) => Some(
            "`plan rerun` runs a plan that was recorded (or a plan file, validated and never \
             repaired): no change to a model's plan can be warned about",
        ),
        _ => None,
    }
}

/// A chain of three steps: `b` runs only after `a`.
const CHAIN: &str = r#"{"goal": "Count to three", "steps": [
    {"id": "a", "description": "Say one", "dependencies": []},
    {"id": "b", "description": "Say two", "dependencies": ["a"]},
    {"id": "c", "description": "Say three", "dependencies": ["b"]}]}"#;

/// A count and a check of it.
const VERIFIED: &str = r#"{"goal": "Count the items", "steps": [
    {"id": "count", "description": "Count the items", "dependencies": []},
    {"id": "check", "description": "Check the count is 25", "dependencies": ["count"],
     "kind": "verify"}]}"#;

/// `b` has a fallback.
const WITH_FALLBACK: &str = r#"{"goal": "Compare two things", "steps": [
    {"id": "a", "description": "Describe the first thing", "dependencies": []},
    {"id": "b", "description": "Describe the second thing", "dependencies": [],
     "fallback": {"description": "Recall the second thing from memory"}},
    {"id": "c", "description": "Compare them", "dependencies": ["a", "b"]}]}"#;

/// `b` depends on a step that does not exist (repaired: the dependency is dropped).
const GHOST: &str = r#"{"goal": "Compare two things", "steps": [
    {"id": "a", "description": "Describe the first thing", "dependencies": []},
    {"id": "b", "description": "Describe the second thing", "dependencies": ["ghost"]},
    {"id": "c", "description": "Compare them", "dependencies": ["a", "b"]}]}"#;

const REPLAN: &str = r#"{"goal": "Compare two things", "steps": [
    {"id": "b2", "description": "Describe the second thing from memory", "dependencies": []},
    {"id": "c2", "description": "Compare them", "dependencies": ["a", "b2"]}]}"#;

const REPLAN_PROMPT: &str = "Plan again from the current state";

fn no_script(_: &FakeOpenAi) {}

fn scenario(plan: &str) -> Scenario {
    Scenario {
        plan: plan.to_owned(),
        strategy: Some("dag"),
        budget_tokens: None,
        script: no_script,
        hold: "a",
        trace: false,
    }
}

/// Everything a run says about why it stopped: its failure, its steps' errors and what
/// the door printed.
fn why(o: &Outcome) -> String {
    let mut text = o.report["failure"].as_str().unwrap_or_default().to_owned();
    for s in o.report["steps"].as_array().into_iter().flatten() {
        if let Some(e) = s["error"].as_str() {
            text.push('\n');
            text.push_str(e);
        }
    }
    text.push('\n');
    text.push_str(&o.said);
    text
}

impl Promise {
    pub fn name(self) -> &'static str {
        match self {
            Promise::VerifyGate => "verify gate",
            Promise::Fallback => "fallback",
            Promise::AdaptiveReplan => "adaptive replan",
            Promise::Budget => "budget",
            Promise::RetryBound => "retry bound",
            Promise::HierarchicalTree => "hierarchical",
            Promise::AutoRoute => "auto route",
            Promise::TraceSpans => "trace spans",
            Promise::Warnings => "warnings",
            Promise::ForecastRecorded => "forecast recorded",
        }
    }

    /// The scenario that puts this promise to the test.
    pub fn scenario(self) -> Scenario {
        match self {
            Promise::VerifyGate => Scenario {
                script: |s| {
                    s.on_first(
                        "Check to make (step `check`)",
                        FakeReply::text("FAIL: the count is 24, the list has 25 items"),
                    );
                },
                hold: "count",
                ..scenario(VERIFIED)
            },
            Promise::Fallback => Scenario {
                script: |s| {
                    // Only the step's own body fails (400 is not retried); its fallback
                    // answers.
                    s.on_first(
                        "Your step (`b`):\nDescribe the second thing\n",
                        FakeReply::error(400, "fake failure"),
                    );
                    s.on_first(
                        "Recall the second thing from memory",
                        FakeReply::text("FALLBACK OUTPUT of b"),
                    );
                },
                ..scenario(WITH_FALLBACK)
            },
            Promise::AdaptiveReplan => Scenario {
                strategy: Some("adaptive"),
                script: |s| {
                    s.on_first(&step_prompt("b"), FakeReply::error(400, "fake failure"));
                    s.on_first(REPLAN_PROMPT, FakeReply::text(REPLAN));
                },
                ..scenario(DIAMOND)
            },
            Promise::Budget => Scenario {
                budget_tokens: Some(5),
                ..scenario(DIAMOND)
            },
            Promise::RetryBound => Scenario {
                script: |s| {
                    s.on_first(
                        &step_prompt("b"),
                        FakeReply::Error {
                            status: 500,
                            message: "the server had an error".to_owned(),
                            retry_after: Some(std::time::Duration::from_millis(10)),
                        },
                    );
                },
                ..scenario(CHAIN)
            },
            Promise::HierarchicalTree => Scenario {
                strategy: Some("hierarchical"),
                // The decomposer's leaves (support::agent_server) are the steps.
                hold: "gather",
                ..scenario(DIAMOND)
            },
            Promise::AutoRoute => Scenario {
                strategy: None,
                ..scenario(DIAMOND)
            },
            Promise::TraceSpans => Scenario {
                trace: true,
                ..scenario(DIAMOND)
            },
            Promise::Warnings => scenario(GHOST),
            Promise::ForecastRecorded => scenario(DIAMOND),
        }
    }

    /// Checks the outcome a door returned for [`scenario`](Self::scenario).
    pub fn check(self, o: &Outcome) {
        let r = &o.report;
        let cx = || format!("{} × {}\n{}", o.door.name(), self.name(), o.context());
        assert!(r.is_object(), "no report\n{}", cx());
        match self {
            Promise::VerifyGate => {
                assert_ne!(r["status"], "succeeded", "a FAIL verdict passed\n{}", cx());
                let check = o.step("check");
                assert!(
                    check.is_some_and(|c| c["status"] == "failed"),
                    "the check step did not fail\n{}",
                    cx()
                );
                assert!(
                    why(o).contains("the count is 24"),
                    "the verdict's reasons are not given\n{}",
                    cx()
                );
            }
            Promise::Fallback => {
                assert_eq!(r["status"], "succeeded", "{}", cx());
                let b = o.step("b").unwrap_or(&Value::Null);
                assert_eq!(b["status"], "completed", "{}", cx());
                assert_eq!(b["output"], "FALLBACK OUTPUT of b", "{}", cx());
                assert_eq!(
                    b["fallback"],
                    true,
                    "the report does not say b's output came from its fallback\n{}",
                    cx()
                );
                assert!(
                    o.requests.iter().any(|q| {
                        let t = q.text();
                        t.contains(&step_prompt("c")) && t.contains("FALLBACK OUTPUT of b")
                    }),
                    "c did not get the fallback's output\n{}",
                    cx()
                );
                if let Some(events) = &o.events {
                    assert!(
                        events
                            .iter()
                            .any(|e| e["event"] == "fallback_used" && e["step"] == "b"),
                        "no fallback_used event for b\n{}",
                        cx()
                    );
                }
            }
            Promise::AdaptiveReplan => {
                assert_eq!(r["status"], "succeeded", "{}", cx());
                assert!(r["replans"].as_u64() >= Some(1), "no replan\n{}", cx());
                let a = o.step("a").unwrap_or(&Value::Null);
                assert!(
                    a["status"] == "completed" && a["reused"] == true,
                    "a's finished output was not kept\n{}",
                    cx()
                );
                assert!(
                    o.step("b2").is_some(),
                    "the replan's step is missing\n{}",
                    cx()
                );
                // Nothing asked a again once the replan was asked for.
                let replanned = o
                    .requests
                    .iter()
                    .position(|q| q.text().contains(REPLAN_PROMPT))
                    .unwrap_or_else(|| panic!("no replanning call\n{}", cx()));
                assert!(
                    !o.requests[replanned..]
                        .iter()
                        .any(|q| q.text().contains(&step_prompt("a"))),
                    "a ran again after the replan\n{}",
                    cx()
                );
            }
            Promise::Budget => {
                assert_ne!(
                    r["status"],
                    "succeeded",
                    "a run over its budget succeeded\n{}",
                    cx()
                );
                assert!(
                    why(o).to_lowercase().contains("budget"),
                    "nothing names the budget\n{}",
                    cx()
                );
            }
            Promise::RetryBound => {
                let attempts = o.count(&step_prompt("b"));
                assert!(
                    (2..=4).contains(&attempts),
                    "step b got {attempts} HTTP attempts: a 500 is retried, at most 4 times a call\n{}",
                    cx()
                );
                assert_ne!(r["status"], "succeeded", "{}", cx());
            }
            Promise::HierarchicalTree => {
                assert_eq!(r["status"], "succeeded", "{}", cx());
                let children: Vec<&str> = r["tree"]["children"]
                    .as_array()
                    .map(|c| c.iter().filter_map(|c| c["id"].as_str()).collect())
                    .unwrap_or_default();
                assert_eq!(children, ["gather", "write"], "no goal tree\n{}", cx());
            }
            Promise::AutoRoute => {
                assert_eq!(r["status"], "succeeded", "{}", cx());
                assert_eq!(r["strategy"], "auto", "{}", cx());
                assert_eq!(r["route"], "planned", "no route\n{}", cx());
            }
            Promise::TraceSpans => {
                assert_eq!(r["status"], "succeeded", "{}", cx());
                let run = r["run_id"].as_str().unwrap_or_default();
                let op = |s: &opentelemetry_proto::tonic::trace::v1::Span| {
                    attr(s, "gen_ai.operation.name").unwrap_or_default()
                };
                let root = o
                    .spans
                    .iter()
                    .find(|s| {
                        op(s) == "invoke_workflow" && attr(s, "plan.run.id").as_deref() == Some(run)
                    })
                    .unwrap_or_else(|| {
                        panic!(
                            "no invoke_workflow span for the run ({} spans)\n{}",
                            o.spans.len(),
                            cx()
                        )
                    });
                let mut steps: Vec<String> = o
                    .spans
                    .iter()
                    .filter(|s| s.trace_id == root.trace_id && op(s) == "invoke_agent")
                    .filter_map(|s| attr(s, "plan.step.id"))
                    .collect();
                steps.sort();
                steps.dedup();
                assert_eq!(steps, ["a", "b", "c"], "step spans\n{}", cx());
                assert!(
                    o.spans
                        .iter()
                        .any(|s| s.trace_id == root.trace_id && op(s) == "chat"),
                    "no chat span in the run's trace\n{}",
                    cx()
                );
            }
            Promise::Warnings => {
                let warnings: Vec<&str> = r["warnings"]
                    .as_array()
                    .map(|w| w.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                assert!(
                    warnings.iter().any(|w| w.contains("ghost")),
                    "the repair of b's unknown dependency is not in the warnings\n{}",
                    cx()
                );
                assert_eq!(r["status"], "succeeded", "{}", cx());
            }
            Promise::ForecastRecorded => {
                assert_eq!(r["status"], "succeeded", "{}", cx());
                let forecast = &r["forecast"];
                assert!(
                    matches!(forecast["basis"].as_str(), Some("defaults" | "history")),
                    "no forecast of the plan\n{}",
                    cx()
                );
                let calls: Vec<u64> = forecast["calls"]
                    .as_array()
                    .map(|c| c.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default();
                assert!(
                    matches!(calls[..], [low, high] if low >= 3 && low <= high),
                    "the forecast's calls are not a range covering the 3 steps\n{}",
                    cx()
                );
                let actual = &r["actual"];
                assert_eq!(
                    actual["calls"],
                    r["usage"]["llm_calls"],
                    "no actual beside the forecast\n{}",
                    cx()
                );
                assert!(actual["wall_ms"].is_u64(), "{}", cx());
            }
        }
    }
}
