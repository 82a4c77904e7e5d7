//! Tests against the real model (fetched into the cache if missing: CI runs
//! `cargo xtask fetch-model` first).

use std::sync::OnceLock;

use futures::StreamExt;
use plan_llm::{Chunk, FinishReason, Message, Provider, Request, ResponseFormat};
use plan_llm_local::{
    FetchError, FetchOptions, LocalConfig, LocalModel, MODEL_SHA256, ModelStore, Tokenizer,
};
use serde_json::{Value, json};

/// The verified model file, fetched once per test binary.
fn model_file() -> std::path::PathBuf {
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        ModelStore::default()
            .ensure(&FetchOptions::default(), &mut |_| {})
            .unwrap_or_else(|e| panic!("{e}"))
    })
    .clone()
}

/// The model, loaded once per test binary (requests are served one at a time anyway).
fn model() -> &'static LocalModel {
    static MODEL: OnceLock<LocalModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let config = LocalConfig::default()
            .with_model_path(model_file())
            .with_context_size(2048);
        LocalModel::load(config).unwrap_or_else(|e| panic!("{e}"))
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn plan_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "goal": {"type": "string", "minLength": 1, "maxLength": 80},
            "steps": {
                "type": "array",
                "minItems": 2,
                "maxItems": 4,
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,15}$"},
                        "description": {"type": "string", "pattern": "^[A-Za-z0-9 ,.'-]{1,80}$"},
                        "kind": {"enum": ["action", "verify", "search", "analyze"]},
                        "dependencies": {
                            "type": "array",
                            "maxItems": 3,
                            "items": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,15}$"}
                        }
                    },
                    "required": ["id", "description", "kind", "dependencies"],
                    "additionalProperties": false
                }
            }
        },
        "required": ["goal", "steps"],
        "additionalProperties": false
    })
}

/// Checks a reply against [`plan_schema`] by hand, naming the first violation.
fn check_plan(v: &Value) -> Result<(), String> {
    let obj = v.as_object().ok_or("not an object")?;
    if obj.keys().any(|k| k != "goal" && k != "steps") {
        return Err(format!(
            "unexpected keys: {:?}",
            obj.keys().collect::<Vec<_>>()
        ));
    }
    let goal = obj.get("goal").and_then(Value::as_str).ok_or("no goal")?;
    if goal.is_empty() || goal.chars().count() > 80 {
        return Err(format!("goal length {}", goal.chars().count()));
    }
    let steps = obj
        .get("steps")
        .and_then(Value::as_array)
        .ok_or("no steps")?;
    if !(2..=4).contains(&steps.len()) {
        return Err(format!("{} steps", steps.len()));
    }
    let id_ok = |s: &str| {
        let mut c = s.chars();
        c.next().is_some_and(|f| f.is_ascii_lowercase())
            && s.len() <= 16
            && c.all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
    };
    for step in steps {
        let step = step.as_object().ok_or("step is not an object")?;
        if step.len() != 4 {
            return Err(format!("step keys {:?}", step.keys().collect::<Vec<_>>()));
        }
        let id = step.get("id").and_then(Value::as_str).ok_or("no id")?;
        if !id_ok(id) {
            return Err(format!("bad id {id:?}"));
        }
        let d = step
            .get("description")
            .and_then(Value::as_str)
            .ok_or("no description")?;
        let d_ok = !d.is_empty()
            && d.len() <= 80
            && d.chars()
                .all(|c| c.is_ascii_alphanumeric() || " ,.'-".contains(c));
        if !d_ok {
            return Err(format!("bad description {d:?}"));
        }
        let kind = step.get("kind").and_then(Value::as_str).ok_or("no kind")?;
        if !["action", "verify", "search", "analyze"].contains(&kind) {
            return Err(format!("bad kind {kind:?}"));
        }
        let deps = step
            .get("dependencies")
            .and_then(Value::as_array)
            .ok_or("no dependencies")?;
        if deps.len() > 3 || deps.iter().any(|d| !d.as_str().is_some_and(id_ok)) {
            return Err(format!("bad dependencies {deps:?}"));
        }
    }
    Ok(())
}

const GOALS: [&str; 20] = [
    "Research the top 3 Python web frameworks and create a comparison table",
    "Plan a birthday party for ten children",
    "Write a blog post about learning Rust",
    "Find the cheapest flight from Paris to Rome next month",
    "Set up a home vegetable garden",
    "Prepare for a job interview as a data analyst",
    "Summarise the causes of the French Revolution",
    "Build a personal budget spreadsheet",
    "Organise a team offsite for twenty people",
    "Compare three electric cars under 40000 euros",
    "Learn basic Spanish in three months",
    "Migrate a small website from PHP to a static site generator",
    "Write unit tests for a calculator module",
    "Plan a week of healthy vegetarian dinners",
    "Investigate why a web server responds slowly",
    "Create a study schedule for a chemistry exam",
    "Choose a laptop for video editing",
    "Draft a press release for a new mobile app",
    "Clean up and reorganise a cluttered garage",
    "Evaluate two cloud providers for hosting a database",
];

