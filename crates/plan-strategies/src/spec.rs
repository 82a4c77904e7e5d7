//! [`RunSpec`]: the one typed definition of a run's settings, stored with the run.
//!
//! Every door a run can take (`plan run`, `exec`, `resume`, `approve`, the HTTP server,
//! the MCP server, a fleet worker) builds its agent from a `RunSpec` through the
//! [`Runtime`](crate::Runtime), and the spec is kept in the run's record, so whoever
//! continues the run (a resume, an approval, a worker taking it over) continues it with
//! the same strategy, model, limits, approval and budget. A door changes a field only
//! where its user said so ([`RunSpec::apply`]), and the change is recorded
//! ([`RunSpec::overrides`]).
//!
//! What a door's caller may set on a new run (an API body, an MCP tool's arguments) is one
//! type, [`RunSettings`]: its fields, their JSON names and the JSON schema the MCP tools
//! advertise ([`RunSettings::schema_properties`]) are defined here once, and
//! [`RunSettings::apply`] turns them into a checked spec.
//!
//! Only this module reads or writes the spec's part of a [`RunRecord`]: the record's
//! `strategy`, `model` and `base_url` columns and the `spec` key of its options. Records
//! written before the spec existed still load ([`RunSpec::from_record`] reads their
//! loose option keys).

use plan_exec::store::RunRecord;
use plan_llm::Price;
use plan_llm::UsageTotals;
use plan_sandbox::SandboxChoice;
use serde::{Deserialize, Serialize};

/// The version of the spec this build writes; a record with a newer one is refused.
pub const RUN_SPEC_VERSION: u32 = 1;

/// The key of the spec in a run record's options.
const SPEC_KEY: &str = "spec";

/// Everything that decides how a run runs, except the goal and secrets (keys come from
/// the environment of whichever process runs it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RunSpec {
    /// The spec's format version ([`RUN_SPEC_VERSION`]).
    pub version: u32,
    /// The strategy's name (`auto`, `dag`, ... or one registered by the user).
    pub strategy: String,
    /// The model spec (`provider:model`, `local`).
    pub model: String,
    /// The provider endpoint, when not the provider's own (no user info, no query).
    pub base_url: Option<String>,
    /// The run's models get no API key from the process that runs them: a server's client
    /// chose the endpoint, and the operator did not name it as one the keys may go to.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_keys: bool,
    /// The run's limits.
    pub limits: RunLimits,
    /// What waits for a person's approval.
    pub approve: Approval,
    /// What the run may spend.
    pub budget: Budget,
    /// Where code steps run.
    #[serde(with = "sandbox_name")]
    pub sandbox: SandboxChoice,
    /// What the run uses that only the process that started it may have.
    pub needs: RunNeeds,
    /// The changes doors made to the spec after the run started, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<SpecOverride>,
    /// Every call the run makes outside itself (model, tool, program) is journaled with
    /// its reply and a hash of its request, for replay; with this, the request is kept in
    /// full too, so `plan replay --check` can show how a request changed (more store
    /// space per call).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub record_requests: bool,
}

/// A run's limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RunLimits {
    /// The most steps a plan may have (`None`: the planner's default, or the model's).
    pub max_steps: Option<usize>,
    /// Replans the adaptive strategy may make.
    pub max_replans: u32,
    /// Levels of sub-goals the hierarchical strategy may make.
    pub max_depth: u32,
    /// Critique rounds of the reflective strategy.
    pub reflection_rounds: u32,
    /// Steps running at once at most.
    pub concurrency: usize,
    /// Seconds one step attempt may take (`None`: derived from the provider's timeout).
    pub step_timeout_secs: Option<u64>,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            max_steps: None,
            max_replans: 3,
            max_depth: 3,
            reflection_rounds: 2,
            concurrency: 4,
            step_timeout_secs: None,
        }
    }
}

/// What waits for a person's approval before it runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Approval {
    /// Nothing: the run goes to its end.
    #[default]
    None,
    /// The first plan (a direct answer of `auto` needs none: it runs no plan).
    Plan,
    /// Each replan.
    Replans,
}

impl Approval {
    /// The name as the CLI and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Approval::None => "none",
            Approval::Plan => "plan",
            Approval::Replans => "replans",
        }
    }
}

/// What a run may spend; every process that runs part of it meters against the run's
/// own total.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Budget {
    /// Tokens (prompt and completion together).
    pub tokens: Option<u64>,
    /// US dollars, at the model's price.
    pub usd: Option<f64>,
}

