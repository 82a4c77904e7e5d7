//! Issue 23, "One run, every door", at plan-exec's depth: a verify step's verdict is read
//! by the tool-loop executor as by the plain model executor, and the step timeout does not
//! multiply the provider's retry attempts by the step's retries.

use std::sync::Arc;
use std::time::Duration;

use plan_core::{EventKind, Plan, RunStatus, Step, StepBody, StepKind, StepStatus};
use plan_exec::events::EventLog;
use plan_exec::executor::StepExecutor;
use plan_exec::llm::LlmStepExecutor;
use plan_exec::policy::{Backoff, RunOptions, StepPolicy};
use plan_exec::report::RunReport;
use plan_exec::runner::Runner;
use plan_llm::testing::FakeOpenAi;
use plan_llm::{
    Capabilities, Flavour, OpenAi, Provider, ProviderExt as _, Reply, Request, RetryPolicy, Role,
    ScriptedModel, ToolSpec,
};
use plan_tools::{DynTool, ToolContext, ToolError, ToolOutput, ToolSet, ToolStepExecutor};
use serde_json::json;

// --- verify verdicts under the tool loop ---

/// A tool that counts the rows of a markdown table.
struct CountRows;

#[async_trait::async_trait]
impl DynTool for CountRows {
    fn spec(&self) -> ToolSpec {
        ToolSpec::new(
            "count_rows",
            "Counts the rows of a markdown table",
            json!({"type": "object", "properties": {"table": {"type": "string"}}, "required": ["table"]}),
        )
    }

    async fn call_json(
        &self,
        args: serde_json::Value,
        _ctx: &ToolContext,
    ) -> Result<ToolOutput, ToolError> {
        let rows = args["table"].as_str().unwrap_or_default().lines().count();
        Ok(ToolOutput::Text(rows.to_string()))
    }
}

const TABLE: &str = "| Django |\n| Flask |";

fn table_plan(check: Step) -> Plan {
    Plan::new(
        "Compare the top 3 Python web frameworks in a table",
        vec![Step::new("table", "Make the comparison table"), check],
    )
}

fn check_step() -> Step {
    Step::new("check", "Check the table has three rows")
        .depends_on(["table"])
        .with_kind(StepKind::Verify)
}

fn system_of(r: &Request) -> String {
    r.messages
        .iter()
        .find(|m| m.role == Role::System)
        .map(|m| m.content.clone())
        .unwrap_or_default()
}

fn is_check(r: &Request) -> bool {
    r.messages
        .iter()
        .any(|m| m.role == Role::User && m.content.contains("Check to make (step `check`)"))
}

fn is_fallback_check(r: &Request) -> bool {
    r.messages
        .iter()
        .any(|m| m.role == Role::User && m.content.contains("by hand"))
}

/// A model that writes the table, and checks it by calling `count_rows` and then giving
/// `verdict` (a fallback check passes).
fn checking_model(verdict: &'static str, caps: Capabilities) -> ScriptedModel {
    ScriptedModel::new()
        .with_capabilities(caps)
        .respond_with(move |r: &Request| {
            if is_fallback_check(r) {
                return Reply::text("PASS: two rows, and two frameworks were asked for by hand");
            }
            if !is_check(r) {
                return Reply::text(TABLE);
            }
            let counted = r
                .messages
                .iter()
                .any(|m| m.role == Role::Tool || m.content.contains("Result of tool"));
            match (counted, caps.tools) {
                (true, _) => Reply::text(verdict),
                (false, true) => Reply::tool_call("count_rows", json!({"table": TABLE})),
                (false, false) => {
                    Reply::text(r#"{"tool": "count_rows", "arguments": {"table": "a\nb"}}"#)
                }
            }
        })
}

fn tool_executor(model: &ScriptedModel) -> ToolStepExecutor {
    ToolStepExecutor::new(
        Arc::new(model.clone()),
        ToolSet::new().with_dyn(Arc::new(CountRows)),
    )
}

async fn run(executor: impl StepExecutor + 'static, plan: Plan) -> RunReport {
    Runner::sequential(executor)
        .with_options(
            RunOptions::default().with_policy(StepPolicy::default().with_backoff(Backoff::none())),
        )
        .run(plan)
        .await
        .unwrap()
}

fn native() -> Capabilities {
    Capabilities::all()
}

fn json_actions() -> Capabilities {
    Capabilities::all().with_tools(false)
}

#[tokio::test]
async fn a_fail_verdict_after_tool_calls_fails_the_step_once() {
    for caps in [native(), json_actions()] {
        let verdict = if caps.tools {
            "FAIL: the table has 2 rows, not 3"
        } else {
            r#"{"answer": "FAIL: the table has 2 rows, not 3"}"#
        };
        let model = checking_model(verdict, caps);
        let report = run(tool_executor(&model), table_plan(check_step())).await;
        assert_eq!(report.status, RunStatus::Failed, "tools: {}", caps.tools);
        let check = report.step("check").unwrap();
        assert_eq!(check.status, StepStatus::Failed);
        assert_eq!(
            check.error.as_deref(),
            Some("verification failed: the table has 2 rows, not 3")
        );
        assert_eq!(check.attempts, 1, "a FAIL verdict is not asked again");
        // The check called its tool, then gave its verdict: two model calls, one attempt.
        assert_eq!(model.requests().iter().filter(|r| is_check(r)).count(), 2);
        assert_eq!(report.output("table"), Some(TABLE));
    }
}

#[tokio::test]
async fn a_pass_verdict_is_the_output_and_a_fail_runs_the_fallback() {
    let model = checking_model("PASS: three rows", native());
    let report = run(tool_executor(&model), table_plan(check_step())).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.output("check"), Some("PASS: three rows"));

    let model = checking_model("FAIL: two rows", native());
    let check = check_step().with_fallback(StepBody::new("Check the table by hand"));
    let report = run(tool_executor(&model), table_plan(check)).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.failure);
    let check = report.step("check").unwrap();
    assert!(check.fallback);
    assert_eq!(
        check.output.as_deref(),
        Some("PASS: two rows, and two frameworks were asked for by hand")
    );
}

