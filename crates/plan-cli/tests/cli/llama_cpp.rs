//! `plan plan` against small models behind llama.cpp's servers (issue 26, part 3): every
//! request and re-prompt carries the plan schema in the form the server takes, what the
//! repair pass fixes for sure is repaired rather than re-prompted, the token cap fits the
//! server's context once it is known, and a reply cut off by that context says so.
//!
//! The exchanges are reconstructed from the description of a session with
//! llama-cpp-python 0.3.36 serving SmolLM2-135M (context 2,048), not recorded: the
//! `GET /v1/models` bodies have the servers' real shapes (llama-cpp-python's
//! `llama_cpp/server/app.py`, llama.cpp's `tools/server/README.md`), the replies are
//! written to behave as the issue says the model's did.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use plan_llm::testing::{FakeOpenAi, FakeReply, FakeRequest};
use serde_json::{Value, json};

use crate::support::{Sandbox, expect_code, output, stderr, stdout};

const GOAL: &str = "Plan a birthday party";

/// The server's context window in these exchanges.
const N_CTX: u64 = 2048;

/// llama-cpp-python's `GET /v1/models`: no context size in it.
fn llama_cpp_python_models() -> Value {
    json!({"object": "list", "data": [
        {"id": "smollm2", "object": "model", "owned_by": "me", "permissions": []}
    ]})
}

/// A chat completion as llama-cpp-python writes it.
fn completion(content: &str, finish: &str, prompt: u64, reply: u64) -> FakeReply {
    FakeReply::Raw(json!({
        "id": "chatcmpl-4b7e", "object": "chat.completion", "created": 1733400100,
        "model": "smollm2",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "logprobs": null, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": reply,
                  "total_tokens": prompt + reply}
    }))
}

/// A plan whose dependencies are the steps' descriptions, not their ids.
fn plan_with_description_dependencies() -> FakeReply {
    let plan = json!({"goal": GOAL, "steps": [
        {"id": "theme", "description": "Choose a theme", "dependencies": []},
        {"id": "invite", "description": "Send the invitations", "dependencies": ["Choose a theme"]},
        {"id": "cake", "description": "Order the cake", "dependencies": ["Choose a theme", "Send the invitations"]}
    ]});
    completion(&plan.to_string(), "stop", 690, 120)
}

/// An unconstrained reply that rambles until the server's context is full.
fn rambling_cut_by_the_context() -> FakeReply {
    let text = "{\"goal\": \"Plan a birthday party\", \"steps\": [{\"id\": \"1\", \"description\": \"First, you will need to think about the party and then the party and then";
    completion(text, "length", 900, N_CTX - 900)
}

/// A server answering `models` to `GET /v1/models` and the `replies` in turn (the last one
/// again should more requests come).
fn server(models: Value, replies: Vec<FakeReply>) -> FakeOpenAi {
    let server = FakeOpenAi::start_detached();
    let next = Arc::new(AtomicUsize::new(0));
    server
        .models_body(models)
        .otherwise(FakeReply::with(move |_: &FakeRequest| {
            let n = next.fetch_add(1, Ordering::SeqCst);
            replies[n.min(replies.len() - 1)].clone()
        }));
    server
}

fn plan_plan(server: &FakeOpenAi) -> std::process::Output {
    plan_plan_with(server, "openai:smollm2")
}

fn plan_plan_with(server: &FakeOpenAi, spec: &str) -> std::process::Output {
    let sb = Sandbox::new();
    output(&mut sb.plan([
        "plan",
        GOAL,
        "--format",
        "json",
        "--model",
        spec,
        "--base-url",
        &server.base_url(),
    ]))
}

/// Every chat request carries the plan schema beside `json_object`, as llama-cpp-python
/// takes it.
fn assert_schema_on_every_request(server: &FakeOpenAi) {
    let requests = server.requests();
    assert!(!requests.is_empty());
    for (i, r) in requests.iter().enumerate() {
        let format = &r.body["response_format"];
        assert_eq!(format["type"], "json_object", "request {}: {format}", i + 1);
        assert!(
            format["schema"]["properties"]["steps"].is_object(),
            "request {} has no plan schema: {format}",
            i + 1
        );
    }
}

fn max_tokens(r: &FakeRequest) -> u64 {
    r.body["max_tokens"].as_u64().expect("a max_tokens")
}