/// What a run uses that only the process that started it may have (documents, tools,
/// MCP servers, agent profiles): such a run is continued where it started, never by a
/// fleet worker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RunNeeds {
    /// Built-in tools by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// MCP servers by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mcp: Vec<String>,
    /// Whether agent profiles route the steps.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub agents: bool,
    /// The research backend (`local` documents or `brave` web search), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub research: Option<String>,
}

impl RunNeeds {
    /// What of this a process that did not start the run lacks, in words (`None`: the
    /// run can continue anywhere).
    pub fn local_only(&self) -> Option<String> {
        let mut needs = Vec::new();
        if self.research.is_some() {
            needs.push("--research/--search");
        }
        if !self.tools.is_empty() || !self.mcp.is_empty() || self.agents {
            needs.push("tools or agents");
        }
        (!needs.is_empty()).then(|| needs.join(" and "))
    }
}

/// One change a door made to a run's spec after the run started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SpecOverride {
    /// The field (`limits.concurrency`, `model`, ...).
    pub field: String,
    /// Its value before.
    pub from: serde_json::Value,
    /// Its value after.
    pub to: serde_json::Value,
    /// The door that changed it (`resume`, `approve`, ...).
    pub by: String,
}

/// Changes a user asked for when continuing a run; `None` keeps the recorded value.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct SpecChanges {
    /// Another model spec.
    pub model: Option<String>,
    /// Another endpoint.
    pub base_url: Option<String>,
    /// Another concurrency.
    pub concurrency: Option<usize>,
    /// Another sandbox.
    pub sandbox: Option<SandboxChoice>,
    /// Another replan limit.
    pub max_replans: Option<u32>,
    /// Another step cap.
    pub max_steps: Option<usize>,
}

/// A value a spec cannot hold, named as the user wrote it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// A field's value is out of range.
    #[error("{field} = {value}: {why}")]
    Invalid {
        /// The field, as the user names it (`concurrency`, `budget_usd`).
        field: &'static str,
        /// The value given.
        value: String,
        /// What it must be.
        why: &'static str,
    },
    /// A setting this version of plan does not know.
    #[error("{}", unknown_setting_message(field))]
    UnknownSetting {
        /// The name as the caller wrote it.
        field: String,
    },
    /// The record was written by a newer version of plan.
    #[error(
        "the run's settings were written by a newer plan (spec version {0}, this one reads up to {RUN_SPEC_VERSION}): continue it with that version"
    )]
    Newer(u32),
    /// The record's spec is not readable.
    #[error("the run's stored settings are unreadable: {0}")]
    Unreadable(String),
}

impl Default for RunSpec {
    fn default() -> Self {
        Self {
            version: RUN_SPEC_VERSION,
            strategy: "auto".to_owned(),
            model: "local".to_owned(),
            base_url: None,
            no_keys: false,
            limits: RunLimits::default(),
            approve: Approval::None,
            budget: Budget::default(),
            sandbox: SandboxChoice::Auto,
            needs: RunNeeds::default(),
            overrides: Vec::new(),
            record_requests: false,
        }
    }
}

