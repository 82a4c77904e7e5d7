//! The built-in document search tool, over any [`SearchBackend`].

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::search::{SearchBackend, SearchQuery};
use crate::{Tool, ToolContext, ToolError, ToolOutput};

/// Arguments of [`SearchDocsTool`].
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchDocsArgs {
    /// What to look for, in plain words.
    pub query: String,
    /// Most results (1 to 20, default 5).
    #[serde(default)]
    #[schemars(range(min = 1, max = 20))]
    pub limit: Option<u32>,
}

/// Searches documents through a [`SearchBackend`]; each result has its source (file and
/// line, or URL), title and snippet.
#[derive(Clone)]
pub struct SearchDocsTool {
    backend: Arc<dyn SearchBackend>,
}

impl std::fmt::Debug for SearchDocsTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchDocsTool")
            .field("backend", &self.backend.name())
            .finish()
    }
}

impl SearchDocsTool {
    /// A search tool over `backend`.
    pub fn new(backend: Arc<dyn SearchBackend>) -> Self {
        Self { backend }
    }
}

impl Tool for SearchDocsTool {
    type Args = SearchDocsArgs;

    fn name(&self) -> &str {
        "search_docs"
    }

    fn description(&self) -> &str {
        "Search the documents for a query. Returns the best matches, each with its source \
         (`file:line` or URL), title and a snippet; cite sources by that location."
    }

    async fn call(
        &self,
        args: SearchDocsArgs,
        _ctx: &ToolContext,
    ) -> Result<ToolOutput, ToolError> {
        let limit = args.limit.unwrap_or(5).clamp(1, 20) as usize;
        let hits = self
            .backend
            .search(&SearchQuery::new(args.query).with_limit(limit))
            .await
            .map_err(|e| ToolError::failed("search_docs", e.to_string()))?;
        let results: Vec<serde_json::Value> = hits
            .iter()
            .map(|h| {
                serde_json::json!({
                    "source": h.location(),
                    "title": h.title,
                    "snippet": h.snippet,
                })
            })
            .collect();
        Ok(ToolOutput::Json(serde_json::json!({ "results": results })))
    }
}
