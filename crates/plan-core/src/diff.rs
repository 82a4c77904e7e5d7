//! Plans as versions, changes as diffs.
//!
//! [`PlanDiff::between`] compares two plans step by step (matched by id): the steps added,
//! removed and changed, with the fields that changed and a word diff of a changed
//! description. [`PlanDiff::between_finished`] also says, given the steps whose outputs
//! were finished, which of those outputs the change keeps and which it invalidates: a
//! finished step is invalidated when it changed, was removed, or depends, directly or
//! not, on a step that changed or was removed.
//!
//! [`PlanVersion::from_events`] numbers the plans a run had (the first, each replan, each
//! edit approved in place of a waiting plan) from its journal.
//!
//! ```
//! use plan_core::{Plan, PlanDiff, Step, StepField};
//!
//! let old = Plan::new("g", vec![
//!     Step::new("a", "Find sources"),
//!     Step::new("b", "Summarise them").depends_on(["a"]),
//!     Step::new("c", "List open questions"),
//! ]);
//! let new = Plan::new("g", vec![
//!     Step::new("a", "Find recent sources"),
//!     Step::new("b", "Summarise them").depends_on(["a"]),
//!     Step::new("d", "Write it up").depends_on(["b", "c"]),
//!     Step::new("c", "List open questions"),
//! ]);
//! let diff = PlanDiff::between_finished(&old, &new, ["a", "b", "c"]);
//! assert_eq!(diff.added[0].id, "d");
//! assert_eq!(diff.changed[0].id, "a");
//! assert_eq!(diff.changed[0].fields, [StepField::Description]);
//! assert_eq!(diff.kept, ["c"]);
//! assert_eq!(diff.invalidated, ["a", "b"]);
//! ```

use std::collections::{HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};
use similar::{ChangeTag, TextDiff};

use crate::event::{Event, EventKind, Timestamp};
use crate::model::{Plan, Step, StepId};

/// A field of a step that bears on its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepField {
    /// What to do.
    Description,
    /// The kind of work.
    Kind,
    /// The agent it is routed to.
    Agent,
    /// The steps it depends on (compared as a set: their order does not count).
    Dependencies,
    /// What the output should look like.
    ExpectedOutput,
    /// The program it runs.
    Code,
    /// The language of the program.
    Lang,
    /// What runs when it fails.
    Fallback,
    /// A field this version of the diff does not name (a field added to steps later).
    Other,
}

impl StepField {
    /// The field's name as it appears in plan JSON (`"expected_output"`).
    pub fn as_str(self) -> &'static str {
        match self {
            StepField::Description => "description",
            StepField::Kind => "kind",
            StepField::Agent => "agent",
            StepField::Dependencies => "dependencies",
            StepField::ExpectedOutput => "expected_output",
            StepField::Code => "code",
            StepField::Lang => "lang",
            StepField::Fallback => "fallback",
            StepField::Other => "other",
        }
    }
}

/// Whether a piece of a word diff is in both texts, only the old one, or only the new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WordOp {
    /// In both texts.
    Equal,
    /// Only in the old text.
    Delete,
    /// Only in the new text.
    Insert,
}

/// One piece of a word diff: a run of words (with the spaces between them) and where it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WordChange {
    /// In both texts, only the old one, or only the new one.
    pub op: WordOp,
    /// The words.
    pub text: String,
}

impl WordChange {
    /// A piece `text` of kind `op`.
    pub fn new(op: WordOp, text: impl Into<String>) -> Self {
        Self {
            op,
            text: text.into(),
        }
    }
}

