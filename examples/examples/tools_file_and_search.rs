//! A model answers a question with tools: it searches a folder of documents, reads the
//! file the search found, and answers citing it.
//!
//! The model here is scripted (so the example runs offline), but its second tool call is
//! computed from what the real search returned. Swap in any `Provider` to use a real model.
//!
//!     cargo run -p plan-examples --example tools_file_and_search

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use plan_llm::{Message, Reply, Role, ScriptedModel};
use plan_tools::builtin::{FsRoot, ListFilesTool, ReadFileTool, SearchDocsTool};
use plan_tools::search::{LocalIndex, LocalIndexConfig};
use plan_tools::{ToolCallRecord, ToolContext, ToolLoop, ToolObserver, ToolSet};

struct Print;

impl ToolObserver for Print {
    fn tool_called(&self, record: &ToolCallRecord) {
        println!(
            "tool {} {} ({} ms): {}",
            record.tool,
            record.arguments,
            record.duration.as_millis(),
            if record.ok { "ok" } else { "failed" }
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/research-corpus");

    // The document index (in memory here; `with_cache_dir` keeps it between runs).
    let index = LocalIndex::open(LocalIndexConfig::new(&docs))?;
    let stats = index.refresh()?;
    println!("indexed {} files", stats.added);

    let root = FsRoot::new(&docs)?;
    let tools = ToolSet::new()
        .with(SearchDocsTool::new(Arc::new(index)))
        .with(ReadFileTool::new(root.clone()))
        .with(ListFilesTool::new(root));

    // Round 1: search. Round 2: read the top hit (taken from the real search result).
    // Round 3: answer.
    let round = Arc::new(AtomicUsize::new(0));
    let model = ScriptedModel::new().respond_with(move |request| {
        match round.fetch_add(1, Ordering::SeqCst) {
            0 => Reply::tool_call(
                "search_docs",
                serde_json::json!({"query": "Kestrel telescope primary mirror", "limit": 3}),
            ),
            1 => {
                let result = request
                    .messages
                    .iter()
                    .rev()
                    .find(|m| m.role == Role::Tool)
                    .map(|m| m.content.clone())
                    .unwrap_or_default();
                let hits: serde_json::Value = serde_json::from_str(&result).unwrap_or_default();
                let source = hits["results"][0]["source"].as_str().unwrap_or("");
                let (path, line) = source.rsplit_once(':').unwrap_or((source, "1"));
                let line: u32 = line.parse().unwrap_or(1);
                Reply::tool_call(
                    "read_file",
                    serde_json::json!({"path": path, "start_line": line, "max_lines": 2}),
                )
            }
            _ => {
                let read = request
                    .messages
                    .last()
                    .map(|m| m.content.clone())
                    .unwrap_or_default();
                Reply::text(format!("From the observatory notes:\n{read}"))
            }
        }
    });

    let outcome = ToolLoop::new(Arc::new(model), tools)
        .run(
            vec![
                Message::system("Answer from the documents; cite file and line."),
                Message::user("How large is the primary mirror of the Kestrel telescope?"),
            ],
            &ToolContext::default(),
            &Print,
        )
        .await?;
    println!(
        "\nanswer after {} model calls:\n{}",
        outcome.model_calls, outcome.answer
    );
    Ok(())
}
