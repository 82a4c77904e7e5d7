//! The [`Provider`] trait every model adapter implements.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{Stream, StreamExt};

use crate::error::LlmError;
use crate::types::{Chunk, FinishReason, Request, Response, ToolCall, Usage};

/// A stream of reply chunks.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, LlmError>> + Send>>;

/// What a provider can do natively; layers and helpers use it to pick a strategy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Replies can be streamed chunk by chunk (not just delivered whole).
    pub streaming: bool,
    /// `ResponseFormat::JsonSchema` is enforced by the provider.
    pub json_schema: bool,
    /// `ResponseFormat::JsonObject` is enforced by the provider.
    pub json_object: bool,
    /// Native tool calling.
    pub tools: bool,
}

impl Capabilities {
    /// Every capability.
    pub fn all() -> Self {
        Self {
            streaming: true,
            json_schema: true,
            json_object: true,
            tools: true,
        }
    }

    /// Sets whether replies stream natively.
    pub fn with_streaming(mut self, yes: bool) -> Self {
        self.streaming = yes;
        self
    }

    /// Sets whether `ResponseFormat::JsonSchema` is enforced.
    pub fn with_json_schema(mut self, yes: bool) -> Self {
        self.json_schema = yes;
        self
    }

    /// Sets whether `ResponseFormat::JsonObject` is enforced.
    pub fn with_json_object(mut self, yes: bool) -> Self {
        self.json_object = yes;
        self
    }

    /// Sets whether tools are called natively.
    pub fn with_tools(mut self, yes: bool) -> Self {
        self.tools = yes;
        self
    }
}

/// A chat model behind some provider: the one trait adapters, layers and test doubles
/// implement. Object-safe, so `Arc<dyn Provider>` selects a model at run time.
#[async_trait]
pub trait Provider: Send + Sync {
    /// A short name for logs and reports, e.g. `openai:gpt-4o-mini`. Never contains a key.
    fn name(&self) -> &str;

    /// What the provider supports natively.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Sends a request and waits for the whole reply.
    async fn complete(&self, request: &Request) -> Result<Response, LlmError>;

    /// Sends a request and streams the reply. The default delivers the whole reply from
    /// [`complete`](Self::complete) as chunks.
    async fn stream(&self, request: &Request) -> Result<ChunkStream, LlmError> {
        let response = self.complete(request).await?;
        Ok(Box::pin(futures::stream::iter(
            response_to_chunks(response).into_iter().map(Ok),
        )))
    }
}

/// The chunks that stream a complete response.
pub fn response_to_chunks(response: Response) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    if !response.content.is_empty() {
        chunks.push(Chunk::Text(response.content));
    }
    for (index, call) in response.tool_calls.into_iter().enumerate() {
        chunks.push(Chunk::ToolCall {
            index,
            id: Some(call.id),
            name: Some(call.name),
            arguments: call.arguments.to_string(),
        });
    }
    chunks.push(Chunk::Usage(response.usage));
    chunks.push(Chunk::Finish(response.finish_reason));
    chunks
}

/// Collects a chunk stream into a response. A stream that ends without a
/// [`Chunk::Finish`] is reported as truncated. Tool-call arguments that are empty become
/// `{}`; when the reply was cut off by the token cap (`FinishReason::Length`), arguments
/// that are incomplete JSON are kept as a JSON string holding the partial text.
///
/// # Errors
/// The stream's first error; [`LlmError::Refused`] when the model refused (refusal chunks
/// or `Finish(Refusal)`); [`LlmError::InvalidResponse`] for a truncated stream or
/// tool-call arguments that are not JSON.
pub async fn collect_stream(provider: &str, mut stream: ChunkStream) -> Result<Response, LlmError> {
    let mut content = String::new();
    let mut refusal: Option<String> = None;
    let mut usage = Usage::default();
    let mut finish = None;
    let mut calls: Vec<(Option<String>, Option<String>, String)> = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk? {
            Chunk::Text(t) => content.push_str(&t),
            Chunk::ToolCall {
                index,
                id,
                name,
                arguments,
            } => {
                if calls.len() <= index {
                    calls.resize(index + 1, (None, None, String::new()));
                }
                let slot = &mut calls[index];
                if slot.0.is_none() {
                    slot.0 = id;
                }
                if slot.1.is_none() {
                    slot.1 = name;
                }
                slot.2.push_str(&arguments);
            }
            Chunk::Usage(u) => usage = u,
            Chunk::Refusal(r) => refusal.get_or_insert_with(String::new).push_str(&r),
            Chunk::Finish(f) => finish = Some(f),
        }
    }
    if refusal.is_some() || finish == Some(FinishReason::Refusal) {
        let text = refusal.unwrap_or_default();
        let message = if text.trim().is_empty() {
            "the model declined to answer".to_owned()
        } else {
            text
        };
        return Err(LlmError::Refused {
            provider: provider.to_owned(),
            message,
        });
    }
    let Some(finish_reason) = finish else {
        return Err(LlmError::InvalidResponse {
            provider: provider.to_owned(),
            message: "the stream ended before the reply was complete (truncated)".to_owned(),
        });
    };
    let mut tool_calls = Vec::with_capacity(calls.len());
    for (i, (id, name, args)) in calls.into_iter().enumerate() {
        let arguments = if args.trim().is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            match serde_json::from_str(&args) {
                Ok(value) => value,
                // Cut off by the token cap: keep the partial text rather than lose it.
                Err(_) if finish_reason == FinishReason::Length => serde_json::Value::String(args),
                Err(e) => {
                    return Err(LlmError::InvalidResponse {
                        provider: provider.to_owned(),
                        message: format!("tool call #{i} has arguments that are not JSON: {e}"),
                    });
                }
            }
        };
        tool_calls.push(ToolCall {
            id: id.unwrap_or_else(|| format!("call_{i}")),
            name: name.unwrap_or_default(),
            arguments,
        });
    }
    Ok(Response {
        content,
        tool_calls,
        finish_reason,
        usage,
    })
}

#[async_trait]
impl<P: Provider + ?Sized> Provider for &P {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        (**self).complete(request).await
    }
    async fn stream(&self, request: &Request) -> Result<ChunkStream, LlmError> {
        (**self).stream(request).await
    }
}

#[async_trait]
impl<P: Provider + ?Sized> Provider for Box<P> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        (**self).complete(request).await
    }
    async fn stream(&self, request: &Request) -> Result<ChunkStream, LlmError> {
        (**self).stream(request).await
    }
}

#[async_trait]
impl<P: Provider + ?Sized> Provider for Arc<P> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        (**self).complete(request).await
    }
    async fn stream(&self, request: &Request) -> Result<ChunkStream, LlmError> {
        (**self).stream(request).await
    }
}

impl FinishReason {
    /// Whether the reply may be cut off (the token cap was reached).
    pub fn is_truncated(&self) -> bool {
        matches!(self, FinishReason::Length)
    }
}