/// The word diff of `old` and `new`: pieces in reading order whose `Equal` and `Delete`
/// parts spell `old` and whose `Equal` and `Insert` parts spell `new`. A run of changed
/// words is one deletion followed by one insertion (the spaces inside it included), so it
/// reads as `[-old words-]{+new words+}`.
pub fn word_diff(old: &str, new: &str) -> Vec<WordChange> {
    let diff = TextDiff::from_words(old, new);
    // Tokens are words and runs of whitespace, in order.
    let tokens: Vec<(WordOp, &str)> = diff
        .iter_all_changes()
        .map(|c| {
            let op = match c.tag() {
                ChangeTag::Equal => WordOp::Equal,
                ChangeTag::Delete => WordOp::Delete,
                ChangeTag::Insert => WordOp::Insert,
            };
            (op, c.value())
        })
        .collect();
    let mut out: Vec<WordChange> = Vec::new();
    let (mut deleted, mut inserted) = (String::new(), String::new());
    let mut i = 0;
    while i < tokens.len() {
        let (op, text) = tokens[i];
        match op {
            WordOp::Delete => deleted.push_str(text),
            WordOp::Insert => inserted.push_str(text),
            WordOp::Equal => {
                // Whitespace between two changes belongs to the change on both sides.
                let between_changes = text.trim().is_empty()
                    && !(deleted.is_empty() && inserted.is_empty())
                    && tokens
                        .get(i + 1)
                        .is_some_and(|(op, _)| *op != WordOp::Equal);
                if between_changes {
                    deleted.push_str(text);
                    inserted.push_str(text);
                } else {
                    flush(&mut out, &mut deleted, &mut inserted);
                    push(&mut out, WordOp::Equal, text);
                }
            }
        }
        i += 1;
    }
    flush(&mut out, &mut deleted, &mut inserted);
    out
}

/// Ends a run of changes: its deletion, then its insertion.
fn flush(out: &mut Vec<WordChange>, deleted: &mut String, inserted: &mut String) {
    if !deleted.is_empty() {
        push(out, WordOp::Delete, deleted);
        deleted.clear();
    }
    if !inserted.is_empty() {
        push(out, WordOp::Insert, inserted);
        inserted.clear();
    }
}

/// Appends a piece, joining it to the last one when that has the same op.
fn push(out: &mut Vec<WordChange>, op: WordOp, text: &str) {
    match out.last_mut() {
        Some(last) if last.op == op => last.text.push_str(text),
        _ => out.push(WordChange::new(op, text)),
    }
}

/// A step in both plans that changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StepChange {
    /// The step's id (the same in both plans).
    pub id: StepId,
    /// The fields that changed, in [`StepField`] order.
    pub fields: Vec<StepField>,
    /// The word diff of the description, when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Vec<WordChange>>,
    /// The step in the old plan.
    pub before: Step,
    /// The step in the new plan.
    pub after: Step,
}

/// How one plan differs from another: steps added, removed and changed, and the finished
/// outputs the change keeps and invalidates ([`between_finished`](Self::between_finished)).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PlanDiff {
    /// The word diff of the goal, when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<Vec<WordChange>>,
    /// Steps of the new plan whose ids the old one lacks, in the new plan's order.
    pub added: Vec<Step>,
    /// Steps of the old plan whose ids the new one lacks, in the old plan's order.
    pub removed: Vec<Step>,
    /// Steps in both plans that changed, in the new plan's order.
    pub changed: Vec<StepChange>,
    /// Steps in both plans, unchanged, in the new plan's order.
    pub unchanged: Vec<StepId>,
    /// Finished steps of the old plan whose outputs still hold, in the old plan's order.
    pub kept: Vec<StepId>,
    /// Finished steps of the old plan whose outputs the change invalidates (changed,
    /// removed, or downstream of a changed or removed step), in the old plan's order.
    pub invalidated: Vec<StepId>,
}

impl PlanDiff {
    /// How `new` differs from `old`, with no finished steps (so nothing kept or
    /// invalidated).
    pub fn between(old: &Plan, new: &Plan) -> PlanDiff {
        Self::between_finished(old, new, std::iter::empty::<&str>())
    }

