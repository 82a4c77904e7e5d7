//! Tracing spans shared by the runner's parts, named by the OpenTelemetry GenAI semantic
//! conventions (the run's and a step's spans live with the session and the runner).

use tracing::Span;

/// An `execute_tool` span for a tool call or a program run (`gen_ai.tool.name`).
pub(crate) fn tool_span(tool: &str) -> Span {
    tracing::info_span!(
        "execute_tool",
        otel.name = format!("execute_tool {tool}"),
        otel.status_code = tracing::field::Empty,
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = tool,
        error.type = tracing::field::Empty,
    )
}

/// Marks a span failed with this `error.type`.
pub(crate) fn record_error(span: &Span, kind: &str) {
    span.record("error.type", kind);
    span.record("otel.status_code", "ERROR");
}
