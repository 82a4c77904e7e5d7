//! The Brave Search adapter against a local axum server that replays the documented
//! response and error shapes (recordings in `fixtures/`, written from Brave's API docs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use plan_tools::search::{BraveSearch, BraveSearchConfig, SearchBackend, SearchError, SearchQuery};

const KEY: &str = "brv-test-key-123";

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/search/fixtures")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

/// One request the fake server saw: its query parameters and its API-key header.
type SeenRequest = (HashMap<String, String>, Option<String>);

#[derive(Clone, Default)]
struct Seen {
    requests: Arc<Mutex<Vec<SeenRequest>>>,
}

async fn web_search(
    State(seen): State<Seen>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let token = headers
        .get("x-subscription-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    seen.requests
        .lock()
        .unwrap()
        .push((params.clone(), token.clone()));
    let json = [("content-type", "application/json")];
    if token.as_deref() != Some(KEY) {
        return (
            StatusCode::UNAUTHORIZED,
            json,
            fixture("brave_error_401.json"),
        )
            .into_response();
    }
    match params.get("q").map(String::as_str) {
        Some("slow down") => (
            StatusCode::TOO_MANY_REQUESTS,
            [("content-type", "application/json"), ("retry-after", "7")],
            fixture("brave_error_429.json"),
        )
            .into_response(),
        Some("bad count") => (
            StatusCode::UNPROCESSABLE_ENTITY,
            json,
            fixture("brave_error_422.json"),
        )
            .into_response(),
        Some("garbage") => {
            (StatusCode::OK, json, "<html>not json</html>".to_owned()).into_response()
        }
        _ => (StatusCode::OK, json, fixture("brave_web_search.json")).into_response(),
    }
}

async fn server() -> (String, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route("/res/v1/web/search", get(web_search))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn client(base: &str, key: &str) -> BraveSearch {
    BraveSearch::new(BraveSearchConfig::new(key).with_base_url(base)).unwrap()
}

#[tokio::test]
async fn parses_documented_results() {
    let (base, seen) = server().await;
    let brave = client(&base, KEY);
    assert_eq!(brave.name(), "brave");
    let hits = brave
        .search(&SearchQuery::new("quillon language tidepools").with_limit(2))
        .await
        .unwrap();
    assert_eq!(hits.len(), 2, "the limit is applied");
    assert_eq!(hits[0].source, "https://docs.example.org/quillon/memory");
    assert_eq!(hits[0].title, "Memory management in Quillon");
    assert!(
        hits[0]
            .snippet
            .starts_with("Quillon has no garbage collector: memory is managed with regions called tidepools & freed"),
        "{}",
        hits[0].snippet
    );
    assert!(
        hits[0].snippet.contains("(the \"ebb check\")"),
        "extra snippets are kept"
    );
    assert_eq!(hits[0].line, None);
    assert!(hits[0].score > hits[1].score);
    let requests = seen.requests.lock().unwrap();
    let (params, token) = &requests[0];
    assert_eq!(params["q"], "quillon language tidepools");
    assert_eq!(params["count"], "2");
    assert_eq!(token.as_deref(), Some(KEY), "the key travels in the header");
}

#[tokio::test]
async fn errors_are_typed_and_never_show_the_key() {
    let (base, _) = server().await;
    let wrong = "brv-wrong-key-999";
    let err = client(&base, wrong)
        .search(&SearchQuery::new("anything"))
        .await
        .unwrap_err();
    assert!(matches!(err, SearchError::Auth { .. }), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(text.contains("BRAVE_API_KEY"), "{text}");
    assert!(text.contains("subscription token is invalid"), "{text}");
    assert!(!text.contains(wrong), "{text}");

    let brave = client(&base, KEY);
    let err = brave
        .search(&SearchQuery::new("slow down"))
        .await
        .unwrap_err();
    match &err {
        SearchError::RateLimited {
            retry_after_secs, ..
        } => assert_eq!(*retry_after_secs, Some(7)),
        other => panic!("expected a rate limit, got {other:?}"),
    }
    assert!(err.is_retryable());

    let err = brave
        .search(&SearchQuery::new("bad count"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SearchError::Http { status: 422, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("Unable to validate"), "{err}");
    assert!(!err.is_retryable());

    let err = brave
        .search(&SearchQuery::new("garbage"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SearchError::InvalidResponse { .. }),
        "{err:?}"
    );

    assert!(matches!(
        brave.search(&SearchQuery::new("")).await,
        Err(SearchError::EmptyQuery)
    ));
    assert!(!format!("{brave:?}").contains(KEY));
}

#[tokio::test]
async fn unreachable_server_is_a_transport_error() {
    // Bind and drop a listener to get a port that refuses connections.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = client(&format!("http://{addr}"), KEY)
        .search(&SearchQuery::new("x"))
        .await
        .unwrap_err();
    assert!(matches!(err, SearchError::Transport { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(!err.to_string().contains(KEY));
}

#[test]
fn missing_key_is_a_clear_configuration_error() {
    if std::env::var_os("BRAVE_API_KEY").is_some() {
        return; // the developer has a real key set; nothing to check here
    }
    let err = BraveSearch::from_env().unwrap_err();
    assert!(
        err.to_string().contains("BRAVE_API_KEY is not set"),
        "{err}"
    );
}
