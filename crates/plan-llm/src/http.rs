//! HTTP plumbing shared by the adapters: status and header mapping to [`LlmError`],
//! SSE and NDJSON body decoding. Nothing here is public.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::HeaderMap;

use crate::error::LlmError;
use crate::provider::ChunkStream;
use crate::secret::ApiKey;
use crate::types::Chunk;

/// The longest we keep from an error body in a message.
const MAX_BODY: usize = 2000;

/// A reqwest client with the settings every adapter uses.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Joins a base URL and a path without doubling or losing the slash.
pub(crate) fn join(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// Removes every occurrence of the key from text that came from the network.
pub(crate) fn scrub(text: &str, key: Option<&ApiKey>) -> String {
    match key {
        Some(k) if k.expose_secret().len() >= 4 => text.replace(k.expose_secret(), "[redacted]"),
        _ => text.to_owned(),
    }
}

/// A transport failure (connect, reset, body read), without the URL's query.
pub(crate) fn transport(provider: &str, error: reqwest::Error, key: Option<&ApiKey>) -> LlmError {
    let error = error.without_url();
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    if error.is_timeout() {
        message.push_str(" (timed out)");
    }
    LlmError::Transport {
        provider: provider.to_owned(),
        message: scrub(&message, key),
    }
}

/// The delay the server asked for: `retry-after-ms`, then `retry-after` as seconds (an
/// integer or a float) or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_at(headers, SystemTime::now())
}

