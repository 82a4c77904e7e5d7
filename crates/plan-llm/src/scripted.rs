//! [`ScriptedModel`]: a provider that answers from a script, for testing agents offline.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;

use crate::error::LlmError;
use crate::provider::{Capabilities, ChunkStream, Provider, collect_stream};
use crate::types::{
    Chunk, FinishReason, Message, Purpose, Request, Response, Role, ToolCall, Usage,
};

/// One scripted answer: a response (text, JSON, tool calls) or an error, with optional
/// latency.
///
/// ```
/// use plan_llm::{LlmError, Reply};
/// use serde_json::json;
///
/// let text = Reply::text("hello");
/// let json = Reply::json(json!({"steps": []}));
/// let call = Reply::tool_call("search", json!({"q": "rust"}));
/// let fail = Reply::error(LlmError::Timeout(std::time::Duration::from_secs(1)));
/// # let _ = (text, json, call, fail);
/// ```
#[derive(Clone, Debug)]
pub struct Reply {
    outcome: Outcome,
    usage: Option<Usage>,
    latency: Option<Duration>,
}

#[derive(Clone, Debug)]
enum Outcome {
    Response(Response),
    Error(LlmError),
}

impl Reply {
    /// A text reply that stops naturally.
    pub fn text(text: impl Into<String>) -> Self {
        Self::response(Response::text(text, Usage::default()))
    }

    /// A reply whose text is this JSON value, serialised.
    pub fn json(value: serde_json::Value) -> Self {
        Self::text(value.to_string())
    }

    /// A reply that calls one tool.
    pub fn tool_call(name: impl Into<String>, arguments: serde_json::Value) -> Self {
        Self::tool_calls(vec![ToolCall::new("call_0", name, arguments)])
    }

    /// A reply that calls several tools.
    pub fn tool_calls(calls: Vec<ToolCall>) -> Self {
        let mut response = Response::text("", Usage::default());
        response.tool_calls = calls;
        response.finish_reason = FinishReason::ToolCalls;
        Self::response(response)
    }

    /// A refusal: `complete` fails with [`LlmError::Refused`] carrying `text`, and a stream
    /// yields [`Chunk::Refusal`] then `Finish(Refusal)`.
    pub fn refusal(text: impl Into<String>) -> Self {
        Self::text(text).with_finish_reason(FinishReason::Refusal)
    }

    /// A reply that is this complete response (its usage is kept unless it is zero).
    pub fn response(response: Response) -> Self {
        let usage = (response.usage != Usage::default()).then_some(response.usage);
        Self {
            outcome: Outcome::Response(response),
            usage,
            latency: None,
        }
    }

    /// A call that fails with this error.
    pub fn error(error: LlmError) -> Self {
        Self {
            outcome: Outcome::Error(error),
            usage: None,
            latency: None,
        }
    }

    /// Reports this usage instead of the estimate (about four characters per token).
    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = Some(usage);
        self
    }

    /// Sets why the reply stopped.
    pub fn with_finish_reason(mut self, reason: FinishReason) -> Self {
        if let Outcome::Response(r) = &mut self.outcome {
            r.finish_reason = reason;
        }
        self
    }

    /// Waits this long before answering (overrides the model's latency).
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = Some(latency);
        self
    }
}

type Predicate = Arc<dyn Fn(&Request) -> bool + Send + Sync>;
type Responder = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

#[derive(Clone)]
struct Rule {
    when: Predicate,
    reply: Responder,
}

#[derive(Default)]
struct Script {
    queue: VecDeque<Reply>,
    rules: Vec<Rule>,
    fallback: Option<Responder>,
    requests: Vec<Request>,
}

struct Shared {
    name: String,
    capabilities: Capabilities,
    latency: Duration,
    chunks: Option<(usize, Duration)>,
    script: Mutex<Script>,
}

