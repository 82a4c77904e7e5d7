//! The typed [`Tool`] trait, its object-safe form [`DynTool`] and the [`ToolSet`] that
//! validates arguments against each tool's JSON schema before calling.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use plan_core::StepId;
use plan_llm::ToolSpec;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

/// What a tool call returned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ToolOutput {
    /// Plain text.
    Text(String),
    /// A JSON value.
    Json(serde_json::Value),
}

impl ToolOutput {
    /// The output as the text the model sees (JSON is serialised compactly).
    pub fn to_text(&self) -> String {
        match self {
            ToolOutput::Text(t) => t.clone(),
            ToolOutput::Json(v) => v.to_string(),
        }
    }
}

impl From<String> for ToolOutput {
    fn from(text: String) -> Self {
        ToolOutput::Text(text)
    }
}

impl From<serde_json::Value> for ToolOutput {
    fn from(value: serde_json::Value) -> Self {
        ToolOutput::Json(value)
    }
}

/// What can go wrong calling a tool. The tool loop returns these to the model as the
/// call's result, so they say what to do differently.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ToolError {
    /// No tool has that name.
    #[error("unknown tool `{name}`; available tools: {available}")]
    UnknownTool {
        /// The name asked for.
        name: String,
        /// The names that exist, comma-separated.
        available: String,
    },
    /// The arguments do not match the tool's schema.
    #[error("invalid arguments for `{tool}`: {message}")]
    InvalidArguments {
        /// The tool.
        tool: String,
        /// Every problem found, with its JSON path.
        message: String,
    },
    /// A path points outside the tool's root folder.
    #[error("the path `{path}` is outside the allowed folder; use a relative path inside it")]
    PathOutsideRoot {
        /// The path asked for.
        path: String,
    },
    /// A path does not exist.
    #[error("`{path}` does not exist; list the folder to see what is there")]
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// The tool ran and failed.
    #[error("`{tool}` failed: {message}")]
    Failed {
        /// The tool.
        tool: String,
        /// What went wrong.
        message: String,
    },
    /// The call was cancelled.
    #[error("the tool call was cancelled")]
    Cancelled,
    /// The tool cannot be reached: what serves it failed to start, stopped, or did not
    /// answer in time. Unlike the other errors this is not shown to the model: the tool
    /// loop stops and the step fails (retried when `retryable`), so the run falls back or
    /// replans as it does for any failed step.
    #[error("the tool `{tool}` is unavailable: {message}")]
    Unavailable {
        /// The tool.
        tool: String,
        /// What happened, naming what serves the tool.
        message: String,
        /// Whether trying the step again may work (a timeout, not a crash).
        retryable: bool,
    },
}

impl ToolError {
    /// A [`ToolError::Failed`].
    pub fn failed(tool: impl Into<String>, message: impl Into<String>) -> Self {
        ToolError::Failed {
            tool: tool.into(),
            message: message.into(),
        }
    }
}

/// What a tool knows about the call it serves.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ToolContext {
    /// The step the call is made for, if any.
    pub step: Option<StepId>,
}

impl ToolContext {
    /// A context for a call made by `step`.
    pub fn for_step(step: impl Into<StepId>) -> Self {
        Self {
            step: Some(step.into()),
        }
    }
}

/// A tool with typed arguments; its JSON schema is generated from `Args` with schemars.
///
/// Implement this; register it in a [`ToolSet`], which validates the model's arguments
/// against the schema before deserialising them and calling [`call`](Self::call).
///
/// ```
/// use plan_tools::{Tool, ToolContext, ToolError, ToolOutput, ToolSet};
/// use schemars::JsonSchema;
/// use serde::Deserialize;
///
/// /// Arguments of `add`.
/// #[derive(Deserialize, JsonSchema)]
/// struct AddArgs {
///     /// The first number.
///     a: i64,
///     /// The second number.
///     b: i64,
/// }
///
/// struct Add;
///
/// impl Tool for Add {
///     type Args = AddArgs;
///     fn name(&self) -> &str { "add" }
///     fn description(&self) -> &str { "Adds two integers" }
///     async fn call(&self, args: AddArgs, _ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
///         Ok(ToolOutput::Text((args.a + args.b).to_string()))
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let tools = ToolSet::new().with(Add);
/// let out = tools.call("add", serde_json::json!({"a": 2, "b": 3}), &ToolContext::default()).await;
/// assert_eq!(out.unwrap().to_text(), "5");
/// let bad = tools.call("add", serde_json::json!({"a": "two"}), &ToolContext::default()).await;
/// assert!(bad.unwrap_err().to_string().contains("invalid arguments"));
/// # });
/// ```
pub trait Tool: Send + Sync {
    /// The arguments; their schema is what the model sees.
    type Args: DeserializeOwned + JsonSchema + Send;

