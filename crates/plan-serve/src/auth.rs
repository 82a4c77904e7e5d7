//! The token check: `Authorization: Bearer TOKEN`, or the `plan_token` cookie, which a
//! request with `?token=TOKEN` sets (`HttpOnly`, `SameSite=Strict`) so that a browser's
//! `EventSource` carries it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::PlanService;
use crate::api::ApiError;

/// The cookie holding the token.
const COOKIE: &str = "plan_token";

/// Compares the SHA-256 digests of both in constant time, so the time taken reveals
/// neither the token nor its length.
fn same(a: &str, b: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn cookie(req: &Request) -> Option<&str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

fn query_token(req: &Request) -> Option<String> {
    let query = req.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "token")
        .map(|(_, value)| value.into_owned())
}

/// Lets a request through when it carries the token (or no token is set); a `?token=`
/// that matches also sets the cookie. Otherwise 401.
pub(crate) async fn require_token(
    State(service): State<Arc<PlanService>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = service.config.token.as_deref() else {
        return next.run(req).await;
    };
    if bearer(&req).is_some_and(|t| same(t, token)) || cookie(&req).is_some_and(|t| same(t, token))
    {
        return next.run(req).await;
    }
    if query_token(&req).is_some_and(|t| same(&t, token)) {
        let mut response = next.run(req).await;
        if let Ok(value) = HeaderValue::from_str(&format!(
            "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
        )) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
        return response;
    }
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing or wrong token: send `Authorization: Bearer TOKEN` (or open a page once with ?token=TOKEN)",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_themselves() {
        assert!(same("s3cret", "s3cret"));
        assert!(!same("s3cret", "s3creT"));
        assert!(!same("s3cret", "s3cret-and-more"));
        assert!(!same("", "s3cret"));
    }

    #[test]
    fn the_query_token_is_percent_decoded() {
        let req = |uri: &str| {
            axum::http::Request::builder()
                .uri(uri)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        assert_eq!(
            query_token(&req("/runs/x?a=1&token=a%2Bb%3D%26c+d")).as_deref(),
            Some("a+b=&c d")
        );
        assert_eq!(query_token(&req("/runs/x?tokens=no")), None);
        assert_eq!(query_token(&req("/runs/x")), None);
    }
}