impl RunSpec {
    /// The defaults, with this model and strategy.
    pub fn new(model: impl Into<String>, strategy: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            strategy: strategy.into(),
            ..Self::default()
        }
    }

    /// Checks every value, naming the first that is out of range.
    ///
    /// # Errors
    /// [`SpecError::Invalid`] naming the field and value.
    pub fn validate(&self) -> Result<(), SpecError> {
        let invalid = |field, value: String, why| Err(SpecError::Invalid { field, value, why });
        if self.strategy.trim().is_empty() {
            return invalid("strategy", "\"\"".into(), "name a strategy");
        }
        if self.model.trim().is_empty() {
            return invalid("model", "\"\"".into(), "name a model (provider:model)");
        }
        let l = &self.limits;
        if l.concurrency == 0 {
            return invalid("concurrency", "0".into(), "must be at least 1");
        }
        if l.max_steps == Some(0) {
            return invalid("max_steps", "0".into(), "must be at least 1");
        }
        if l.max_depth == 0 {
            return invalid("max_depth", "0".into(), "must be at least 1");
        }
        if l.step_timeout_secs == Some(0) {
            return invalid("step_timeout_secs", "0".into(), "must be at least 1");
        }
        if self.budget.tokens == Some(0) {
            return invalid("budget_tokens", "0".into(), "must be at least 1");
        }
        // Upper bounds: beyond them a value is a slip of the keyboard, not a plan.
        let too_big: [(&'static str, u64, u64, &'static str); 6] = [
            (
                "concurrency",
                l.concurrency as u64,
                1024,
                "must be at most 1024",
            ),
            (
                "max_steps",
                l.max_steps.unwrap_or(0) as u64,
                10_000,
                "must be at most 10000",
            ),
            (
                "max_depth",
                u64::from(l.max_depth),
                10,
                "must be at most 10",
            ),
            (
                "max_replans",
                u64::from(l.max_replans),
                100,
                "must be at most 100",
            ),
            (
                "reflection_rounds",
                u64::from(l.reflection_rounds),
                10,
                "must be at most 10",
            ),
            (
                "step_timeout_secs",
                l.step_timeout_secs.unwrap_or(0),
                86_400,
                "must be at most 86400 (a day)",
            ),
        ];
        for (field, value, most, why) in too_big {
            if value > most {
                return invalid(field, value.to_string(), why);
            }
        }
        if let Some(usd) = self.budget.usd
            && !(usd.is_finite() && usd > 0.0)
        {
            return invalid(
                "budget_usd",
                usd.to_string(),
                "must be a positive number of dollars",
            );
        }
        Ok(())
    }

    /// The spec of a stored run: the one it was started with, or, for a record written
    /// before specs existed, what its columns and options say (defaults for the rest).
    ///
    /// # Errors
    /// [`SpecError::Newer`] for a spec of a newer version; [`SpecError::Unreadable`].
    pub fn from_record(record: &RunRecord) -> Result<RunSpec, SpecError> {
        if let Some(value) = record.options.get(SPEC_KEY) {
            let version = value
                .get("version")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(1);
            if version > u64::from(RUN_SPEC_VERSION) {
                return Err(SpecError::Newer(u32::try_from(version).unwrap_or(u32::MAX)));
            }
            return serde_json::from_value(value.clone())
                .map_err(|e| SpecError::Unreadable(e.to_string()));
        }
        Ok(Self::from_legacy_record(record))
    }

    /// A record written before specs: loose option keys.
    fn from_legacy_record(record: &RunRecord) -> RunSpec {
        let mut spec = RunSpec::default();
        if let Some(s) = &record.strategy {
            spec.strategy.clone_from(s);
        }
        if let Some(m) = &record.model {
            spec.model.clone_from(m);
        }
        spec.base_url.clone_from(&record.base_url);
        let o = &record.options;
        let number = |key: &str| o.get(key).and_then(serde_json::Value::as_u64);
        let l = &mut spec.limits;
        if let Some(n) = number("concurrency") {
            l.concurrency = usize::try_from(n).unwrap_or(usize::MAX).max(1);
        }
        if let Some(n) = number("max_replans") {
            l.max_replans = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(n) = number("max_depth") {
            l.max_depth = u32::try_from(n).unwrap_or(u32::MAX).max(1);
        }
        if let Some(n) = number("max_steps") {
            l.max_steps = usize::try_from(n).ok().filter(|n| *n > 0);
        }
        spec.approve = match o.get("approve").and_then(serde_json::Value::as_str) {
            Some("plan") => Approval::Plan,
            Some("replans") => Approval::Replans,
            _ => Approval::None,
        };
        if let Some(needs) = o.get("local_only").and_then(serde_json::Value::as_str) {
            // Old records kept only the words; keep the run where it started.
            if needs.contains("research") || needs.contains("search") {
                spec.needs.research = Some("local".to_owned());
            }
            if needs.contains("tools") {
                spec.needs.agents = true;
            }
        }
        spec
    }

    /// This spec with its budget less what a run has used so far (`price`: what its
    /// tokens cost, for a budget in dollars). A budget used up becomes zero, which a
    /// meter refuses at the next model call.
    pub fn with_budget_used(mut self, used: UsageTotals, price: Option<Price>) -> RunSpec {
        let tokens = used.prompt_tokens + used.completion_tokens;
        if let Some(budget) = self.budget.tokens.as_mut() {
            *budget = budget.saturating_sub(tokens);
        }
        if let (Some(usd), Some(price)) = (self.budget.usd.as_mut(), price) {
            let spent = price.cost(used.prompt_tokens, used.completion_tokens);
            *usd = (*usd - spent).max(0.0);
        }
        self
    }

    /// A new run's record for `goal`, holding this spec.
    pub fn to_record(&self, goal: impl Into<String>) -> RunRecord {
        let mut record = RunRecord::new(goal);
        self.write_to(&mut record);
        record
    }

    /// Writes this spec into `record` (its columns and the spec key of its options),
    /// keeping the options' other keys (a trace context).
    pub fn write_to(&self, record: &mut RunRecord) {
        record.strategy = Some(self.strategy.clone());
        record.model = Some(self.model.clone());
        let with_url = match &self.base_url {
            Some(url) => record.clone().with_base_url(url),
            None => {
                let mut r = record.clone();
                r.base_url = None;
                r
            }
        };
        record.base_url = with_url.base_url;
        let value = serde_json::to_value(self).unwrap_or_default();
        match record.options.as_object_mut() {
            Some(map) => {
                map.insert(SPEC_KEY.to_owned(), value);
            }
            None => record.options = serde_json::json!({ SPEC_KEY: value }),
        }
    }

    /// Applies what a user asked for when continuing the run through `door`, recording
    /// each value that changes in [`overrides`](Self::overrides).
    pub fn apply(&mut self, changes: &SpecChanges, door: &str) {
        fn set<T: Serialize + PartialEq + Clone>(
            overrides: &mut Vec<SpecOverride>,
            field: &str,
            slot: &mut T,
            to: Option<T>,
            door: &str,
        ) {
            if let Some(to) = to
                && *slot != to
            {
                overrides.push(SpecOverride {
                    field: field.to_owned(),
                    from: serde_json::to_value(&*slot).unwrap_or_default(),
                    to: serde_json::to_value(&to).unwrap_or_default(),
                    by: door.to_owned(),
                });
                *slot = to;
            }
        }
        let o = &mut self.overrides;
        set(o, "model", &mut self.model, changes.model.clone(), door);
        set(
            o,
            "base_url",
            &mut self.base_url,
            changes.base_url.clone().map(Some),
            door,
        );
        let l = &mut self.limits;
        set(
            o,
            "limits.concurrency",
            &mut l.concurrency,
            changes.concurrency,
            door,
        );
        set(
            o,
            "limits.max_replans",
            &mut l.max_replans,
            changes.max_replans,
            door,
        );
        set(
            o,
            "limits.max_steps",
            &mut l.max_steps,
            changes.max_steps.map(Some),
            door,
        );
        let mut sandbox = self.sandbox.as_str().to_owned();
        set(
            o,
            "sandbox",
            &mut sandbox,
            changes.sandbox.map(|s| s.as_str().to_owned()),
            door,
        );
        self.sandbox = sandbox.parse().unwrap_or(self.sandbox);
    }
}