    /// The name the model calls it by (`[a-zA-Z0-9_-]`).
    fn name(&self) -> &str;

    /// What it does and when to use it, for the model.
    fn description(&self) -> &str;

    /// Runs the tool.
    fn call(
        &self,
        args: Self::Args,
        ctx: &ToolContext,
    ) -> impl Future<Output = Result<ToolOutput, ToolError>> + Send;
}

impl<T: Tool + ?Sized> Tool for Arc<T> {
    type Args = T::Args;
    fn name(&self) -> &str {
        (**self).name()
    }
    fn description(&self) -> &str {
        (**self).description()
    }
    fn call(
        &self,
        args: Self::Args,
        ctx: &ToolContext,
    ) -> impl Future<Output = Result<ToolOutput, ToolError>> + Send {
        (**self).call(args, ctx)
    }
}

/// The object-safe form of a tool: a specification and a call on JSON arguments. Every
/// [`Tool`] is one; implement it directly for tools whose schema is not a Rust type.
#[async_trait]
pub trait DynTool: Send + Sync {
    /// Name, description and JSON schema of the arguments.
    fn spec(&self) -> ToolSpec;

    /// Runs the tool on JSON arguments (already validated against the schema by
    /// [`ToolSet`]).
    async fn call_json(
        &self,
        args: serde_json::Value,
        ctx: &ToolContext,
    ) -> Result<ToolOutput, ToolError>;
}

/// The JSON schema of a type, as a tool's `parameters` (an object schema).
pub fn tool_schema<T: JsonSchema>() -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default();
    if let Some(obj) = schema.as_object_mut() {
        obj.remove("$schema");
        obj.remove("title");
        // Models expect an object schema, even for tools without arguments.
        obj.entry("type").or_insert_with(|| "object".into());
    }
    schema
}

#[async_trait]
impl<T: Tool> DynTool for T {
    fn spec(&self) -> ToolSpec {
        ToolSpec::new(self.name(), self.description(), tool_schema::<T::Args>())
    }

    async fn call_json(
        &self,
        args: serde_json::Value,
        ctx: &ToolContext,
    ) -> Result<ToolOutput, ToolError> {
        let args: T::Args =
            serde_json::from_value(args).map_err(|e| ToolError::InvalidArguments {
                tool: self.name().to_owned(),
                message: e.to_string(),
            })?;
        self.call(args, ctx).await
    }
}

struct Registered {
    tool: Arc<dyn DynTool>,
    spec: ToolSpec,
    validator: Option<jsonschema::Validator>,
}

/// The tools a step may use, by name. Arguments are checked against each tool's JSON
/// schema before the call; every problem is reported, with its path, so the model can fix
/// its call.
#[derive(Clone, Default)]
pub struct ToolSet {
    tools: BTreeMap<String, Arc<Registered>>,
}

impl std::fmt::Debug for ToolSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.tools.keys()).finish()
    }
}