/// A [`Provider`] that answers from a script: the way to test agents offline, without a
/// model or a network.
///
/// For each request it picks, in order: the first matching rule
/// ([`when_purpose`](Self::when_purpose), [`when`](Self::when),
/// [`when_user_contains`](Self::when_user_contains)), else the next
/// queued reply ([`reply`](Self::reply)), else the fallback
/// ([`otherwise`](Self::otherwise), [`respond_with`](Self::respond_with)); with none left the
/// call fails with [`LlmError::InvalidResponse`] naming the request. Every request is
/// recorded ([`requests`](Self::requests), [`call_count`](Self::call_count)), including
/// those that fail.
///
/// Clones share the script and the record, so keep a clone to inspect after handing one to
/// an agent. Latency uses `tokio::time::sleep`, so it works with paused time
/// (`#[tokio::test(start_paused = true)]`). With [`streaming`](Self::streaming) the reply
/// text arrives in several chunks with a delay between them. Usage, unless scripted, is
/// estimated at about four characters per token.
///
/// ```
/// use plan_llm::{Message, Provider, Purpose, Reply, Request, ScriptedModel};
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), plan_llm::LlmError> {
/// let model = ScriptedModel::new()
///     .when_purpose(Purpose::Plan, Reply::json(json!({"steps": ["a", "b"]})))
///     .reply(Reply::text("first"))
///     .otherwise(Reply::text("fallback"));
///
/// let ask = Request::new(vec![Message::user("make a plan")]).with_purpose(Purpose::Plan);
/// let plan = model.complete(&ask).await?;
/// assert_eq!(plan.content, r#"{"steps":["a","b"]}"#);
/// let first = model.complete(&Request::new(vec![Message::user("hi")])).await?;
/// assert_eq!(first.content, "first");
/// let later = model.complete(&Request::new(vec![Message::user("hi")])).await?;
/// assert_eq!(later.content, "fallback");
/// assert_eq!(model.call_count(), 3);
/// assert_eq!(model.requests()[0].messages[0].content, "make a plan");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ScriptedModel {
    shared: Arc<Shared>,
}

impl Default for ScriptedModel {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ScriptedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let script = self.script();
        f.debug_struct("ScriptedModel")
            .field("name", &self.shared.name)
            .field("queued", &script.queue.len())
            .field("rules", &script.rules.len())
            .field("calls", &script.requests.len())
            .finish()
    }
}