#[tokio::test]
async fn a_reply_without_a_verdict_is_retried_then_fails() {
    let model = checking_model("The table looks fine to me.", native());
    let report = run(tool_executor(&model), table_plan(check_step())).await;
    let check = report.step("check").unwrap();
    assert_eq!(check.status, StepStatus::Failed);
    assert_eq!(
        check.attempts, 3,
        "retried twice: a verdict may come when asked again"
    );
    assert!(
        check.error.as_deref().unwrap().contains("got no verdict"),
        "{check:?}"
    );
}

#[tokio::test]
async fn an_agents_own_system_prompt_still_asks_a_check_for_its_verdict() {
    let model = checking_model("FAIL: two rows", native());
    let executor = tool_executor(&model).with_system_prompt("You are the QA agent.");
    let report = run(executor, table_plan(check_step())).await;
    assert_eq!(report.step("check").unwrap().status, StepStatus::Failed);
    let requests = model.requests();
    let check = requests.iter().find(|r| is_check(r)).unwrap();
    let system = system_of(check);
    assert!(system.starts_with("You are the QA agent."), "{system}");
    assert!(system.contains("verdict (PASS or FAIL) first"), "{system}");
    // Other steps keep the agent's prompt as it is.
    let table = requests.iter().find(|r| !is_check(r)).unwrap();
    assert_eq!(system_of(table), "You are the QA agent.");
}

// --- the step timeout and the provider's retry layer ---

/// The most requests the provider's retry layer makes for one model call.
const MAX_ATTEMPTS: usize = 2;
/// The provider's timeout of each attempt.
const CALL_TIMEOUT: Duration = Duration::from_millis(200);

/// A fake server that answers after a second, far slower than the provider's timeout.
async fn slow_server() -> FakeOpenAi {
    let server = FakeOpenAi::start().await;
    server.latency(Duration::from_secs(1));
    server
}

/// How the `plan` command calls a remote model: its own timeout per attempt, inside the
/// agent's retry layer.
fn provider(server: &FakeOpenAi) -> Arc<dyn Provider> {
    let model = OpenAi::new("fake-model", None)
        .with_base_url(server.base_url())
        .with_flavour(Flavour::compatible())
        .with_timeout(CALL_TIMEOUT)
        .with_retry(retry());
    Arc::new(model)
}

fn retry() -> RetryPolicy {
    RetryPolicy::default()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(10))
        .with_max_total_delay(Duration::from_millis(50))
        .with_jitter(false)
}

fn one_step() -> Plan {
    Plan::new("Say hello", vec![Step::new("hello", "Say hello")])
}

/// Runs `one_step` with `policy` (two step retries, no backoff), returning the report and
/// the events.
async fn run_slow(
    executor: impl StepExecutor + 'static,
    policy: StepPolicy,
) -> (RunReport, EventLog) {
    let log = EventLog::new();
    let report = Runner::sequential(executor)
        .with_options(
            RunOptions::default().with_policy(policy.with_retries(2).with_backoff(Backoff::none())),
        )
        .with_event_sink(log.clone())
        .run(one_step())
        .await
        .unwrap();
    (report, log)
}

