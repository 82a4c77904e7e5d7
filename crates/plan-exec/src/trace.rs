//! Tracing spans shared by the runner's parts, named by the OpenTelemetry GenAI semantic
//! conventions (the run's and a step's spans live with the session and the runner), and
//! a run's trace context, kept in the store so that a run continued by another process
//! stays one trace.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The key of a run's trace context in its record's options: a W3C `traceparent`, so
/// that every process that continues the run (a worker taking it over, `plan resume`)
/// continues one trace.
pub const TRACEPARENT: &str = "traceparent";

/// The W3C `traceparent` (`00-TRACE-SPAN-FLAGS`) of `span`, when this process exports
/// traces through `tracing-opentelemetry`; `None` otherwise. Builds the span, so call
/// it after [`continue_trace`], never before.
pub fn traceparent(span: &Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// A new trace context, for a run created where nothing is traced (`plan submit`): the
/// processes that run it then share one trace id.
pub fn new_traceparent() -> String {
    let trace: u128 = rand::random::<u128>() | 1;
    let span: u64 = rand::random::<u64>() | 1;
    format!("00-{trace:032x}-{span:016x}-01")
}

/// Makes `span` (not entered yet) the child of the remote span `traceparent` names;
/// `false` when the value is not a traceparent or this process exports no traces.
pub fn continue_trace(span: &Span, traceparent: &str) -> bool {
    let parts: Vec<&str> = traceparent.trim().split('-').collect();
    let [version, trace, id, flags] = parts.as_slice() else {
        return false;
    };
    let (Ok(trace), Ok(id), Ok(flags)) = (
        TraceId::from_hex(trace),
        SpanId::from_hex(id),
        u8::from_str_radix(flags, 16),
    ) else {
        return false;
    };
    if *version != "00" || trace == TraceId::INVALID || id == SpanId::INVALID {
        return false;
    }
    let remote = SpanContext::new(
        trace,
        id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    let cx = opentelemetry::Context::new().with_remote_span_context(remote);
    span.set_parent(cx).is_ok()
}

/// An `execute_tool` span for a tool call or a program run (`gen_ai.tool.name`).
pub fn tool_span(tool: &str) -> Span {
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
pub fn record_error(span: &Span, kind: &str) {
    span.record("error.type", kind);
    span.record("otel.status_code", "ERROR");
}