/// The settings a door's caller may choose for a new run: the body of `POST /api/runs`
/// (beside its `goal`) and the arguments of the MCP `run` and `plan` tools. Every field is
/// optional: what is not given keeps the door's default spec. The JSON names are flat and
/// snake_case, and they are the names errors use.
///
/// Read one with [`from_json`](Self::from_json) (or serde): an unknown name, or a value of
/// the wrong type, is refused naming it. [`apply`](Self::apply) puts the settings on a
/// default spec and checks the result with [`RunSpec::validate`].
/// [`schema_properties`](Self::schema_properties) is the JSON schema of the fields, so a
/// door that advertises them (the MCP tools) cannot drift from this type.
///
/// ```
/// use plan_strategies::{RunSettings, RunSpec};
///
/// let settings = RunSettings::from_json(serde_json::json!({
///     "strategy": "dag", "budget_tokens": 20000, "approve": "replans"
/// }))?;
/// let spec = settings.apply(&RunSpec::new("openai:gpt-4o-mini", "auto"))?;
/// assert_eq!(spec.strategy, "dag");
/// assert_eq!(spec.budget.tokens, Some(20000));
///
/// let zero = RunSettings::from_json(serde_json::json!({"concurrency": 0}))?;
/// let e = zero.apply(&RunSpec::default()).unwrap_err();
/// assert_eq!(e.to_string(), "concurrency = 0: must be at least 1");
/// # Ok::<(), plan_strategies::SpecError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RunSettings {
    /// The strategy's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// The model spec (`provider:model`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The provider's endpoint (a door may restrict it: `plan serve` takes loopback only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The most steps a plan may have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<usize>,
    /// Replans the adaptive strategy may make.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_replans: Option<u32>,
    /// Levels of sub-goals the hierarchical strategy may make.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u32>,
    /// Critique rounds of the reflective strategy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reflection_rounds: Option<u32>,
    /// Steps running at once at most.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Seconds one step attempt may take.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_timeout_secs: Option<u64>,
    /// What waits for approval; on the wire `true` (the plan), `false` (nothing) or
    /// `"replans"` (each replan).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "approve_wire::serialize"
    )]
    pub approve: Option<Approval>,
    /// Tokens the run may use (prompt and completion together).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<u64>,
    /// US dollars the run may spend, at the model's price (the door must know it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
}

