//! [`CodeStepExecutor`]: runs a step by having a model write a program, running it in a
//! [`Sandbox`], and feeding failures back.

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use plan_core::{CodeLang, EventKind, Step};
use plan_llm::{CallRecord, Message, Provider, Purpose, Request};

use crate::context::StepContext;
use crate::error::StepError;
use crate::executor::StepExecutor;
use plan_sandbox::{Limits, Program, RunOutput, Sandbox};
use tracing::Instrument;

/// The comment that declares an output file in a generated program.
pub const OUTPUT_MARKER: &str = "# plan-output:";

const SYSTEM: &str = "You write one complete program that carries out one step of a plan \
made to reach a goal. Reply with exactly one fenced code block (```python or ```bash) and \
nothing else. The program runs in a sandbox: no network, no packages beyond the standard \
library, an empty writable working directory, a time limit. Print the step's result to \
stdout. Outputs of earlier steps are in the files named below. To hand back a file, write \
it in the working directory and declare it with a line `# plan-output: NAME` in the program. \
Exit with a non-zero status if the step cannot be done.";

/// A check of a successful run; `Err` is fed back to the model like a failure.
pub type OutputCheck = Arc<dyn Fn(&RunOutput) -> Result<(), String> + Send + Sync>;

/// Runs `code` steps in a sandbox.
///
/// - A step that carries its own `code` (and `lang`, Python by default) runs as is,
///   without a model: a deterministic check in a plan file. A failure is fatal (rerunning
///   the same program will not help).
/// - Otherwise the model writes a program (the prompt, see [`request`](Self::request), has
///   the goal, the step's description verbatim, the dependency outputs, also written as
///   input files `deps/<id>.txt`, and, on a retry, the previous program and its error); it
///   runs in the sandbox; a non-zero exit, a hit limit or a failed check sends the error
///   back, up to [`with_max_attempts`](Self::with_max_attempts) programs in all.
///
/// The step's output is the program's stdout, followed by each declared file (lines
/// `# plan-output: NAME` in the program) under a `--- file NAME ---` header. Each model
/// call emits an `llm_call` event.
pub struct CodeStepExecutor<P> {
    provider: P,
    sandbox: Arc<dyn Sandbox>,
    limits: Limits,
    max_attempts: u32,
    lang: CodeLang,
    check: Option<OutputCheck>,
    max_tokens: Option<u32>,
}

impl<P> fmt::Debug for CodeStepExecutor<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodeStepExecutor")
            .field("isolation", &self.sandbox.isolation())
            .field("limits", &self.limits)
            .field("max_attempts", &self.max_attempts)
            .field("lang", &self.lang)
            .finish_non_exhaustive()
    }
}

impl<P: Provider> CodeStepExecutor<P> {
    /// An executor writing programs with `provider` and running them in `sandbox` with
    /// the default [`Limits`], three attempts, Python.
    pub fn new(provider: P, sandbox: Arc<dyn Sandbox>) -> Self {
        Self {
            provider,
            sandbox,
            limits: Limits::default(),
            max_attempts: 3,
            lang: CodeLang::Python,
            check: None,
            max_tokens: None,
        }
    }

    /// Sets the limits of each run.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets how many programs the model may write for one step (at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sets the language the model is asked to write.
    pub fn with_lang(mut self, lang: CodeLang) -> Self {
        self.lang = lang;
        self
    }

    /// Adds a check of each successful run; its error is fed back to the model.
    pub fn with_check(
        mut self,
        check: impl Fn(&RunOutput) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.check = Some(Arc::new(check));
        self
    }

    /// Caps the tokens of each reply.
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// The request for a step; `previous` is the last program and why it failed.
    pub fn request(&self, ctx: &StepContext, previous: Option<(&str, &str)>) -> Request {
        let step = ctx.step();
        let mut user = String::new();
        let _ = writeln!(user, "Goal: {}\n", ctx.goal());
        let _ = writeln!(user, "Your step (`{}`):", step.id);
        let _ = writeln!(user, "{}", step.description);
        if let Some(expected) = &step.expected_output {
            let _ = writeln!(user, "\nExpected output: {expected}");
        }
        let _ = writeln!(user, "\nWrite it in {}.", lang_name(self.lang));
        if !ctx.dependencies().is_empty() {
            let _ = writeln!(user, "\nOutputs of the steps this one builds on:");
            for dep in ctx.dependencies() {
                let _ = writeln!(
                    user,
                    "\n--- step `{}` (file deps/{}.txt): {} ---\n{}",
                    dep.id, dep.id, dep.description, dep.output
                );
            }
            let _ = writeln!(user, "--- end of outputs ---");
        }
        if let Some((code, error)) = previous {
            let _ = writeln!(
                user,
                "\nYour previous program failed.\n\nProgram:\n```\n{code}\n```\n\nError:\n```\n{error}\n```\n\nWrite a corrected program."
            );
        }
        let mut request = Request::new(vec![Message::system(SYSTEM), Message::user(user)])
            .with_purpose(Purpose::Code);
        request.max_tokens = self.max_tokens;
        request.temperature = Some(0.0);
        request
    }