impl ScriptedModel {
    /// An empty script named `scripted`, with every capability.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                name: "scripted".to_owned(),
                capabilities: Capabilities::all(),
                latency: Duration::ZERO,
                chunks: None,
                script: Mutex::new(Script::default()),
            }),
        }
    }

    /// A model that answers every request with these replies in order.
    pub fn from_replies(replies: impl IntoIterator<Item = Reply>) -> Self {
        replies.into_iter().fold(Self::new(), Self::reply)
    }

    fn configure(mut self, f: impl FnOnce(&mut Shared)) -> Self {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => f(shared),
            None => {
                // Already shared by a clone: build a fresh handle with the same script.
                let script = std::mem::take(&mut *self.script());
                let mut shared = Shared {
                    name: self.shared.name.clone(),
                    capabilities: self.shared.capabilities,
                    latency: self.shared.latency,
                    chunks: self.shared.chunks,
                    script: Mutex::new(script),
                };
                f(&mut shared);
                self.shared = Arc::new(shared);
            }
        }
        self
    }

    /// Sets the name reported by [`Provider::name`].
    pub fn named(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.configure(|s| s.name = name)
    }

    /// Sets the capabilities it reports (all by default), e.g. to exercise fallbacks.
    pub fn with_capabilities(self, capabilities: Capabilities) -> Self {
        self.configure(|s| s.capabilities = capabilities)
    }

    /// Waits this long before every answer (a reply's own latency wins).
    pub fn with_latency(self, latency: Duration) -> Self {
        self.configure(|s| s.latency = latency)
    }

    /// Streams each reply's text (and tool-call arguments) in `chunks` pieces with `delay`
    /// between them, so a consumer can watch output arrive over time.
    pub fn streaming(self, chunks: usize, delay: Duration) -> Self {
        self.configure(|s| s.chunks = Some((chunks.max(1), delay)))
    }

    /// Queues a reply; queued replies are used once each, in order.
    pub fn reply(self, reply: Reply) -> Self {
        self.push(reply);
        self
    }

    /// Queues a reply on a shared handle.
    pub fn push(&self, reply: Reply) {
        self.script().queue.push_back(reply);
    }

    /// Answers every request for which `predicate` holds with `reply` (rules are checked in
    /// the order added, before the queue).
    pub fn when(
        self,
        predicate: impl Fn(&Request) -> bool + Send + Sync + 'static,
        reply: Reply,
    ) -> Self {
        self.script().rules.push(Rule {
            when: Arc::new(predicate),
            reply: Arc::new(move |_| reply.clone()),
        });
        self
    }

    /// Answers every request made for `purpose` (see [`Request::purpose`]) with `reply`:
    /// the way to route replies without depending on prompt text.
    pub fn when_purpose(self, purpose: Purpose, reply: Reply) -> Self {
        self.when(move |r| r.purpose.as_ref() == Some(&purpose), reply)
    }

    /// Answers every request made for `purpose` by calling `f` (e.g. to answer each step
    /// from its prompt).
    pub fn respond_to_purpose(
        self,
        purpose: Purpose,
        f: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> Self {
        self.script().rules.push(Rule {
            when: Arc::new(move |r: &Request| r.purpose.as_ref() == Some(&purpose)),
            reply: Arc::new(f),
        });
        self
    }

    /// Answers every request whose last user message contains `needle` with `reply`.
    pub fn when_user_contains(self, needle: impl Into<String>, reply: Reply) -> Self {
        let needle = needle.into();
        self.when(
            move |r| last_of(r, Role::User).is_some_and(|m| m.content.contains(&needle)),
            reply,
        )
    }

    /// Answers every request whose system message contains `needle` with `reply`.
    pub fn when_system_contains(self, needle: impl Into<String>, reply: Reply) -> Self {
        let needle = needle.into();
        self.when(
            move |r| {
                r.messages
                    .iter()
                    .any(|m| m.role == Role::System && m.content.contains(&needle))
            },
            reply,
        )
    }

    /// Answers requests that match nothing else with `reply`.
    pub fn otherwise(self, reply: Reply) -> Self {
        self.respond_with(move |_| reply.clone())
    }

    /// Answers requests that match nothing else by calling `f` (e.g. to echo the prompt).
    pub fn respond_with(self, f: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Self {
        self.script().fallback = Some(Arc::new(f));
        self
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.script().requests.clone()
    }

    /// The most recent request.
    pub fn last_request(&self) -> Option<Request> {
        self.script().requests.last().cloned()
    }

    /// How many calls were made (`complete` and `stream` alike).
    pub fn call_count(&self) -> usize {
        self.script().requests.len()
    }

    /// How many queued replies are left.
    pub fn remaining(&self) -> usize {
        self.script().queue.len()
    }

    fn script(&self) -> MutexGuard<'_, Script> {
        self.shared
            .script
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records the request and picks the reply.
    fn next(&self, request: &Request) -> Result<Reply, LlmError> {
        let mut script = self.script();
        script.requests.push(request.clone());
        let call = script.requests.len();
        if let Some(rule) = script.rules.iter().find(|rule| (rule.when)(request)) {
            return Ok((rule.reply)(request));
        }
        if let Some(reply) = script.queue.pop_front() {
            return Ok(reply);
        }
        if let Some(fallback) = script.fallback.clone() {
            drop(script);
            return Ok(fallback(request));
        }
        let last = last_of(request, Role::User)
            .map(|m| preview(&m.content))
            .unwrap_or_default();
        let purpose = request
            .purpose
            .as_ref()
            .map(|p| format!("purpose {p}, "))
            .unwrap_or_default();
        Err(LlmError::InvalidResponse {
            provider: self.shared.name.clone(),
            message: format!(
                "no scripted reply for call #{call} ({purpose}last user message: {last:?}); queue more replies or add a rule or fallback"
            ),
        })
    }

    async fn answer(&self, request: &Request) -> Result<Response, LlmError> {
        let reply = self.next(request)?;
        let latency = reply.latency.unwrap_or(self.shared.latency);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match reply.outcome {
            Outcome::Error(e) => Err(e),
            Outcome::Response(mut response) => {
                response.usage = reply
                    .usage
                    .unwrap_or_else(|| estimate_usage(request, &response));
                Ok(response)
            }
        }
    }
}

fn last_of(request: &Request, role: Role) -> Option<&Message> {
    request.messages.iter().rev().find(|m| m.role == role)
}

fn preview(text: &str) -> String {
    let mut s: String = text.chars().take(60).collect();
    if text.chars().count() > 60 {
        s.push('…');
    }
    s
}

fn tokens(chars: usize) -> u64 {
    chars.div_ceil(4) as u64
}

fn estimate_usage(request: &Request, response: &Response) -> Usage {
    let prompt: usize = request.messages.iter().map(|m| m.content.len()).sum();
    let args: usize = response
        .tool_calls
        .iter()
        .map(|c| c.arguments.to_string().len())
        .sum();
    Usage::new(tokens(prompt), tokens(response.content.len() + args))
}

/// Splits `text` into `n` pieces of about equal length on char boundaries.
fn split_text(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let size = chars.len().div_ceil(n.max(1));
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

fn stream_chunks(response: Response, pieces: usize) -> Vec<Chunk> {
    let refused = response.finish_reason == FinishReason::Refusal;
    let mut chunks: Vec<Chunk> = split_text(&response.content, pieces)
        .into_iter()
        .map(|t| {
            if refused {
                Chunk::Refusal(t)
            } else {
                Chunk::Text(t)
            }
        })
        .collect();
    for (index, call) in response.tool_calls.into_iter().enumerate() {
        let args = call.arguments.to_string();
        let mut parts = split_text(&args, pieces).into_iter();
        chunks.push(Chunk::ToolCall {
            index,
            id: Some(call.id),
            name: Some(call.name),
            arguments: parts.next().unwrap_or_default(),
        });
        chunks.extend(parts.map(|arguments| Chunk::ToolCall {
            index,
            id: None,
            name: None,
            arguments,
        }));
    }
    chunks.push(Chunk::Usage(response.usage));
    chunks.push(Chunk::Finish(response.finish_reason));
    chunks
}

#[async_trait]
impl Provider for ScriptedModel {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn capabilities(&self) -> Capabilities {
        self.shared.capabilities
    }

    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        let response = self.answer(request).await?;
        if response.finish_reason == FinishReason::Refusal {
            // Same outcome as collecting the stream.
            let stream = futures::stream::iter(stream_chunks(response, 1).into_iter().map(Ok));
            return collect_stream(&self.shared.name, Box::pin(stream)).await;
        }
        Ok(response)
    }

    async fn stream(&self, request: &Request) -> Result<ChunkStream, LlmError> {
        let response = self.answer(request).await?;
        let (pieces, delay) = self.shared.chunks.unwrap_or((1, Duration::ZERO));
        let chunks = stream_chunks(response, pieces);
        let stream = futures::stream::iter(chunks.into_iter().enumerate()).then(
            move |(i, chunk)| async move {
                if i > 0
                    && !delay.is_zero()
                    && matches!(chunk, Chunk::Text(_) | Chunk::ToolCall { .. })
                {
                    tokio::time::sleep(delay).await;
                }
                Ok::<Chunk, LlmError>(chunk)
            },
        );
        Ok(Box::pin(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_text_keeps_every_char() {
        let parts = split_text("héllo wörld", 4);
        assert_eq!(parts.len(), 4);
        assert_eq!(parts.concat(), "héllo wörld");
    }
}
