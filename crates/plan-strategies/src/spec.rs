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
//! Only this module reads or writes the spec's part of a [`RunRecord`]: the record's
//! `strategy`, `model` and `base_url` columns and the `spec` key of its options. Records
//! written before the spec existed still load ([`RunSpec::from_record`] reads their
//! loose option keys).

use plan_exec::{RunRecord, RunUsage, SandboxChoice};
use plan_llm::Price;
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
            limits: RunLimits::default(),
            approve: Approval::None,
            budget: Budget::default(),
            sandbox: SandboxChoice::Auto,
            needs: RunNeeds::default(),
            overrides: Vec::new(),
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
    pub fn with_budget_used(mut self, used: RunUsage, price: Option<Price>) -> RunSpec {
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

/// The sandbox choice by its CLI name.
mod sandbox_name {
    use plan_exec::SandboxChoice;
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
    }

    #[test]
    fn a_continued_run_has_what_is_left_of_its_budget() {
        let mut spec = RunSpec::default();
        spec.budget.tokens = Some(1000);
        spec.budget.usd = Some(1.0);
        let mut used = RunUsage::default();
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