/// Why a JSON value cannot be a setting's value.
const WHOLE: &str = "must be a whole number, 0 or more";
const TEXT: &str = "must be a string";
const NUMBER: &str = "must be a number";
const APPROVE: &str = "must be true (the plan), false (nothing) or \"replans\" (each replan)";

impl RunSettings {
    /// The JSON name of every field, in the order the schema lists them.
    pub const FIELDS: &'static [&'static str] = &[
        "strategy",
        "model",
        "base_url",
        "max_steps",
        "max_replans",
        "max_depth",
        "reflection_rounds",
        "concurrency",
        "step_timeout_secs",
        "approve",
        "budget_tokens",
        "budget_usd",
    ];

    /// Reads settings from a JSON object; `null` is the same as leaving a field out.
    ///
    /// # Errors
    /// [`SpecError::UnknownSetting`] for a name that is not a field;
    /// [`SpecError::Invalid`] naming the field and value for a value of the wrong type or
    /// out of its type's range (a negative count); anything but an object is refused too.
    pub fn from_json(value: serde_json::Value) -> Result<Self, SpecError> {
        match value {
            serde_json::Value::Object(map) => Self::from_map(map),
            other => Err(SpecError::Invalid {
                field: "settings",
                value: other.to_string(),
                why: "must be a JSON object",
            }),
        }
    }

    /// Reads settings from the members of a JSON object (see [`from_json`](Self::from_json)).
    ///
    /// # Errors
    /// As [`from_json`](Self::from_json).
    pub fn from_map(map: serde_json::Map<String, serde_json::Value>) -> Result<Self, SpecError> {
        let mut s = RunSettings::default();
        for (key, value) in map {
            if value.is_null() {
                if !Self::FIELDS.contains(&key.as_str()) {
                    return Err(SpecError::UnknownSetting { field: key });
                }
                continue;
            }
            let v = &value;
            match key.as_str() {
                "strategy" => s.strategy = Some(text("strategy", v)?),
                "model" => s.model = Some(text("model", v)?),
                "base_url" => s.base_url = Some(text("base_url", v)?),
                "max_steps" => s.max_steps = Some(whole("max_steps", v)?),
                "max_replans" => s.max_replans = Some(whole("max_replans", v)?),
                "max_depth" => s.max_depth = Some(whole("max_depth", v)?),
                "reflection_rounds" => s.reflection_rounds = Some(whole("reflection_rounds", v)?),
                "concurrency" => s.concurrency = Some(whole("concurrency", v)?),
                "step_timeout_secs" => s.step_timeout_secs = Some(whole("step_timeout_secs", v)?),
                "approve" => s.approve = Some(approve_wire::from_value(v)?),
                "budget_tokens" => s.budget_tokens = Some(whole("budget_tokens", v)?),
                "budget_usd" => {
                    s.budget_usd =
                        Some(v.as_f64().ok_or_else(|| invalid("budget_usd", v, NUMBER))?);
                }
                _ => return Err(SpecError::UnknownSetting { field: key }),
            }
        }
        Ok(s)
    }

    /// `base` with these settings in place, checked ([`RunSpec::validate`]).
    ///
    /// # Errors
    /// [`SpecError::Invalid`] naming the first field whose value the spec cannot hold.
    pub fn apply(&self, base: &RunSpec) -> Result<RunSpec, SpecError> {
        let mut spec = base.clone();
        if let Some(v) = &self.strategy {
            spec.strategy.clone_from(v);
        }
        if let Some(v) = &self.model {
            spec.model.clone_from(v);
        }
        if let Some(v) = &self.base_url {
            spec.base_url = Some(v.clone());
        }
        let l = &mut spec.limits;
        if let Some(v) = self.max_steps {
            l.max_steps = Some(v);
        }
        if let Some(v) = self.max_replans {
            l.max_replans = v;
        }
        if let Some(v) = self.max_depth {
            l.max_depth = v;
        }
        if let Some(v) = self.reflection_rounds {
            l.reflection_rounds = v;
        }
        if let Some(v) = self.concurrency {
            l.concurrency = v;
        }
        if let Some(v) = self.step_timeout_secs {
            l.step_timeout_secs = Some(v);
        }
        if let Some(v) = self.approve {
            spec.approve = v;
        }
        if let Some(v) = self.budget_tokens {
            spec.budget.tokens = Some(v);
        }
        if let Some(v) = self.budget_usd {
            spec.budget.usd = Some(v);
        }
        spec.validate()?;
        Ok(spec)
    }

    /// The JSON-schema `properties` of the fields (type, minimum, description), keyed by
    /// their JSON names; `strategies` are the names the `strategy` field may take
    /// ([`AgentFactory::strategy_names`](crate::AgentFactory::strategy_names)). A door
    /// that takes only some fields keeps those keys.
    pub fn schema_properties(strategies: &[String]) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::json;
        let count = |minimum: u32, description: &str| json!({"type": "integer", "minimum": minimum, "description": description});
        let properties = json!({
            "strategy": {
                "type": "string",
                "enum": strategies,
                "description": "How plans are made and revised (default: the server's; auto answers in one call when no plan is needed)"
            },
            "model": {
                "type": "string",
                "description": "The model, as provider:model (default: the server's)"
            },
            "base_url": {
                "type": "string",
                "description": "The provider's endpoint (default: the provider's own)"
            },
            "max_steps": count(1, "Most steps a plan may have"),
            "max_replans": count(0, "Replans the adaptive strategy may make (default 3)"),
            "max_depth": count(1, "Levels of sub-goals the hierarchical strategy may make (default 3)"),
            "reflection_rounds": count(0, "Critique rounds of the reflective strategy (default 2)"),
            "concurrency": count(1, "Steps running at once at most (default 4)"),
            "step_timeout_secs": count(1, "Seconds one step attempt may take"),
            "approve": {
                "oneOf": [{"type": "boolean"}, {"type": "string", "enum": ["replans"]}],
                "description": "true: stop after planning until the plan is approved; \"replans\": stop before each replan; false: run to the end"
            },
            "budget_tokens": count(1, "Tokens the run may use, prompt and completion together; the run stops when they are spent"),
            "budget_usd": {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": "US dollars the run may spend, at the model's price; the run stops when they are spent"
            },
        });
        match properties {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        }
    }
}