impl ToolSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a typed tool (replacing one of the same name).
    pub fn with<T: Tool + 'static>(self, tool: T) -> Self {
        self.with_dyn(Arc::new(tool))
    }

    /// Adds an object-safe tool (replacing one of the same name).
    pub fn with_dyn(mut self, tool: Arc<dyn DynTool>) -> Self {
        self.insert(tool);
        self
    }

    /// Adds an object-safe tool in place.
    pub fn insert(&mut self, tool: Arc<dyn DynTool>) {
        let spec = tool.spec();
        let validator = match jsonschema::validator_for(&spec.parameters) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(tool = %spec.name, "the tool's schema is not valid JSON schema, arguments will not be validated: {e}");
                None
            }
        };
        self.tools.insert(
            spec.name.clone(),
            Arc::new(Registered {
                tool,
                spec,
                validator,
            }),
        );
    }

    /// The specifications, sorted by name, to send to the model.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.values().map(|r| r.spec.clone()).collect()
    }

    /// The names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.tools.keys().cloned().collect()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// Only the tools with these names; unknown names are reported.
    ///
    /// # Errors
    /// [`ToolError::UnknownTool`] naming the first name that is not in the set.
    pub fn subset<S: AsRef<str>>(&self, names: &[S]) -> Result<ToolSet, ToolError> {
        let mut out = ToolSet::new();
        for name in names {
            let name = name.as_ref();
            let reg = self.tools.get(name).ok_or_else(|| self.unknown(name))?;
            out.tools.insert(name.to_owned(), Arc::clone(reg));
        }
        Ok(out)
    }

    fn unknown(&self, name: &str) -> ToolError {
        ToolError::UnknownTool {
            name: name.to_owned(),
            available: if self.tools.is_empty() {
                "none".to_owned()
            } else {
                self.names().join(", ")
            },
        }
    }

    /// Checks `args` against the tool's schema, listing every problem.
    ///
    /// # Errors
    /// [`ToolError::UnknownTool`] or [`ToolError::InvalidArguments`].
    pub fn validate(&self, name: &str, args: &serde_json::Value) -> Result<(), ToolError> {
        let reg = self.tools.get(name).ok_or_else(|| self.unknown(name))?;
        if let Some(validator) = &reg.validator {
            let problems: Vec<String> = validator
                .iter_errors(args)
                .map(|e| {
                    let path = e.instance_path().to_string();
                    if path.is_empty() {
                        e.to_string()
                    } else {
                        format!("at {path}: {e}")
                    }
                })
                .collect();
            if !problems.is_empty() {
                return Err(ToolError::InvalidArguments {
                    tool: name.to_owned(),
                    message: problems.join("; "),
                });
            }
        }
        Ok(())
    }

    /// Validates the arguments and calls the tool.
    ///
    /// # Errors
    /// [`ToolError::UnknownTool`], [`ToolError::InvalidArguments`] or the tool's own error.
    pub async fn call(
        &self,
        name: &str,
        args: serde_json::Value,
        ctx: &ToolContext,
    ) -> Result<ToolOutput, ToolError> {
        let span = plan_exec::trace::tool_span(name);
        // Recorded for replay, or served from the recording (the tool is then not run).
        #[derive(Serialize)]
        struct Keyed<'a> {
            tool: &'a str,
            args: &'a serde_json::Value,
        }
        let keyed = Keyed {
            tool: name,
            args: &args,
        };
        let recorder = match plan_exec::replay::call::<_, ToolOutput, ToolError>(
            plan_core::CallKind::Tool,
            name,
            &keyed,
            |d| ToolError::Unavailable {
                tool: name.to_owned(),
                message: format!("replay: {d}"),
                retryable: false,
            },
        ) {
            plan_exec::replay::Call::Served(result) => return result,
            plan_exec::replay::Call::Make(recorder) => recorder,
        };
        let result = async {
            self.validate(name, &args)?;
            let reg = self.tools.get(name).ok_or_else(|| self.unknown(name))?;
            reg.tool.call_json(args, ctx).await
        }
        .instrument(span.clone())
        .await;
        recorder.done(&result);
        if result.is_err() {
            plan_exec::trace::record_error(&span, "tool_error");
        }
        result
    }

    /// [`call`](Self::call), timed.
    pub(crate) async fn call_timed(
        &self,
        name: &str,
        args: serde_json::Value,
        ctx: &ToolContext,
    ) -> (Result<ToolOutput, ToolError>, Duration) {
        let started = Instant::now();
        let result = self.call(name, args, ctx).await;
        (result, started.elapsed())
    }
}