    /// Runs `program` in the sandbox and emits a `tool_call` event (tool `python (bwrap)`
    /// and the like) that says whether it succeeded.
    async fn run(&self, ctx: &StepContext, program: &Program) -> Result<RunOutput, StepError> {
        let span = crate::trace::tool_span(program.lang.as_str());
        let out = tokio::select! {
            r = self.sandboxed(program).instrument(span.clone()) => {
                r.map_err(|e| {
                    crate::trace::record_error(&span, "sandbox_unavailable");
                    StepError::fatal(format!("step `{}`: {e}", ctx.step().id))
                })?
            }
            () = ctx.cancel_token().cancelled() => return Err(StepError::cancelled()),
        };
        if !out.success() {
            crate::trace::record_error(&span, "exit_code");
        }
        ctx.emit(EventKind::ToolCall {
            step: ctx.step().id.clone(),
            tool: format!("{} ({})", program.lang.as_str(), out.isolation.as_str()),
            ok: out.success(),
            duration_ms: u64::try_from(out.duration.as_millis()).unwrap_or(u64::MAX),
        });
        Ok(out)
    }

    /// Runs `program` in the sandbox, or serves its recorded run when the run is replayed
    /// (and records it when the run records). The error is the sandbox's, in words.
    async fn sandboxed(&self, program: &Program) -> Result<RunOutput, String> {
        use crate::replay::{Call, ProgramKey, RecordedOutput, call};
        let recorder = match call::<_, RecordedOutput, String>(
            plan_core::CallKind::Program,
            program.lang.as_str(),
            &ProgramKey::of(program),
            |d| format!("replay: {d}"),
        ) {
            Call::Served(result) => return result.map(crate::replay::recorded_run_output),
            Call::Make(recorder) => recorder,
        };
        let result = self
            .sandbox
            .run(program, &self.limits)
            .await
            .map_err(|e| e.to_string());
        recorder.done(&result.as_ref().map(crate::replay::recorded_output));
        result
    }

    async fn run_given(&self, ctx: &StepContext, code: &str) -> Result<String, StepError> {
        let step = ctx.step();
        let program = with_deps(
            Program::new(step.lang.unwrap_or(CodeLang::Python), code),
            ctx,
        );
        let out = self.run(ctx, &program).await?;
        match failure(&out, self.check.as_ref()) {
            None => Ok(render(&out)),
            Some(why) => Err(StepError::fatal(format!(
                "the code of step `{}` failed: {why}",
                step.id
            ))),
        }
    }
}

fn lang_name(lang: CodeLang) -> &'static str {
    match lang {
        CodeLang::Bash => "bash",
        _ => "Python 3",
    }
}

fn with_deps(mut program: Program, ctx: &StepContext) -> Program {
    for dep in ctx.dependencies() {
        let name = format!("deps/{}.txt", dep.id);
        if plan_sandbox::check_relative(&name).is_ok() {
            program = program.with_file(name, dep.output.clone());
        }
    }
    program
}

/// Why a run counts as failed, with the program's own error text, or `None`.
fn failure(out: &RunOutput, check: Option<&OutputCheck>) -> Option<String> {
    let tail = |s: &str| {
        let s = s.trim_end();
        let start = s.len().saturating_sub(4000);
        let start = (start..=s.len())
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(s.len());
        s[start..].to_owned()
    };
    if let Some(limit) = out.limit_hit {
        return Some(format!(
            "it hit the {limit} limit (exit code {}); stderr:\n{}",
            out.exit_code,
            tail(&out.stderr)
        ));
    }
    if out.exit_code != 0 {
        return Some(format!(
            "exit code {}; stderr:\n{}",
            out.exit_code,
            tail(&out.stderr)
        ));
    }
    if let Some(missing) = out.missing_files.first() {
        return Some(format!(
            "the declared output file `{}` was not written ({})",
            missing.path, missing.reason
        ));
    }
    if let Some(Err(why)) = check.map(|check| check(out)) {
        return Some(format!("the check failed: {why}"));
    }
    None
}