impl<'de> Deserialize<'de> for RunSettings {
    /// As [`RunSettings::from_map`], so an unknown or mistyped field is named; this works
    /// under `#[serde(flatten)]` too (the members the outer type does not take arrive here).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        Self::from_map(map).map_err(serde::de::Error::custom)
    }
}

fn invalid(field: &'static str, value: &serde_json::Value, why: &'static str) -> SpecError {
    SpecError::Invalid {
        field,
        value: value.to_string(),
        why,
    }
}

fn text(field: &'static str, value: &serde_json::Value) -> Result<String, SpecError> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| invalid(field, value, TEXT))
}

/// A whole number that fits `T` (so no negative number, fraction or string).
fn whole<T: TryFrom<u64>>(field: &'static str, value: &serde_json::Value) -> Result<T, SpecError> {
    value
        .as_u64()
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| invalid(field, value, WHOLE))
}

/// The message of [`SpecError::UnknownSetting`]: the name, the closest field, every field.
fn unknown_setting_message(field: &str) -> String {
    let near = RunSettings::FIELDS
        .iter()
        .map(|known| (edit_distance(field, known), *known))
        .filter(|(d, _)| *d <= 2)
        .min();
    let hint = near
        .map(|(_, known)| format!(" (did you mean `{known}`?)"))
        .unwrap_or_default();
    format!(
        "`{field}` is not a run setting{hint}: the settings are {}",
        RunSettings::FIELDS.join(", ")
    )
}

/// Levenshtein distance, for the hint of an unknown setting.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// `approve` as the API takes it: `true`, `false` or `"replans"`.
mod approve_wire {
    use super::{APPROVE, Approval, SpecError, invalid};
    use serde::Serializer;

    pub(super) fn serialize<S: Serializer>(a: &Option<Approval>, s: S) -> Result<S::Ok, S::Error> {
        match a {
            Some(Approval::Replans) => s.serialize_str("replans"),
            Some(Approval::Plan) => s.serialize_bool(true),
            _ => s.serialize_bool(false),
        }
    }

    pub(super) fn from_value(value: &serde_json::Value) -> Result<Approval, SpecError> {
        match value {
            serde_json::Value::Bool(false) => Ok(Approval::None),
            serde_json::Value::Bool(true) => Ok(Approval::Plan),
            serde_json::Value::String(s) if s == "replans" => Ok(Approval::Replans),
            other => Err(invalid("approve", other, APPROVE)),
        }
    }
}

