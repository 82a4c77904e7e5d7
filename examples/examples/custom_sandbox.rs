//! A sandbox of your own: implement `plan_sandbox::Sandbox`. This one wraps a real backend
//! (bubblewrap when it works here, else a plain process) with a policy and an audit log:
//! only the languages on its allow-list run, every request is logged, and a refused
//! program gets a `RunOutput` of its own (exit code 126, the reason on stderr), built with
//! the public constructors — as a hosted backend would build the outputs it receives.
//!
//! Code steps then run through it: one Python step that is allowed, one Bash step that is
//! not.
//!
//!     cargo run -p plan-examples --example custom_sandbox -- [auto|bwrap|process]

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use plan_core::{CodeLang, Plan, Step, StepKind, StepStatus};
use plan_exec::code_step::CodeStepExecutor;
use plan_exec::runner::Runner;
use plan_llm::{Reply, ScriptedModel};
use plan_sandbox::{Isolation, Limits, Program, RunOutput, Sandbox, SandboxChoice, SandboxError};

/// One line of the audit log.
#[derive(Debug)]
struct Audit {
    lang: CodeLang,
    bytes: usize,
    allowed: bool,
    exit_code: Option<i32>,
}

/// Runs allowed languages on `inner`, refuses the rest, and logs every request.
struct AuditedSandbox {
    inner: Arc<dyn Sandbox>,
    allow: Vec<CodeLang>,
    log: Mutex<Vec<Audit>>,
}

impl AuditedSandbox {
    fn log(&self, entry: Audit) {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry);
    }
}

#[async_trait]
impl Sandbox for AuditedSandbox {
    fn isolation(&self) -> Isolation {
        self.inner.isolation()
    }

    async fn run(&self, program: &Program, limits: &Limits) -> Result<RunOutput, SandboxError> {
        let started = Instant::now();
        if !self.allow.contains(&program.lang) {
            self.log(Audit {
                lang: program.lang,
                bytes: program.source.len(),
                allowed: false,
                exit_code: None,
            });
            return Ok(RunOutput::new(126, self.isolation())
                .with_stderr(format!(
                    "{} programs are not allowed by this sandbox's policy; write the step in \
                     one of: {}",
                    program.lang,
                    self.allow
                        .iter()
                        .map(|l| l.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .with_duration(started.elapsed()));
        }
        let out = self.inner.run(program, limits).await?;
        self.log(Audit {
            lang: program.lang,
            bytes: program.source.len(),
            allowed: true,
            exit_code: Some(out.exit_code),
        });
        Ok(out)
    }

    async fn ready(&self) -> Result<(), SandboxError> {
        self.inner.ready().await
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let choice: SandboxChoice = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "auto".to_owned())
        .parse()?;
    let sandbox = Arc::new(AuditedSandbox {
        inner: choice.open().await?,
        allow: vec![CodeLang::Python],
        log: Mutex::new(Vec::new()),
    });

    // Both steps carry their own code, so no model writes any; a code step without code
    // would ask the model (scripted here) to write it.
    let model = ScriptedModel::new().otherwise(Reply::text("(unused)"));
    let code = CodeStepExecutor::new(model, sandbox.clone()).with_max_attempts(1);
    let mut sum = Step::new("sum", "Add the numbers 1 to 10")
        .with_code(CodeLang::Python, "print(sum(range(1, 11)))");
    sum.kind = StepKind::Code;
    let mut shell = Step::new("disk", "Show the disk usage").with_code(CodeLang::Bash, "df -h");
    shell.kind = StepKind::Code;
    let report = Runner::parallel(code)
        .run(Plan::new("Compute things", vec![sum, shell]))
        .await?;

    for step in &report.steps {
        println!(
            "{:<5} {:<9} {}",
            step.id.as_str(),
            step.status.as_str(),
            step.output
                .as_deref()
                .or(step.error.as_deref())
                .unwrap_or("-")
                .lines()
                .next()
                .unwrap_or_default()
        );
    }
    let log = sandbox.log.lock().unwrap_or_else(|e| e.into_inner());
    println!("\naudit log ({} isolation):", sandbox.isolation());
    for entry in log.iter() {
        println!("  {entry:?}");
    }

    let sum = report
        .step("sum")
        .ok_or_else(|| anyhow::anyhow!("no step `sum`"))?;
    anyhow::ensure!(
        sum.status == StepStatus::Completed
            && sum.output.as_deref().is_some_and(|o| o.contains("55")),
        "the Python step should print 55: {sum:?}"
    );
    let disk = report
        .step("disk")
        .ok_or_else(|| anyhow::anyhow!("no step `disk`"))?;
    anyhow::ensure!(
        disk.status == StepStatus::Failed
            && disk
                .error
                .as_deref()
                .is_some_and(|e| e.contains("not allowed")),
        "the Bash step should be refused by the policy: {disk:?}"
    );
    anyhow::ensure!(
        log.len() == 2,
        "expected 2 audit entries, found {}",
        log.len()
    );
    anyhow::ensure!(
        log.iter().any(|a| a.allowed && a.exit_code == Some(0))
            && log
                .iter()
                .any(|a| !a.allowed && a.lang == CodeLang::Bash && a.bytes > 0),
        "the audit log misses a request"
    );
    Ok(())
}
