//! Test support (feature `test-support`): what plan-exec's prompts mean to a fake model.
//! The server is plan-llm's [`FakeOpenAi`]; [`answer_by_step`] keys its requests by the
//! step a prompt is for ([`step_key`]) and answers each step with [`default_reply`].
//! [`workloads`]: the benchmarks' reference plans.
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::Duration;
//! use plan_exec::testing::answer_by_step;
//! use plan_llm::testing::FakeOpenAi;
//!
//! let server = FakeOpenAi::start().await;
//! answer_by_step(&server).latency(Duration::from_millis(300));
//! // Point an OpenAI-compatible provider at `server.base_url()`; after a run,
//! // `server.count_for("step-id")` says how often each step asked the model.
//! assert_eq!(server.total_requests(), 0);
//! # }
//! ```

use plan_llm::testing::{FakeOpenAi, FakeReply};

pub mod workloads;

/// Keys `server`'s requests by [`step_key`] of their last user message and answers the
/// requests no rule matches with [`default_reply`] for that step. Returns `server`, for
/// chaining more settings.
pub fn answer_by_step(server: &FakeOpenAi) -> &FakeOpenAi {
    server
        .key_by(|r| step_key(r.last_user()))
        .otherwise(FakeReply::with(|r| FakeReply::text(default_reply(&r.key))))
}

/// The default reply for a step: `result of step <key>`.
pub fn default_reply(key: &str) -> String {
    format!("result of step {key}")
}

/// The step a prompt is for: the id in ``Your step (`ID`)`` or ``(step `ID`)`` (the LLM
/// step executor's prompt), else the first backquoted word, else `""`.
pub fn step_key(prompt: &str) -> String {
    for marker in ["Your step (`", "(step `"] {
        if let Some(at) = prompt.find(marker) {
            let rest = &prompt[at + marker.len()..];
            if let Some(end) = rest.find('`') {
                return rest[..end].to_owned();
            }
        }
    }
    let mut parts = prompt.split('`');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(key), Some(_)) => key.to_owned(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plan_llm::{Message, OpenAi, Provider, Request};

    #[test]
    fn step_keys_come_from_the_step_prompt_markers_or_the_first_backquoted_word() {
        assert_eq!(step_key("Do this. Your step (`s1`): write"), "s1");
        assert_eq!(step_key("Verify the output (step `v2`) please"), "v2");
        assert_eq!(step_key("about `topic` and `other`"), "topic");
        assert_eq!(step_key("no key here"), "");
        assert_eq!(step_key("one `unclosed"), "");
    }

    #[tokio::test]
    async fn answer_by_step_counts_and_answers_each_step() {
        let server = FakeOpenAi::start().await;
        answer_by_step(&server);
        let model = OpenAi::new("fake-model", None).with_base_url(server.base_url());
        for step in ["a", "b", "a"] {
            let prompt = format!("Your step (`{step}`): do it");
            let reply = model
                .complete(&Request::new(vec![Message::user(prompt)]))
                .await
                .unwrap();
            assert_eq!(reply.content, default_reply(step));
        }
        assert_eq!(server.count_for("a"), 2);
        assert_eq!(server.count_for("b"), 1);
    }
}
