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
            "goal": {"type": "string", "minLength": 1, "maxLength": 40},
            "steps": {
                "type": "array",
                "minItems": 2,
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,11}$"},
                        "description": {"type": "string", "pattern": "^[A-Za-z0-9 ,.'-]{1,40}$"},
                        "kind": {"enum": ["action", "verify", "search", "analyze"]},
                        "dependencies": {
                            "type": "array",
                            "maxItems": 2,
                            "items": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,11}$"}
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
    if goal.is_empty() || goal.chars().count() > 40 {
        return Err(format!("goal length {}", goal.chars().count()));
    }
    let steps = obj
        .get("steps")
        .and_then(Value::as_array)
        .ok_or("no steps")?;
    if !(2..=3).contains(&steps.len()) {
        return Err(format!("{} steps", steps.len()));
    }
    let id_ok = |s: &str| {
        let mut c = s.chars();
        c.next().is_some_and(|f| f.is_ascii_lowercase())
            && s.len() <= 12
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
            && d.len() <= 40
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
        if deps.len() > 2 || deps.iter().any(|d| !d.as_str().is_some_and(id_ok)) {
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
    // Above the schema's worst case (every string at its maximum, one token per char:
    // about 510), so a reply is never cut. The limits are small to keep the test cheap.
    .with_max_tokens(600)
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

/// A model of its own (no other test uses `context` tokens), so its statistics and cache
/// are this test's alone; loads with the same `context` share it.
fn own_model(context: usize, reuse: bool) -> LocalModel {
    let config = LocalConfig::default()
        .with_model_path(model_file())
        .with_context_size(context)
        .with_prefix_reuse(reuse);
    LocalModel::load(config).unwrap_or_else(|e| panic!("{e}"))
}

/// Reply text, finish reason and usage of a request.
fn reply(model: &LocalModel, request: &Request) -> (String, FinishReason, plan_llm::Usage) {
    let r = runtime().block_on(model.complete(request)).unwrap();
    (r.content, r.finish_reason, r.usage)
}

const PASSAGES: &str = "Passages:\n[doc#1] runbooks/db-failover.md: When the primary \
database stops answering health checks for 30 seconds, the orchestrator promotes the replica \
in the other zone; confirm with `dbctl status --cluster main`.\n[doc#2] policies/on-call.md: \
On-call engineers acknowledge a page within 5 minutes and escalate after 15 minutes.\n";

fn question(q: &str) -> Vec<Message> {
    vec![
        Message::system("You answer from the passages given, citing their tags."),
        Message::user(format!("{PASSAGES}\nQuestion: {q}")),
    ]
}

/// Requests that share a prompt prefix with the one before (passages, a conversation
/// continued, the very same prompt) reuse its cached keys and values and give exactly the
/// replies a model that runs every prompt whole gives: greedy, sampled and constrained.
#[test]
fn prefix_reuse_gives_the_replies_of_a_fresh_model() {
    let reusing = own_model(1536, true);
    let fresh = own_model(1472, false);
    let first = Request::new(question("How long before the replica is promoted?"))
        .with_temperature(0.0)
        .with_max_tokens(24);
    let (first_text, ..) = reply(&reusing, &first);
    let mut conversation = first.messages.clone();
    conversation.push(Message::assistant(first_text.clone()));
    conversation.push(Message::user("And which command confirms it?"));
    let requests = [
        // The conversation continued: its prompt starts with the first prompt and reply.
        Request::new(conversation)
            .with_temperature(0.0)
            .with_max_tokens(24),
        // Same passages, another question, sampled (seeded).
        Request::new(question("When is a page escalated?"))
            .with_temperature(0.9)
            .with_max_tokens(24),
        // The same prompt again: all but its last token are reused.
        Request::new(question("When is a page escalated?"))
            .with_temperature(0.9)
            .with_max_tokens(24),
        // Constrained by a schema.
        Request::new(question("Which zone holds the replica?"))
            .with_temperature(0.0)
            .with_max_tokens(40)
            .with_response_format(ResponseFormat::JsonSchema {
                name: "answer".into(),
                schema: json!({
                    "type": "object",
                    "properties": {"answer": {"type": "string", "maxLength": 60}},
                    "required": ["answer"]
                }),
            }),
    ];
    let mut previous = reusing.prompt_tokens(&first).unwrap();
    let mut stats = reusing.prefill_stats();
    assert_eq!(stats.requests, 1);
    assert_eq!(stats.reused, 0);
    assert_eq!(stats.prefilled, previous.len() as u64);
    for (i, request) in requests.iter().enumerate() {
        let got = reply(&reusing, request);
        let want = reply(&fresh, request);
        assert_eq!(got, want, "request {i}");
        let prompt = reusing.prompt_tokens(request).unwrap();
        let shared = previous
            .iter()
            .zip(&prompt)
            .take_while(|(a, b)| a == b)
            .count();
        let now = reusing.prefill_stats();
        let reused = now.reused - stats.reused;
        // At least the prefix shared with the previous prompt (more when the previous
        // reply's tokens match too), never the prompt's last token.
        assert!(
            reused as usize >= shared.min(prompt.len() - 1) && (reused as usize) < prompt.len(),
            "request {i}: reused {reused} of {} tokens, {shared} shared with the previous prompt",
            prompt.len()
        );
        // The format hint of a schema request goes into its system prompt: it shares
        // less.
        if i < 3 {
            assert!(shared > 40, "request {i} shares only {shared} tokens");
        }
        eprintln!("request {i}: reused {reused} of {} tokens", prompt.len());
        assert_eq!(
            now.prefilled - stats.prefilled + reused,
            prompt.len() as u64
        );
        assert_eq!(now.requests, stats.requests + 1);
        if i == 2 {
            assert_eq!(reused as usize, prompt.len() - 1, "the same prompt again");
        }
        (previous, stats) = (prompt, now);
    }
    let fresh_stats = fresh.prefill_stats();
    assert_eq!(fresh_stats.reused, 0);
    assert_eq!(fresh_stats.requests, requests.len() as u64);
}

/// Loads of the same file with the same engine settings share one model (and its queue
/// and statistics); another thread count is another model.
#[test]
fn loads_of_the_same_file_share_one_model() {
    let a = own_model(1280, true);
    let b = own_model(1280, false);
    let other = LocalModel::load(
        LocalConfig::default()
            .with_model_path(model_file())
            .with_context_size(1280)
            .with_threads(a.threads() + 1),
    )
    .unwrap();
    let request = Request::new(vec![Message::user("Name a colour.")])
        .with_temperature(0.0)
        .with_max_tokens(4);
    let rt = runtime();
    // Both handles at once: served one after the other by the one engine.
    let (ra, rb) =
        rt.block_on(async { futures::join!(a.complete(&request), b.complete(&request)) });
    assert_eq!(ra.unwrap().content, rb.unwrap().content);
    assert_eq!(a.prefill_stats().requests, 2);
    assert_eq!(a.prefill_stats(), b.prefill_stats());
    assert_eq!(other.prefill_stats().requests, 0);
    assert_eq!(a.queued(), 0);
}

/// Calls are served in the order they were made, and a call whose stream is dropped
/// while it waits gives its turn up without running.
#[test]
fn calls_are_served_in_order_and_a_dropped_one_gives_its_turn_up() {
    use futures::FutureExt;

    let model = own_model(1344, true);
    // A reply of at least 200 pieces: more than a stream buffers (64), so a call whose
    // stream is not read keeps its turn until the stream is read or dropped.
    let long = |what: &str| {
        Request::new(vec![Message::user(format!("List digits about {what}."))])
            .with_temperature(0.0)
            .with_max_tokens(600)
            .with_response_format(ResponseFormat::JsonSchema {
                name: "digits".into(),
                schema: json!({
                    "type": "object",
                    "properties": {"digits": {
                        "type": "array", "minItems": 200,
                        "items": {"type": "integer", "minimum": 0, "maximum": 9}
                    }},
                    "required": ["digits"]
                }),
            })
    };
    let rt = runtime();
    rt.block_on(async {
        let mut first = model.stream(&long("the sea")).await.unwrap();
        assert!(matches!(first.next().await, Some(Ok(Chunk::Text(_)))));
        let dropped = model.stream(&long("mountains")).await.unwrap();
        let mut second = model.stream(&long("rivers")).await.unwrap();
        let mut third = model.stream(&long("forests")).await.unwrap();
        assert_eq!(model.queued(), 4);
        drop(dropped);
        drop(first);
        // The second is served next (the dropped call skipped) and keeps its turn: the
        // third has nothing to say until the second is gone.
        match futures::future::select(second.next(), third.next()).await {
            futures::future::Either::Left((Some(Ok(Chunk::Text(_))), _)) => {}
            futures::future::Either::Left((other, _)) => panic!("second: {other:?}"),
            futures::future::Either::Right((chunk, _)) => {
                panic!("the third call was served before the second: {chunk:?}")
            }
        }
        assert!(third.next().now_or_never().is_none());
        drop(second);
        assert!(matches!(third.next().await, Some(Ok(Chunk::Text(_)))));
        drop(third);
    });
    // Queued behind the rest, so it ends after they are counted.
    let last = Request::new(vec![Message::user("Name a colour.")]).with_max_tokens(2);
    reply(&model, &last);
    // The first, second, third and last calls ran; the dropped one never did.
    assert_eq!(model.prefill_stats().requests, 4);
    assert_eq!(model.queued(), 0);
}
