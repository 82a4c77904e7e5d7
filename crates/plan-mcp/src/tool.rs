//! [`McpTool`]: one tool of an MCP server as an ordinary plan tool ([`DynTool`]), and how
//! its results become what the model reads.

use std::sync::Arc;

use async_trait::async_trait;
use plan_llm::ToolSpec;
use plan_tools::{DynTool, ToolContext, ToolError, ToolOutput};
use rmcp::model::{CallToolResult, ContentBlock, ResourceContents, Tool as RemoteTool};

use crate::McpError;
use crate::client::McpServer;

/// A tool of an MCP server, callable like any other tool.
///
/// Its name is the server's tool name made safe for models (`[A-Za-z0-9_-]`), prefixed
/// `<server>__` when names clash ([`McpTools`](crate::McpTools) decides); its schema is
/// the server's input schema, against which a [`ToolSet`](plan_tools::ToolSet) validates
/// arguments before the call. Text, structured content and resources come back as the
/// tool's output; a result the server marks as an error, a crash, a timeout or a protocol
/// error is a [`ToolError::Failed`] naming the server and the tool.
#[derive(Clone)]
pub struct McpTool {
    server: Arc<McpServer>,
    remote: RemoteTool,
    name: String,
}

impl std::fmt::Debug for McpTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpTool")
            .field("name", &self.name)
            .field("server", &self.server.name())
            .field("tool", &self.remote.name)
            .finish()
    }
}

impl McpTool {
    pub(crate) fn new(server: Arc<McpServer>, remote: RemoteTool, name: String) -> Self {
        Self {
            server,
            remote,
            name,
        }
    }

    /// The name the model calls it by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its name on the server.
    pub fn remote_name(&self) -> &str {
        &self.remote.name
    }

    /// The server's name.
    pub fn server(&self) -> &str {
        self.server.name()
    }

    /// What it does, as the server says (its title when it gives no description).
    pub fn description(&self) -> String {
        self.remote
            .description
            .as_deref()
            .map(str::to_owned)
            .or_else(|| self.remote.title.clone())
            .unwrap_or_default()
    }

    /// The input schema the model sees: the server's, without `$schema` (model APIs
    /// reject it), and always an object schema.
    fn parameters(&self) -> serde_json::Value {
        let mut schema = (*self.remote.input_schema).clone();
        schema.remove("$schema");
        schema
            .entry("type")
            .or_insert_with(|| serde_json::Value::String("object".into()));
        serde_json::Value::Object(schema)
    }

    fn failed(&self, message: impl std::fmt::Display) -> ToolError {
        ToolError::failed(self.name.clone(), message.to_string())
    }
}

#[async_trait]
impl DynTool for McpTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec::new(self.name.clone(), self.description(), self.parameters())
    }

    async fn call_json(
        &self,
        args: serde_json::Value,
        _ctx: &ToolContext,
    ) -> Result<ToolOutput, ToolError> {
        let arguments = match args {
            serde_json::Value::Object(map) => map,
            serde_json::Value::Null => serde_json::Map::new(),
            other => {
                return Err(ToolError::InvalidArguments {
                    tool: self.name.clone(),
                    message: format!("the arguments must be a JSON object, not `{other}`"),
                });
            }
        };
        let result = self
            .server
            .call(&self.remote.name, arguments)
            .await
            .map_err(|e| match e {
                // The server is gone or hangs: the step fails (and may be retried).
                McpError::Timeout { .. } | McpError::Stopped { .. } => ToolError::Unavailable {
                    tool: self.name.clone(),
                    retryable: matches!(e, McpError::Timeout { .. }),
                    message: e.to_string(),
                },
                // The server answered: the model sees the error and can correct its call.
                e => self.failed(e),
            })?;
        if result.is_error == Some(true) {
            let text = result_text(&result);
            let error = McpError::Call {
                server: self.server.name().to_owned(),
                tool: self.remote.name.to_string(),
                message: format!(
                    "the tool returned an error: {}",
                    if text.trim().is_empty() {
                        "(no message)"
                    } else {
                        text.trim()
                    }
                ),
            };
            return Err(self.failed(error));
        }
        Ok(to_output(result))
    }
}

