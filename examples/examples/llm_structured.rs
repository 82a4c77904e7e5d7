//! Structured output: a reply typed as a Rust struct. The schema comes from the type
//! (schemars); each provider is asked in its own native way, and servers without a JSON
//! mode fall back to instructions plus extraction of the first JSON value.
//!
//! This example runs offline against the `ScriptedModel`; swap in
//! `build_provider(&ModelSpec::parse("openai:gpt-4o-mini")?, &ProviderConfig::from_env())?`
//! for a real model.
//!
//! Run: `cargo run -p plan-examples --example llm_structured`

use plan_llm::{
    Capabilities, LlmError, Message, Reply, Request, ScriptedModel, generate_structured,
};
use serde::Deserialize;

/// What we want back.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct Trip {
    /// Where to go.
    destination: String,
    /// How many days.
    days: u32,
    /// What to pack.
    packing: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<(), LlmError> {
    let request = Request::new(vec![
        Message::system("You plan short trips."),
        Message::user("Plan a weekend in the mountains."),
    ]);

    // A model with a native JSON-schema mode answers with bare JSON.
    let native = ScriptedModel::new().reply(Reply::text(
        r#"{"destination": "Chamonix", "days": 2, "packing": ["boots", "rain jacket"]}"#,
    ));
    let trip = generate_structured::<Trip, _>(&native, &request).await?;
    let Trip {
        destination,
        days,
        packing,
    } = &trip.value;
    println!(
        "{days} days in {destination}, pack {} (via {})",
        packing.join(", "),
        trip.mode
    );

    // A model with no JSON mode chats around its JSON: it is still found and validated.
    let chatty = ScriptedModel::new()
        .with_capabilities(Capabilities::default())
        .reply(Reply::text(
            "Great idea! Here's the plan:\n```json\n{\"destination\": \"Zermatt\", \"days\": 3, \"packing\": [\"map\"]}\n```\nEnjoy!",
        ));
    let trip = generate_structured::<Trip, _>(&chatty, &request).await?;
    println!(
        "{} days in {} (via {})",
        trip.value.days, trip.value.destination, trip.mode
    );

    // Invalid replies are reported with every attempt.
    let wrong = ScriptedModel::new().otherwise(Reply::text(r#"{"destination": "Nowhere"}"#));
    if let Err(e) = generate_structured::<Trip, _>(&wrong, &request).await {
        println!("failed as expected: {e}");
    }
    Ok(())
}
