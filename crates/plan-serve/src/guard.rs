//! The server's defences, checked on every request before it is routed, and the security
//! headers set on every response.
//!
//! - **Host allow-list.** Loopback names (`localhost`, `127.0.0.1`, `[::1]`) and the names
//!   the operator adds ([`ServeConfig::with_allowed_host`], [`ServeConfig::with_public_url`]);
//!   any other `Host` gets 421. A web page cannot reach a loopback server through DNS
//!   rebinding: its requests carry the attacker's name.
//! - **Same origin for state changes.** A request other than `GET`/`HEAD`/`OPTIONS` is
//!   refused (403) when the browser says it comes from another site (`Sec-Fetch-Site`) or
//!   another origin (`Origin` not this server's, nor the public URL's); clients that are
//!   not browsers send neither.
//! - **JSON only.** Such a request with a `Content-Type` other than `application/json`
//!   gets 415: a cross-site form cannot send one without being a CORS request.
//! - **Run ids** in paths are `[A-Za-z0-9_-]` only (400 otherwise).
//! - **Slow bodies.** A body must arrive within [`ServeConfig::body_timeout`] (408).
//! - **Headers.** Every response has a strict Content-Security-Policy (scripts and styles
//!   from this server only, no inline script, no framing), `X-Content-Type-Options:
//!   nosniff`, `Referrer-Policy: no-referrer`, `X-Frame-Options: DENY` and
//!   `Cross-Origin-Resource-Policy: same-origin`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::ApiError;
use crate::{PlanService, ServeConfig, is_loopback_host};

/// The Content-Security-Policy of every response.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Checks the request ([`check`]), buffers a state-changing request's body within the
/// body timeout, and sets the security headers on the response.
pub(crate) async fn guard(
    State(service): State<Arc<PlanService>>,
    req: Request,
    next: Next,
) -> Response {
    let mut response = match check(&service.config, &req) {
        Err(refusal) => refusal.into_response(),
        Ok(()) if changes_state(req.method()) => match buffered(&service.config, req).await {
            Ok(req) => next.run(req).await,
            Err(refusal) => refusal.into_response(),
        },
        Ok(()) => next.run(req).await,
    };
    secure(response.headers_mut());
    response
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The request's host name (without the port), from `Host` or the URI's authority.
fn host_of(req: &Request) -> Option<String> {
    let authority = match req.headers().get(header::HOST) {
        Some(v) => v.to_str().ok()?.to_owned(),
        None => req.uri().authority()?.as_str().to_owned(),
    };
    Some(host_name(&authority).to_ascii_lowercase())
}

/// `name` of `name:port`, `[v6]` of `[v6]:port`, the whole otherwise.
fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => authority,
    }
}

/// Refuses what the module docs list, naming what to change.
fn check(config: &ServeConfig, req: &Request) -> Result<(), ApiError> {
    let Some(host) = host_of(req) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the request names no host: send a Host header",
        ));
    };
    if !(is_loopback_host(&host) || config.allowed_hosts.contains(&host)) {
        return Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this server does not answer to `{host}`: if clients reach it by that name, start it with --allow-host {host} (or --public-url)"
            ),
        ));
    }
    check_run_id(req.uri().path())?;
    if changes_state(req.method()) {
        same_origin(config, req.headers())?;
        json_only(req.headers())?;
    }
    Ok(())
}

/// A run id in `/api/runs/ID...` or `/runs/ID...` must be `[A-Za-z0-9_-]{1,128}`.
fn check_run_id(path: &str) -> Result<(), ApiError> {
    let rest = path
        .strip_prefix("/api/runs/")
        .or_else(|| path.strip_prefix("/runs/"));
    let Some(rest) = rest else { return Ok(()) };
    let id = rest.split('/').next().unwrap_or_default();
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "not a run id: run ids are letters, digits, `_` and `-` (GET /api/runs lists them)",
        ))
    }
}

/// Refuses a browser's request from another site or origin (403).
fn same_origin(config: &ServeConfig, headers: &HeaderMap) -> Result<(), ApiError> {
    let forbidden = |why: String| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{why}: this server takes changes only from its own pages or from clients that are not browsers"
            ),
        )
    };
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("?");
        if !matches!(site, "same-origin" | "none") {
            return Err(forbidden(format!(
                "a cross-site request (Sec-Fetch-Site: {site})"
            )));
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("?").to_ascii_lowercase();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_ascii_lowercase);
    let own = origin.split_once("://").is_some_and(|(scheme, authority)| {
        matches!(scheme, "http" | "https") && host.as_deref() == Some(authority)
    });
    if own || config.public_origins.contains(&origin) {
        Ok(())
    } else {
        Err(forbidden(format!("a request from origin {origin}")))
    }
}

