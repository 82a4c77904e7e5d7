//! Specialised agents: [`AgentProfile`]s (name, purpose, system prompt, model, tools, step
//! kinds) gathered in an [`AgentCatalogue`] that routes steps, checks plans for unknown
//! agents and tells the planner which agents exist.

mod team;

use std::collections::BTreeSet;
use std::path::Path;

use plan_core::{Plan, Step, StepKind};
use serde::{Deserialize, Serialize};

pub use team::{AgentTeam, ModelResolver};

/// A specialised agent: who it is, what it is for, and what it may use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AgentProfile {
    /// The name plans use in a step's `agent` field (`researcher`).
    pub name: String,
    /// What it is for, in one line; the planner reads this to assign steps.
    #[serde(default)]
    pub description: String,
    /// The system prompt of its model calls.
    #[serde(default)]
    pub system_prompt: String,
    /// The model to use (`provider:model`, e.g. `openai:gpt-4o-mini`); `None` uses the
    /// run's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Names of the tools it may call.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Step kinds it handles when a step names no agent.
    #[serde(default)]
    pub kinds: Vec<StepKind>,
}

impl AgentProfile {
    /// A profile with a name and a description, no tools, handling no kinds by default.
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            system_prompt: String::new(),
            model: None,
            tools: Vec::new(),
            kinds: Vec::new(),
        }
    }

    /// Sets the system prompt.
    pub fn with_system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.system_prompt = prompt.into();
        self
    }

    /// Sets the model spec.
    pub fn with_model(mut self, spec: impl Into<String>) -> Self {
        self.model = Some(spec.into());
        self
    }

    /// Sets the tools it may call.
    pub fn with_tools<I, S>(mut self, tools: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tools = tools.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the step kinds it handles.
    pub fn with_kinds(mut self, kinds: impl IntoIterator<Item = StepKind>) -> Self {
        self.kinds = kinds.into_iter().collect();
        self
    }
}

/// What can go wrong with agent profiles and routing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The profile file could not be read.
    #[error("cannot read the agent profiles {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
    /// The profiles are not valid TOML of the expected shape.
    #[error("invalid agent profiles{}: {message}", path.as_ref().map(|p| format!(" in {p}")).unwrap_or_default())]
    Parse {
        /// The file, if the profiles came from one.
        path: Option<String>,
        /// What was wrong (with line and column).
        message: String,
    },
    /// A profile is malformed (empty or duplicate name, bad tool name).
    #[error("invalid agent profile `{agent}`: {message}")]
    InvalidProfile {
        /// The profile.
        agent: String,
        /// What was wrong.
        message: String,
    },
    /// A plan names agents that do not exist.
    #[error(
        "the plan names unknown agents: {}; known agents: {known}",
        unknown.iter().map(|(step, agent)| format!("step `{step}` uses `{agent}`")).collect::<Vec<_>>().join(", ")
    )]
    UnknownAgents {
        /// `(step id, agent name)` of every step naming an unknown agent.
        unknown: Vec<(String, String)>,
        /// The agents that exist, comma-separated.
        known: String,
    },
    /// A profile's model could not be made.
    #[error("cannot make the model of agent `{agent}`: {message}")]
    Model {
        /// The profile.
        agent: String,
        /// What went wrong.
        message: String,
    },
    /// A profile names tools that are not available.
    #[error("agent `{agent}` uses unknown tools: {}; available tools: {available}", tools.join(", "))]
    UnknownTools {
        /// The profile.
        agent: String,
        /// The unknown tool names.
        tools: Vec<String>,
        /// The available tools, comma-separated.
        available: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    #[serde(default)]
    agent: Vec<AgentProfile>,
}