    /// How `new` differs from `old`, and which of the `finished` steps' outputs it keeps
    /// and invalidates. Ids in `finished` that are not steps of `old` are ignored.
    ///
    /// Steps are matched by id; a plan with a duplicated id (an invalid plan) counts its
    /// first step of that id only.
    pub fn between_finished<I, S>(old: &Plan, new: &Plan, finished: I) -> PlanDiff
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let old_steps = first_by_id(old);
        let new_steps = first_by_id(new);
        let mut diff = PlanDiff {
            goal: (old.goal != new.goal).then(|| word_diff(&old.goal, &new.goal)),
            ..PlanDiff::default()
        };
        let mut dirty: Vec<&str> = Vec::new();
        for step in unique(new) {
            match old_steps.get(step.id.as_str()) {
                None => diff.added.push(step.clone()),
                Some(before) => {
                    let fields = changed_fields(before, step);
                    if fields.is_empty() {
                        diff.unchanged.push(step.id.clone());
                    } else {
                        dirty.push(step.id.as_str());
                        diff.changed.push(StepChange {
                            id: step.id.clone(),
                            description: fields
                                .contains(&StepField::Description)
                                .then(|| word_diff(&before.description, &step.description)),
                            fields,
                            before: (*before).clone(),
                            after: step.clone(),
                        });
                    }
                }
            }
        }
        for step in unique(old) {
            if !new_steps.contains_key(step.id.as_str()) {
                dirty.push(step.id.as_str());
                diff.removed.push(step.clone());
            }
        }
        let invalid = downstream(old, dirty);
        let finished: HashSet<String> = finished
            .into_iter()
            .map(|s| s.as_ref().to_owned())
            .collect();
        for step in unique(old) {
            if finished.contains(step.id.as_str()) {
                if invalid.contains(step.id.as_str()) {
                    diff.invalidated.push(step.id.clone());
                } else {
                    diff.kept.push(step.id.clone());
                }
            }
        }
        diff
    }

    /// Between two versions of a run's plan (either way round): the finished steps are
    /// those finished when the later of the two was made.
    pub fn between_versions(old: &PlanVersion, new: &PlanVersion) -> PlanDiff {
        let later = if new.version >= old.version { new } else { old };
        Self::between_finished(&old.plan, &new.plan, &later.finished)
    }

    /// Whether the plans are the same: no goal or step added, removed or changed.
    pub fn is_empty(&self) -> bool {
        self.goal.is_none()
            && self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
    }
}

/// The first step of each id, by id.
fn first_by_id(plan: &Plan) -> HashMap<&str, &Step> {
    let mut map = HashMap::with_capacity(plan.steps.len());
    for s in &plan.steps {
        map.entry(s.id.as_str()).or_insert(s);
    }
    map
}

/// The plan's steps, the first of each id only, in order.
fn unique(plan: &Plan) -> impl Iterator<Item = &Step> {
    let mut seen = HashSet::new();
    plan.steps
        .iter()
        .filter(move |s| seen.insert(s.id.as_str()))
}

/// The fields in which `after` differs from `before`, in [`StepField`] order.
fn changed_fields(before: &Step, after: &Step) -> Vec<StepField> {
    let deps = |s: &Step| -> Vec<StepId> {
        let mut d = s.dependencies.clone();
        d.sort();
        d.dedup();
        d
    };
    let mut fields = Vec::new();
    let mut note = |differs: bool, field| {
        if differs {
            fields.push(field);
        }
    };
    note(
        before.description != after.description,
        StepField::Description,
    );
    note(before.kind != after.kind, StepField::Kind);
    note(before.agent != after.agent, StepField::Agent);
    note(deps(before) != deps(after), StepField::Dependencies);
    note(
        before.expected_output != after.expected_output,
        StepField::ExpectedOutput,
    );
    note(before.code != after.code, StepField::Code);
    note(before.lang != after.lang, StepField::Lang);
    note(before.fallback != after.fallback, StepField::Fallback);
    if fields.is_empty() {
        // A field added to steps since: whatever else differs counts too.
        let (mut b, mut a) = (before.clone(), after.clone());
        b.dependencies = deps(before);
        a.dependencies = deps(after);
        if a != b {
            fields.push(StepField::Other);
        }
    }
    fields
}

/// The steps of `plan` at or downstream of the `seeds` (through its dependencies),
/// by id. Safe on plans with cycles or missing dependencies.
fn downstream<'a>(plan: &'a Plan, seeds: Vec<&'a str>) -> HashSet<&'a str> {
    let mut dependents: HashMap<&str, Vec<&str>> = HashMap::new();
    for s in unique(plan) {
        for d in &s.dependencies {
            dependents
                .entry(d.as_str())
                .or_default()
                .push(s.id.as_str());
        }
    }
    let mut seen: HashSet<&str> = HashSet::new();
    let mut queue: VecDeque<&str> = seeds.into_iter().collect();
    while let Some(id) = queue.pop_front() {
        if seen.insert(id) {
            queue.extend(dependents.get(id).into_iter().flatten().copied());
        }
    }
    seen
}

/// Where a version of a run's plan came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum VersionOrigin {
    /// The run's first plan.
    First,
    /// A replan after a failure (`replanned`); [`PlanVersion::reason`] says why.
    Replan,
    /// An edited plan approved in place of the one waiting (a `plan_created` after the
    /// run was continued).
    Edit,
    /// The plan revised while it was made (a streamed plan repaired once it had ended).
    Revised,
}

