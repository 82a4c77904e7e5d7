//! Run a program in the sandbox and print the result as the CLI's JSON would.
//!
//! `cargo run -p plan-examples --example sandbox_run -- [auto|bwrap|process]`

use std::time::Duration;

use plan_sandbox::{Limits, Program, SandboxChoice};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let choice: SandboxChoice = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "auto".to_owned())
        .parse()?;
    // `auto` needs bubblewrap; the error says how to install it.
    let sandbox = choice.open().await?;
    let program = Program::python(
        "import json, os\n\
         rows = [line.split(',') for line in open('data.csv').read().splitlines()]\n\
         total = sum(int(r[1]) for r in rows)\n\
         open('total.json', 'w').write(json.dumps({'total': total}))\n\
         print(f'{len(rows)} rows, total {total}')",
    )
    .with_file("data.csv", "a,1\nb,2\nc,39\n")
    .collect("total.json");
    let limits = Limits::default()
        .with_timeout(Duration::from_secs(10))
        .with_memory_bytes(256 << 20);
    let out = sandbox.run(&program, &limits).await?;
    println!("isolation: {}", out.isolation);
    println!("stdout: {}", out.stdout.trim_end());
    if let Some(file) = out.file("total.json") {
        println!("total.json: {}", String::from_utf8_lossy(&file.contents));
    }
    if let Some(limit) = out.limit_hit {
        println!("limit hit: {limit}");
    }
    println!("exit code: {} in {:?}", out.exit_code, out.duration);
    Ok(())
}