/// The specialised agents of a run.
///
/// Steps are routed by their `agent` field, and when a step names none, by its `kind` (the
/// first profile that lists the kind). Load profiles from TOML:
///
/// ```
/// use plan_core::{Plan, Step, StepKind};
/// use plan_strategies::AgentCatalogue;
///
/// let catalogue = AgentCatalogue::from_toml_str(r#"
///     [[agent]]
///     name = "researcher"
///     description = "Finds facts in the document folder"
///     system_prompt = "You search documents and quote them exactly."
///     tools = ["search_docs", "read_file"]
///     kinds = ["search"]
///
///     [[agent]]
///     name = "writer"
///     description = "Writes the final report"
///     model = "openai:gpt-4o-mini"
///     kinds = ["synthesize"]
/// "#)?;
/// let step = Step::new("find", "Find the facts").with_kind(StepKind::Search);
/// assert_eq!(catalogue.route(&step).unwrap().name, "researcher");
///
/// let plan = Plan::new("g", vec![Step::new("a", "x").with_agent("poet")]);
/// let err = catalogue.check_plan(&plan).unwrap_err();
/// assert!(err.to_string().contains("step `a` uses `poet`"));
/// # Ok::<(), plan_strategies::AgentError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentCatalogue {
    profiles: Vec<AgentProfile>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl AgentCatalogue {
    /// An empty catalogue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a profile.
    ///
    /// # Errors
    /// [`AgentError::InvalidProfile`] for an empty or duplicate name, or a name with
    /// characters other than letters, digits, `_` and `-`.
    pub fn with(mut self, profile: AgentProfile) -> Result<Self, AgentError> {
        self.add(profile)?;
        Ok(self)
    }

    /// Adds a profile in place (see [`with`](Self::with)).
    ///
    /// # Errors
    /// As [`with`](Self::with).
    pub fn add(&mut self, profile: AgentProfile) -> Result<(), AgentError> {
        if !valid_name(&profile.name) {
            return Err(AgentError::InvalidProfile {
                agent: profile.name.clone(),
                message: "the name must be non-empty and use only letters, digits, `_` and `-`"
                    .to_owned(),
            });
        }
        if self.get(&profile.name).is_some() {
            return Err(AgentError::InvalidProfile {
                agent: profile.name.clone(),
                message: "another profile has the same name; names must be unique".to_owned(),
            });
        }
        self.profiles.push(profile);
        Ok(())
    }

    /// Profiles from TOML text: a list of `[[agent]]` tables with the fields of
    /// [`AgentProfile`].
    ///
    /// # Errors
    /// [`AgentError::Parse`] naming the line and column, or [`AgentError::InvalidProfile`].
    pub fn from_toml_str(text: &str) -> Result<Self, AgentError> {
        Self::parse(text, None)
    }

    /// Profiles from a TOML file (see [`from_toml_str`](Self::from_toml_str)).
    ///
    /// # Errors
    /// [`AgentError::Read`] when the file cannot be read, else as
    /// [`from_toml_str`](Self::from_toml_str).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, AgentError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| AgentError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text, Some(path.display().to_string()))
    }

    fn parse(text: &str, path: Option<String>) -> Result<Self, AgentError> {
        let file: ProfileFile = toml::from_str(text).map_err(|e| AgentError::Parse {
            path,
            message: e.to_string().trim().to_owned(),
        })?;
        let mut catalogue = Self::new();
        for profile in file.agent {
            catalogue.add(profile)?;
        }
        Ok(catalogue)
    }

    /// The profiles, in the order they were added.
    pub fn profiles(&self) -> &[AgentProfile] {
        &self.profiles
    }

    /// Whether there are no profiles.
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }

    /// The profile with this name.
    pub fn get(&self, name: &str) -> Option<&AgentProfile> {
        self.profiles.iter().find(|p| p.name == name)
    }

    /// The names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.profiles.iter().map(|p| p.name.as_str()).collect()
    }

    /// The profile that runs `step`: the one it names, else the first that handles its
    /// kind, else `None` (the run's default executor).
    ///
    /// A step naming an unknown agent also gives `None`; [`check_plan`](Self::check_plan)
    /// rejects such plans before they run.
    pub fn route(&self, step: &Step) -> Option<&AgentProfile> {
        match &step.agent {
            Some(name) => self.get(name),
            None => self.for_kind(step.kind),
        }
    }

    /// The first profile that handles `kind`.
    pub fn for_kind(&self, kind: StepKind) -> Option<&AgentProfile> {
        self.profiles.iter().find(|p| p.kinds.contains(&kind))
    }

    /// Checks that every agent the plan names (fallbacks included) exists.
    ///
    /// # Errors
    /// [`AgentError::UnknownAgents`] listing every offending step and the known agents.
    pub fn check_plan(&self, plan: &Plan) -> Result<(), AgentError> {
        let mut unknown = Vec::new();
        for step in &plan.steps {
            let named = step
                .agent
                .iter()
                .chain(step.fallback.as_ref().and_then(|f| f.agent.as_ref()));
            for agent in named {
                if self.get(agent).is_none() {
                    unknown.push((step.id.to_string(), agent.clone()));
                }
            }
        }
        if unknown.is_empty() {
            return Ok(());
        }
        Err(AgentError::UnknownAgents {
            unknown,
            known: if self.profiles.is_empty() {
                "none (no agent profiles are configured; remove the `agent` fields)".to_owned()
            } else {
                self.names().join(", ")
            },
        })
    }

    /// Checks that every tool the profiles name is among `available`.
    ///
    /// # Errors
    /// [`AgentError::UnknownTools`] for the first profile naming a missing tool.
    pub fn check_tools<S: AsRef<str>>(&self, available: &[S]) -> Result<(), AgentError> {
        let have: BTreeSet<&str> = available.iter().map(AsRef::as_ref).collect();
        for profile in &self.profiles {
            let missing: Vec<String> = profile
                .tools
                .iter()
                .filter(|t| !have.contains(t.as_str()))
                .cloned()
                .collect();
            if !missing.is_empty() {
                return Err(AgentError::UnknownTools {
                    agent: profile.name.clone(),
                    tools: missing,
                    available: have.into_iter().collect::<Vec<_>>().join(", "),
                });
            }
        }
        Ok(())
    }

    /// The agents as the LLM planner sees them (name and description), for
    /// [`PlannerConfig::with_agents`](crate::PlannerConfig::with_agents); the builder's
    /// [`agents`](crate::AgentBuilder::agents) does this for you.
    pub fn agent_infos(&self) -> Vec<crate::AgentInfo> {
        self.profiles.iter().map(crate::AgentInfo::from).collect()
    }

    /// The text that tells a planner which agents exist and what each is for, to put in
    /// its prompt. Empty when there are no profiles.
    pub fn planner_brief(&self) -> String {
        if self.profiles.is_empty() {
            return String::new();
        }
        let mut text = String::from(
            "Specialised agents are available. Assign a step to one by setting its \"agent\" \
             field to the agent's name; use only these names:\n",
        );
        for p in &self.profiles {
            text.push_str(&format!("- {}: {}", p.name, p.description.trim()));
            if !p.kinds.is_empty() {
                let kinds: Vec<&str> = p.kinds.iter().map(|k| k.as_str()).collect();
                text.push_str(&format!(" (handles {} steps)", kinds.join(", ")));
            }
            if !p.tools.is_empty() {
                text.push_str(&format!(" [tools: {}]", p.tools.join(", ")));
            }
            text.push('\n');
        }
        text
    }
}

impl From<&AgentProfile> for crate::AgentInfo {
    fn from(profile: &AgentProfile) -> Self {
        let mut description = profile.description.trim().to_owned();
        if !profile.kinds.is_empty() {
            let kinds: Vec<&str> = profile.kinds.iter().map(|k| k.as_str()).collect();
            description.push_str(&format!(" (handles {} steps)", kinds.join(", ")));
        }
        if !profile.tools.is_empty() {
            description.push_str(&format!(" [tools: {}]", profile.tools.join(", ")));
        }
        crate::AgentInfo::new(profile.name.clone(), description)
    }
}

impl From<&AgentCatalogue> for Vec<crate::AgentInfo> {
    fn from(catalogue: &AgentCatalogue) -> Self {
        catalogue.agent_infos()
    }
}