fn plan_request(goal: &str) -> Request {
    Request::new(vec![
        Message::system("You are a planner. Break the user's goal into a few short steps."),
        Message::user(format!("Goal: {goal}")),
    ])
    .with_temperature(0.0)
    // Above the schema's worst case (every string at its maximum, one token per char).
    .with_max_tokens(800)
    .with_response_format(ResponseFormat::JsonSchema {
        name: "plan".into(),
        schema: plan_schema(),
    })
}

#[test]
fn twenty_goals_give_schema_valid_plans() {
    let model = model();
    let rt = runtime();
    for goal in GOALS {
        let reply = rt.block_on(model.complete(&plan_request(goal))).unwrap();
        assert_eq!(
            reply.finish_reason,
            FinishReason::Stop,
            "{goal}: {}",
            reply.content
        );
        let value: Value = serde_json::from_str(&reply.content)
            .unwrap_or_else(|e| panic!("{goal}: not JSON ({e}): {}", reply.content));
        if let Err(problem) = check_plan(&value) {
            panic!("{goal}: {problem}: {}", reply.content);
        }
        assert!(reply.usage.prompt_tokens > 0 && reply.usage.completion_tokens > 0);
    }
}

#[test]
fn streaming_yields_the_same_text_as_complete_at_temperature_zero() {
    let model = model();
    let rt = runtime();
    let request = Request::new(vec![Message::user("Describe the sea in two sentences.")])
        .with_temperature(0.0)
        .with_max_tokens(40);
    let whole = rt.block_on(model.complete(&request)).unwrap();
    let (texts, finish, usage) = rt.block_on(async {
        let mut stream = model.stream(&request).await.unwrap();
        let (mut texts, mut finish, mut usage) = (Vec::new(), None, None);
        while let Some(chunk) = stream.next().await {
            match chunk.unwrap() {
                Chunk::Text(t) => texts.push(t),
                Chunk::Finish(f) => finish = Some(f),
                Chunk::Usage(u) => usage = Some(u),
                other => panic!("unexpected chunk {other:?}"),
            }
        }
        (texts, finish, usage)
    });
    assert!(texts.len() > 1, "the reply came in one piece: {texts:?}");
    assert_eq!(texts.concat(), whole.content);
    assert!(!whole.content.trim().is_empty());
    assert_eq!(finish, Some(whole.finish_reason.clone()));
    assert_eq!(usage, Some(whole.usage));
}

#[test]
fn max_tokens_cuts_the_reply_with_length() {
    let model = model();
    let request = Request::new(vec![Message::user(
        "Count from one to one hundred in words.",
    )])
    .with_temperature(0.0)
    .with_max_tokens(5);
    let reply = runtime().block_on(model.complete(&request)).unwrap();
    assert_eq!(reply.finish_reason, FinishReason::Length);
    assert_eq!(reply.usage.completion_tokens, 5);
}

#[test]
fn json_object_format_gives_an_object_and_sampling_is_seeded() {
    let model = model();
    let request = Request::new(vec![Message::user("Give a JSON object describing a cat.")])
        .with_temperature(0.8)
        .with_max_tokens(120)
        .with_response_format(ResponseFormat::JsonObject);
    let rt = runtime();
    let a = rt.block_on(model.complete(&request)).unwrap();
    if a.finish_reason == FinishReason::Stop {
        let v: Value =
            serde_json::from_str(&a.content).unwrap_or_else(|e| panic!("{e}: {}", a.content));
        assert!(v.is_object(), "{}", a.content);
    } else {
        assert_eq!(a.finish_reason, FinishReason::Length);
        assert!(a.content.starts_with('{'), "{}", a.content);
    }
    let b = rt.block_on(model.complete(&request)).unwrap();
    assert_eq!(a.content, b.content, "same seed, same sample");
}

