//! Structured output against the scripted model and the real adapters.

use plan_llm::testing::{FakeResponse, FakeServer};
use plan_llm::{
    Capabilities, LlmError, Message, Provider, Reply, Request, ResponseFormat, ScriptedModel,
    StructuredCall, StructuredMode, generate_json, generate_structured, schema_for,
};
use serde::Deserialize;
use serde_json::json;

use super::support::{anthropic, ollama, openai, openai_compatible, recording};

#[derive(Debug, Deserialize, schemars::JsonSchema, PartialEq)]
struct Answer {
    city: String,
    population: u64,
}

fn ask() -> Request {
    Request::new(vec![Message::user("largest city in Norway?")])
}

#[tokio::test]
async fn native_schema_mode_is_used_when_available() {
    let model =
        ScriptedModel::new().reply(Reply::json(json!({"city": "Oslo", "population": 709000})));
    let answer = generate_structured::<Answer, _>(&model, &ask())
        .await
        .unwrap();
    assert_eq!(
        answer.value,
        Answer {
            city: "Oslo".into(),
            population: 709000
        }
    );
    assert_eq!(answer.mode, StructuredMode::JsonSchema);
    let sent = model.last_request().unwrap();
    let ResponseFormat::JsonSchema { name, schema } = sent.response_format else {
        panic!("expected a schema request, got {:?}", sent.response_format)
    };
    assert_eq!(name, "Answer");
    assert_eq!(schema, schema_for::<Answer>().1);
    assert!(schema.get("$schema").is_none());
}