pub(crate) fn retry_after_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = get("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The server's `x-should-retry` hint.
pub(crate) fn should_retry(headers: &HeaderMap) -> Option<bool> {
    match headers.get("x-should-retry")?.to_str().ok()?.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// The request id the server gave, from the usual headers.
pub(crate) fn request_id(headers: &HeaderMap) -> Option<String> {
    ["x-request-id", "request-id"]
        .iter()
        .find_map(|h| headers.get(*h)?.to_str().ok().map(str::to_owned))
}

/// What an error body said, as each adapter reads it.
#[derive(Debug, Default)]
pub(crate) struct ErrorInfo {
    /// The provider's error type or code, e.g. `rate_limit_error`, `context_length_exceeded`.
    pub kind: String,
    /// The human-readable message.
    pub message: String,
    /// A request id found in the body.
    pub request_id: Option<String>,
}

fn mentions_context_length(info: &ErrorInfo) -> bool {
    let kind = info.kind.to_ascii_lowercase();
    let msg = info.message.to_ascii_lowercase();
    kind.contains("context_length")
        || kind == "request_too_large"
        || [
            "context length",
            "context_length",
            "context window",
            "maximum context",
            "prompt is too long",
            "too many tokens",
            "exceeds the context",
        ]
        .iter()
        .any(|p| msg.contains(p))
}

/// Maps an HTTP error status, its headers and the parsed body to an [`LlmError`].
pub(crate) fn status_error(
    provider: &str,
    status: u16,
    headers: &HeaderMap,
    info: ErrorInfo,
    key: Option<&ApiKey>,
) -> LlmError {
    let provider = provider.to_owned();
    let mut message = if info.message.trim().is_empty() {
        format!("HTTP {status} with no error message")
    } else {
        info.message.clone()
    };
    if message.len() > MAX_BODY {
        let mut cut = MAX_BODY;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    if let Some(id) = info.request_id.clone().or_else(|| request_id(headers)) {
        message.push_str(&format!(" (request id {id})"));
    }
    let message = scrub(&message, key);
    let retry_after = retry_after(headers);
    let hint = should_retry(headers);
    let error = match status {
        401 | 403 => LlmError::Auth {
            provider: provider.clone(),
            message: format!("{message}; check the API key"),
        },
        429 => LlmError::RateLimited {
            provider: provider.clone(),
            message: message.clone(),
            retry_after,
        },
        400 | 413 | 422 if mentions_context_length(&info) => LlmError::ContextLength {
            provider: provider.clone(),
            message: format!("{message}; shorten the prompt or use a model with a longer context"),
        },
        408 | 409 | 500..=599 => LlmError::Server {
            provider: provider.clone(),
            status: Some(status),
            message: message.clone(),
            retry_after,
        },
        _ => LlmError::BadRequest {
            provider: provider.clone(),
            status,
            message: message.clone(),
        },
    };
    match (hint, error.is_retryable()) {
        (Some(false), true) => LlmError::BadRequest {
            provider,
            status,
            message: format!("{message} (the server asked not to retry)"),
        },
        (Some(true), false) if !matches!(error, LlmError::Auth { .. }) => LlmError::Server {
            provider,
            status: Some(status),
            message,
            retry_after,
        },
        _ => error,
    }
}

/// Maps an error that arrived inside a stream (on HTTP 200) by its type.
pub(crate) fn stream_error(provider: &str, info: ErrorInfo, key: Option<&ApiKey>) -> LlmError {
    let provider = provider.to_owned();
    let mut message = if info.kind.is_empty() {
        info.message.clone()
    } else {
        format!("{} ({})", info.message, info.kind)
    };
    if let Some(id) = &info.request_id {
        message.push_str(&format!(" (request id {id})"));
    }
    let message = scrub(&message, key);
    let kind = info.kind.as_str();
    match kind {
        "overloaded_error" => LlmError::Server {
            provider,
            status: Some(529),
            message,
            retry_after: None,
        },
        "rate_limit_error" | "rate_limit_exceeded" | "tokens" | "requests" => {
            LlmError::RateLimited {
                provider,
                message,
                retry_after: None,
            }
        }
        "authentication_error" | "permission_error" | "invalid_api_key" => {
            LlmError::Auth { provider, message }
        }
        _ if mentions_context_length(&info) => LlmError::ContextLength { provider, message },
        "invalid_request_error" | "not_found_error" => LlmError::BadRequest {
            provider,
            status: 400,
            message,
        },
        _ => LlmError::Server {
            provider,
            status: None,
            message: format!("error in the middle of the stream: {message}"),
            retry_after: None,
        },
    }
}

/// Reads an error response whole and maps it, using `parse` to read the body.
pub(crate) async fn read_error(
    provider: &str,
    response: reqwest::Response,
    key: Option<&ApiKey>,
    parse: fn(&str) -> Option<ErrorInfo>,
) -> LlmError {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = match response.text().await {
        Ok(b) => b,
        Err(e) => return transport(provider, e, key),
    };
    error_from_body(provider, status, &headers, &body, key, parse)
}

/// The error for a non-success reply whose body was already read.
pub(crate) fn error_from_body(
    provider: &str,
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &str,
    key: Option<&ApiKey>,
    parse: fn(&str) -> Option<ErrorInfo>,
) -> LlmError {
    let info = parse(body).unwrap_or_else(|| ErrorInfo {
        message: body.trim().to_owned(),
        ..ErrorInfo::default()
    });
    status_error(provider, status, headers, info, key)
}

/// The body as a byte stream with transport errors mapped.
fn body_bytes(
    provider: &str,
    response: reqwest::Response,
    key: Option<ApiKey>,
) -> impl Stream<Item = Result<Bytes, LlmError>> + Send + 'static {
    let provider = provider.to_owned();
    response
        .bytes_stream()
        .map(move |r| r.map_err(|e| transport(&provider, e, key.as_ref())))
}

/// One server-sent event.
#[derive(Debug)]
pub(crate) struct SseEvent {
    /// The `event:` field (`message` when absent).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Decodes an SSE body with `eventsource-stream` (line endings, multi-line data, comments,
/// UTF-8 split across reads). Two additions: leading byte-order marks are removed here,
/// even when split across reads (the crate slices a BOM at byte offset 1, which is not a
/// char boundary, and would panic), and at a clean end
/// of the body a blank line is appended so a last event without its terminating blank
/// line is still dispatched; whether the stream was complete is then the adapter's call.
pub(crate) fn sse_events(
    provider: &str,
    response: reqwest::Response,
    key: Option<ApiKey>,
) -> impl Stream<Item = Result<SseEvent, LlmError>> + Send + 'static {
    sse_from_bytes(provider, body_bytes(provider, response, key))
}

/// [`sse_events`] over any byte stream.
pub(crate) fn sse_from_bytes(
    provider: &str,
    body: impl Stream<Item = Result<Bytes, LlmError>> + Send + 'static,
) -> impl Stream<Item = Result<SseEvent, LlmError>> + Send + 'static {
    use eventsource_stream::{EventStreamError, Eventsource};
    let provider_name = provider.to_owned();
    const BOM: &[u8] = &[0xEF, 0xBB, 0xBF];
    // Bytes held back while the body might still start with a byte-order mark.
    let mut start: Option<Vec<u8>> = Some(Vec::new());
    let bytes = body
        .map(move |chunk| {
            chunk.map(|b| {
                let Some(held) = start.as_mut() else {
                    return b;
                };
                held.extend_from_slice(&b);
                while held.starts_with(BOM) {
                    held.drain(..BOM.len());
                }
                if BOM.starts_with(held) {
                    return Bytes::new();
                }
                let out = Bytes::from(std::mem::take(held));
                start = None;
                out
            })
        })
        .chain(futures::stream::once(async {
            Ok(Bytes::from_static(b"\n\n"))
        }));
    bytes.eventsource().map(move |item| match item {
        Ok(ev) => Ok(SseEvent {
            event: ev.event,
            data: ev.data,
        }),
        Err(EventStreamError::Transport(e)) => Err(e),
        Err(EventStreamError::Utf8(e)) => Err(LlmError::InvalidResponse {
            provider: provider_name.clone(),
            message: format!("the event stream is not valid UTF-8: {e}"),
        }),
        Err(EventStreamError::Parser(e)) => Err(LlmError::InvalidResponse {
            provider: provider_name.clone(),
            message: format!("the event stream could not be parsed: {e}"),
        }),
    })
}

/// Splits an NDJSON body into complete lines (as bytes, so UTF-8 split across reads is
/// whole again); a last line without `\n` is still returned.
pub(crate) fn ndjson_lines(
    provider: &str,
    response: reqwest::Response,
    key: Option<ApiKey>,
) -> impl Stream<Item = Result<String, LlmError>> + Send + 'static {
    ndjson_from_bytes(provider, body_bytes(provider, response, key))
}