/// The step output: stdout, then each declared file.
fn render(out: &RunOutput) -> String {
    let mut text = out.stdout.clone();
    if out.stdout_truncated {
        text.push_str("\n[output truncated]\n");
    }
    for file in &out.files {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        let _ = writeln!(text, "--- file {} ---", file.path);
        text.push_str(&String::from_utf8_lossy(&file.contents));
        if file.truncated {
            text.push_str("\n[file truncated]");
        }
    }
    text
}

/// The program in a model's reply: the first fenced block (its tag picks the language),
/// else the whole reply.
pub fn extract_program(reply: &str, default: CodeLang) -> (CodeLang, String) {
    let Some(open) = reply.find("```") else {
        return (default, reply.trim().to_owned());
    };
    let after = &reply[open + 3..];
    let (tag, body) = match after.find('\n') {
        Some(nl) => (after[..nl].trim(), &after[nl + 1..]),
        None => ("", after),
    };
    let body = match body.find("```") {
        Some(close) => &body[..close],
        None => body,
    };
    let lang = match tag.to_ascii_lowercase().as_str() {
        "bash" | "sh" | "shell" => CodeLang::Bash,
        "python" | "python3" | "py" => CodeLang::Python,
        _ => default,
    };
    (lang, body.trim_end().to_owned() + "\n")
}

/// The files a program declares with `# plan-output: NAME` lines.
pub fn declared_outputs(code: &str) -> Vec<String> {
    code.lines()
        .filter_map(|l| l.trim().strip_prefix(OUTPUT_MARKER))
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .collect()
}

#[async_trait]
impl<P: Provider> StepExecutor for CodeStepExecutor<P> {
    async fn execute(&self, ctx: &StepContext) -> Result<String, StepError> {
        let step: &Step = ctx.step();
        if let Some(code) = &step.code {
            return self.run_given(ctx, code).await;
        }
        // No program is written for a sandbox that cannot run it.
        self.sandbox
            .ready()
            .await
            .map_err(|e| StepError::fatal(format!("step `{}`: {e}", step.id)))?;
        let mut previous: Option<(String, String)> = None;
        let mut last_error = String::new();
        for _ in 0..self.max_attempts {
            let request = self.request(
                ctx,
                previous.as_ref().map(|(c, e)| (c.as_str(), e.as_str())),
            );
            let started = Instant::now();
            let response = tokio::select! {
                r = crate::runner::model_call(self.provider.complete(&request)) => r.map_err(StepError::from)?,
                () = ctx.cancel_token().cancelled() => return Err(StepError::cancelled()),
            };
            ctx.account_call(&CallRecord::new(
                Purpose::Code.as_str(),
                response.usage,
                started.elapsed(),
            ));
            let (lang, code) = extract_program(&response.content, self.lang);
            let mut program = with_deps(Program::new(lang, code.clone()), ctx);
            let mut bad_path = None;
            for name in declared_outputs(&code) {
                if let Err(e) = plan_sandbox::check_relative(&name) {
                    bad_path = Some(e.to_string());
                }
                program = program.collect(name);
            }
            let why = match bad_path {
                Some(e) => e,
                None => {
                    let out = self.run(ctx, &program).await?;
                    match failure(&out, self.check.as_ref()) {
                        None => return Ok(render(&out)),
                        Some(why) => why,
                    }
                }
            };
            tracing::debug!(step = %step.id, error = %why, "generated program failed");
            last_error = why.clone();
            previous = Some((code, why));
        }
        Err(StepError::fatal(format!(
            "step `{}`: no working program after {} attempt(s); last error: {last_error}",
            step.id, self.max_attempts
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_the_fenced_program_and_its_language() {
        let (lang, code) = extract_program("Here:\n```bash\necho hi\n```\nDone.", CodeLang::Python);
        assert_eq!((lang, code.as_str()), (CodeLang::Bash, "echo hi\n"));
        let (lang, code) = extract_program("```\nprint(1)\n```", CodeLang::Python);
        assert_eq!((lang, code.as_str()), (CodeLang::Python, "print(1)\n"));
        let (lang, code) = extract_program("print(2)", CodeLang::Python);
        assert_eq!((lang, code.as_str()), (CodeLang::Python, "print(2)"));
    }

    #[test]
    fn finds_declared_outputs() {
        let code = "# plan-output: table.md\nx = 1\n  # plan-output:  out/b.csv \n# plan-output:\n";
        assert_eq!(declared_outputs(code), ["table.md", "out/b.csv"]);
    }
}