fn retrying(log: &EventLog) -> Vec<bool> {
    log.kinds()
        .iter()
        .filter_map(|k| match k {
            EventKind::StepFailed { retrying, .. } => Some(*retrying),
            _ => None,
        })
        .collect()
}

/// Makes a step executor over the provider of a fake server.
type MakeExecutor = fn(&FakeOpenAi) -> Box<dyn StepExecutor>;

fn model_executor(server: &FakeOpenAi) -> Box<dyn StepExecutor> {
    Box::new(LlmStepExecutor::new(provider(server)))
}

fn tool_loop_executor(server: &FakeOpenAi) -> Box<dyn StepExecutor> {
    Box::new(ToolStepExecutor::new(
        provider(server),
        ToolSet::new().with_dyn(Arc::new(CountRows)),
    ))
}

/// A step timeout shorter than the retry layer's attempts (as the old fixed default was,
/// equal to the provider's timeout) cuts the model call mid-way; the step is not tried
/// again, so the call costs at most the retry layer's attempts, not that times the step's
/// three attempts. (Before the fix: at least one request per step attempt, three or more.)
#[tokio::test]
async fn a_step_timeout_that_cuts_a_model_call_does_not_call_again() {
    let short = StepPolicy::default().with_timeout(CALL_TIMEOUT + CALL_TIMEOUT / 2);
    let executors: [(&str, MakeExecutor); 2] =
        [("model", model_executor), ("tool loop", tool_loop_executor)];
    for (name, make) in executors {
        let server = slow_server().await;
        let (report, log) = run_slow(make(&server), short.clone()).await;
        let step = report.step("hello").unwrap();
        assert_eq!(step.status, StepStatus::Failed, "{name}");
        assert_eq!(step.attempts, 1, "{name}: {step:?}");
        // The step's timeout fires first (due at 300 ms, the retry layer's second attempt
        // at 410 ms at the earliest); only a machine stalled past both lets the provider
        // give up first, with the same bound.
        let error = step.error.as_deref().unwrap();
        assert!(
            (error.starts_with("timed out after 300 ms") && error.contains("not tried again"))
                || error == "timed out after 200ms",
            "{name}: {error}"
        );
        assert_eq!(retrying(&log), [false], "{name}");
        // At most the retry layer's attempts, however slow the machine (one step attempt).
        let requests = server.total_requests();
        assert!(
            requests <= MAX_ATTEMPTS,
            "{name}: {requests} requests for one model call; the retry layer allows {MAX_ATTEMPTS}"
        );
    }
}

/// With the step timeout derived from the provider's (its timeout × its attempts, plus
/// the waits and a margin), the retry layer makes all its attempts and gives up with the
/// model's error, which the step does not retry either.
#[tokio::test]
async fn a_step_timeout_derived_from_the_providers_lets_the_retry_layer_finish() {
    let server = slow_server().await;
    let derived = StepPolicy::default().with_model_call_timeout(CALL_TIMEOUT, &retry());
    let bound = StepPolicy::model_call_bound(CALL_TIMEOUT, &retry());
    assert!(derived.timeout.unwrap() > bound);
    let (report, log) = run_slow(LlmStepExecutor::new(provider(&server)), derived).await;
    let step = report.step("hello").unwrap();
    assert_eq!(step.status, StepStatus::Failed);
    assert_eq!(step.attempts, 1, "{step:?}");
    assert_eq!(retrying(&log), [false]);
    let requests = server.total_requests();
    assert!(
        requests <= MAX_ATTEMPTS,
        "{requests} requests for one model call; the retry layer allows {MAX_ATTEMPTS}"
    );
    // How it ended depends only on which timer fires first on a loaded machine: the
    // provider's timeout after its attempts (the usual case), or the step's.
    let error = step.error.as_deref().unwrap();
    assert!(
        error.contains("timed out after 200ms") || error.contains("not tried again"),
        "{error}"
    );
}

/// A timeout of work that is no model call (a tool, a program, an executor's own work) is
/// retried as before.
#[tokio::test(start_paused = true)]
async fn a_timeout_of_other_work_is_still_retried() {
    let executor =
        plan_exec::executor::executor_fn(|_ctx: plan_exec::context::StepContext| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok("late".to_owned())
        });
    let (report, log) = run_slow(
        executor,
        StepPolicy::default().with_timeout(Duration::from_secs(1)),
    )
    .await;
    let step = report.step("hello").unwrap();
    assert_eq!(step.attempts, 3);
    assert_eq!(retrying(&log), [true, true, false]);
    assert!(!step.error.as_deref().unwrap().contains("not tried again"));
}