/// [`ndjson_lines`] over any byte stream.
pub(crate) fn ndjson_from_bytes(
    provider: &str,
    body: impl Stream<Item = Result<Bytes, LlmError>> + Send + 'static,
) -> impl Stream<Item = Result<String, LlmError>> + Send + 'static {
    let provider = provider.to_owned();
    let bytes = body.map(Some).chain(futures::stream::once(async { None }));
    let mut buffer: Vec<u8> = Vec::new();
    bytes
        .map(move |item| -> Vec<Result<String, LlmError>> {
            let mut lines = Vec::new();
            match item {
                Some(Err(e)) => lines.push(Err(e)),
                Some(Ok(b)) => {
                    buffer.extend_from_slice(&b);
                    while let Some(pos) = buffer.iter().position(|&c| c == b'\n') {
                        let line: Vec<u8> = buffer.drain(..=pos).collect();
                        lines.push(decode_line(&provider, &line));
                    }
                }
                None => {
                    if !buffer.is_empty() {
                        let line = std::mem::take(&mut buffer);
                        lines.push(decode_line(&provider, &line));
                    }
                }
            }
            lines
        })
        .flat_map(futures::stream::iter)
        .filter(|l| futures::future::ready(!matches!(l, Ok(s) if s.trim().is_empty())))
}