/// What a tool result says to the model: text blocks as they are, resources with their
/// URI, binary content described, and structured content as JSON.
///
/// A result with only structured content is [`ToolOutput::Json`]; otherwise the text, with
/// the structured content appended when no text block already carries it.
pub fn to_output(result: CallToolResult) -> ToolOutput {
    let text = result_text(&result);
    match result.structured_content {
        Some(structured) if text.trim().is_empty() => ToolOutput::Json(structured),
        Some(structured) => {
            let carried = result.content.iter().any(|block| {
                block
                    .as_text()
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t.text).ok())
                    .is_some_and(|v| v == structured)
            }) || leaves_in(&structured, &text);
            if carried {
                ToolOutput::Text(text)
            } else {
                ToolOutput::Text(format!("{text}\nstructured content: {structured}"))
            }
        }
        None => ToolOutput::Text(text),
    }
}

/// Whether every string and number in `value` already appears in `text` (a server that
/// sends `{"content": "<the text>"}` beside the text says nothing new).
fn leaves_in(value: &serde_json::Value, text: &str) -> bool {
    match value {
        serde_json::Value::String(s) => text.contains(s.trim()),
        serde_json::Value::Number(n) => text.contains(&n.to_string()),
        serde_json::Value::Array(items) => items.iter().all(|v| leaves_in(v, text)),
        serde_json::Value::Object(map) => map.values().all(|v| leaves_in(v, text)),
        serde_json::Value::Bool(_) | serde_json::Value::Null => true,
    }
}

fn result_text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .map(block_text)
        .collect::<Vec<_>>()
        .join("\n")
}

fn block_text(block: &ContentBlock) -> String {
    match block {
        ContentBlock::Text(t) => t.text.clone(),
        ContentBlock::Image(i) => {
            format!("[image, {}, {} bytes of base64]", i.mime_type, i.data.len())
        }
        ContentBlock::Audio(a) => {
            format!("[audio, {}, {} bytes of base64]", a.mime_type, a.data.len())
        }
        ContentBlock::Resource(r) => match &r.resource {
            ResourceContents::TextResourceContents { uri, text, .. } => {
                format!("[resource {uri}]\n{text}")
            }
            ResourceContents::BlobResourceContents {
                uri,
                mime_type,
                blob,
                ..
            } => format!(
                "[resource {uri}, {}, {} bytes of base64]",
                mime_type.as_deref().unwrap_or("binary"),
                blob.len()
            ),
            other => serde_json::to_string(other).unwrap_or_default(),
        },
        ContentBlock::ResourceLink(link) => {
            let mut text = format!("[resource link {}: {}", link.uri, link.name);
            if let Some(d) = &link.description {
                text.push_str(&format!(" — {d}"));
            }
            text.push(']');
            text
        }
        // Newer content kinds: their JSON.
        #[allow(unreachable_patterns)]
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use rmcp::model::CallToolResult;
    use serde_json::json;

    use super::*;

    fn result(value: serde_json::Value) -> CallToolResult {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn text_resources_and_structured_content_reach_the_model() {
        let r = result(json!({
            "content": [
                {"type": "text", "text": "hello"},
                {"type": "resource", "resource": {"uri": "file:///a.txt", "text": "inside"}},
                {"type": "image", "data": "aGk=", "mimeType": "image/png"}
            ],
            "structuredContent": {"temperature": 21}
        }));
        let out = to_output(r).to_text();
        assert!(
            out.starts_with("hello\n[resource file:///a.txt]\ninside\n[image, image/png, 4 bytes"),
            "{out}"
        );
        assert!(
            out.ends_with("structured content: {\"temperature\":21}"),
            "{out}"
        );
    }

    #[test]
    fn structured_content_alone_is_json_and_is_not_repeated() {
        let only = result(json!({"content": [], "structuredContent": {"a": 1}}));
        assert_eq!(to_output(only), ToolOutput::Json(json!({"a": 1})));
        let both = result(json!({
            "content": [{"type": "text", "text": "{\"a\": 1}"}],
            "structuredContent": {"a": 1}
        }));
        assert_eq!(to_output(both).to_text(), "{\"a\": 1}");
        let wrapped = result(json!({
            "content": [{"type": "text", "text": "the file text\n"}],
            "structuredContent": {"content": "the file text\n"}
        }));
        assert_eq!(to_output(wrapped).to_text(), "the file text\n");
    }
}