/// Refuses a body of another type than JSON (415).
fn json_only(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(kind) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let kind = kind.to_str().unwrap_or_default();
    let essence = kind.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("the body is `{kind}`: send JSON, with Content-Type: application/json"),
        ))
    }
}

/// The request with its body read, which must arrive within the body timeout (408) and
/// within the body limit (413).
async fn buffered(config: &ServeConfig, req: Request) -> Result<Request, ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = tokio::time::timeout(
        config.body_timeout,
        axum::body::to_bytes(body, config.body_limit),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within {} s",
                config.body_timeout.as_secs()
            ),
        )
    })?
    .map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is larger than {} bytes, or was cut off",
                config.body_limit
            ),
        )
    })?;
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// The event streams open per client address, to bound what one client can hold.
#[derive(Default)]
pub(crate) struct StreamSlots {
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One open event stream of a client; closing it (dropping this) frees its slot.
pub(crate) struct StreamSlot {
    slots: Arc<StreamSlots>,
    client: std::net::IpAddr,
}

impl StreamSlots {
    /// A slot for one more stream of `client`, unless it holds `most` already (429).
    /// Without the client's address (a router served without connect info) there is no
    /// bound.
    pub(crate) fn open(
        self: &Arc<Self>,
        client: Option<std::net::IpAddr>,
        most: usize,
    ) -> Result<Option<StreamSlot>, ApiError> {
        let Some(client) = client else {
            return Ok(None);
        };
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(client).or_default();
        if *count >= most {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("{most} event streams are open from {client} already: close one first"),
            ));
        }
        *count += 1;
        Ok(Some(StreamSlot {
            slots: self.clone(),
            client,
        }))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

/// The security headers of every response.
fn secure(headers: &mut HeaderMap) {
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_their_port() {
        assert_eq!(host_name("localhost:8080"), "localhost");
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("[::1]"), "::1");
        assert_eq!(host_name("plan.example.com"), "plan.example.com");
        assert_eq!(host_name("10.0.0.5:80"), "10.0.0.5");
    }

    #[test]
    fn run_ids_in_paths_are_plain() {
        assert!(check_run_id("/api/runs/1m95kmhdq1r7r/events").is_ok());
        assert!(check_run_id("/runs/abc_DEF-1").is_ok());
        assert!(check_run_id("/api/runs").is_ok());
        assert!(check_run_id("/").is_ok());
        for bad in [
            "/api/runs/..%2F..%2Fetc/plan",
            "/runs/a%00b",
            "/api/runs/a.b",
            "/runs//summary",
        ] {
            assert_eq!(
                check_run_id(bad).unwrap_err().status(),
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
        assert!(check_run_id(&format!("/api/runs/{}", "a".repeat(129))).is_err());
    }

    #[test]
    fn origins_must_be_the_servers_own() {
        let config = ServeConfig::default();
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert!(same_origin(&config, &headers(&[("host", "127.0.0.1:8080")])).is_ok());
        assert!(
            same_origin(
                &config,
                &headers(&[
                    ("host", "127.0.0.1:8080"),
                    ("origin", "http://127.0.0.1:8080"),
                    ("sec-fetch-site", "same-origin")
                ])
            )
            .is_ok()
        );
        for refused in [
            &[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:5555"),
            ][..],
            &[("host", "127.0.0.1:8080"), ("origin", "null")],
            &[("host", "127.0.0.1:8080"), ("sec-fetch-site", "same-site")],
            &[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")],
        ] {
            assert_eq!(
                same_origin(&config, &headers(refused))
                    .unwrap_err()
                    .status(),
                StatusCode::FORBIDDEN,
                "{refused:?}"
            );
        }
        let public = ServeConfig::default()
            .with_public_url("https://plan.example.com/")
            .unwrap();
        assert!(
            same_origin(
                &public,
                &headers(&[
                    ("host", "127.0.0.1:8080"),
                    ("origin", "https://plan.example.com")
                ])
            )
            .is_ok()
        );
    }

    #[test]
    fn streams_are_bounded_per_client() {
        let slots = Arc::new(StreamSlots::default());
        let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let b: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        let first = slots.open(Some(a), 2).unwrap();
        let second = slots.open(Some(a), 2).unwrap();
        assert_eq!(
            slots.open(Some(a), 2).err().map(|e| e.status()),
            Some(StatusCode::TOO_MANY_REQUESTS)
        );
        assert!(slots.open(Some(b), 2).unwrap().is_some());
        drop(first);
        let third = slots.open(Some(a), 2).unwrap();
        assert!(third.is_some() && second.is_some());
        assert!(slots.open(None, 0).unwrap().is_none());
    }

    #[test]
    fn only_json_bodies() {
        let mut h = HeaderMap::new();
        assert!(json_only(&h).is_ok());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(json_only(&h).is_ok());
        for kind in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
            assert_eq!(
                json_only(&h).unwrap_err().status(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            );
        }
    }
}
