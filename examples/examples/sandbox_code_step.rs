//! Code steps: a model writes a program for a step, the sandbox runs it, errors go back to
//! the model; a step that carries its own code runs as is, as a deterministic check.
//!
//! `cargo run -p plan-examples --example sandbox_code_step -- [auto|bwrap|process]`
//!
//! The "model" here is a stand-in that replies with fixed programs (a first one with a bug,
//! then a fix) so the example runs offline; pass any `plan_llm::Provider` instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use plan_core::{CodeLang, Step, StepKind};
use plan_exec::code_step::CodeStepExecutor;
use plan_exec::context::StepContext;
use plan_exec::executor::StepExecutor;
use plan_llm::{LlmError, Provider, Request, Response, Usage};
use plan_sandbox::{Limits, SandboxChoice};

/// Replies with a buggy program first, then a fixed one once it sees the error.
struct StandIn {
    calls: AtomicUsize,
}

#[async_trait]
impl Provider for StandIn {
    fn name(&self) -> &str {
        "stand-in"
    }

    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        let prompt = &request
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let reply = if prompt.contains("previous program failed") {
            "```python\n# plan-output: primes.txt\n\
             primes = [n for n in range(2, 50) if all(n % d for d in range(2, int(n ** 0.5) + 1))]\n\
             open('primes.txt', 'w').write(' '.join(map(str, primes)))\n\
             print(len(primes), 'primes below 50')\n```"
        } else {
            "```python\nprimes = [n for n in range(2, 50) if all(n % d for d in range(2, n ** 0.5))]\n\
             print(len(primes))\n```"
        };
        println!("model call {}: {} bytes of prompt", n + 1, prompt.len());
        Ok(Response::text(reply, Usage::new(0, 0)))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let choice: SandboxChoice = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "auto".to_owned())
        .parse()?;
    let sandbox = choice.open().await?;
    let exec = CodeStepExecutor::new(
        StandIn {
            calls: AtomicUsize::new(0),
        },
        Arc::clone(&sandbox),
    )
    .with_limits(Limits::default().with_memory_bytes(256 << 20))
    .with_max_attempts(3);

    let mut primes = Step::new("primes", "List the primes below 50 and count them");
    primes.kind = StepKind::Code;
    let ctx = StepContext::new("Know the small primes", primes.clone());
    let output = exec.execute(&ctx).await?;
    println!("step `primes` ({}):\n{output}", sandbox.isolation());

    // A verification step with its own code: no model involved.
    let mut check = Step::new("check", "There are 15 primes below 50").with_code(
        CodeLang::Bash,
        "test \"$(wc -w < deps/primes.txt)\" -ge 1 && grep -q '^15 primes' deps/primes.txt && echo PASS",
    );
    check.kind = StepKind::Verify;
    let ctx = StepContext::new("Know the small primes", check).with_dependency(&primes, output);
    println!("step `check`: {}", exec.execute(&ctx).await?.trim());
    Ok(())
}
