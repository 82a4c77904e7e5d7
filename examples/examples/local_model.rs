//! Run the embedded offline model: fetch it if needed (with progress), stream a free-text
//! reply, then ask for a plan constrained to a JSON schema.
//!
//! `cargo run -p plan-examples --example local_model`

use std::io::Write;

use futures::StreamExt;
use plan_llm::{Chunk, Message, Provider, Request, ResponseFormat};
use plan_llm_local::{FetchEvent, LocalConfig, LocalModel};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Loading blocks (fetch, then about a second to prepare the weights): keep it off the
    // async runtime.
    let model = tokio::task::spawn_blocking(|| {
        LocalModel::load_with_progress(LocalConfig::default(), &mut |event| match event {
            FetchEvent::Trying { source } => eprintln!("fetching the model from {source}"),
            FetchEvent::SourceFailed { source, reason } => eprintln!("  {source}: {reason}"),
            FetchEvent::Done { path } => eprintln!("model ready: {}", path.display()),
            _ => {}
        })
    })
    .await??;

    let request = Request::new(vec![Message::user(
        "Give me one tip for writing clear code.",
    )])
    .with_temperature(0.0)
    .with_max_tokens(60);
    let mut stream = model.stream(&request).await?;
    while let Some(chunk) = stream.next().await {
        match chunk? {
            Chunk::Text(text) => {
                print!("{text}");
                std::io::stdout().flush()?;
            }
            Chunk::Finish(reason) => println!("\n[finish: {reason:?}]"),
            _ => {}
        }
    }

    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "goal": {"type": "string", "maxLength": 80},
            "steps": {"type": "array", "minItems": 2, "maxItems": 4, "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,15}$"},
                    "description": {"type": "string", "maxLength": 80},
                    "dependencies": {"type": "array", "maxItems": 3, "items": {"type": "string"}}
                },
                "required": ["id", "description", "dependencies"],
                "additionalProperties": false
            }}
        },
        "required": ["goal", "steps"],
        "additionalProperties": false
    });
    let plan = model
        .complete(
            &Request::new(vec![
                Message::system("You are a planner. Break the goal into a few short steps."),
                Message::user("Goal: organise a picnic"),
            ])
            .with_temperature(0.0)
            .with_max_tokens(600)
            .with_response_format(ResponseFormat::JsonSchema {
                name: "plan".into(),
                schema,
            }),
        )
        .await?;
    let value: serde_json::Value = serde_json::from_str(&plan.content)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}