fn decode_line(provider: &str, line: &[u8]) -> Result<String, LlmError> {
    String::from_utf8(line.to_vec())
        .map(|s| s.trim().to_owned())
        .map_err(|e| LlmError::InvalidResponse {
            provider: provider.to_owned(),
            message: format!("a stream line is not valid UTF-8: {e}"),
        })
}

/// Turns a stream of wire items into chunks with a decoder.
pub(crate) trait Decoder: Send + 'static {
    /// The wire item (an SSE event, an NDJSON line).
    type Item: Send;
    /// Handles one item, pushing chunks; returns `true` when the reply is complete.
    fn feed(&mut self, item: Self::Item, out: &mut Vec<Chunk>) -> Result<bool, LlmError>;
    /// Called when the body ended before the reply was complete.
    fn truncated(&self) -> LlmError;
}

/// Drives a decoder over a stream of items; ends after the first error or completion.
pub(crate) fn decode<S, D>(items: S, decoder: D) -> ChunkStream
where
    S: Stream<Item = Result<D::Item, LlmError>> + Send + 'static,
    D: Decoder,
{
    struct State<S, D> {
        items: std::pin::Pin<Box<S>>,
        decoder: D,
        queue: VecDeque<Result<Chunk, LlmError>>,
        finished: bool,
    }
    let state = State {
        items: Box::pin(items),
        decoder,
        queue: VecDeque::new(),
        finished: false,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(next) = st.queue.pop_front() {
                return Some((next, st));
            }
            if st.finished {
                return None;
            }
            match st.items.next().await {
                Some(Ok(item)) => {
                    let mut out = Vec::new();
                    let result = st.decoder.feed(item, &mut out);
                    st.queue.extend(out.into_iter().map(Ok));
                    match result {
                        Ok(true) => st.finished = true,
                        Ok(false) => {}
                        Err(e) => {
                            st.queue.push_back(Err(e));
                            st.finished = true;
                        }
                    }
                }
                Some(Err(e)) => {
                    st.queue.push_back(Err(e));
                    st.finished = true;
                }
                None => {
                    st.queue.push_back(Err(st.decoder.truncated()));
                    st.finished = true;
                }
            }
        }
    }))
}

/// Test helpers: a body cut at given offsets, and a decoder run over it.
#[cfg(test)]
pub(crate) mod replay {
    use super::*;
    use crate::provider::collect_stream;
    use crate::types::Response;

