//! [`BraveSearch`]: the Brave Search web API (`GET /res/v1/web/search`).
//!
//! Brave was chosen because its web search endpoint is a plain documented JSON API over
//! its own independent index, with a free tier, a key passed in one header
//! (`X-Subscription-Token`) and results that carry a title, a URL, a description and
//! extra snippets: all a research step needs. The wire types stay in this module.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::{SearchBackend, SearchError, SearchHit, SearchQuery};

const BACKEND: &str = "brave";
const DEFAULT_BASE_URL: &str = "https://api.search.brave.com";
/// The environment variable holding the API key.
const KEY_VAR: &str = "BRAVE_API_KEY";
/// The environment variable that overrides the endpoint (tests, proxies).
const BASE_URL_VAR: &str = "BRAVE_SEARCH_BASE_URL";
/// Brave returns at most 20 results per request.
const MAX_COUNT: usize = 20;

/// Settings of a [`BraveSearch`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BraveSearchConfig {
    api_key: Secret,
    base_url: String,
    timeout: Duration,
    country: Option<String>,
}

impl BraveSearchConfig {
    /// Settings with this API key, the public endpoint and a 20 s timeout.
    pub fn new(api_key: impl Into<String>) -> Self {
        Self {
            api_key: Secret::new(api_key),
            base_url: DEFAULT_BASE_URL.to_owned(),
            timeout: Duration::from_secs(20),
            country: None,
        }
    }

    /// Settings from the environment: the key from `BRAVE_API_KEY`, the endpoint from
    /// `BRAVE_SEARCH_BASE_URL` when set.
    ///
    /// # Errors
    /// [`SearchError::Config`] when `BRAVE_API_KEY` is unset or empty.
    pub fn from_env() -> Result<Self, SearchError> {
        let key = std::env::var(KEY_VAR).unwrap_or_default();
        if key.trim().is_empty() {
            return Err(SearchError::Config(format!(
                "{KEY_VAR} is not set; set it to a Brave Search API key to search the web"
            )));
        }
        let mut config = Self::new(key.trim());
        if let Ok(url) = std::env::var(BASE_URL_VAR)
            && !url.trim().is_empty()
        {
            config = config.with_base_url(url.trim());
        }
        Ok(config)
    }

    /// Sends requests to another endpoint (scheme and host, e.g. `http://127.0.0.1:8080`).
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into().trim_end_matches('/').to_owned();
        self
    }

    /// Sets the request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Restricts results to a country (two-letter code, e.g. `de`).
    pub fn with_country(mut self, country: impl Into<String>) -> Self {
        self.country = Some(country.into());
        self
    }
}

/// Web search through the Brave Search API.
///
/// The key is sent only in the `X-Subscription-Token` header and never appears in errors,
/// logs or `Debug` output.
#[derive(Clone, Debug)]
pub struct BraveSearch {
    config: BraveSearchConfig,
    client: reqwest::Client,
}

impl BraveSearch {
    /// A client with these settings.
    ///
    /// # Errors
    /// [`SearchError::Config`] when the HTTP client cannot be built.
    pub fn new(config: BraveSearchConfig) -> Result<Self, SearchError> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| SearchError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { config, client })
    }

    /// A client configured from the environment (see [`BraveSearchConfig::from_env`]).
    ///
    /// # Errors
    /// [`SearchError::Config`] when `BRAVE_API_KEY` is unset.
    pub fn from_env() -> Result<Self, SearchError> {
        Self::new(BraveSearchConfig::from_env()?)
    }
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    web: Option<WireWeb>,
}

#[derive(Deserialize)]
struct WireWeb {
    #[serde(default)]
    results: Vec<WireResult>,
}

#[derive(Deserialize)]
struct WireResult {
    title: String,
    url: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    extra_snippets: Vec<String>,
}

#[derive(Deserialize)]
struct WireErrorBody {
    error: WireError,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    detail: String,
}

/// Removes the `<strong>` highlighting and decodes the few entities Brave uses.
fn plain_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
}

fn error_message(body: &str) -> String {
    match serde_json::from_str::<WireErrorBody>(body) {
        Ok(b) if !b.error.detail.is_empty() => {
            if b.error.code.is_empty() {
                b.error.detail
            } else {
                format!("{} ({})", b.error.detail, b.error.code)
            }
        }
        _ => body.chars().take(300).collect(),
    }
}

#[async_trait]
impl SearchBackend for BraveSearch {
    fn name(&self) -> &str {
        BACKEND
    }

    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, SearchError> {
        let text = query.text.trim();
        if text.is_empty() {
            return Err(SearchError::EmptyQuery);
        }
        let count = query.limit.clamp(1, MAX_COUNT).to_string();
        let mut params = vec![("q", text.to_owned()), ("count", count)];
        if let Some(country) = &self.config.country {
            params.push(("country", country.clone()));
        }
        let url = format!("{}/res/v1/web/search", self.config.base_url);
        let response = self
            .client
            .get(&url)
            .query(&params)
            .header("Accept", "application/json")
            .header("X-Subscription-Token", self.config.api_key.expose())
            .send()
            .await
            .map_err(|e| SearchError::Transport {
                backend: BACKEND.to_owned(),
                // without_url: the URL carries the query, not the key, but keep errors short
                message: e.without_url().to_string(),
            })?;
        let status = response.status().as_u16();
        let retry_after_secs = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = response.text().await.map_err(|e| SearchError::Transport {
            backend: BACKEND.to_owned(),
            message: e.without_url().to_string(),
        })?;
        match status {
            200..=299 => {}
            401 | 403 => {
                return Err(SearchError::Auth {
                    backend: BACKEND.to_owned(),
                    message: format!(
                        "{}; check {KEY_VAR}",
                        error_message(&body).replace(self.config.api_key.expose(), "***")
                    ),
                });
            }
            429 => {
                return Err(SearchError::RateLimited {
                    backend: BACKEND.to_owned(),
                    message: error_message(&body),
                    retry_after_secs,
                });
            }
            _ => {
                return Err(SearchError::Http {
                    backend: BACKEND.to_owned(),
                    status,
                    message: error_message(&body).replace(self.config.api_key.expose(), "***"),
                });
            }
        }
        let parsed: WireResponse =
            serde_json::from_str(&body).map_err(|e| SearchError::InvalidResponse {
                backend: BACKEND.to_owned(),
                message: format!("the reply is not a web search response: {e}"),
            })?;
        let results = parsed.web.map(|w| w.results).unwrap_or_default();
        let total = results.len().max(1) as f32;
        Ok(results
            .into_iter()
            .take(query.limit)
            .enumerate()
            .map(|(rank, r)| {
                let mut snippet = plain_text(&r.description);
                for extra in r.extra_snippets.iter().take(2) {
                    snippet.push_str(" … ");
                    snippet.push_str(&plain_text(extra));
                }
                // Brave gives no score: rank order, scaled to (0, 1].
                let score = (total - rank as f32) / total;
                SearchHit::new(r.url, plain_text(&r.title), snippet, None, score)
            })
            .collect())
    }
}

/// An API key that never shows itself in `Debug` or `Display`.
#[derive(Clone)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_highlighting_and_entities() {
        assert_eq!(
            plain_text("The <strong>Quillon</strong> &quot;guard&quot; &amp; more"),
            "The Quillon \"guard\" & more"
        );
    }

    #[test]
    fn secret_is_not_debug_printed() {
        let config = BraveSearchConfig::new("sk-very-secret");
        assert!(!format!("{config:?}").contains("sk-very-secret"));
    }
}