/// The sandbox choice by its CLI name.
mod sandbox_name {
    use plan_sandbox::SandboxChoice;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(c: &SandboxChoice, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(c.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SandboxChoice, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_survives_its_record() {
        let mut spec = RunSpec::new("openai:gpt-4o-mini", "adaptive");
        spec.base_url = Some("http://127.0.0.1:9/v1".into());
        spec.limits.max_replans = 5;
        spec.limits.max_steps = Some(7);
        spec.approve = Approval::Replans;
        spec.budget.usd = Some(0.5);
        spec.sandbox = SandboxChoice::Process;
        spec.needs.tools = vec!["read_file".into()];
        let mut record = spec.to_record("g");
        record.options["traceparent"] = serde_json::json!("00-x");
        let back = RunSpec::from_record(&record).unwrap();
        assert_eq!(back, spec);
        assert_eq!(record.strategy.as_deref(), Some("adaptive"));
        assert_eq!(record.base_url.as_deref(), Some("http://127.0.0.1:9/v1"));
        // Rewriting keeps the trace context.
        spec.write_to(&mut record);
        assert_eq!(record.options["traceparent"], "00-x");
    }

    #[test]
    fn old_records_load_from_their_option_keys() {
        let record = RunRecord::new("g")
            .with_strategy("adaptive")
            .with_model("openai:m")
            .with_options(serde_json::json!({
                "max_replans": 5, "max_depth": 2, "reflection_rounds": 2, "concurrency": 3,
                "max_steps": 9, "approve": "replans", "local_only": "tools or agents"
            }));
        let spec = RunSpec::from_record(&record).unwrap();
        assert_eq!(spec.strategy, "adaptive");
        assert_eq!(spec.model, "openai:m");
        assert_eq!(spec.limits.max_replans, 5);
        assert_eq!(spec.limits.max_depth, 2);
        assert_eq!(spec.limits.concurrency, 3);
        assert_eq!(spec.limits.max_steps, Some(9));
        assert_eq!(spec.approve, Approval::Replans);
        assert!(spec.needs.local_only().is_some());
    }

    #[test]
    fn a_newer_spec_is_refused_and_nonsense_named() {
        let record = RunRecord::new("g")
            .with_options(serde_json::json!({"spec": {"version": RUN_SPEC_VERSION + 1}}));
        assert!(matches!(
            RunSpec::from_record(&record),
            Err(SpecError::Newer(_))
        ));
        let mut spec = RunSpec::default();
        spec.budget.usd = Some(-5.0);
        let e = spec.validate().unwrap_err().to_string();
        assert!(e.contains("budget_usd = -5"), "{e}");
        let mut spec = RunSpec::default();
        spec.limits.max_steps = Some(0);
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("max_steps")
        );
        let mut spec = RunSpec::default();
        spec.limits.concurrency = 1_000_000;
        assert_eq!(
            spec.validate().unwrap_err().to_string(),
            "concurrency = 1000000: must be at most 1024"
        );
        let mut spec = RunSpec::default();
        spec.limits.max_depth = 50;
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("max_depth = 50")
        );
    }

    #[test]
    fn a_continued_run_has_what_is_left_of_its_budget() {
        let mut spec = RunSpec::default();
        spec.budget.tokens = Some(1000);
        spec.budget.usd = Some(1.0);
        let mut used = UsageTotals::default();
        used.prompt_tokens = 300;
        used.completion_tokens = 100;
        // $1 per million tokens either way: 400 tokens cost $0.0004.
        let left = spec
            .clone()
            .with_budget_used(used, Some(Price::new(1.0, 1.0)));
        assert_eq!(left.budget.tokens, Some(600));
        assert!((left.budget.usd.unwrap() - 0.9996).abs() < 1e-9);
        used.prompt_tokens = 5000;
        let spent = spec.with_budget_used(used, None);
        assert_eq!(spent.budget.tokens, Some(0));
        assert_eq!(
            spent.budget.usd,
            Some(1.0),
            "no price: the dollar budget is kept"
        );
    }

    /// Every field set, so its serialization has every key.
    fn every_setting() -> RunSettings {
        RunSettings {
            strategy: Some("dag".into()),
            model: Some("openai:m".into()),
            base_url: Some("http://127.0.0.1:9/v1".into()),
            max_steps: Some(7),
            max_replans: Some(0),
            max_depth: Some(2),
            reflection_rounds: Some(1),
            concurrency: Some(3),
            step_timeout_secs: Some(30),
            approve: Some(Approval::Replans),
            budget_tokens: Some(500),
            budget_usd: Some(0.25),
        }
    }