impl VersionOrigin {
    /// The origin's name as it appears in JSON (`"replan"`).
    pub fn as_str(self) -> &'static str {
        match self {
            VersionOrigin::First => "first",
            VersionOrigin::Replan => "replan",
            VersionOrigin::Edit => "edit",
            VersionOrigin::Revised => "revised",
        }
    }
}

/// One version of a run's plan: the first plan, each replan, each approved edit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PlanVersion {
    /// 0 for the first, then 1, 2, ... in journal order.
    pub version: usize,
    /// The plan revision the run recorded it as.
    pub revision: u32,
    /// Where it came from.
    pub origin: VersionOrigin,
    /// Why it was made, for a replan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was made.
    pub at: Timestamp,
    /// The steps whose outputs were finished when it was made, in the order they
    /// finished.
    pub finished: Vec<StepId>,
    /// The plan.
    pub plan: Plan,
}

impl PlanVersion {
    /// The versions of a run's plan, numbered in journal order, from its events: each
    /// `plan_created` and `replanned` event, except one that repeats the version before
    /// it (the same revision and the same plan).
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<PlanVersion> {
        let mut versions: Vec<PlanVersion> = Vec::new();
        let mut finished: Vec<StepId> = Vec::new();
        let mut done: HashSet<StepId> = HashSet::new();
        // Whether the run was continued (a `run_started` after the first) since the last
        // version: a plan made then is an approved edit.
        let mut continued = false;
        let mut started = false;
        for event in events {
            let (revision, plan, origin, reason) = match &event.kind {
                EventKind::RunStarted { .. } => {
                    continued |= started;
                    started = true;
                    continue;
                }
                EventKind::StepCompleted { step, .. } => {
                    if done.insert(step.clone()) {
                        finished.push(step.clone());
                    }
                    continue;
                }
                EventKind::PlanCreated { plan, revision } => {
                    let origin = if versions.is_empty() {
                        VersionOrigin::First
                    } else if continued {
                        VersionOrigin::Edit
                    } else {
                        VersionOrigin::Revised
                    };
                    (*revision, plan, origin, None)
                }
                EventKind::Replanned {
                    revision,
                    reason,
                    plan,
                    ..
                } => (*revision, plan, VersionOrigin::Replan, Some(reason.clone())),
                _ => continue,
            };
            if versions
                .last()
                .is_some_and(|last| last.revision == revision && last.plan == *plan)
            {
                continue;
            }
            continued = false;
            versions.push(PlanVersion {
                version: versions.len(),
                revision,
                origin,
                reason,
                at: event.ts,
                finished: finished.clone(),
                plan: plan.clone(),
            });
        }
        versions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::RunId;
    use crate::graph::PlanGraph;
    use crate::model::{CodeLang, StepBody, StepKind};
    use proptest::prelude::*;

    fn text_of(pieces: &[WordChange], keep: WordOp) -> String {
        pieces
            .iter()
            .filter(|p| p.op == WordOp::Equal || p.op == keep)
            .map(|p| p.text.as_str())
            .collect()
    }

    fn marked(pieces: &[WordChange]) -> String {
        pieces
            .iter()
            .map(|p| match p.op {
                WordOp::Equal => p.text.clone(),
                WordOp::Delete => format!("[-{}-]", p.text),
                WordOp::Insert => format!("{{+{}+}}", p.text),
            })
            .collect()
    }

    #[test]
    fn word_diff_groups_a_run_of_changed_words() {
        let d = word_diff(
            "Compare the three frameworks by speed",
            "Compare the two best frameworks by memory use",
        );
        assert_eq!(
            marked(&d),
            "Compare the [-three-]{+two best+} frameworks by [-speed-]{+memory use+}"
        );
        assert_eq!(
            text_of(&d, WordOp::Delete),
            "Compare the three frameworks by speed"
        );
        assert_eq!(
            text_of(&d, WordOp::Insert),
            "Compare the two best frameworks by memory use"
        );
    }

    #[test]
    fn word_diff_of_equal_and_of_empty_texts() {
        assert_eq!(marked(&word_diff("same words", "same words")), "same words");
        assert!(word_diff("", "").is_empty());
        assert_eq!(marked(&word_diff("", "new")), "{+new+}");
        assert_eq!(marked(&word_diff("old", "")), "[-old-]");
    }

    #[test]
    fn every_field_that_bears_on_the_output_is_named() {
        let before = Step::new("s", "do it").depends_on(["a", "b"]);
        let after = Step::new("s", "do it").depends_on(["b", "a"]);
        assert!(changed_fields(&before, &after).is_empty(), "order of deps");
        let after = Step::new("s", "do it well")
            .depends_on(["a"])
            .with_kind(StepKind::Code)
            .with_agent("coder")
            .with_expected_output("a table")
            .with_code(CodeLang::Python, "print(1)")
            .with_fallback(StepBody::new("guess"));
        assert_eq!(
            changed_fields(&before, &after),
            [
                StepField::Description,
                StepField::Kind,
                StepField::Agent,
                StepField::Dependencies,
                StepField::ExpectedOutput,
                StepField::Code,
                StepField::Lang,
                StepField::Fallback,
            ]
        );
    }

    #[test]
    fn added_removed_changed_and_what_is_invalidated() {
        let old = Plan::new(
            "g",
            vec![
                Step::new("a", "Find sources"),
                Step::new("b", "Read them").depends_on(["a"]),
                Step::new("c", "Summarise").depends_on(["b"]),
                Step::new("x", "Side note"),
                Step::new("y", "Uses the side note").depends_on(["x"]),
                Step::new("z", "Unrelated"),
            ],
        );
        let new = Plan::new(
            "g",
            vec![
                Step::new("a", "Find recent sources"),
                Step::new("b", "Read them").depends_on(["a"]),
                Step::new("c", "Summarise").depends_on(["b"]),
                Step::new("y", "Uses the side note").depends_on(["w"]),
                Step::new("w", "Another note"),
                Step::new("z", "Unrelated"),
            ],
        );
        let d = PlanDiff::between_finished(&old, &new, ["a", "b", "x", "z", "nope"]);
        let ids = |v: &[Step]| v.iter().map(|s| s.id.to_string()).collect::<Vec<_>>();
        assert_eq!(ids(&d.added), ["w"]);
        assert_eq!(ids(&d.removed), ["x"]);
        let changed: Vec<(&str, &[StepField])> = d
            .changed
            .iter()
            .map(|c| (c.id.as_str(), c.fields.as_slice()))
            .collect();
        assert_eq!(
            changed,
            [
                ("a", &[StepField::Description][..]),
                ("y", &[StepField::Dependencies][..])
            ]
        );
        assert_eq!(
            marked(d.changed[0].description.as_ref().unwrap()),
            "Find {+recent +}sources"
        );
        assert_eq!(d.unchanged, ["b", "c", "z"]);
        assert_eq!(d.kept, ["z"]);
        assert_eq!(d.invalidated, ["a", "b", "x"]);
        assert!(d.goal.is_none());
        assert!(!d.is_empty());
    }

    #[test]
    fn a_changed_goal_is_a_change() {
        let old = Plan::new("Plan a trip", vec![Step::new("a", "x")]);
        let new = Plan::new("Plan a long trip", vec![Step::new("a", "x")]);
        let d = PlanDiff::between(&old, &new);
        assert_eq!(marked(d.goal.as_ref().unwrap()), "Plan a {+long +}trip");
        assert!(!d.is_empty());
    }

    #[test]
    fn cycles_and_duplicate_ids_do_not_hang_or_panic() {
        let old = Plan::new(
            "g",
            vec![
                Step::new("a", "1").depends_on(["b"]),
                Step::new("b", "2").depends_on(["a", "missing"]),
                Step::new("a", "duplicate"),
            ],
        );
        let mut new = old.clone();
        new.steps[0].description = "changed".into();
        let d = PlanDiff::between_finished(&old, &new, ["a", "b"]);
        assert_eq!(d.changed.len(), 1);
        assert_eq!(d.invalidated, ["a", "b"]);
    }

    #[test]
    fn diff_serialises_for_json() {
        let old = Plan::new("g", vec![Step::new("a", "one two")]);
        let new = Plan::new("g", vec![Step::new("a", "one three")]);
        let v = serde_json::to_value(PlanDiff::between_finished(&old, &new, ["a"])).unwrap();
        assert_eq!(
            v["changed"][0]["fields"],
            serde_json::json!(["description"])
        );
        assert_eq!(
            v["changed"][0]["description"],
            serde_json::json!([
                {"op": "equal", "text": "one "},
                {"op": "delete", "text": "two"},
                {"op": "insert", "text": "three"}
            ])
        );
        assert_eq!(v["invalidated"], serde_json::json!(["a"]));
        assert!(v.get("goal").is_none());
        let back: PlanDiff = serde_json::from_value(v).unwrap();
        assert_eq!(back.invalidated, ["a"]);
    }

    fn at(ms: u64, kind: EventKind) -> Event {
        Event::at(Timestamp::from_unix_millis(ms), RunId::new("r"), kind)
    }

    #[test]
    fn versions_come_from_the_journal_in_order() {
        let first = Plan::new(
            "g",
            vec![Step::new("a", "A"), Step::new("b", "B").depends_on(["a"])],
        );
        let replan = Plan::new(
            "g",
            vec![
                Step::new("a", "A"),
                Step::new("b2", "B again").depends_on(["a"]),
            ],
        );
        let mut edited = replan.clone();
        edited.steps[1].description = "B once more".into();
        let events = [
            at(1, EventKind::RunStarted { goal: "g".into() }),
            at(
                2,
                EventKind::PlanCreated {
                    plan: first.clone(),
                    revision: 0,
                },
            ),
            // A repeat of the same plan is not a new version.
            at(
                3,
                EventKind::PlanCreated {
                    plan: first.clone(),
                    revision: 0,
                },
            ),
            at(
                4,
                EventKind::StepCompleted {
                    step: "a".into(),
                    duration_ms: 1,
                },
            ),
            at(
                5,
                EventKind::Replanned {
                    revision: 1,
                    reason: "step `b` failed: boom".into(),
                    kept: vec!["a".into()],
                    plan: replan.clone(),
                },
            ),
            at(6, EventKind::RunStarted { goal: "g".into() }),
            at(
                7,
                EventKind::PlanCreated {
                    plan: edited.clone(),
                    revision: 2,
                },
            ),
        ];
        let v = PlanVersion::from_events(&events);
        let summary: Vec<(usize, u32, VersionOrigin, usize)> = v
            .iter()
            .map(|v| (v.version, v.revision, v.origin, v.finished.len()))
            .collect();
        assert_eq!(
            summary,
            [
                (0, 0, VersionOrigin::First, 0),
                (1, 1, VersionOrigin::Replan, 1),
                (2, 2, VersionOrigin::Edit, 1)
            ]
        );
        assert_eq!(v[1].reason.as_deref(), Some("step `b` failed: boom"));
        assert_eq!(v[2].at, Timestamp::from_unix_millis(7));
        let d = PlanDiff::between_versions(&v[0], &v[1]);
        assert_eq!(d.kept, ["a"]);
        let back = PlanDiff::between_versions(&v[1], &v[0]);
        assert_eq!(back.kept, ["a"], "finished by the later version");
        assert_eq!(back.added[0].id, "b");
        assert_eq!(d.added[0].id, "b2");
        assert_eq!(d.removed[0].id, "b");
    }

    #[test]
    fn a_plan_revised_without_a_continuation_is_revised() {
        let p = Plan::new("g", vec![Step::new("a", "A")]);
        let mut q = p.clone();
        q.steps[0].description = "A'".into();
        let v = PlanVersion::from_events(&[
            at(1, EventKind::RunStarted { goal: "g".into() }),
            at(
                2,
                EventKind::PlanCreated {
                    plan: p,
                    revision: 0,
                },
            ),
            at(
                3,
                EventKind::PlanCreated {
                    plan: q,
                    revision: 1,
                },
            ),
        ]);
        assert_eq!(v[1].origin, VersionOrigin::Revised);
    }

    /// A random DAG plan over `n` steps (`s0`, `s1`, ...), dependencies pointing back.
    fn dag_plan() -> impl Strategy<Value = Plan> {
        (1usize..24)
            .prop_flat_map(|n| {
                (0..n)
                    .map(|i| proptest::collection::vec(0..i.max(1), 0..=if i == 0 { 0 } else { 3 }))
                    .collect::<Vec<_>>()
            })
            .prop_map(|deps| {
                let steps = deps
                    .into_iter()
                    .enumerate()
                    .map(|(i, d)| {
                        let mut d: Vec<String> = d.into_iter().map(|j| format!("s{j}")).collect();
                        d.sort();
                        d.dedup();
                        Step::new(format!("s{i}"), format!("do thing {i}")).depends_on(d)
                    })
                    .collect();
                Plan::new("g", steps)
            })
    }

    /// What happens to each step of a plan: 0 left, 1 description changed, 2 removed.
    fn plan_and_edits() -> impl Strategy<Value = (Plan, Vec<u8>, Vec<bool>, usize)> {
        dag_plan().prop_flat_map(|plan| {
            let n = plan.steps.len();
            (
                Just(plan),
                proptest::collection::vec(
                    prop_oneof![6 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8)],
                    n,
                ),
                proptest::collection::vec(any::<bool>(), n),
                0usize..3,
            )
        })
    }

