//! `plan` against an OpenAI-compatible server that refuses OpenAI's schema mode the way
//! llama-cpp-python does (HTTP 500 naming `response_format`): the plan is asked for again
//! in JSON object mode at once, never retried as a server error, and the server is not
//! asked for schema mode a second time in the run.

use plan_llm::testing::{FakeOpenAi, FakeReply};

use crate::support::{DIAMOND, Sandbox, expect_code, output, stdout};

const REFUSAL: &str = "[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}]";

fn llama_cpp_python_like() -> FakeOpenAi {
    let server = FakeOpenAi::start_detached();
    server.otherwise(FakeReply::with(|r| {
        let text = r.text();
        if r.body["response_format"]["type"] == "json_schema" {
            FakeReply::error(500, REFUSAL)
        } else if text.contains("You decide how to meet a goal") {
            FakeReply::text(format!(r#"{{"answer": null, "plan": {DIAMOND}}}"#))
        } else if text.contains("You are a planner") {
            FakeReply::text(DIAMOND)
        } else if text.contains("You write the final answer") {
            FakeReply::text("FINAL ANSWER: all done")
        } else {
            FakeReply::text("a step's result")
        }
    }));
    server
}

fn schema_requests(server: &FakeOpenAi) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.body["response_format"]["type"] == "json_schema")
        .count()
}

#[test]
fn plan_and_run_work_against_a_server_refusing_schema_mode() {
    let sb = Sandbox::new();
    for command in ["plan", "run"] {
        let server = llama_cpp_python_like();
        let out = output(&mut sb.plan([
            command,
            "Compare two things",
            "--model",
            "openai:qwen2.5-7b",
            "--base-url",
            &server.base_url(),
        ]));
        expect_code(&out, 0);
        assert!(
            stdout(&out).contains(if command == "plan" {
                "Compare them"
            } else {
                "all done"
            }),
            "{}",
            stdout(&out)
        );
        assert_eq!(
            schema_requests(&server),
            1,
            "plan {command}: one refused request, no retries, not asked again"
        );
    }
}