    #[test]
    fn every_setting_is_in_the_schema_and_round_trips() {
        let value = serde_json::to_value(every_setting()).unwrap();
        let keys: std::collections::BTreeSet<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let schema = RunSettings::schema_properties(&["auto".into(), "dag".into()]);
        let described: std::collections::BTreeSet<&str> =
            schema.keys().map(String::as_str).collect();
        assert_eq!(keys, described, "the type and its schema differ");
        let listed: std::collections::BTreeSet<&str> =
            RunSettings::FIELDS.iter().copied().collect();
        assert_eq!(keys, listed, "FIELDS and the type differ");
        for (name, property) in &schema {
            assert!(
                property["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{name} has no description"
            );
        }
        assert_eq!(
            schema["strategy"]["enum"],
            serde_json::json!(["auto", "dag"])
        );
        assert_eq!(RunSettings::from_json(value).unwrap(), every_setting());
    }

    #[test]
    fn settings_apply_over_the_defaults_and_nonsense_is_named() {
        let base = RunSpec::new("openai:m", "auto");
        let spec = every_setting().apply(&base).unwrap();
        assert_eq!(spec.strategy, "dag");
        assert_eq!(spec.limits.max_replans, 0);
        assert_eq!(spec.limits.step_timeout_secs, Some(30));
        assert_eq!(spec.approve, Approval::Replans);
        assert_eq!(spec.budget.tokens, Some(500));
        assert_eq!(spec.budget.usd, Some(0.25));
        assert!(
            spec.overrides.is_empty(),
            "a new run's spec has no overrides"
        );
        // What is not given keeps the default, and null is not given.
        let none = RunSettings::from_json(serde_json::json!({"model": null})).unwrap();
        assert_eq!(none.apply(&base).unwrap(), base);
        let refused = |body: serde_json::Value| {
            RunSettings::from_json(body)
                .and_then(|s| s.apply(&base))
                .unwrap_err()
                .to_string()
        };
        for (body, named) in [
            (
                serde_json::json!({"concurrency": 0}),
                "concurrency = 0: must be at least 1",
            ),
            (
                serde_json::json!({"budget_usd": -1}),
                "budget_usd = -1: must be a positive",
            ),
            (serde_json::json!({"budget_tokens": 0}), "budget_tokens = 0"),
            (serde_json::json!({"max_depth": 0}), "max_depth = 0"),
            (
                serde_json::json!({"max_replans": -1}),
                "max_replans = -1: must be a whole number",
            ),
            (serde_json::json!({"max_steps": 2.5}), "max_steps = 2.5"),
            (
                serde_json::json!({"concurrency": "4"}),
                "concurrency = \"4\"",
            ),
            (
                serde_json::json!({"max_replans": 5_000_000_000u64}),
                "max_replans = 5000000000",
            ),
            (
                serde_json::json!({"approve": "maybe"}),
                "approve = \"maybe\": must be true",
            ),
            (
                serde_json::json!({"strategy": 3}),
                "strategy = 3: must be a string",
            ),
            (serde_json::json!({"strategy": " "}), "strategy"),
        ] {
            let e = refused(body.clone());
            assert!(e.contains(named), "{body}: {e}");
        }
        let e = refused(serde_json::json!({"max_step": 3}));
        assert!(
            e.starts_with("`max_step` is not a run setting (did you mean `max_steps`?)"),
            "{e}"
        );
        assert!(e.contains("budget_usd"), "the settings are listed: {e}");
        let e = refused(serde_json::json!({"colour": "blue"}));
        assert!(!e.contains("did you mean"), "{e}");
    }

    #[test]
    fn settings_flattened_beside_other_fields_still_name_what_is_wrong() {
        #[derive(Debug, Deserialize)]
        struct Request {
            #[allow(dead_code)]
            goal: String,
            #[serde(flatten)]
            settings: RunSettings,
        }
        let r: Request =
            serde_json::from_value(serde_json::json!({"goal": "g", "approve": true})).unwrap();
        assert_eq!(r.settings.approve, Some(Approval::Plan));
        let e = serde_json::from_value::<Request>(serde_json::json!({"goal": "g", "max_step": 1}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`max_step` is not a run setting"), "{e}");
        let e =
            serde_json::from_value::<Request>(serde_json::json!({"goal": "g", "max_replans": -1}))
                .unwrap_err()
                .to_string();
        assert!(e.contains("max_replans = -1"), "{e}");
    }

    #[test]
    fn changes_are_recorded_as_overrides() {
        let mut spec = RunSpec::default();
        spec.limits.max_replans = 5;
        let changes = SpecChanges {
            concurrency: Some(1),
            max_replans: Some(5),
            ..SpecChanges::default()
        };
        spec.apply(&changes, "resume");
        assert_eq!(spec.limits.concurrency, 1);
        assert_eq!(spec.overrides.len(), 1, "{:?}", spec.overrides);
        assert_eq!(spec.overrides[0].field, "limits.concurrency");
        assert_eq!(spec.overrides[0].by, "resume");
    }
}
