//! Replays of the OpenAI-compatible servers' recorded exchanges (tests/recordings/flavours):
//! each spec reaches its server in the structured-output mode the server takes, a refused
//! mode is replaced by the next one down at once (never retried), and the endpoint
//! remembers it.

use std::path::PathBuf;

use plan_llm::testing::{FakeResponse, FakeServer, RecordedRequest};
use plan_llm::{
    Message, ProviderConfig, ProviderRegistry, Request, generate_structured, schema_for,
};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize, schemars::JsonSchema, PartialEq)]
struct Answer {
    city: String,
    population: u64,
}

#[derive(Deserialize)]
struct Recording {
    spec: String,
    #[serde(default)]
    models: Option<Reply>,
    exchanges: Vec<Exchange>,
    #[serde(default)]
    then: Option<Exchange>,
}

#[derive(Deserialize)]
struct Reply {
    status: u16,
    body: Value,
}

#[derive(Deserialize)]
struct Exchange {
    request: Expected,
    status: u16,
    body: Value,
}

#[derive(Deserialize)]
struct Expected {
    response_format: Value,
}

fn load(name: &str) -> Recording {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/recordings/flavours")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn reply(status: u16, body: &Value) -> FakeResponse {
    FakeResponse::json(status, body.to_string())
}

/// `expected` with `"$SCHEMA"` replaced by the schema under test.
fn with_schema(expected: &Value, schema: &Value) -> Value {
    match expected {
        Value::String(s) if s == "$SCHEMA" => schema.clone(),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), with_schema(v, schema)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn check_chat(file: &str, request: &RecordedRequest, expected: &Expected, schema: &Value) {
    assert_eq!(request.method, "POST", "{file}: {}", request.path);
    assert_eq!(request.path, "/v1/chat/completions", "{file}");
    let body = request.json().expect("a JSON body");
    let sent = body.get("response_format").cloned().unwrap_or(Value::Null);
    assert_eq!(
        sent,
        with_schema(&expected.response_format, schema),
        "{file}: the response_format sent"
    );
    if sent.is_null() || sent.get("schema").is_none() && sent["type"] != "json_schema" {
        // Below schema mode the schema travels in the instructions.
        let text = body["messages"].to_string();
        assert!(text.contains("population"), "{file}: {text}");
    }
}

async fn replay(file: &str) {
    let recording = load(file);
    let server = FakeServer::start().await;
    if let Some(models) = &recording.models {
        server.push(reply(models.status, &models.body));
    }
    for exchange in &recording.exchanges {
        server.push(reply(exchange.status, &exchange.body));
    }
    let config = ProviderConfig::from_vars([("OPENAI_API_KEY", "sk-test")])
        .with_base_url(format!("{}/v1", server.url()));
    let provider = ProviderRegistry::builtin()
        .build(&recording.spec.parse().unwrap(), &config)
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    let ask = Request::new(vec![Message::user("Largest city in Norway?")]);
    let answer = generate_structured::<Answer, _>(provider.as_ref(), &ask)
        .await
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    assert_eq!(answer.value.city, "Oslo", "{file}");
    assert!(
        answer.failed_attempts.is_empty(),
        "{file}: a refused mode is the adapter's business, not a failed attempt: {:?}",
        answer.failed_attempts
    );

    let schema = schema_for::<Answer>().1;
    let mut requests = server.requests().into_iter();
    if recording.models.is_some() {
        let first = requests.next().expect("the models request");
        assert_eq!(
            (first.method.as_str(), first.path.as_str()),
            ("GET", "/v1/models"),
            "{file}"
        );
    }
    let chats: Vec<_> = requests.collect();
    assert_eq!(
        chats.len(),
        recording.exchanges.len(),
        "{file}: one request per exchange, no retries"
    );
    for (request, exchange) in chats.iter().zip(&recording.exchanges) {
        check_chat(file, request, &exchange.request, &schema);
    }

    if let Some(then) = &recording.then {
        server.reset();
        server.push(reply(then.status, &then.body));
        let again = generate_structured::<Answer, _>(provider.as_ref(), &ask)
            .await
            .unwrap_or_else(|e| panic!("{file}, second call: {e}"));
        assert_eq!(again.value.city, "Bergen", "{file}");
        let requests = server.requests();
        assert_eq!(
            requests.len(),
            1,
            "{file}: the refused mode is not asked for again"
        );
        check_chat(file, &requests[0], &then.request, &schema);
    }
}

#[tokio::test]
async fn llama_cpp_server_gets_schema_mode() {
    replay("llama-cpp.json").await;
}

#[tokio::test]
async fn llama_cpp_python_is_identified_and_gets_json_object_with_its_schema() {
    replay("llama-cpp-python.json").await;
}

#[tokio::test]
async fn llama_cpp_python_refusing_schema_mode_with_500_is_downgraded_once() {
    replay("llama-cpp-python-undetected.json").await;
}

#[tokio::test]
async fn vllm_gets_schema_mode() {
    replay("vllm.json").await;
}

#[tokio::test]
async fn vllm_is_identified_behind_openai_compatible() {
    replay("vllm-detected.json").await;
}

#[tokio::test]
async fn lm_studio_gets_schema_mode() {
    replay("lmstudio.json").await;
}

#[tokio::test]
async fn lm_studio_refusing_json_object_falls_to_instructions() {
    replay("lmstudio-undetected.json").await;
}

#[tokio::test]
async fn ollama_openai_endpoint_gets_schema_mode() {
    replay("ollama-openai.json").await;
}

#[tokio::test]
async fn a_plain_server_error_is_not_taken_for_a_refused_mode() {
    let server = FakeServer::start().await;
    server.push(reply(404, &serde_json::json!({"error": "no"})));
    server.push(reply(
        500,
        &serde_json::json!({"error": {"message": "CUDA out of memory", "type": "server_error"}}),
    ));
    let config = ProviderConfig::from_vars([("OPENAI_API_KEY", "sk-test")])
        .with_base_url(format!("{}/v1", server.url()));
    let provider = ProviderRegistry::builtin()
        .build(&"openai:m".parse().unwrap(), &config)
        .unwrap();
    let ask = Request::new(vec![Message::user("Largest city in Norway?")]);
    let err = generate_structured::<Answer, _>(provider.as_ref(), &ask)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "a 500 stays a server error: {err}");
    assert!(err.to_string().contains("CUDA out of memory"), "{err}");
    assert_eq!(server.requests().len(), 2, "models, then one chat request");
    assert!(
        provider.capabilities().json_schema,
        "nothing was learned from it"
    );
}

