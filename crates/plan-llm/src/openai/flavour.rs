//! How an OpenAI-compatible server differs from OpenAI's own API: one [`Flavour`] per
//! common server, chosen by spec prefix or recognised from its `GET /v1/models` reply.

use serde_json::Value;

/// How an OpenAI-compatible server differs from OpenAI's own API.
///
/// ```
/// use plan_llm::Flavour;
/// let vllm = Flavour::compatible().with_json_schema(true);
/// assert!(vllm.json_schema && !Flavour::compatible().json_schema);
/// assert_eq!(Flavour::llama_cpp_python().name, "llama-cpp-python");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Flavour {
    /// Which server this describes (`openai`, `compatible`, `llama-cpp`, ...).
    pub name: &'static str,
    /// `response_format: {"type": "json_schema"}` is supported.
    pub json_schema: bool,
    /// `response_format: {"type": "json_object"}` is supported.
    pub json_object: bool,
    /// JSON object mode takes the schema beside the type (`{"type": "json_object",
    /// "schema": {...}}`) and constrains decoding to it (llama.cpp's servers).
    pub json_object_schema: bool,
    /// `stream_options.include_usage` is accepted and usage arrives in the last chunk.
    pub streamed_usage: bool,
    /// An assistant message with tool calls needs `content: ""` instead of `null`.
    pub empty_content_with_tool_calls: bool,
    /// The token cap is sent as `max_completion_tokens` (OpenAI) rather than `max_tokens`.
    pub max_completion_tokens: bool,
    /// Ask the server who it is (`GET /models`) before the first request and use the
    /// flavour it identifies, if any.
    pub detect: bool,
}

impl Flavour {
    /// OpenAI's own API.
    pub const fn openai() -> Self {
        Self {
            name: "openai",
            json_schema: true,
            json_object: true,
            json_object_schema: false,
            streamed_usage: true,
            empty_content_with_tool_calls: false,
            max_completion_tokens: true,
            detect: false,
        }
    }

    /// A conservative default for a server not yet known: JSON object mode, `max_tokens`,
    /// `content: ""` with tool calls, no schema mode and no streamed usage; the server is
    /// asked who it is first ([`detect`](Self::detect)).
    pub const fn compatible() -> Self {
        Self {
            name: "compatible",
            json_schema: false,
            json_object: true,
            json_object_schema: false,
            streamed_usage: false,
            empty_content_with_tool_calls: true,
            max_completion_tokens: false,
            detect: true,
        }
    }

    /// llama.cpp's `llama-server`: schema mode works, and JSON object mode takes a schema.
    pub const fn llama_cpp() -> Self {
        Self {
            name: "llama-cpp",
            json_schema: true,
            json_object_schema: true,
            detect: false,
            ..Self::compatible()
        }
    }

    /// llama-cpp-python's server (`python -m llama_cpp.server`): it refuses schema mode
    /// (HTTP 500, "Input should be 'text' or 'json_object'") but constrains JSON object
    /// mode to a `schema` given beside the type.
    pub const fn llama_cpp_python() -> Self {
        Self {
            name: "llama-cpp-python",
            json_schema: false,
            json_object_schema: true,
            detect: false,
            ..Self::compatible()
        }
    }

    /// vLLM's OpenAI server: schema mode (guided decoding) and streamed usage work.
    pub const fn vllm() -> Self {
        Self {
            name: "vllm",
            json_schema: true,
            streamed_usage: true,
            detect: false,
            ..Self::compatible()
        }
    }

    /// LM Studio's server: schema mode works; JSON object mode is refused ("must be
    /// 'json_schema' or 'text'").
    pub const fn lm_studio() -> Self {
        Self {
            name: "lmstudio",
            json_schema: true,
            json_object: false,
            detect: false,
            ..Self::compatible()
        }
    }