/// The exchange: the first reply parses but its dependencies are not step ids.
/// The repair pass drops them at once, so the two rambling replies are never asked for.
#[test]
fn the_llama_cpp_python_exchange_ends_in_a_repaired_plan_with_the_schema_sent() {
    let server = server(
        llama_cpp_python_models(),
        vec![
            plan_with_description_dependencies(),
            rambling_cut_by_the_context(),
            rambling_cut_by_the_context(),
        ],
    );
    let out = plan_plan(&server);
    expect_code(&out, 0);
    let plan: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let ids: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["theme", "invite", "cake"]);
    let err = stderr(&out);
    assert!(
        err.contains("note: the model's plan was repaired")
            && err.contains("`Choose a theme`, which is not a step"),
        "{err}"
    );
    assert_eq!(server.total_requests(), 1, "repaired, not re-prompted");
    assert_schema_on_every_request(&server);
}

/// `openai-compatible:` does not know the server until it asks: the planner's first
/// request is still made with the schema, which the server's flavour then puts beside
/// `json_object` (found by a real llama-cpp-python server: the planner used to choose plain
/// JSON object mode before the server had said who it is).
#[test]
fn a_compatible_spec_sends_the_schema_to_a_server_it_has_not_identified_yet() {
    let llama = server(
        llama_cpp_python_models(),
        vec![plan_with_description_dependencies()],
    );
    let out = plan_plan_with(&llama, "openai-compatible:smollm2");
    expect_code(&out, 0);
    assert_eq!(llama.total_requests(), 1);
    assert_schema_on_every_request(&llama);

    // A server that names no known flavour takes JSON object mode only: the schema goes
    // into the instructions.
    let generic = server(
        json!({"object": "list", "data": [{"id": "smollm2", "object": "model"}]}),
        vec![plan_with_description_dependencies()],
    );
    let out = plan_plan_with(&generic, "openai-compatible:smollm2");
    expect_code(&out, 0);
    let request = &generic.requests()[0];
    assert_eq!(request.body["response_format"]["type"], "json_object");
    assert!(request.body["response_format"].get("schema").is_none());
    let prompt = request.body["messages"].to_string();
    assert!(
        prompt.contains("\\\"steps\\\""),
        "the schema is in the prompt: {prompt}"
    );
}

/// A first reply cut off by the server's context (short of the token cap asked for)
/// shows the context; the re-prompt keeps the schema and asks for no more than the
/// context leaves, and the plan it gets is repaired.
#[test]
fn a_re_prompt_keeps_the_schema_and_fits_the_context_the_server_showed() {
    let server = server(
        llama_cpp_python_models(),
        vec![
            rambling_cut_by_the_context(),
            plan_with_description_dependencies(),
            rambling_cut_by_the_context(),
        ],
    );
    let out = plan_plan(&server);
    expect_code(&out, 0);
    assert!(
        stderr(&out).contains("note: the model's plan was repaired"),
        "{}",
        stderr(&out)
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_schema_on_every_request(&server);
    assert!(
        max_tokens(&requests[0]) > N_CTX,
        "nothing was known of the context at first"
    );
    assert!(
        max_tokens(&requests[1]) < N_CTX,
        "the re-prompt asks for {} tokens in a {N_CTX}-token context",
        max_tokens(&requests[1])
    );
}

/// When every reply is cut off by the server's context, the error names that context and
/// what helps; it does not say to raise --max-steps.
#[test]
fn replies_cut_off_by_the_context_fail_naming_it() {
    let server = server(
        llama_cpp_python_models(),
        vec![rambling_cut_by_the_context()],
    );
    let out = plan_plan(&server);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains("context window") && err.contains("--n_ctx"),
        "{err}"
    );
    assert!(!err.contains("raise --max-steps"), "{err}");
    assert_eq!(server.total_requests(), 3);
    assert_schema_on_every_request(&server);
    for r in &server.requests()[1..] {
        assert!(max_tokens(r) < N_CTX, "{}", max_tokens(r));
    }
}

/// llama.cpp's `llama-server` reports its context (`meta.n_ctx` in `GET /v1/models`): the
/// first request already fits it.
#[test]
fn a_context_the_server_reports_bounds_the_first_request() {
    let models = json!({"object": "list", "data": [
        {"id": "smollm2", "object": "model", "created": 1733400000, "owned_by": "llamacpp",
         "meta": {"vocab_type": 2, "n_vocab": 49152, "n_ctx": N_CTX, "n_ctx_train": 8192,
                  "n_embd": 576, "n_params": 134515008, "size": 100000000}}
    ]});
    let server = server(models, vec![plan_with_description_dependencies()]);
    let out = plan_plan(&server);
    expect_code(&out, 0);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert!(
        max_tokens(&requests[0]) < N_CTX,
        "{}",
        max_tokens(&requests[0])
    );
    // llama.cpp takes schema mode itself.
    assert_eq!(
        requests[0].body["response_format"]["type"], "json_schema",
        "{}",
        requests[0].body["response_format"]
    );
}
