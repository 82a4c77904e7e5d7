//! The context window of a local OpenAI-compatible server, where the server says it, and
//! the token cap of a request bounded by it.
//!
//! Where each server says it (checked against their sources, not guessed):
//! - llama.cpp's `llama-server`: `GET /props` → `default_generation_settings.n_ctx` (the
//!   context of one slot), and in recent builds `GET /v1/models` → `data[].meta.n_ctx`
//!   (`meta.n_ctx_train` is the training context, not the server's, and is not used);
//! - vLLM: `GET /v1/models` → `data[].max_model_len`;
//! - llama-cpp-python: not in `GET /v1/models` (its entries are only `id`, `object`,
//!   `owned_by: "me"` and `permissions`). It says it in the error for a prompt that does not
//!   fit ("This model's maximum context length is N tokens"), and it silently lowers
//!   `max_tokens` to what is left of its context, so a reply cut off before the cap that
//!   was asked for shows the context in its usage: prompt plus completion tokens.

use serde_json::Value;

/// The fewest tokens a bounded request still asks for: below this a structured reply
/// cannot be complete anyway, and the server's own cut says so more plainly.
pub(crate) const FLOOR: u32 = 256;

/// The server's context window in `GET /v1/models`: llama.cpp's `meta.n_ctx` or vLLM's
/// `max_model_len` of the first model that gives one.
pub(crate) fn from_models(models: &Value) -> Option<u32> {
    models.get("data")?.as_array()?.iter().find_map(|m| {
        m.pointer("/meta/n_ctx")
            .or_else(|| m.get("max_model_len"))
            .and_then(tokens)
    })
}

/// The context window in llama.cpp's `GET /props`: `default_generation_settings.n_ctx`.
pub(crate) fn from_props(props: &Value) -> Option<u32> {
    props
        .pointer("/default_generation_settings/n_ctx")
        .and_then(tokens)
}

/// The context window an error body names: "maximum context length is N tokens"
/// (llama-cpp-python, vLLM and OpenAI word it so).
pub(crate) fn from_error(body: &str) -> Option<u32> {
    const NEEDLE: &str = "maximum context length is ";
    let lower = body.to_ascii_lowercase();
    let start = lower.find(NEEDLE)? + NEEDLE.len();
    let digits: String = lower[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().filter(|n| *n > 0)
}

/// The context window a reply cut off at the length limit shows: when it stopped short of
/// the `sent` cap, the server's context ran out first, and it held the prompt and the
/// completion.
pub(crate) fn from_cut_reply(sent: u32, prompt: u64, completion: u64) -> Option<u32> {
    if prompt == 0 || completion >= u64::from(sent) {
        return None;
    }
    u32::try_from(prompt + completion).ok()
}

/// A rough, generous count of the prompt tokens of a chat completions body: a token for
/// every three characters of the messages (more than most tokenizers give for English
/// and JSON), and a few for each message's framing.
pub(crate) fn prompt_estimate(body: &Value) -> u32 {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let chars: usize = messages
        .iter()
        .map(|m| match m.get("content") {
            Some(Value::String(s)) => s.chars().count(),
            Some(other) => other.to_string().chars().count(),
            None => 0,
        })
        .sum();
    u32::try_from(chars / 3 + 8 * messages.len() + 16).unwrap_or(u32::MAX)
}

/// `asked` bounded by what a context of `n_ctx` tokens leaves after a prompt of about
/// `prompt` tokens, and never below [`FLOOR`] (nor above `asked`).
pub(crate) fn bound(asked: u32, n_ctx: u32, prompt: u32) -> u32 {
    asked.min(n_ctx.saturating_sub(prompt).max(FLOOR))
}

fn tokens(v: &Value) -> Option<u32> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn servers_say_their_context_in_their_own_shapes() {
        // llama.cpp's /props (README's response format) and recent /v1/models.
        let props = json!({"default_generation_settings": {"id": 0, "n_ctx": 1024, "params": {"n_predict": -1}}, "total_slots": 1});
        assert_eq!(from_props(&props), Some(1024));
        let llama = json!({"object": "list", "data": [{"id": "m.gguf", "object": "model", "owned_by": "llamacpp",
            "meta": {"n_vocab": 49152, "n_ctx": 8192, "n_ctx_train": 131072}}]});
        assert_eq!(from_models(&llama), Some(8192));
        // Older llama.cpp: only the training context, which is not the server's.
        let older =
            json!({"data": [{"id": "m", "owned_by": "llamacpp", "meta": {"n_ctx_train": 131072}}]});
        assert_eq!(from_models(&older), None);
        let vllm = json!({"data": [{"id": "q", "owned_by": "vllm", "max_model_len": 32768}]});
        assert_eq!(from_models(&vllm), Some(32768));
        // llama-cpp-python's /v1/models does not say it.
        let python = json!({"object": "list", "data": [{"id": "smollm2", "object": "model", "owned_by": "me", "permissions": []}]});
        assert_eq!(from_models(&python), None);
        assert_eq!(
            from_props(&json!({"default_generation_settings": {}})),
            None
        );
    }

    #[test]
    fn the_context_is_read_from_errors_and_from_replies_cut_short_of_the_cap() {
        let python = r#"{"error":{"message":"This model's maximum context length is 2048 tokens. However, you requested 2100 tokens (2100 in the messages, None in the completion). Please reduce the length of the messages or completion.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
        assert_eq!(from_error(python), Some(2048));
        assert_eq!(from_error("internal error"), None);
        // Cut after 1,348 tokens of a 13,328 cap, with a 700-token prompt: a 2,048 context.
        assert_eq!(from_cut_reply(13_328, 700, 1_348), Some(2_048));
        // Cut at the cap itself: the cap set the limit, the context is unknown.
        assert_eq!(from_cut_reply(1_024, 700, 1_024), None);
        assert_eq!(from_cut_reply(1_024, 0, 10), None);
    }

    #[test]
    fn a_cap_is_bounded_by_the_context_left_but_never_below_the_floor() {
        assert_eq!(bound(13_328, 2_048, 700), 1_348);
        assert_eq!(bound(1_000, 8_192, 700), 1_000);
        assert_eq!(bound(13_328, 2_048, 2_000), FLOOR);
        assert_eq!(bound(100, 2_048, 2_000), 100);
        let body = json!({"messages": [{"role": "system", "content": "x".repeat(300)}, {"role": "user", "content": "y".repeat(30)}]});
        assert_eq!(prompt_estimate(&body), 110 + 16 + 16);
    }
}
