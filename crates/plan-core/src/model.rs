//! The plan data model: [`Plan`], [`Step`], [`StepId`], [`StepKind`] and their JSON form.

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The identifier of a step, unique within a plan (`"search"`, `"compare"`).
///
/// Serialised as a JSON string; read from a string or, as some models write them, an
/// integer (`1` reads as `"1"`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct StepId(String);

impl<'de> Deserialize<'de> for StepId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = StepId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a step id (a string)")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StepId, E> {
                Ok(StepId::new(v))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<StepId, E> {
                Ok(StepId(v))
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<StepId, E> {
                Ok(StepId(v.to_string()))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<StepId, E> {
                Ok(StepId(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl StepId {
    /// Wraps a string as a step id. Validation (non-empty, unique) happens in
    /// [`PlanGraph::new`](crate::PlanGraph::new), not here.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for StepId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for StepId {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl Borrow<str> for StepId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for StepId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for StepId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl AsRef<str> for StepId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// What sort of work a step is; decides which executor runs it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepKind {
    /// A general step, done by a model (the default).
    #[default]
    Action,
    /// Checks the outputs of the steps it depends on.
    Verify,
    /// Writes and runs a program in the sandbox.
    Code,
    /// Queries a search backend.
    Search,
    /// Works on search results or other outputs.
    Analyze,
    /// Writes a report from earlier outputs.
    Synthesize,
}

impl StepKind {
    /// All kinds, in declaration order.
    pub const ALL: [StepKind; 6] = [
        StepKind::Action,
        StepKind::Verify,
        StepKind::Code,
        StepKind::Search,
        StepKind::Analyze,
        StepKind::Synthesize,
    ];

    /// The kind's name as it appears in plan JSON (`"verify"`).
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Action => "action",
            StepKind::Verify => "verify",
            StepKind::Code => "code",
            StepKind::Search => "search",
            StepKind::Analyze => "analyze",
            StepKind::Synthesize => "synthesize",
        }
    }

    fn is_default(&self) -> bool {
        *self == StepKind::Action
    }
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The language of a step's program (`code` steps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CodeLang {
    /// Python 3.
    Python,
    /// GNU bash.
    Bash,
}

impl CodeLang {
    /// The language's name as it appears in plan JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CodeLang::Python => "python",
            CodeLang::Bash => "bash",
        }
    }
}

impl fmt::Display for CodeLang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step body without an id or dependencies: what a step's `fallback` holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StepBody {
    /// What to do, copied verbatim into the step prompt.
    pub description: String,
    /// The kind of work; `None` means the kind of the step it stands in for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<StepKind>,
    /// The specialised agent to route to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// What the output should look like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_output: Option<String>,
    /// A program to run as is (code steps), instead of asking a model to write one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The language of `code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<CodeLang>,
}

impl StepBody {
    /// A body with just a description.
    pub fn new(description: impl Into<String>) -> Self {
        Self {
            description: description.into(),
            ..Self::default()
        }
    }
}

/// One step of a plan.
///
/// Construct with [`Step::new`] and the builder methods; the fields are public for reading
/// and for adjusting a plan in place.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Step {
    /// Unique, non-empty id.
    pub id: StepId,
    /// What to do, non-empty; copied verbatim into the step prompt.
    pub description: String,
    /// Ids of the steps whose outputs this one needs (`null` reads as none).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub dependencies: Vec<StepId>,
    /// The kind of work (default `action`; `null` reads as the default).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "StepKind::is_default"
    )]
    pub kind: StepKind,
    /// The specialised agent to route to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// What to run when the step fails after its retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<StepBody>,
    /// What the output should look like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_output: Option<String>,
    /// A program to run as is (code steps), instead of asking a model to write one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The language of `code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<CodeLang>,
    /// Run again by every re-run (`plan rerun`), even when nothing that determines its
    /// output changed: for a step with effects beyond its output (a program that writes
    /// or sends something, a tool that changes something).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub always_run: bool,
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<StepId>, D::Error> {
    Ok(Option::<Vec<StepId>>::deserialize(deserializer)?.unwrap_or_default())
}

impl Step {
    /// A step with an id and a description, no dependencies, kind `action`.
    pub fn new(id: impl Into<StepId>, description: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            description: description.into(),
            dependencies: Vec::new(),
            kind: StepKind::Action,
            agent: None,
            fallback: None,
            expected_output: None,
            code: None,
            lang: None,
            always_run: false,
        }
    }

    /// Adds dependencies.
    pub fn depends_on<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<StepId>,
    {
        self.dependencies.extend(ids.into_iter().map(Into::into));
        self
    }

    /// Sets the kind.
    pub fn with_kind(mut self, kind: StepKind) -> Self {
        self.kind = kind;
        self
    }

    /// Sets the agent.
    pub fn with_agent(mut self, agent: impl Into<String>) -> Self {
        self.agent = Some(agent.into());
        self
    }

    /// Sets the fallback body.
    pub fn with_fallback(mut self, fallback: StepBody) -> Self {
        self.fallback = Some(fallback);
        self
    }

    /// Sets the expected output.
    pub fn with_expected_output(mut self, expected: impl Into<String>) -> Self {
        self.expected_output = Some(expected.into());
        self
    }

    /// Sets a program to run as is, in the given language.
    pub fn with_code(mut self, lang: CodeLang, code: impl Into<String>) -> Self {
        self.lang = Some(lang);
        self.code = Some(code.into());
        self
    }

    /// The step to run in place of this one when it has failed: the fallback body under
    /// this step's id and dependencies. `None` when the step has no fallback.
    pub fn fallback_step(&self) -> Option<Step> {
        let body = self.fallback.as_ref()?;
        Some(Step {
            id: self.id.clone(),
            description: body.description.clone(),
            dependencies: self.dependencies.clone(),
            kind: body.kind.unwrap_or(self.kind),
            agent: body.agent.clone().or_else(|| self.agent.clone()),
            fallback: None,
            expected_output: body
                .expected_output
                .clone()
                .or_else(|| self.expected_output.clone()),
            code: body.code.clone(),
            lang: body.lang,
            always_run: self.always_run,
        })
    }

    /// Marks the step to run again in every re-run (its field `always_run`).
    pub fn always_run(mut self) -> Self {
        self.always_run = true;
        self
    }
}