    /// `body` cut at these offsets, as a byte stream.
    pub fn pieces(
        body: &[u8],
        cuts: &[usize],
    ) -> impl Stream<Item = Result<Bytes, LlmError>> + Send + 'static {
        let mut out = Vec::new();
        let mut start = 0;
        for &c in cuts.iter().chain(std::iter::once(&body.len())) {
            if c > start && c <= body.len() {
                out.push(Ok(Bytes::copy_from_slice(&body[start..c])));
                start = c;
            }
        }
        futures::stream::iter(out)
    }

    /// Every way the tests cut a body: whole, every byte, each single cut, random.
    pub fn cut_sets(body: &[u8]) -> Vec<Vec<usize>> {
        let mut sets = vec![Vec::new(), (1..body.len()).collect()];
        // Each single cut: everywhere in small bodies, at awkward places and a stride in
        // large ones (inside UTF-8 characters, between CR and LF).
        let stride = if body.len() < 3000 { 1 } else { 13 };
        sets.extend(
            (1..body.len())
                .filter(|&c| {
                    c % stride == 0
                        || body[c] & 0b1100_0000 == 0b1000_0000
                        || (body[c - 1] == b'\r' && body[c] == b'\n')
                })
                .map(|c| vec![c]),
        );
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20 {
            let mut cuts = Vec::new();
            let mut at = 0;
            loop {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                at += 1 + (state % 17) as usize;
                if at >= body.len() {
                    break;
                }
                cuts.push(at);
            }
            sets.push(cuts);
        }
        sets
    }

    /// Runs a decoder over SSE `body` cut every way; asserts all outcomes agree.
    pub fn sse_all_cuts<D: Decoder<Item = SseEvent>>(
        body: &[u8],
        make: impl Fn() -> D,
    ) -> Result<Response, String> {
        run_all_cuts(body, |s| decode(sse_from_bytes("p", s), make()))
    }

    /// Runs a decoder over NDJSON `body` cut every way; asserts all outcomes agree.
    pub fn ndjson_all_cuts<D: Decoder<Item = String>>(
        body: &[u8],
        make: impl Fn() -> D,
    ) -> Result<Response, String> {
        run_all_cuts(body, |s| decode(ndjson_from_bytes("p", s), make()))
    }

    fn run_all_cuts(
        body: &[u8],
        run: impl Fn(
            std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, LlmError>> + Send>>,
        ) -> ChunkStream,
    ) -> Result<Response, String> {
        let mut first: Option<Result<Response, String>> = None;
        for cuts in cut_sets(body) {
            let stream = run(Box::pin(pieces(body, &cuts)));
            let result =
                futures::executor::block_on(collect_stream("p", stream)).map_err(|e| e.to_string());
            match &first {
                None => first = Some(result),
                Some(f) => assert_eq!(f, &result, "cuts {cuts:?} changed the outcome"),
            }
        }
        first.unwrap_or_else(|| Err("no cuts".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn retry_after_reads_ms_then_seconds_then_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let both = headers(&[("retry-after", "4"), ("retry-after-ms", "3890")]);
        assert_eq!(
            retry_after_at(&both, now),
            Some(Duration::from_millis(3890))
        );
        let secs = headers(&[("retry-after", "4")]);
        assert_eq!(retry_after_at(&secs, now), Some(Duration::from_secs(4)));
        let float = headers(&[("retry-after", "1.5")]);
        assert_eq!(
            retry_after_at(&float, now),
            Some(Duration::from_millis(1500))
        );
        let date = headers(&[(
            "retry-after",
            &httpdate::fmt_http_date(now + Duration::from_secs(7)),
        )]);
        assert_eq!(retry_after_at(&date, now), Some(Duration::from_secs(7)));
        let past = headers(&[(
            "retry-after",
            &httpdate::fmt_http_date(now - Duration::from_secs(7)),
        )]);
        assert_eq!(retry_after_at(&past, now), Some(Duration::ZERO));
        assert_eq!(
            retry_after_at(&headers(&[("retry-after", "soon")]), now),
            None
        );
        assert_eq!(
            retry_after_at(&headers(&[("retry-after", "-3")]), now),
            None
        );
        assert_eq!(retry_after_at(&HeaderMap::new(), now), None);
    }

    #[test]
    fn should_retry_overrides_the_status() {
        let no = headers(&[("x-should-retry", "false")]);
        let e = status_error("p", 429, &no, ErrorInfo::default(), None);
        assert!(!e.is_retryable(), "{e:?}");
        let yes = headers(&[("x-should-retry", "true")]);
        let e = status_error("p", 400, &yes, ErrorInfo::default(), None);
        assert!(e.is_retryable(), "{e:?}");
        for status in [408, 409, 429, 500, 502, 503, 529] {
            let e = status_error("p", status, &HeaderMap::new(), ErrorInfo::default(), None);
            assert!(e.is_retryable(), "{status}: {e:?}");
        }
        for status in [400, 401, 403, 404, 422] {
            let e = status_error("p", status, &HeaderMap::new(), ErrorInfo::default(), None);
            assert!(!e.is_retryable(), "{status}: {e:?}");
        }
    }

    #[test]
    fn context_length_is_detected_from_code_or_message() {
        let info = ErrorInfo {
            kind: "invalid_request_error".into(),
            message: "prompt is too long: 210000 tokens > 200000 maximum".into(),
            request_id: None,
        };
        let e = status_error("p", 400, &HeaderMap::new(), info, None);
        assert!(matches!(e, LlmError::ContextLength { .. }), "{e:?}");
    }
}
