//! [`RecordedTool`]: the tools a replayed run offers in place of the ones it recorded.

use async_trait::async_trait;
use plan_llm::ToolSpec;

use crate::{DynTool, ToolContext, ToolError, ToolOutput, ToolSet};
use plan_exec::replay::Replayer;

/// A tool a replayed run offers in place of one the run was offered: the same name,
/// description and schema, so the run's requests come out the same, and no server or
/// program behind it. Its calls are served from the recording before they reach it.
#[derive(Clone, Debug)]
pub struct RecordedTool {
    spec: ToolSpec,
}

impl RecordedTool {
    /// A stand-in for the tool `spec` describes.
    pub fn new(spec: ToolSpec) -> Self {
        Self { spec }
    }
}

#[async_trait]
impl DynTool for RecordedTool {
    fn spec(&self) -> ToolSpec {
        self.spec.clone()
    }

    async fn call_json(
        &self,
        _args: serde_json::Value,
        _ctx: &ToolContext,
    ) -> Result<ToolOutput, ToolError> {
        Err(ToolError::Unavailable {
            tool: self.spec.name.clone(),
            message: "replay runs no tool, and this call was not served from the recording"
                .to_owned(),
            retryable: false,
        })
    }
}

/// Every tool `replayer`'s run was offered, as stand-ins ([`Replayer::tool_specs`]).
pub fn recorded_tools(replayer: &Replayer) -> ToolSet {
    let mut set = ToolSet::new();
    for spec in replayer.tool_specs() {
        set.insert(std::sync::Arc::new(RecordedTool::new(spec)));
    }
    set
}