    proptest! {
        #[test]
        fn a_plan_against_itself_is_empty((plan, _, finished, _) in plan_and_edits()) {
            let done: Vec<&str> = plan.steps.iter().zip(&finished)
                .filter(|(_, f)| **f).map(|(s, _)| s.id.as_str()).collect();
            let d = PlanDiff::between_finished(&plan, &plan, &done);
            prop_assert!(d.is_empty());
            prop_assert!(d.invalidated.is_empty());
            prop_assert_eq!(d.kept.len(), done.len());
            prop_assert_eq!(d.unchanged.len(), plan.steps.len());
        }

        #[test]
        fn invalidated_is_exactly_the_finished_part_of_the_changed_closure(
            (old, edits, finished, added) in plan_and_edits()
        ) {
            // Edit: change or remove steps (a removed step leaves its dependents' lists,
            // which changes them), add a few new steps.
            let removed: HashSet<String> = old.steps.iter().zip(&edits)
                .filter(|(_, e)| **e == 2).map(|(s, _)| s.id.to_string()).collect();
            let mut new_steps = Vec::new();
            let mut expected_changed = HashSet::new();
            for (s, e) in old.steps.iter().zip(&edits) {
                if *e == 2 {
                    continue;
                }
                let mut s = s.clone();
                if *e == 1 {
                    s.description.push_str(" differently");
                    expected_changed.insert(s.id.to_string());
                }
                let before = s.dependencies.len();
                s.dependencies.retain(|d| !removed.contains(d.as_str()));
                if s.dependencies.len() != before {
                    expected_changed.insert(s.id.to_string());
                }
                new_steps.push(s);
            }
            for k in 0..added {
                new_steps.push(Step::new(format!("new{k}"), "a new step").depends_on(
                    new_steps.first().map(|s| s.id.clone())));
            }
            let new = Plan::new("g", new_steps);
            let done: Vec<&str> = old.steps.iter().zip(&finished)
                .filter(|(_, f)| **f).map(|(s, _)| s.id.as_str()).collect();
            let d = PlanDiff::between_finished(&old, &new, &done);

            let changed: HashSet<String> = d.changed.iter().map(|c| c.id.to_string()).collect();
            prop_assert_eq!(&changed, &expected_changed);
            let gone: HashSet<String> = d.removed.iter().map(|s| s.id.to_string()).collect();
            prop_assert_eq!(&gone, &removed);
            prop_assert_eq!(d.added.len(), added);

            // The closure, computed independently from the old plan's graph.
            let graph = PlanGraph::new(old.clone()).unwrap();
            let mut closure = HashSet::new();
            for id in changed.iter().chain(&removed) {
                let i = graph.index_of(id).unwrap();
                closure.insert(id.clone());
                for j in graph.descendants(i) {
                    closure.insert(graph.step(j).id.to_string());
                }
            }
            let invalidated: HashSet<String> = d.invalidated.iter().map(|s| s.to_string()).collect();
            let kept: HashSet<String> = d.kept.iter().map(|s| s.to_string()).collect();
            let done: HashSet<String> = done.iter().map(|s| (*s).to_owned()).collect();
            prop_assert!(invalidated.is_subset(&done));
            let expected: HashSet<String> = done.intersection(&closure).cloned().collect();
            prop_assert_eq!(&invalidated, &expected);
            let expected_kept: HashSet<String> = done.difference(&closure).cloned().collect();
            prop_assert_eq!(&kept, &expected_kept);
        }
    }
}