#[tokio::test]
async fn invalid_output_falls_back_and_failure_lists_every_attempt() {
    // By default, each mode is asked once.
    let model = ScriptedModel::new()
        .reply(Reply::json(json!({"city": "Oslo"})))
        .reply(Reply::text("not json at all"))
        .reply(Reply::text(
            "Sure, here it is: {\"city\": \"Oslo\", \"population\": \"many\"}",
        ));
    let (name, schema) = schema_for::<Answer>();
    let mut calls = Vec::new();
    let err = StructuredCall::new(&name, &schema)
        .run(&model, &ask(), &mut calls)
        .await
        .unwrap_err();
    let LlmError::StructuredOutput {
        attempts, schema, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(schema, "Answer");
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert_eq!(
        calls.len(),
        3,
        "every call is recorded, the failed ones too"
    );
    assert!(
        attempts[0].starts_with(
            "json schema mode: does not match the schema: $: missing required property `population`"
        ),
        "{}",
        attempts[0]
    );
    assert!(
        attempts[1].starts_with("json object mode: no JSON value"),
        "{}",
        attempts[1]
    );
    assert!(
        attempts[2].contains("$.population: expected integer, got string"),
        "{}",
        attempts[2]
    );
    let formats: Vec<ResponseFormat> = model
        .requests()
        .into_iter()
        .map(|r| r.response_format)
        .collect();
    assert!(matches!(formats[1], ResponseFormat::JsonObject));
    assert!(matches!(formats[2], ResponseFormat::Text));
    let instructed = &model.requests()[2];
    assert!(
        instructed.messages[0].content.contains("\"population\""),
        "the schema is in the instructions"
    );
}

#[tokio::test]
async fn an_unusable_reply_is_sent_back_once_with_what_was_wrong_before_the_next_mode() {
    let model = ScriptedModel::new()
        .reply(Reply::json(json!({"city": "Oslo"})))
        .reply(Reply::json(json!({"city": "Oslo", "population": "many"})))
        .reply(Reply::text("{\"city\": \"Oslo\", \"population\": 709000}"));
    let (name, schema) = schema_for::<Answer>();
    let mut calls = Vec::new();
    let answer = StructuredCall::new(&name, &schema)
        .with_repairs(1)
        .run(&model, &ask(), &mut calls)
        .await
        .unwrap();
    assert_eq!(answer.value["population"], 709000);
    assert_eq!(answer.mode, StructuredMode::JsonObject);
    assert_eq!(
        answer.failed_attempts.len(),
        2,
        "{:?}",
        answer.failed_attempts
    );
    assert_eq!(calls.len(), 3, "one record per call made");
    let requests = model.requests();
    // The repair goes back in the same mode, with the model's reply and the problem.
    assert!(matches!(
        requests[1].response_format,
        ResponseFormat::JsonSchema { .. }
    ));
    let problem = &requests[1].messages.last().unwrap().content;
    assert!(
        problem.contains("missing required property `population`"),
        "{problem}"
    );
    assert_eq!(requests[1].messages.len(), ask().messages.len() + 2);
    // The next mode starts from the caller's request again.
    assert!(matches!(
        requests[2].response_format,
        ResponseFormat::JsonObject
    ));
    assert_eq!(
        requests[2].messages.len(),
        ask().messages.len() + 1,
        "system + user"
    );
}

#[tokio::test]
async fn servers_without_modes_get_instructions_and_prose_is_tolerated() {
    let model = ScriptedModel::new()
        .with_capabilities(Capabilities::default())
        .reply(Reply::text(
            "Here you go:\n```json\n{\"city\": \"Oslo\", \"population\": 1}\n```",
        ));
    let answer = generate_structured::<Answer, _>(&model, &ask())
        .await
        .unwrap();
    assert_eq!(answer.mode, StructuredMode::Instructions);
    assert_eq!(model.call_count(), 1);
}

#[tokio::test]
async fn a_rejected_mode_falls_back_but_auth_errors_stop() {
    let model = ScriptedModel::new()
        .reply(Reply::error(LlmError::BadRequest {
            provider: "s".into(),
            status: 400,
            message: "json_schema is not supported".into(),
        }))
        .reply(Reply::json(json!({"city": "Oslo", "population": 1})));
    let answer = generate_structured::<Answer, _>(&model, &ask())
        .await
        .unwrap();
    assert_eq!(answer.mode, StructuredMode::JsonObject);
    assert_eq!(answer.failed_attempts.len(), 1);

    let model = ScriptedModel::new().otherwise(Reply::error(LlmError::Auth {
        provider: "s".into(),
        message: "no".into(),
    }));
    assert!(matches!(
        generate_structured::<Answer, _>(&model, &ask()).await,
        Err(LlmError::Auth { .. })
    ));
    assert_eq!(model.call_count(), 1);
}

#[tokio::test]
async fn generate_json_validates_a_raw_schema() {
    let schema = json!({"type": "object", "properties": {"steps": {"type": "array", "items": {"type": "string"}, "minItems": 1}}, "required": ["steps"]});
    let model = ScriptedModel::new()
        .reply(Reply::json(json!({"steps": []})))
        .reply(Reply::json(json!({"steps": ["a"]})));
    let got = generate_json(&model, &ask(), "plan steps!", &schema)
        .await
        .unwrap();
    assert_eq!(got.value, json!({"steps": ["a"]}));
    assert!(
        got.failed_attempts[0].contains("at least 1 items"),
        "{:?}",
        got.failed_attempts
    );
}

#[tokio::test]
async fn each_adapter_asks_natively() {
    let server = FakeServer::start().await;
    let oslo = json!({"city": "Oslo", "population": 709000}).to_string();
    let openai_reply = json!({"choices": [{"message": {"role": "assistant", "content": oslo}, "finish_reason": "stop"}]}).to_string();

    server.push(FakeResponse::json(200, openai_reply.clone()));
    let got = generate_structured::<Answer, _>(openai(&server.url()).as_ref(), &ask())
        .await
        .unwrap();
    assert_eq!(got.mode, StructuredMode::JsonSchema);
    assert_eq!(
        server.requests()[0].json().unwrap()["response_format"]["type"],
        json!("json_schema")
    );

    // The compatible flavour has no schema mode: JSON object mode first.
    server.reset();
    server.push(FakeResponse::json(200, openai_reply));
    let got = generate_structured::<Answer, _>(openai_compatible(&server.url()).as_ref(), &ask())
        .await
        .unwrap();
    assert_eq!(got.mode, StructuredMode::JsonObject);
    assert_eq!(
        server.requests()[0].json().unwrap()["response_format"],
        json!({"type": "json_object"})
    );

    server.reset();
    server.push(FakeResponse::json(
        200,
        recording("anthropic/structured.json"),
    ));
    let got = generate_structured::<Answer, _>(anthropic(&server.url()).as_ref(), &ask())
        .await
        .unwrap();
    assert_eq!(got.value.population, 700000);
    assert_eq!(
        server.requests()[0].json().unwrap()["tool_choice"]["name"],
        json!("Answer")
    );

    server.reset();
    server.push(FakeResponse::json(200, json!({"message": {"role": "assistant", "content": oslo}, "done": true, "done_reason": "stop"}).to_string()));
    let provider = ollama(&server.url());
    let got = generate_structured::<Answer, _>(provider.as_ref(), &ask())
        .await
        .unwrap();
    assert_eq!(got.value.city, "Oslo");
    assert_eq!(
        server.requests()[0].json().unwrap()["format"]["properties"]["city"]["type"],
        json!("string")
    );
    let _: &dyn Provider = provider.as_ref();
}

#[tokio::test]
async fn a_call_that_stays_in_one_mode_ends_after_its_repairs() {
    let model = ScriptedModel::new()
        .reply(Reply::json(json!({"city": "Oslo"})))
        .reply(Reply::json(json!({"city": "Oslo"})))
        .reply(Reply::json(json!({"city": "Oslo", "population": 1})));
    let (name, schema) = schema_for::<Answer>();
    let mut calls = Vec::new();
    let err = StructuredCall::new(&name, &schema)
        .with_repairs(1)
        .with_next_mode_on_invalid(false)
        .run(&model, &ask(), &mut calls)
        .await
        .unwrap_err();
    assert!(
        matches!(err, LlmError::StructuredOutput { ref attempts, .. } if attempts.len() == 2),
        "{err:?}"
    );
    assert_eq!(calls.len(), 2, "the third reply is never asked for");
}

#[tokio::test]
async fn without_the_schema_check_the_conversion_decides() {
    // A reply over the schema's `maxItems` passes to a caller that checks it itself.
    let schema =
        json!({"type": "object", "properties": {"steps": {"type": "array", "maxItems": 1}}});
    let model = ScriptedModel::new().reply(Reply::json(json!({"steps": [1, 2]})));
    let mut calls = Vec::new();
    let got = StructuredCall::new("steps", &schema)
        .without_schema_check()
        .run(&model, &ask(), &mut calls)
        .await
        .unwrap();
    assert_eq!(got.value["steps"], json!([1, 2]));
    let model = ScriptedModel::new().reply(Reply::json(json!({"steps": [1, 2]})));
    let checked = StructuredCall::new("steps", &schema)
        .run(&model, &ask(), &mut calls)
        .await;
    assert!(checked.is_err(), "checked by default");
}
