//! Search backends: the [`SearchBackend`] trait, a local full-text index over a folder of
//! documents (`LocalIndex`, feature `local-index`) and a web search adapter
//! (`BraveSearch`, feature `web-search`).

#[cfg(feature = "web-search")]
mod brave;
#[cfg(feature = "local-index")]
mod local;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

#[cfg(feature = "web-search")]
pub use brave::{BraveSearch, BraveSearchConfig};
#[cfg(feature = "local-index")]
pub use local::{LocalIndex, LocalIndexConfig, RefreshStats};

/// What to search for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SearchQuery {
    /// The query text, in plain words.
    pub text: String,
    /// Most hits to return.
    pub limit: usize,
}

impl SearchQuery {
    /// A query for `text` returning at most 5 hits.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            limit: 5,
        }
    }

    /// Sets the most hits to return.
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }
}

/// One search result: where it is, a title and a snippet of the matching text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SearchHit {
    /// Where the text is: a path relative to the indexed folder, or a URL.
    pub source: String,
    /// The document's title (its first heading, its file name, or the page title).
    pub title: String,
    /// The matching text.
    pub snippet: String,
    /// The 1-based line of the document where the snippet starts, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// The backend's relevance score (higher is better; only comparable within one search).
    pub score: f32,
    /// How much of the query this passage covers, from 0 to 1: the share of the query's
    /// terms (weighted by how rare each is in the collection, so a name counts more than
    /// a common word) that appear in the passage or its document title. Comparable across
    /// searches, so it can say that nothing relevant was found. `None` when the backend
    /// cannot tell (web search).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f32>,
}

impl SearchHit {
    /// A hit.
    pub fn new(
        source: impl Into<String>,
        title: impl Into<String>,
        snippet: impl Into<String>,
        line: Option<u32>,
        score: f32,
    ) -> Self {
        Self {
            source: source.into(),
            title: title.into(),
            snippet: snippet.into(),
            line,
            score,
            coverage: None,
        }
    }

    /// With the share of the query this hit covers (see [`coverage`](Self::coverage)).
    pub fn with_coverage(mut self, coverage: f32) -> Self {
        self.coverage = Some(coverage.clamp(0.0, 1.0));
        self
    }

    /// Where the hit is, with its line when known: `docs/a.md:12` or a URL.
    pub fn location(&self) -> String {
        match self.line {
            Some(line) => format!("{}:{line}", self.source),
            None => self.source.clone(),
        }
    }
}

/// What can go wrong searching. Messages never contain API keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SearchError {
    /// The query had no words to search for.
    #[error("the search query is empty; give some words to search for")]
    EmptyQuery,
    /// Missing or bad configuration (an unset key, a root that is not a folder).
    #[error("search configuration error: {0}")]
    Config(String),
    /// Reading or writing a file failed.
    #[error("i/o error on {path}: {message}")]
    Io {
        /// The file or folder.
        path: String,
        /// What failed.
        message: String,
    },
    /// The local index failed.
    #[error("search index error: {0}")]
    Index(String),
    /// The search service rejected the key (401/403).
    #[error("authentication failed ({backend}): {message}")]
    Auth {
        /// Which backend.
        backend: String,
        /// What to do about it.
        message: String,
    },
    /// The search service asked us to slow down (429).
    #[error("rate limited ({backend}): {message}")]
    RateLimited {
        /// Which backend.
        backend: String,
        /// What the service said.
        message: String,
        /// Seconds the service asked us to wait, if it said.
        retry_after_secs: Option<u64>,
    },
    /// The search service answered with an error status.
    #[error("search request failed ({backend}, HTTP {status}): {message}")]
    Http {
        /// Which backend.
        backend: String,
        /// The HTTP status.
        status: u16,
        /// What the service said.
        message: String,
    },
    /// The connection failed.
    #[error("transport error ({backend}): {message}")]
    Transport {
        /// Which backend.
        backend: String,
        /// What failed.
        message: String,
    },
    /// The service's reply could not be understood.
    #[error("invalid response ({backend}): {message}")]
    InvalidResponse {
        /// Which backend.
        backend: String,
        /// What was wrong.
        message: String,
    },
}

impl SearchError {
    /// Whether the same search may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SearchError::RateLimited { .. } | SearchError::Transport { .. }
        ) || matches!(self, SearchError::Http { status, .. } if *status >= 500)
    }
}

/// Something that answers search queries: a local index, a web search API, a test double.
#[async_trait]
pub trait SearchBackend: Send + Sync {
    /// A short name for logs and citations (`local`, `brave`).
    fn name(&self) -> &str;

    /// Runs a query, best hits first.
    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, SearchError>;
}

#[async_trait]
impl<B: SearchBackend + ?Sized> SearchBackend for &B {
    fn name(&self) -> &str {
        (**self).name()
    }
    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, SearchError> {
        (**self).search(query).await
    }
}

#[async_trait]
impl<B: SearchBackend + ?Sized> SearchBackend for Box<B> {
    fn name(&self) -> &str {
        (**self).name()
    }
    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, SearchError> {
        (**self).search(query).await
    }
}

#[async_trait]
impl<B: SearchBackend + ?Sized> SearchBackend for Arc<B> {
    fn name(&self) -> &str {
        (**self).name()
    }
    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, SearchError> {
        (**self).search(query).await
    }
}
