//! The code step executor end to end: scripted model, real bubblewrap sandbox.
#![cfg(target_os = "linux")]

// The sandbox suite's helpers (bubblewrap or a visible skip), shared with plan-sandbox.
#[path = "../../plan-sandbox/tests/sandbox_support/mod.rs"]
mod sandbox_support;

use std::sync::Arc;

use plan_core::{CodeLang, EventKind, Step, StepKind};
use plan_exec::code_step::CodeStepExecutor;
use plan_exec::context::StepContext;
use plan_exec::events::EventLog;
use plan_exec::executor::StepExecutor;
use plan_llm::{Reply, ScriptedModel};
use plan_sandbox::Sandbox;
use sandbox_support::{bwrap, turn};

async fn sandbox() -> Option<Arc<dyn Sandbox>> {
    bwrap().await.map(|s| Arc::new(s) as Arc<dyn Sandbox>)
}

/// plan-llm's scripted model, replying with these texts in order.
fn scripted<'a>(replies: impl IntoIterator<Item = &'a str>) -> ScriptedModel {
    ScriptedModel::from_replies(replies.into_iter().map(Reply::text))
}

/// The user message of the model's `i`-th request.
fn prompt(model: &ScriptedModel, i: usize) -> String {
    model.requests()[i].messages.last().unwrap().content.clone()
}

fn code_step(id: &str, description: &str) -> Step {
    let mut step = Step::new(id, description);
    step.kind = StepKind::Code;
    step
}

#[tokio::test]
async fn a_failing_program_is_fed_back_and_the_fix_wins() {
    let Some(sandbox) = sandbox().await else {
        return;
    };
    let model = Arc::new(scripted([
        "```python\ntotal = sum(range(10)) / 0\nprint(total)\n```",
        "Fixed:\n```python\nprint(sum(range(10)))\n```",
    ]));
    let exec = CodeStepExecutor::new(model.clone(), sandbox);
    let log = Arc::new(EventLog::new());
    let step = code_step("sum", "Add the numbers 0 to 9 (keep *this* text verbatim)");
    let ctx = StepContext::new("arithmetic", step).with_event_sink(log.clone());
    let _turn = turn().await;
    let out = exec.execute(&ctx).await.unwrap();
    assert_eq!(out, "45\n");
    assert_eq!(model.requests().len(), 2);
    assert!(
        model
            .requests()
            .iter()
            .all(|r| r.purpose == Some(plan_llm::Purpose::Code))
    );
    let first = prompt(&model, 0);
    assert!(
        first.contains("Add the numbers 0 to 9 (keep *this* text verbatim)"),
        "{first}"
    );
    assert!(!first.contains("previous program"));
    let second = prompt(&model, 1);
    assert!(second.contains("Your previous program failed"), "{second}");
    assert!(second.contains("total = sum(range(10)) / 0"), "{second}");
    assert!(
        second.contains("ZeroDivisionError: division by zero"),
        "{second}"
    );
    assert!(second.contains("exit code 1"), "{second}");
    let calls = log
        .kinds()
        .into_iter()
        .filter(|k| matches!(k, EventKind::LlmCall { purpose, .. } if purpose == "code"))
        .count();
    assert_eq!(calls, 2);
}

#[tokio::test]
async fn dependency_outputs_are_files_and_declared_files_are_output() {
    let Some(sandbox) = sandbox().await else {
        return;
    };
    let model = Arc::new(scripted([
        "```python\n# plan-output: table.md\nrows = open('deps/fetch.txt').read().split()\n\
         open('table.md', 'w').write('| n |\\n' + ''.join(f'| {r} |\\n' for r in rows))\nprint(len(rows), 'rows')\n```",
    ]));
    let exec = CodeStepExecutor::new(model.clone(), sandbox);
    let fetch = Step::new("fetch", "Fetch the numbers");
    let ctx = StepContext::new("tabulate", code_step("table", "Make a table"))
        .with_dependency(&fetch, "3 1 2");
    let _turn = turn().await;
    let out = exec.execute(&ctx).await.unwrap();
    assert_eq!(
        out,
        "3 rows\n--- file table.md ---\n| n |\n| 3 |\n| 1 |\n| 2 |\n"
    );
    let prompt = prompt(&model, 0);
    assert!(
        prompt.contains("--- step `fetch` (file deps/fetch.txt): Fetch the numbers ---\n3 1 2"),
        "{prompt}"
    );
}

#[tokio::test]
async fn a_failed_check_is_fed_back() {
    let Some(sandbox) = sandbox().await else {
        return;
    };
    let model = Arc::new(scripted([
        "```bash\necho 'no number here'\n```",
        "```bash\necho 42\n```",
    ]));
    let exec = CodeStepExecutor::new(model.clone(), sandbox)
        .with_lang(CodeLang::Bash)
        .with_check(|out| {
            out.stdout
                .trim()
                .parse::<i64>()
                .map(|_| ())
                .map_err(|_| format!("stdout `{}` is not a number", out.stdout.trim()))
        });
    let ctx = StepContext::new("g", code_step("n", "Print a number"));
    let _turn = turn().await;
    assert_eq!(exec.execute(&ctx).await.unwrap(), "42\n");
    let second = prompt(&model, 1);
    assert!(
        second.contains("the check failed: stdout `no number here` is not a number"),
        "{second}"
    );
    assert!(prompt(&model, 0).contains("Write it in bash."));
}

#[tokio::test]
async fn attempts_run_out_with_the_last_error() {
    let Some(sandbox) = sandbox().await else {
        return;
    };
    let model = Arc::new(scripted([
        "```python\nraise SystemExit('first failure')\n```",
        "```python\nimport sys\nsys.stderr.write('second failure\\n')\nsys.exit(4)\n```",
    ]));
    let exec = CodeStepExecutor::new(model.clone(), sandbox).with_max_attempts(2);
    let ctx = StepContext::new("g", code_step("x", "Do x"));
    let _turn = turn().await;
    let err = exec.execute(&ctx).await.unwrap_err();
    assert!(!err.is_retryable());
    assert!(
        err.message
            .contains("no working program after 2 attempt(s)"),
        "{err}"
    );
    assert!(err.message.contains("exit code 4"), "{err}");
    assert!(err.message.contains("second failure"), "{err}");
}

#[tokio::test]
async fn a_step_with_its_own_code_runs_without_a_model() {
    let Some(sandbox) = sandbox().await else {
        return;
    };
    let model = Arc::new(scripted(Vec::<&str>::new()));
    let exec = CodeStepExecutor::new(model.clone(), sandbox);
    let step = code_step("check", "Check the sum").with_code(
        CodeLang::Bash,
        "test \"$(cat deps/sum.txt)\" = 45 && echo PASS",
    );
    let sum = Step::new("sum", "sum");
    let ctx = StepContext::new("g", step.clone()).with_dependency(&sum, "45");
    let _turn = turn().await;
    assert_eq!(exec.execute(&ctx).await.unwrap(), "PASS\n");
    let ctx = StepContext::new("g", step).with_dependency(&sum, "44");
    let err = exec.execute(&ctx).await.unwrap_err();
    assert!(!err.is_retryable());
    assert!(
        err.message
            .contains("the code of step `check` failed: exit code 1"),
        "{err}"
    );
    assert!(model.requests().is_empty(), "the model was called");
}