/// llama-cpp-python answers `GET /v1/models` only between completions: a server too busy
/// to say who it is is not taken for an unknown one. The request goes out as the spec's
/// own flavour (the schema in the instructions), and the next request asks again and gets
/// the server's own mode (the schema beside `json_object`).
#[tokio::test]
async fn a_server_too_busy_to_say_who_it_is_is_asked_again() {
    use plan_llm::testing::{FakeOpenAi, FakeReply};

    let server = FakeOpenAi::start().await;
    server
        .models_body(serde_json::json!({"object": "list", "data": [
            {"id": "smollm2", "object": "model", "owned_by": "me", "permissions": []}
        ]}))
        .models_unavailable(1)
        .otherwise(FakeReply::Text(
            r#"{"city": "Oslo", "population": 700000}"#.to_owned(),
        ));
    let config =
        ProviderConfig::from_vars([("OPENAI_API_KEY", "sk-test")]).with_base_url(server.base_url());
    let provider = ProviderRegistry::builtin()
        .build(&"openai-compatible:smollm2".parse().unwrap(), &config)
        .unwrap();
    let ask = Request::new(vec![Message::user("Largest city in Norway?")]);
    for _ in 0..2 {
        let answer = generate_structured::<Answer, _>(provider.as_ref(), &ask)
            .await
            .unwrap();
        assert_eq!(answer.value.city, "Oslo");
    }
    assert_eq!(server.models_asked(), 2, "asked again after the 503");
    let chats = server.requests();
    assert_eq!(chats.len(), 2);
    let first = &chats[0].body["response_format"];
    assert_eq!(first["type"], "json_object", "{first}");
    assert!(first.get("schema").is_none(), "{first}");
    assert!(chats[0].body["messages"].to_string().contains("population"));
    let second = &chats[1].body["response_format"];
    assert_eq!(second["type"], "json_object", "{second}");
    assert!(
        second["schema"]["properties"]["city"].is_object(),
        "{second}"
    );
}