    /// Ollama's OpenAI-compatible endpoint (`/v1`): schema and JSON object modes work.
    pub const fn ollama_openai() -> Self {
        Self {
            name: "ollama-openai",
            json_schema: true,
            streamed_usage: true,
            detect: false,
            ..Self::compatible()
        }
    }

    /// The named flavours, by the spec prefix that selects each.
    pub const fn named() -> [Flavour; 5] {
        [
            Self::llama_cpp(),
            Self::llama_cpp_python(),
            Self::vllm(),
            Self::lm_studio(),
            Self::ollama_openai(),
        ]
    }

    /// The flavour a server identifies in its `GET /models` reply, by the `owned_by` of its
    /// models: `llamacpp` (llama-server), `me` (llama-cpp-python), `vllm`, and `library`
    /// (Ollama). `None` when the reply names none of them (LM Studio names the model's
    /// publisher, so it is chosen by prefix only).
    pub fn identify(models: &Value) -> Option<Flavour> {
        let owners = models
            .get("data")?
            .as_array()?
            .iter()
            .filter_map(|m| m.get("owned_by").and_then(Value::as_str));
        for owner in owners {
            let flavour = match owner {
                "llamacpp" => Self::llama_cpp(),
                "me" => Self::llama_cpp_python(),
                "vllm" => Self::vllm(),
                "library" | "ollama" => Self::ollama_openai(),
                _ => continue,
            };
            return Some(flavour);
        }
        None
    }

    /// Sets whether `json_schema` response formats are supported.
    pub const fn with_json_schema(mut self, yes: bool) -> Self {
        self.json_schema = yes;
        self
    }

    /// Sets whether `json_object` response formats are supported.
    pub const fn with_json_object(mut self, yes: bool) -> Self {
        self.json_object = yes;
        self
    }

    /// Sets whether JSON object mode carries the schema beside the type.
    pub const fn with_json_object_schema(mut self, yes: bool) -> Self {
        self.json_object_schema = yes;
        self
    }

    /// Sets whether streamed usage is requested.
    pub const fn with_streamed_usage(mut self, yes: bool) -> Self {
        self.streamed_usage = yes;
        self
    }

    /// Sets whether assistant tool-call messages carry `content: ""`.
    pub const fn with_empty_content_with_tool_calls(mut self, yes: bool) -> Self {
        self.empty_content_with_tool_calls = yes;
        self
    }

    /// Sets whether the token cap is sent as `max_completion_tokens`.
    pub const fn with_max_completion_tokens(mut self, yes: bool) -> Self {
        self.max_completion_tokens = yes;
        self
    }

    /// Sets whether the server is asked who it is before the first request.
    pub const fn with_detect(mut self, yes: bool) -> Self {
        self.detect = yes;
        self
    }
}

impl Default for Flavour {
    fn default() -> Self {
        Self::openai()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn servers_are_identified_by_their_model_owner() {
        let list = |owner: &str| json!({"object": "list", "data": [{"id": "m", "object": "model", "owned_by": owner}]});
        assert_eq!(
            Flavour::identify(&list("llamacpp")),
            Some(Flavour::llama_cpp())
        );
        assert_eq!(
            Flavour::identify(&list("me")),
            Some(Flavour::llama_cpp_python())
        );
        assert_eq!(Flavour::identify(&list("vllm")), Some(Flavour::vllm()));
        assert_eq!(
            Flavour::identify(&list("library")),
            Some(Flavour::ollama_openai())
        );
        assert_eq!(Flavour::identify(&list("TheBloke")), None);
        assert_eq!(Flavour::identify(&json!({"error": "not found"})), None);
    }

    #[test]
    fn named_flavours_never_detect_and_have_distinct_names() {
        let named = Flavour::named();
        assert!(named.iter().all(|f| !f.detect));
        let mut names: Vec<_> = named.iter().map(|f| f.name).collect();
        names.dedup();
        assert_eq!(names.len(), 5);
    }
}