#[test]
fn schema_with_refs_and_enums_is_enforced() {
    let model = model();
    let schema = json!({
        "type": "object",
        "properties": {
            "colour": {"$ref": "#/$defs/colour"},
            "count": {"type": "integer", "minimum": 1, "maximum": 9}
        },
        "required": ["colour", "count"],
        "additionalProperties": false,
        "$defs": {"colour": {"enum": ["red", "green", "blue"]}}
    });
    let request = Request::new(vec![Message::user("Pick a colour and a small number.")])
        .with_temperature(0.0)
        .with_max_tokens(60)
        .with_response_format(ResponseFormat::JsonSchema {
            name: "pick".into(),
            schema,
        });
    let reply = runtime().block_on(model.complete(&request)).unwrap();
    assert_eq!(reply.finish_reason, FinishReason::Stop, "{}", reply.content);
    let v: Value = serde_json::from_str(&reply.content).unwrap();
    assert!(
        ["red", "green", "blue"].contains(&v["colour"].as_str().unwrap()),
        "{v}"
    );
    let n = v["count"].as_i64().unwrap();
    assert!((1..=9).contains(&n), "{v}");
}

#[test]
fn a_prompt_longer_than_the_context_is_a_clear_error() {
    let config = LocalConfig::default()
        .with_model_path(model_file())
        .with_context_size(64)
        .with_threads(1);
    let small = LocalModel::load(config).unwrap();
    let request = Request::new(vec![Message::user("word ".repeat(200))]);
    let err = runtime().block_on(small.complete(&request)).unwrap_err();
    assert!(
        matches!(err, plan_llm::LlmError::ContextLength { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("context"), "{err}");
}

#[test]
fn tokenizer_round_trips_and_chat_markers_are_single_tokens() {
    let tok = Tokenizer::from_gguf_file(&model_file()).unwrap();
    for text in [
        "Hello, world!",
        "  leading spaces and\ttabs\nnew lines",
        "digits 1234567890 and 3.14",
        "unicode: café, naïve, 日本語, emoji 🦀",
        "{\"goal\": \"x\", \"steps\": []}",
    ] {
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text);
    }
    for marker in ["<|im_start|>", "<|im_end|>"] {
        let ids = tok.encode(marker).unwrap();
        assert_eq!(ids.len(), 1, "{marker} -> {ids:?}");
        assert!(tok.is_special(ids[0]));
        assert_eq!(Some(ids[0]), tok.token_id(marker));
    }
    // Digits are split one by one.
    assert_eq!(tok.encode("2024").unwrap().len(), 4);
    let ids = tok.encode("<|im_start|>user\nHi<|im_end|>").unwrap();
    assert_eq!(ids.first().copied(), tok.token_id("<|im_start|>"));
    assert_eq!(ids.last().copied(), tok.token_id("<|im_end|>"));
}

fn corrupted_copy(dir: &std::path::Path) -> std::path::PathBuf {
    let mut bytes = std::fs::read(model_file()).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    let path = dir.join("corrupted.gguf");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn fetch_rejects_a_corrupted_file_and_caches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = corrupted_copy(dir.path());
    let store = ModelStore::new(dir.path().join("cache"));
    let err = store
        .ensure(&FetchOptions::from_file(&corrupt), &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, FetchError::AllSourcesFailed { .. }));
    let text = err.to_string();
    assert!(
        text.contains("wrong sha256") && text.contains(MODEL_SHA256),
        "{text}"
    );
    assert!(store.list().unwrap().is_empty());
    assert!(!store.model_path().exists());

    // The good file is accepted and lands in the cache.
    let events = std::cell::RefCell::new(Vec::new());
    let path = store
        .ensure(&FetchOptions::from_file(model_file()), &mut |e| {
            events.borrow_mut().push(e)
        })
        .unwrap();
    assert_eq!(path, store.model_path());
    assert_eq!(plan_llm_local::sha256_file(&path).unwrap(), MODEL_SHA256);
    assert_eq!(store.list().unwrap().len(), 1);
    assert!(
        events
            .borrow()
            .iter()
            .any(|e| matches!(e, plan_llm_local::FetchEvent::Verifying))
    );
}

/// Runs in a child process of [`plan_model_path_env_pointing_at_a_corrupted_file_fails`]
/// with the environment set; a no-op in the normal run.
#[test]
fn child_process_fetch_from_env() {
    if std::env::var_os("PLAN_LOCAL_TEST_CHILD").is_none() {
        return;
    }
    let store = ModelStore::default();
    assert_eq!(
        store.dir(),
        std::path::Path::new(&std::env::var_os("PLAN_MODEL_DIR").unwrap())
    );
    let err = store
        .ensure(&FetchOptions::default(), &mut |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("wrong sha256"), "{err}");
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn plan_model_path_env_pointing_at_a_corrupted_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = corrupted_copy(dir.path());
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_fetch_from_env",
            "--test-threads=1",
        ])
        .env("PLAN_LOCAL_TEST_CHILD", "1")
        .env("PLAN_MODEL_PATH", &corrupt)
        .env("PLAN_MODEL_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the child test failed: {stdout}");
    assert!(
        stdout.contains("1 passed"),
        "the child test did not run: {stdout}"
    );
}
