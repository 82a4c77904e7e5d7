//! [`Traced`]: a `chat` span per model call, named and attributed by the OpenTelemetry
//! GenAI semantic conventions, so an OTLP exporter behind `tracing-opentelemetry` shows
//! every call with its model, provider, token usage and error type.
//!
//! Prompts and replies go on the span only when
//! `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true` (the convention's opt-in);
//! keys never do (they are not part of a request).

use std::sync::OnceLock;

use async_trait::async_trait;
use futures::StreamExt;
use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::error::LlmError;
use crate::provider::{Capabilities, ChunkStream, Provider};
use crate::types::{Chunk, Request, Response, Usage};

/// The variable that opts in to prompts and replies on spans.
pub const CAPTURE_CONTENT_VAR: &str = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT";

/// Whether message content goes on spans (read once per process).
fn capture_content() -> bool {
    static CAPTURE: OnceLock<bool> = OnceLock::new();
    *CAPTURE.get_or_init(|| {
        std::env::var(CAPTURE_CONTENT_VAR).is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
    })
}

/// Opens a `chat` span around each call of the inner provider (see the module docs).
#[derive(Clone, Debug)]
pub struct Traced<P> {
    inner: P,
}

impl<P: Provider> Traced<P> {
    /// Wraps `inner`.
    pub fn new(inner: P) -> Self {
        Self { inner }
    }

    fn span(&self, request: &Request) -> Span {
        let name = self.inner.name();
        let (provider, model) = name.split_once(':').unwrap_or((name, name));
        let span = tracing::info_span!(
            "chat",
            otel.name = format!("chat {model}"),
            otel.kind = "client",
            otel.status_code = Empty,
            gen_ai.operation.name = "chat",
            gen_ai.provider.name = provider,
            gen_ai.request.model = model,
            gen_ai.request.max_tokens = Empty,
            gen_ai.usage.input_tokens = Empty,
            gen_ai.usage.output_tokens = Empty,
            gen_ai.input.messages = Empty,
            gen_ai.output.messages = Empty,
            plan.call.purpose = Empty,
            error.type = Empty,
        );
        if let Some(max) = request.max_tokens {
            span.record("gen_ai.request.max_tokens", max);
        }
        if let Some(purpose) = &request.purpose {
            span.record("plan.call.purpose", purpose.as_str());
        }
        if capture_content() {
            let messages = serde_json::to_string(&request.messages).unwrap_or_default();
            span.record("gen_ai.input.messages", messages);
        }
        span
    }
}

fn record_usage(span: &Span, usage: Usage) {
    span.record("gen_ai.usage.input_tokens", usage.prompt_tokens);
    span.record("gen_ai.usage.output_tokens", usage.completion_tokens);
}

fn record_error(span: &Span, error: &LlmError) {
    span.record("error.type", error.kind());
    span.record("otel.status_code", "ERROR");
}

fn record_reply(span: &Span, content: &str) {
    if capture_content() {
        let reply = serde_json::json!([{"role": "assistant", "content": content}]);
        span.record("gen_ai.output.messages", reply.to_string());
    }
}

#[async_trait]
impl<P: Provider> Provider for Traced<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        let span = self.span(request);
        let result = self.inner.complete(request).instrument(span.clone()).await;
        match &result {
            Ok(response) => {
                record_usage(&span, response.usage);
                record_reply(&span, &response.content);
            }
            Err(e) => record_error(&span, e),
        }
        result
    }

    async fn stream(&self, request: &Request) -> Result<ChunkStream, LlmError> {
        let span = self.span(request);
        let stream = match self.inner.stream(request).instrument(span.clone()).await {
            Ok(stream) => stream,
            Err(e) => {
                record_error(&span, &e);
                return Err(e);
            }
        };
        // The span stays open until the stream ends or is dropped.
        let mut text = String::new();
        Ok(Box::pin(stream.map(move |chunk| {
            match &chunk {
                Ok(Chunk::Text(piece)) if capture_content() => text.push_str(piece),
                Ok(Chunk::Usage(usage)) => record_usage(&span, *usage),
                Ok(Chunk::Finish(_)) => record_reply(&span, &text),
                Err(e) => record_error(&span, e),
                _ => {}
            }
            chunk
        })))
    }
}
