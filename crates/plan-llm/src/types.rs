//! Normalised request, response and streaming types shared by every provider.

use serde::{Deserialize, Serialize};

/// Who said a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
    /// The result of a tool call.
    Tool,
}

/// A tool call made by the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ToolCall {
    /// The provider's id for the call (generated when the provider has none).
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, as JSON.
    pub arguments: serde_json::Value,
}

impl ToolCall {
    /// A tool call.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: serde_json::Value,
    ) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            arguments,
        }
    }
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Message {
    /// Who said it.
    pub role: Role,
    /// The text (may be empty for an assistant message that only calls tools).
    pub content: String,
    /// Tool calls made by an assistant message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a tool message: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For a tool message: the name of the tool that produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
}

impl Message {
    fn plain(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            tool_name: None,
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::plain(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::plain(Role::User, content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::plain(Role::Assistant, content)
    }

    /// An assistant message that calls tools.
    pub fn assistant_tool_calls(content: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        Self {
            tool_calls: calls,
            ..Self::plain(Role::Assistant, content)
        }
    }

    /// The result of a tool call.
    pub fn tool_result(
        call_id: impl Into<String>,
        tool_name: impl Into<String>,
        content: impl Into<String>,
    ) -> Self {
        Self {
            tool_call_id: Some(call_id.into()),
            tool_name: Some(tool_name.into()),
            ..Self::plain(Role::Tool, content)
        }
    }
}

/// The shape the reply must have.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResponseFormat {
    /// Free text.
    #[default]
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON valid against a schema.
    JsonSchema {
        /// A name for the schema (`[a-zA-Z0-9_-]`, as OpenAI requires).
        name: String,
        /// The JSON schema.
        schema: serde_json::Value,
    },
}

/// A tool the model may call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ToolSpec {
    /// The tool's name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON schema of its arguments (an object schema).
    pub parameters: serde_json::Value,
}

impl ToolSpec {
    /// A tool specification.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: serde_json::Value,
    ) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            parameters,
        }
    }
}

/// Whether and which tools the model must call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ToolChoice {
    /// The model decides.
    #[default]
    Auto,
    /// No tool calls.
    None,
    /// At least one tool call.
    Required,
    /// This tool.
    Tool(String),
}

/// What a request is for: metadata for logs, events and test doubles, never sent to the
/// model (no adapter puts it on the wire).
///
/// [`ScriptedModel::when_purpose`](crate::ScriptedModel::when_purpose) routes scripted
/// replies by it, so tests need not match private prompt text.
///
/// ```
/// use plan_llm::Purpose;
/// assert_eq!(Purpose::Plan.as_str(), "plan");
/// assert_eq!("synthesize".parse::<Purpose>(), Ok(Purpose::Synthesize));
/// assert_eq!("rank".parse::<Purpose>(), Ok(Purpose::Other("rank".into())));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Purpose {
    /// Making a plan for a goal.
    Plan,
    /// Planning the rest of a goal after a failure.
    Replan,
    /// Improving a plan after a critique.
    Improve,
    /// Reviewing a plan.
    Critique,
    /// Breaking a goal into sub-goals (or judging it atomic).
    Decompose,
    /// Doing one step of a plan.
    Step,
    /// Checking earlier steps' outputs (a `verify` step).
    Verify,
    /// Writing a program for a code step.
    Code,
    /// A round of a tool-calling loop.
    Tool,
    /// Analysing documents (a research `analyze` step).
    Analyze,
    /// Writing the final answer from the steps' results.
    Synthesize,
    /// Anything else, named by the caller.
    Other(String),
}

impl Purpose {
    /// The purpose as a lowercase word: `plan`, `replan`, `improve`, `critique`,
    /// `decompose`, `step`, `verify`, `code`, `tool`, `analyze`, `synthesize`, or the
    /// name given to [`Purpose::Other`].
    pub fn as_str(&self) -> &str {
        match self {
            Purpose::Plan => "plan",
            Purpose::Replan => "replan",
            Purpose::Improve => "improve",
            Purpose::Critique => "critique",
            Purpose::Decompose => "decompose",
            Purpose::Step => "step",
            Purpose::Verify => "verify",
            Purpose::Code => "code",
            Purpose::Tool => "tool",
            Purpose::Analyze => "analyze",
            Purpose::Synthesize => "synthesize",
            Purpose::Other(name) => name,
        }
    }
}