/// A goal and the steps that reach it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Plan {
    /// What the plan is for.
    pub goal: String,
    /// The steps, in the order they were written.
    pub steps: Vec<Step>,
}

impl Plan {
    /// A plan from a goal and its steps. Nothing is validated here; see
    /// [`PlanGraph::new`](crate::PlanGraph::new).
    pub fn new(goal: impl Into<String>, steps: Vec<Step>) -> Self {
        Self {
            goal: goal.into(),
            steps,
        }
    }

    /// Parses plan JSON (see the plan JSON contract). Unknown fields are ignored.
    ///
    /// # Errors
    /// [`ParsePlanError`] when the text is not JSON of the plan's shape; it names the line
    /// and column.
    pub fn from_json(text: &str) -> Result<Plan, ParsePlanError> {
        serde_json::from_str(text).map_err(|source| ParsePlanError {
            line: source.line(),
            column: source.column(),
            message: source.to_string(),
        })
    }

    /// The plan as pretty-printed JSON.
    pub fn to_json_pretty(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The step with this id, if any (the first one, should ids be duplicated).
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id.as_str() == id)
    }
}

/// Plan JSON that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid plan JSON at line {line}, column {column}: {message}")]
#[non_exhaustive]
pub struct ParsePlanError {
    /// 1-based line of the problem.
    pub line: usize,
    /// 1-based column of the problem.
    pub column: usize,
    /// What serde_json said.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_article_plan_loads_unchanged() {
        let text = r#"{"goal": "g", "steps": [
            {"id": "1", "description": "a", "dependencies": []},
            {"id": "2", "description": "b", "dependencies": ["1"]}]}"#;
        let plan = Plan::from_json(text).unwrap();
        assert_eq!(plan.steps.len(), 2);
        assert_eq!(plan.steps[1].dependencies, vec![StepId::new("1")]);
        assert_eq!(plan.steps[1].kind, StepKind::Action);
    }

    #[test]
    fn optional_fields_and_unknown_fields() {
        let text = r#"{"goal": "g", "extra": 1, "steps": [
            {"id": "c", "description": "compare", "kind": "analyze", "agent": "analyst",
             "fallback": {"description": "from memory"}, "priority": 3}]}"#;
        let plan = Plan::from_json(text).unwrap();
        let step = &plan.steps[0];
        assert!(step.dependencies.is_empty());
        assert_eq!(step.kind, StepKind::Analyze);
        assert_eq!(step.agent.as_deref(), Some("analyst"));
        let fb = step.fallback_step().unwrap();
        assert_eq!(fb.description, "from memory");
        assert_eq!(fb.kind, StepKind::Analyze);
        assert_eq!(fb.agent.as_deref(), Some("analyst"));
    }

    #[test]
    fn integer_ids_and_null_dependencies_load() {
        let text = r#"{"goal": "g", "steps": [
            {"id": 1, "description": "a", "dependencies": null},
            {"id": "2", "description": "b", "dependencies": [1]}]}"#;
        let plan = Plan::from_json(text).unwrap();
        assert_eq!(plan.steps[0].id, "1");
        assert!(plan.steps[0].dependencies.is_empty());
        assert_eq!(plan.steps[1].dependencies, vec![StepId::new("1")]);
        let err = Plan::from_json(r#"{"goal": "g", "steps": [{"id": true, "description": "a"}]}"#)
            .unwrap_err();
        assert!(err.message.contains("a step id"), "{err}");
    }

    #[test]
    fn null_optional_fields_read_as_absent() {
        // OpenAI's strict mode answers every optional field, with null when it has none.
        let plan = Plan::from_json(
            r#"{"goal": "g", "steps": [{"id": "a", "description": "d", "dependencies": null,
                "kind": null, "agent": null, "fallback": null, "expected_output": null}]}"#,
        )
        .unwrap();
        let step = &plan.steps[0];
        assert_eq!(step.kind, StepKind::Action);
        assert!(step.agent.is_none() && step.fallback.is_none() && step.expected_output.is_none());
        assert!(step.dependencies.is_empty());
    }

    #[test]
    fn parse_error_names_position() {
        let err = Plan::from_json("{\"goal\": \"g\",\n \"steps\": [{]}").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.to_string().contains("line 2"));
    }

    #[test]
    fn round_trip_omits_defaults() {
        let plan = Plan::new("g", vec![Step::new("a", "do a")]);
        let json = serde_json::to_string(&plan).unwrap();
        assert_eq!(
            json,
            r#"{"goal":"g","steps":[{"id":"a","description":"do a","dependencies":[]}]}"#
        );
        assert_eq!(Plan::from_json(&json).unwrap(), plan);
    }
}
