//! What this process has learned about each OpenAI-compatible endpoint: the flavour the
//! server identified itself as, the structured-output modes it refused, and its context
//! window when it told it (see [`super::context`]). Every
//! [`OpenAi`](super::OpenAi) talking to the same base URL shares it, so a refused mode is
//! asked for once per process, not once per call.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use super::flavour::Flavour;

/// How strongly a reply's shape is asked for, strongest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    /// `response_format: {"type": "json_schema"}`.
    Schema,
    /// `response_format: {"type": "json_object"}`, with the schema in the instructions.
    Object,
    /// No `response_format`; the schema in the instructions only.
    Text,
}

impl Level {
    /// The wire name of the mode, as logs and errors show it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Level::Schema => "json_schema",
            Level::Object => "json_object",
            Level::Text => "instructions only",
        }
    }

    /// The strongest level the flavour supports at or below `self`.
    pub(crate) fn within(self, flavour: &Flavour) -> Level {
        match self {
            Level::Schema if flavour.json_schema => Level::Schema,
            Level::Schema | Level::Object if flavour.json_object => Level::Object,
            _ => Level::Text,
        }
    }

    /// The next level down that the flavour supports (`Text` at the bottom).
    pub(crate) fn below(self, flavour: &Flavour) -> Level {
        match self {
            Level::Schema => Level::Object.within(flavour),
            Level::Object | Level::Text => Level::Text,
        }
    }
}

/// What is known about one endpoint.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Learned {
    /// `Some` once the server was asked who it is: the flavour it named, if any.
    pub(crate) detected: Option<Option<Flavour>>,
    /// The strongest structured-output level the server has not refused.
    pub(crate) ceiling: Option<Level>,
    /// The server's context window in tokens (prompt and reply together), once known.
    pub(crate) context: Option<u32>,
    /// Times the server was asked who it is and did not answer (busy, restarting).
    pub(crate) unanswered: u8,
}

/// Times a server that does not answer `GET /models` is asked again (one per request)
/// before it is taken for one that names no flavour.
pub(crate) const DETECTION_TRIES: u8 = 3;

static ENDPOINTS: LazyLock<Mutex<HashMap<String, Learned>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn key(base_url: &str) -> String {
    base_url.trim_end_matches('/').to_owned()
}

fn with<T>(base_url: &str, f: impl FnOnce(&mut Learned) -> T) -> T {
    let mut map = ENDPOINTS.lock().unwrap_or_else(|e| e.into_inner());
    f(map.entry(key(base_url)).or_default())
}

/// What is known about `base_url` so far.
pub(crate) fn learned(base_url: &str) -> Learned {
    with(base_url, |l| *l)
}

/// Records the flavour the server at `base_url` identified (or that it named none).
pub(crate) fn detected(base_url: &str, flavour: Option<Flavour>) {
    with(base_url, |l| l.detected = Some(flavour));
}

/// Records that the server at `base_url` did not say who it is; after
/// [`DETECTION_TRIES`] such answers it is taken for one that names no flavour.
pub(crate) fn unanswered(base_url: &str) {
    with(base_url, |l| {
        l.unanswered = l.unanswered.saturating_add(1);
        if l.unanswered >= DETECTION_TRIES {
            l.detected = Some(None);
        }
    });
}

/// Records that `base_url` refused `refused` and will be asked for `next` from now on.
/// Logged at debug level the first time only.
pub(crate) fn refused(base_url: &str, provider: &str, refused: Level, next: Level) {
    let first = with(base_url, |l| {
        let lower = l.ceiling.is_none_or(|c| next > c);
        if lower {
            l.ceiling = Some(next);
        }
        lower
    });
    if first {
        tracing::debug!(
            provider,
            endpoint = %key(base_url),
            "the server refused {} structured output; using {} for this endpoint from now on",
            refused.name(),
            next.name(),
        );
    }
}

/// Records that `base_url`'s context window is `n_ctx` tokens (`how`: where that was
/// learned). The smallest window heard of is kept; logged at debug level when it changes.
pub(crate) fn context(base_url: &str, provider: &str, n_ctx: u32, how: &str) {
    let changed = with(base_url, |l| {
        let smaller = l.context.is_none_or(|c| n_ctx < c);
        if smaller {
            l.context = Some(n_ctx);
        }
        smaller
    });
    if changed {
        tracing::debug!(
            provider,
            endpoint = %key(base_url),
            n_ctx,
            "the server's context window is {n_ctx} tokens ({how}); token caps are bounded by it"
        );
    }
}

/// Whether an error reply says the server refused the structured-output mode asked for:
/// a 400, 422 or 500 whose body names `response_format`, `json_schema` or `json_object`.
pub(crate) fn refuses_format(status: u16, body: &str) -> bool {
    if !matches!(status, 400 | 422 | 500) {
        return false;
    }
    let body = body.to_ascii_lowercase();
    ["response_format", "json_schema", "json_object"]
        .iter()
        .any(|needle| body.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_refusals_are_told_from_other_errors() {
        let llama_cpp_python = r#"{"detail":[{"type":"literal_error","loc":["body","response_format","type"],"msg":"Input should be 'text' or 'json_object'"}]}"#;
        assert!(refuses_format(500, llama_cpp_python));
        assert!(refuses_format(
            400,
            r#"{"error":{"message":"'response_format.type' must be 'json_schema' or 'text'"}}"#
        ));
        assert!(refuses_format(422, "Unknown field JSON_OBJECT"));
        assert!(!refuses_format(500, "internal error"));
        assert!(!refuses_format(429, "response_format"));
        assert!(!refuses_format(401, "json_schema"));
    }

    #[test]
    fn levels_step_down_within_the_flavour() {
        let lm = Flavour::lm_studio();
        assert_eq!(Level::Schema.below(&lm), Level::Text);
        assert_eq!(Level::Object.within(&lm), Level::Text);
        let py = Flavour::llama_cpp_python();
        assert_eq!(Level::Schema.within(&py), Level::Object);
        assert_eq!(Level::Schema.below(&Flavour::openai()), Level::Object);
        assert_eq!(Level::Object.below(&Flavour::openai()), Level::Text);
    }

    #[test]
    fn a_refusal_is_remembered_per_endpoint_and_only_lowers() {
        let url = "http://127.0.0.1:1/endpoint-test/v1/";
        assert_eq!(learned(url).ceiling, None);
        refused(url, "p", Level::Schema, Level::Object);
        assert_eq!(
            learned("http://127.0.0.1:1/endpoint-test/v1").ceiling,
            Some(Level::Object)
        );
        refused(url, "p", Level::Object, Level::Text);
        refused(url, "p", Level::Schema, Level::Object);
        assert_eq!(learned(url).ceiling, Some(Level::Text));
        assert_eq!(learned("http://127.0.0.1:1/other/v1").ceiling, None);
    }

    #[test]
    fn the_smallest_context_window_heard_of_is_kept_per_endpoint() {
        let url = "http://127.0.0.1:1/context-test/v1";
        assert_eq!(learned(url).context, None);
        context(url, "p", 4096, "test");
        context(url, "p", 2048, "test");
        context(url, "p", 8192, "test");
        assert_eq!(learned(&format!("{url}/")).context, Some(2048));
        assert_eq!(learned("http://127.0.0.1:1/other-context/v1").context, None);
    }
}