impl std::fmt::Display for Purpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Purpose {
    type Err = std::convert::Infallible;

    /// The purpose named by `s` (as [`as_str`](Purpose::as_str) writes it); any other word
    /// is [`Purpose::Other`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "plan" => Purpose::Plan,
            "replan" => Purpose::Replan,
            "improve" => Purpose::Improve,
            "critique" => Purpose::Critique,
            "decompose" => Purpose::Decompose,
            "step" => Purpose::Step,
            "verify" => Purpose::Verify,
            "code" => Purpose::Code,
            "tool" => Purpose::Tool,
            "analyze" => Purpose::Analyze,
            "synthesize" => Purpose::Synthesize,
            other => Purpose::Other(other.to_owned()),
        })
    }
}

impl Serialize for Purpose {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Purpose {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Ok(s.parse().unwrap_or_else(|never| match never {}))
    }
}

/// A request to a model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Request {
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Sampling temperature; `None` leaves the provider's default.
    pub temperature: Option<f32>,
    /// Most tokens to generate; `None` leaves the provider's default (adapters that need
    /// one, like Anthropic's, use 4096).
    pub max_tokens: Option<u32>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// The reply's shape.
    pub response_format: ResponseFormat,
    /// Tools the model may call.
    pub tools: Vec<ToolSpec>,
    /// Whether it must call them.
    pub tool_choice: ToolChoice,
    /// What the request is for; metadata only, never sent to the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<Purpose>,
}

impl Request {
    /// A request with these messages and defaults for the rest.
    pub fn new(messages: Vec<Message>) -> Self {
        Self {
            messages,
            ..Self::default()
        }
    }

    /// Sets the temperature.
    pub fn with_temperature(mut self, t: f32) -> Self {
        self.temperature = Some(t);
        self
    }

    /// Sets the token cap.
    pub fn with_max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = Some(n);
        self
    }

    /// Sets the response format.
    pub fn with_response_format(mut self, format: ResponseFormat) -> Self {
        self.response_format = format;
        self
    }

    /// Sets the tools.
    pub fn with_tools(mut self, tools: Vec<ToolSpec>) -> Self {
        self.tools = tools;
        self
    }

    /// Says what the request is for (metadata only: it is not sent to the model).
    pub fn with_purpose(mut self, purpose: Purpose) -> Self {
        self.purpose = Some(purpose);
        self
    }
}

/// Token counts of a call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
}

impl Usage {
    /// Usage with these counts.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
        }
    }

    /// Both counts added.
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, rhs: Self) {
        self.prompt_tokens += rhs.prompt_tokens;
        self.completion_tokens += rhs.completion_tokens;
    }
}

/// Why generation stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FinishReason {
    /// A natural end or a stop sequence.
    #[default]
    Stop,
    /// The token cap was reached: the reply may be cut off.
    Length,
    /// The model called tools.
    ToolCalls,
    /// The provider's content filter stopped it.
    ContentFilter,
    /// The model refused.
    Refusal,
    /// Anything else the provider said.
    Other(String),
}

/// A complete reply.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Response {
    /// The text.
    pub content: String,
    /// Tool calls, in order.
    pub tool_calls: Vec<ToolCall>,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
}

impl Response {
    /// A text reply that stopped naturally.
    pub fn text(content: impl Into<String>, usage: Usage) -> Self {
        Self {
            content: content.into(),
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Stop,
            usage,
        }
    }
}

/// One piece of a streamed reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Chunk {
    /// More text.
    Text(String),
    /// A fragment of a tool call; fragments with the same `index` belong together and
    /// their `arguments` strings concatenate to the call's JSON arguments.
    ToolCall {
        /// Which call (0-based) this fragment belongs to.
        index: usize,
        /// The call id, when this fragment carries it.
        id: Option<String>,
        /// The tool name, when this fragment carries it.
        name: Option<String>,
        /// A piece of the JSON arguments text.
        arguments: String,
    },
    /// Token counts (the latest value replaces earlier ones).
    Usage(Usage),
    /// A fragment of a refusal message (the model declined to answer); a stream that
    /// refuses ends with `Finish(FinishReason::Refusal)`.
    Refusal(String),
    /// Why generation stopped; the last chunk of a complete stream.
    Finish(FinishReason),
}
