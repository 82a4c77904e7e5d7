//! The LLM step executor: prompts (snapshots), events, usage and error mapping.

use std::time::Duration;

use plan_core::{EventKind, Plan, Step, StepKind};
use plan_exec::context::{StepContext, cap_output};
use plan_exec::error::StepErrorKind;
use plan_exec::events::EventLog;
use plan_exec::executor::StepExecutor;
use plan_exec::llm::LlmStepExecutor;
use plan_exec::policy::{Backoff, RunOptions, StepPolicy};
use plan_exec::runner::Runner;
use plan_llm::{LlmError, Purpose, Reply, Request, ScriptedModel, Usage};

fn render(request: &Request) -> String {
    request
        .messages
        .iter()
        .map(|m| format!("[{:?}]\n{}", m.role, m.content))
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[test]
fn action_step_prompt() {
    let exec = LlmStepExecutor::new(ScriptedModel::new());
    let search = Step::new("search", "Find the most used Python web frameworks");
    let stats = Step::new("stats", "Collect download statistics");
    let step = Step::new("compare", "Compare them on speed, features, ecosystem")
        .depends_on(["search", "stats"])
        .with_expected_output("a markdown table");
    let (long, _) = cap_output(&"downloads ".repeat(20), 40);
    let ctx = StepContext::new("Research the top 3 Python web frameworks", step)
        .with_dependency(&search, "Django, Flask, FastAPI")
        .with_dependency(&stats, long);
    let request = exec.request(&ctx);
    // A reply that starts echoing the prompt's framing is cut there.
    assert!(request.stop.iter().any(|s| s == "\nYour step (`"));
    insta::assert_snapshot!(render(&request));
}

#[test]
fn verify_step_prompt_asks_for_a_verdict_on_what_it_checks() {
    let exec = LlmStepExecutor::new(ScriptedModel::new()).with_max_tokens(200);
    let compare = Step::new("compare", "Compare them");
    let step = Step::new("check", "Check the table covers all three")
        .depends_on(["compare"])
        .with_kind(StepKind::Verify);
    let ctx = StepContext::new("Research the top 3 Python web frameworks", step)
        .with_dependency(&compare, "| Django | Flask |");
    let request = exec.request(&ctx);
    assert_eq!(request.max_tokens, Some(200));
    assert_eq!(request.purpose, Some(Purpose::Verify));
    insta::assert_snapshot!(render(&request));
}

#[tokio::test]
async fn runs_a_plan_with_llm_call_events_and_usage() {
    let model = ScriptedModel::new().respond_with(|req: &Request| {
        let user = &req.messages.last().unwrap().content;
        let id = user.split('`').nth(1).unwrap_or("?").to_owned();
        Reply::text(format!("answer for {id}")).with_usage(Usage::new(100, 10))
    });
    let log = EventLog::new();
    let runner = Runner::parallel(LlmStepExecutor::new(model.clone())).with_event_sink(log.clone());
    let plan = Plan::new(
        "Explain rust ownership",
        vec![
            Step::new("a", "Define ownership"),
            Step::new("b", "Give an example").depends_on(["a"]),
        ],
    );
    let report = runner.run(plan).await.unwrap();
    assert!(report.is_success());
    assert_eq!(report.output("b"), Some("answer for b"));
    assert_eq!(report.usage.llm_calls, 2);
    assert_eq!(report.usage.prompt_tokens, 200);
    assert_eq!(report.usage.completion_tokens, 20);
    let requests = model.requests();
    assert!(requests[1].messages[1].content.contains("answer for a"));
    assert!(requests.iter().all(|r| r.purpose == Some(Purpose::Step)));
    let calls: Vec<(String, u64)> = log
        .kinds()
        .into_iter()
        .filter_map(|k| match k {
            EventKind::LlmCall {
                purpose,
                step,
                prompt_tokens,
                ..
            } => Some((format!("{purpose}:{}", step.unwrap()), prompt_tokens)),
            _ => None,
        })
        .collect();
    assert_eq!(
        calls,
        [("step:a".to_owned(), 100), ("step:b".to_owned(), 100)]
    );
}

#[tokio::test]
async fn model_errors_are_retried_by_the_provider_layer_only() {
    let server_error = || {
        Reply::error(LlmError::Server {
            provider: "scripted".into(),
            status: Some(503),
            message: "overloaded".into(),
            retry_after: None,
        })
    };
    let options =
        RunOptions::default().with_policy(StepPolicy::default().with_backoff(Backoff::none()));
    // A provider without a retry layer: the step does not retry the model's error itself
    // (one retry layer), so it fails after one request.
    let model = ScriptedModel::new()
        .reply(server_error())
        .reply(Reply::text("second time lucky"));
    let runner =
        Runner::parallel(LlmStepExecutor::new(model.clone())).with_options(options.clone());
    let report = runner
        .run(Plan::new("g", vec![Step::new("a", "do a")]))
        .await
        .unwrap();
    assert_eq!(
        report.step("a").unwrap().status,
        plan_core::StepStatus::Failed
    );
    assert_eq!(report.step("a").unwrap().attempts, 1);
    assert_eq!(model.requests().len(), 1);
    // With the provider's retry layer, the call is retried there, once per step attempt.
    let model = ScriptedModel::new()
        .reply(server_error())
        .reply(Reply::text("second time lucky"));
    let retried = plan_llm::ProviderExt::with_retry(
        model.clone(),
        plan_llm::RetryPolicy::default()
            .with_initial_delay(Duration::from_millis(1))
            .with_jitter(false),
    );
    let runner = Runner::parallel(LlmStepExecutor::new(retried)).with_options(options);
    let report = runner
        .run(Plan::new("g", vec![Step::new("a", "do a")]))
        .await
        .unwrap();
    assert_eq!(report.output("a"), Some("second time lucky"));
    assert_eq!(report.step("a").unwrap().attempts, 1);
    assert_eq!(model.requests().len(), 2);

    let bad = ScriptedModel::new().reply(Reply::error(LlmError::BadRequest {
        provider: "scripted".into(),
        status: 400,
        message: "malformed".into(),
    }));
    let exec = LlmStepExecutor::new(bad);
    let err = exec
        .execute(&StepContext::new("g", Step::new("a", "do a")))
        .await
        .unwrap_err();
    assert_eq!(err.kind, StepErrorKind::Fatal);
    assert!(err.message.contains("malformed"));
}

#[tokio::test]
async fn cancelling_a_step_stops_the_model_call() {
    let model = ScriptedModel::new()
        .with_latency(Duration::from_secs(3600))
        .otherwise(Reply::text("late"));
    let exec = LlmStepExecutor::new(model);
    let ctx = StepContext::new("g", Step::new("a", "do a"));
    let token = ctx.cancel_token().clone();
    let handle = tokio::spawn(async move { exec.execute(&ctx).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    token.cancel();
    let err = handle.await.unwrap().unwrap_err();
    assert!(err.is_cancelled());
}
