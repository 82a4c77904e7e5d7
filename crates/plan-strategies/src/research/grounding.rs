//! Grounded research: the question is searched before anything is planned, the passages
//! found go to the planner and to every research step, and the answer ends with the
//! sources it rests on, checked against what the search returned. When no passage is
//! relevant enough, the run says the documents do not hold the answer and cites nothing.
//!
//! The grounding is deterministic: which passages count as relevant, and which are the
//! answer's sources, follow from the search (each hit's [coverage] of the question and
//! its rank), not from the model. The model writes the words; citations it adds are kept
//! only when they name a relevant passage a search really returned.
//!
//! [coverage]: plan_tools::search::SearchHit::coverage

use std::sync::Arc;

use async_trait::async_trait;
use plan_core::{RunStatus, StepId, StepKind, StepStatus};
use plan_exec::session::RunSession;
use plan_llm::CallRecord;
use plan_tools::search::{SearchHit, SearchQuery};
use serde_json::json;

use super::parts::question_parts;
use super::{ResearchAgent, ResearchError, Source, citation_tags, remove_tags};
use crate::error::StrategyError;
use crate::strategy::{
    DIRECT, Dag, DirectAnswer, Outcome, PLANNED, PlanOutcome, PlanStart, Planning, Strategy,
    StrategyContext, StrategyKind, choose,
};

/// The step name of the passages retrieved for the question: they are cited as
/// `[doc#1]`, `[doc#2]`, ...
pub const RETRIEVAL_TAG: &str = "doc";

/// The most tokens of a grounded answer when the research settings set no limit: a few
/// sentences (the sources are appended, not written by the model).
const ANSWER_MAX_TOKENS: u32 = 300;

/// The words that make a sentence a question without saying what it is about (the
/// question words, and the asker's own pronouns: "how do I...", "what should we..."); they
/// are left out of the retrieval query so that coverage measures the subject.
pub(super) const QUESTION_WORDS: &[&str] = &[
    "who", "whom", "whose", "what", "which", "when", "where", "why", "how", "do", "does", "did",
    "can", "could", "would", "should", "much", "many", "long", "big", "large", "old", "name",
    "called", "and", "tell", "me", "please", "i", "i'm", "my", "we", "our", "you", "your",
];

/// How a research answer is grounded.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct GroundingConfig {
    /// Passages retrieved for the question before planning (default 5).
    pub passages: usize,
    /// The least share of the question a passage must cover to be relevant (default
    /// 0.6; see [`SearchHit::coverage`](plan_tools::search::SearchHit::coverage)). When no
    /// passage reaches it, the run abstains.
    pub min_coverage: f32,
    /// A relevant passage besides the best one is a source of the answer when its score
    /// is at least this share of the best one's (default 0.6).
    pub score_ratio: f32,
    /// Under the `auto` strategy, a question whose best passage covers at least this share
    /// of it is answered directly from the passages in one model call; below it, the
    /// question is planned (its search steps look for what the first search missed).
    /// Default 0.85.
    pub direct_coverage: f32,
}

impl Default for GroundingConfig {
    fn default() -> Self {
        Self {
            passages: 5,
            min_coverage: 0.6,
            score_ratio: 0.6,
            direct_coverage: 0.85,
        }
    }
}

/// The retrieval query for a question: its words without the question words ("Who
/// designed the Quillon language?" → "designed the Quillon language").
pub fn question_query(question: &str) -> String {
    let words: Vec<&str> = question
        .split(|c: char| !c.is_alphanumeric() && c != '\'' && c != '-')
        .filter(|w| !w.is_empty())
        .filter(|w| !QUESTION_WORDS.contains(&w.to_lowercase().as_str()))
        .collect();
    if words.is_empty() {
        question.trim().to_owned()
    } else {
        words.join(" ")
    }
}

/// What the search found for one part of the question (a question in one part has one).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PartRetrieval {
    /// The part as asked (the whole question when it does not split).
    pub text: String,
    /// The query sent for it.
    pub query: String,
    /// The passages its search returned, best first, each with its coverage of this
    /// part's query (a passage several parts found keeps one tag).
    pub passages: Vec<Source>,
    /// Its grounds: the best-scoring passage that covers enough of the part, and the
    /// others that do and score close to it. Empty when nothing relevant was found.
    pub grounds: Vec<Source>,
    /// The best coverage of the part among its passages (`None` when the backend does not
    /// measure it).
    pub best_coverage: Option<f32>,
}

/// What the search found for the question before planning: every passage (tagged
/// `doc#n`) and the relevant ones the answer rests on. A question in several parts
/// ([`question_parts`]) is searched part by part, and each part is judged on its own.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Retrieval {
    /// The question.
    pub question: String,
    /// The query sent ([`question_query`]); for a question in several parts, the parts'
    /// queries joined by ` | `.
    pub query: String,
    /// Every passage returned, best first (part by part), each once.
    pub passages: Vec<Source>,
    /// The passages the answer rests on: every part's grounds. Empty when some part has
    /// nothing relevant.
    pub grounds: Vec<Source>,
    /// How well the least covered part is covered: the best coverage of that part among
    /// its passages (`None` when the backend does not measure it).
    pub best_coverage: Option<f32>,
    /// The parts of the question, each with what its search found.
    pub parts: Vec<PartRetrieval>,
    /// The least coverage that counted as relevant.
    pub min_coverage: f32,
    /// The least coverage for a direct answer under `auto`.
    pub direct_coverage: f32,
}

impl Retrieval {
    /// Whether something relevant was found for every part (else the run abstains).
    pub fn is_answerable(&self) -> bool {
        !self.parts.is_empty() && self.parts.iter().all(|p| !p.grounds.is_empty())
    }

    /// Whether the passages cover the question well enough to answer it without a plan
    /// (the `auto` strategy's route): a question in one part when its best passage covers
    /// at least `direct_coverage` of it; a question in several parts when every part has
    /// relevant passages (each part was searched on its own, which is what a plan's
    /// search steps would do). A backend that does not measure coverage never does.
    pub fn covers_question(&self) -> bool {
        let needed = if self.parts.len() > 1 {
            self.min_coverage
        } else {
            self.direct_coverage
        };
        self.is_answerable()
            && self
                .parts
                .iter()
                .all(|p| p.best_coverage.is_some_and(|c| c >= needed))
    }

    /// The passages, for the planner's prompt: what the documents say about the question,
    /// with paths, so that the plan works from them.
    pub fn brief(&self) -> String {
        if !self.is_answerable() {
            return String::new();
        }
        let mut text = String::from(
            "Passages already retrieved for the question (their tags can be cited; search \
             steps may look for more):\n",
        );
        for s in &self.passages {
            text.push_str(&passage_line(s));
        }
        text
    }

    /// The answer of a run that found nothing relevant for some part of the question.
    pub fn abstention(&self) -> String {
        let closest = |best: Option<f32>, empty: bool| match best {
            Some(c) => format!(
                " (the closest passage covers {:.0}% of it; {:.0}% is needed)",
                c * 100.0,
                self.min_coverage * 100.0
            ),
            None if empty => " (the search returned nothing)".to_owned(),
            None => String::new(),
        };
        let missing: Vec<&PartRetrieval> =
            self.parts.iter().filter(|p| p.grounds.is_empty()).collect();
        if self.parts.len() > 1 && !missing.is_empty() {
            let what: Vec<String> = missing
                .iter()
                .map(|p| {
                    format!(
                        "\"{}\"{}",
                        p.text,
                        closest(p.best_coverage, p.passages.is_empty())
                    )
                })
                .collect();
            return format!(
                "The documents do not contain a full answer to this question: no passage was \
                 found about {}. Nothing is cited, and no answer is given from outside the \
                 documents.",
                what.join(", nor about ")
            );
        }
        let best = closest(self.best_coverage, self.passages.is_empty())
            .replace(" of it;", " of the question;");
        format!(
            "The documents do not contain an answer to this question: no passage about it \
             was found{best}. Nothing is cited, and no answer is given from outside the \
             documents."
        )
    }

    /// The report's `grounding` part.
    fn summary(&self) -> serde_json::Value {
        json!({
            "query": self.query,
            "abstained": !self.is_answerable(),
            "best_coverage": self.best_coverage,
            "min_coverage": self.min_coverage,
            "passages": self.passages.iter().map(|s| s.hit.location()).collect::<Vec<_>>(),
            "parts": self.parts.iter().map(|p| json!({
                "text": p.text,
                "query": p.query,
                "best_coverage": p.best_coverage,
                "found": !p.grounds.is_empty(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// One passage as the prompts show it: tag, location, title and text.
pub(super) fn passage_line(s: &Source) -> String {
    format!(
        "[{}] {} — {}: {}\n",
        s.tag,
        s.hit.location(),
        s.hit.title,
        s.hit.snippet
    )
}

/// Whether a hit is relevant to the query that found it.
fn relevant(s: &Source, min_coverage: f32) -> bool {
    s.hit.coverage.is_none_or(|c| c >= min_coverage)
}

/// The grounds among `passages` (best first): the best-scoring relevant passage, and the
/// relevant others scoring at least `score_ratio` of it. A passage that ranks first on
/// common words but covers little of the query does not hide a relevant one below it.
fn grounds_of(passages: &[Source], config: &GroundingConfig) -> Vec<Source> {
    let relevant: Vec<&Source> = passages
        .iter()
        .filter(|s| relevant(s, config.min_coverage))
        .collect();
    let Some(best) = relevant.first() else {
        return Vec::new();
    };
    let floor = best.hit.score * config.score_ratio;
    relevant
        .into_iter()
        .filter(|s| s.hit.score >= floor)
        .cloned()
        .collect()
}

/// The answer's text before its sources: a synthesize step's report without the source
/// list the step appended.
fn body_of(report: &str) -> &str {
    let cut = ["\n\nSources:\n", "\n\nSources consulted (none cited):\n"]
        .iter()
        .filter_map(|m| report.find(m))
        .min()
        .unwrap_or(report.len());
    report[..cut].trim_end()
}

/// A grounded answer: its text (ending with its sources) and the sources.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct GroundedAnswer {
    /// The answer, ending with a `Sources:` list.
    pub text: String,
    /// The sources it cites, in order.
    pub sources: Vec<Source>,
    /// Citations removed because no search returned them, or because the passage was not
    /// relevant to its query.
    pub removed: Vec<String>,
}

impl GroundedAnswer {
    /// The cited documents, each once, in order (paths relative to the folder, or URLs).
    pub fn files(&self) -> Vec<String> {
        let mut files: Vec<String> = Vec::new();
        for s in &self.sources {
            if !files.contains(&s.hit.source) {
                files.push(s.hit.source.clone());
            }
        }
        files
    }
}

impl ResearchAgent {
    /// Searches for `question` before planning, records the passages in the ledger (as
    /// `doc#n`) and picks the grounds of the answer.
    ///
    /// # Errors
    /// [`ResearchError::Search`].
    pub async fn retrieve(
        &self,
        question: &str,
        config: &GroundingConfig,
    ) -> Result<Retrieval, ResearchError> {
        let asked = question_parts(question);
        // Several parts share the passages: fewer per part keeps the prompt short.
        let per_part = if asked.len() > 1 {
            config.passages.div_ceil(asked.len()).max(3)
        } else {
            config.passages.max(1)
        };
        // Every distinct passage once (by place), with the query that found it first.
        let mut found: Vec<(String, SearchHit)> = Vec::new();
        let mut by_part: Vec<Vec<(usize, SearchHit)>> = Vec::with_capacity(asked.len());
        for part in &asked {
            let hits = self
                .backend
                .search(&SearchQuery::new(&part.query).with_limit(per_part))
                .await?;
            let mut mine = Vec::with_capacity(hits.len());
            for hit in hits {
                let at = match found
                    .iter()
                    .position(|(_, h)| h.source == hit.source && h.line == hit.line)
                {
                    Some(at) => at,
                    None => {
                        found.push((part.query.clone(), hit.clone()));
                        found.len() - 1
                    }
                };
                mine.push((at, hit));
            }
            by_part.push(mine);
        }
        let passages = self.ledger.record_found(&StepId::new(RETRIEVAL_TAG), found);
        let mut parts = Vec::with_capacity(asked.len());
        let mut grounds: Vec<Source> = Vec::new();
        for (part, mine) in asked.into_iter().zip(by_part) {
            let part_passages: Vec<Source> = mine
                .into_iter()
                .map(|(at, hit)| Source {
                    tag: passages[at].tag.clone(),
                    step: passages[at].step.clone(),
                    query: part.query.clone(),
                    hit,
                })
                .collect();
            let part_grounds = grounds_of(&part_passages, config);
            for g in &part_grounds {
                if !grounds.iter().any(|k| k.tag == g.tag) {
                    grounds.push(g.clone());
                }
            }
            parts.push(PartRetrieval {
                best_coverage: part_passages
                    .iter()
                    .filter_map(|s| s.hit.coverage)
                    .reduce(f32::max),
                text: part.text,
                query: part.query,
                passages: part_passages,
                grounds: part_grounds,
            });
        }
        if parts.iter().any(|p| p.grounds.is_empty()) {
            grounds.clear();
        }
        // The question is as well covered as its least covered part.
        let best_coverage = parts
            .iter()
            .map(|p| p.best_coverage)
            .reduce(|a, b| match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                _ => None,
            })
            .flatten();
        let query = parts
            .iter()
            .map(|p| p.query.as_str())
            .collect::<Vec<_>>()
            .join(" | ");
        tracing::debug!(
            query,
            parts = parts.len(),
            passages = passages.len(),
            grounds = grounds.len(),
            ?best_coverage,
            "retrieved passages for the question"
        );
        Ok(Retrieval {
            question: question.to_owned(),
            query,
            passages,
            grounds,
            best_coverage,
            parts,
            min_coverage: config.min_coverage,
            direct_coverage: config.direct_coverage,
        })
    }

    /// Writes the answer from the retrieved passages and the steps' findings. With a
    /// `report` (a synthesize step's), its words are kept and no model call is made;
    /// otherwise one call writes them. Either way the citations are checked against the
    /// ledger and the answer ends with its sources: the retrieval's grounds, then the
    /// relevant passages the text cites.
    ///
    /// # Errors
    /// [`ResearchError::Llm`] when the model call fails.
    pub async fn grounded_answer(
        &self,
        retrieval: &Retrieval,
        findings: &[(StepId, String)],
        report: Option<&str>,
    ) -> Result<(GroundedAnswer, Option<CallRecord>), ResearchError> {
        let (body, call) = match report {
            Some(report) => (body_of(report).to_owned(), None),
            None => {
                let parts: Vec<&str> = retrieval.parts.iter().map(|p| p.text.as_str()).collect();
                let user = super::prompts::answer_user(
                    &retrieval.question,
                    &parts,
                    &retrieval.passages,
                    findings,
                    self.config.max_context_chars,
                );
                let (text, call) = self
                    .ask(
                        plan_llm::Purpose::Synthesize,
                        super::prompts::ANSWER_SYSTEM,
                        user,
                        self.config.max_tokens.or(Some(ANSWER_MAX_TOKENS)),
                    )
                    .await?;
                (text.trim().to_owned(), Some(call))
            }
        };
        let mut sources = retrieval.grounds.clone();
        let mut removed = Vec::new();
        for tag in citation_tags(&body) {
            match self.ledger.get(&tag) {
                Some(s) if relevant(&s, retrieval.min_coverage) => {
                    if !sources.iter().any(|k| k.tag == s.tag) {
                        sources.push(s);
                    }
                }
                _ => removed.push(tag),
            }
        }
        if !removed.is_empty() {
            tracing::warn!(
                ?removed,
                "removed citations of passages no search returned or that are not relevant"
            );
        }
        let mut text = remove_tags(&body, &removed);
        if text.trim().is_empty() {
            text = "The passages below hold the answer.".to_owned();
        }
        text.push_str("\n\nSources:\n");
        for s in &sources {
            text.push_str(&format!(
                "[{}] {} — {}\n",
                s.tag,
                s.hit.location(),
                s.hit.title
            ));
        }
        Ok((
            GroundedAnswer {
                text,
                sources,
                removed,
            },
            call,
        ))
    }
}

/// Any strategy, grounded: the run abstains when the retrieval found nothing relevant,
/// and a succeeded run's answer is written by [`ResearchAgent::grounded_answer`]. The
/// report gets `sources` (the cited files) and `grounding` (the query, whether the run
/// abstained, the best coverage and the passages).
pub struct Grounded {
    inner: Arc<dyn Strategy>,
    agent: ResearchAgent,
    retrieval: Arc<Retrieval>,
}

impl std::fmt::Debug for Grounded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grounded")
            .field("inner", &self.inner.name())
            .field("retrieval", &self.retrieval.query)
            .finish_non_exhaustive()
    }
}

impl Grounded {
    /// Grounds `inner` in `retrieval`, writing answers with `agent` (the research agent
    /// that made the retrieval, so its ledger holds the passages).
    pub fn new(inner: Arc<dyn Strategy>, agent: ResearchAgent, retrieval: Retrieval) -> Self {
        Self {
            inner,
            agent,
            retrieval: Arc::new(retrieval),
        }
    }

    /// Ends a run that found nothing relevant: no plan, no model call, nothing cited.
    fn abstain(&self, session: &RunSession, goal: &str) -> Outcome {
        session.set_extra("sources", json!([]));
        session.set_extra("grounding", self.retrieval.summary());
        Outcome::direct(goal, self.retrieval.abstention())
    }

    /// Writes the grounded answer of a succeeded outcome.
    async fn answer(
        &self,
        cx: &StrategyContext,
        session: &RunSession,
        mut outcome: Outcome,
    ) -> Outcome {
        session.set_extra("grounding", self.retrieval.summary());
        if outcome.status != RunStatus::Succeeded {
            return outcome;
        }
        let report = final_report(&outcome);
        let findings = findings(&outcome);
        match self
            .agent
            .grounded_answer(&self.retrieval, &findings, report.as_deref())
            .await
        {
            Ok((answer, call)) => {
                if let Some(call) = call {
                    cx.record_calls(session, &[call]);
                }
                session.set_extra("sources", json!(answer.files()));
                outcome.answer = Some(answer.text);
            }
            Err(e) => {
                outcome.status = RunStatus::Failed;
                outcome.failure = Some(format!(
                    "every step completed but the answer could not be written: {e}"
                ));
            }
        }
        outcome
    }
}

#[async_trait]
impl Strategy for Grounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn plan(&self, cx: &StrategyContext, goal: &str) -> Result<PlanOutcome, StrategyError> {
        self.inner.plan(cx, goal).await
    }

    async fn prepare_given(
        &self,
        cx: &StrategyContext,
        plan: plan_core::Plan,
    ) -> Result<PlanOutcome, StrategyError> {
        self.inner.prepare_given(cx, plan).await
    }

    /// As [`run`](Strategy::run) routes, without running a plan: a question the
    /// retrieval cannot answer is abstained on, and with `auto` one the passages cover is
    /// answered directly (grounded, with its sources); otherwise the plan, to check or
    /// approve before it runs.
    async fn plan_or_answer(
        &self,
        cx: &StrategyContext,
        goal: &str,
    ) -> Result<Planning, StrategyError> {
        if !self.retrieval.is_answerable() {
            let mut direct = DirectAnswer::new(self.retrieval.abstention(), Vec::new());
            direct.extras.insert("sources".to_owned(), json!([]));
            direct
                .extras
                .insert("grounding".to_owned(), self.retrieval.summary());
            return Ok(Planning::Answered(direct));
        }
        if self.inner.name() != StrategyKind::Auto.as_str() {
            return self.inner.plan_or_answer(cx, goal).await;
        }
        if self.retrieval.covers_question() {
            let (answer, call) = self
                .agent
                .grounded_answer(&self.retrieval, &[], None)
                .await
                .map_err(|e| match e {
                    ResearchError::Llm(source) => StrategyError::Llm {
                        purpose: "answer".to_owned(),
                        source,
                    },
                    other => StrategyError::InvalidReply {
                        purpose: "answer".to_owned(),
                        message: other.to_string(),
                    },
                })?;
            let sources = json!(answer.files());
            let mut direct = DirectAnswer::new(answer.text, call.into_iter().collect());
            direct.extras.insert("sources".to_owned(), sources);
            direct
                .extras
                .insert("grounding".to_owned(), self.retrieval.summary());
            return Ok(Planning::Answered(direct));
        }
        let mut planned = Dag.plan(cx, goal).await?;
        planned.route = Some(PLANNED.to_owned());
        Ok(Planning::Plan(planned))
    }

    async fn execute(
        &self,
        cx: &StrategyContext,
        session: &RunSession,
        start: PlanStart,
    ) -> Result<Outcome, StrategyError> {
        if !self.retrieval.is_answerable() {
            return Ok(self.abstain(session, &session.record().goal));
        }
        let outcome = self.inner.execute(cx, session, start).await?;
        Ok(self.answer(cx, session, outcome).await)
    }

    async fn run(
        &self,
        cx: &StrategyContext,
        session: &RunSession,
        goal: &str,
    ) -> Result<Outcome, StrategyError> {
        if !self.retrieval.is_answerable() {
            return Ok(self.abstain(session, goal));
        }
        if self.inner.name() != StrategyKind::Auto.as_str() {
            let outcome = self.inner.run(cx, session, goal).await?;
            return Ok(self.answer(cx, session, outcome).await);
        }
        // `auto` routes by what the retrieval found: passages that cover the question
        // answer it in one call; otherwise planning pays (search steps for what the first
        // search missed) and the plan runs like `dag`.
        if self.retrieval.covers_question() {
            choose(session, DIRECT);
            let mut outcome = Outcome::direct(goal, String::new());
            outcome.answer = None;
            return Ok(self.answer(cx, session, outcome).await);
        }
        choose(session, PLANNED);
        let outcome = Dag.run(cx, session, goal).await?;
        Ok(self.answer(cx, session, outcome).await)
    }
}

/// The completed steps no other step depends on (they carry the rest), with their
/// outputs, in plan order.
fn final_outputs(outcome: &Outcome) -> Vec<(&plan_core::Step, String)> {
    let depended: std::collections::HashSet<&StepId> = outcome
        .plan
        .steps
        .iter()
        .flat_map(|s| s.dependencies.iter())
        .collect();
    outcome
        .plan
        .steps
        .iter()
        .filter(|s| !depended.contains(&s.id))
        .filter_map(|s| {
            outcome
                .steps
                .iter()
                .find(|r| r.id == s.id && r.status == StepStatus::Completed)
                .and_then(|r| r.output.clone())
                .map(|o| (s, o))
        })
        .collect()
}

/// The output of the plan's final completed `synthesize` step, if any.
fn final_report(outcome: &Outcome) -> Option<String> {
    final_outputs(outcome)
        .into_iter()
        .rev()
        .find(|(s, o)| s.kind == StepKind::Synthesize && !body_of(o).trim().is_empty())
        .map(|(_, o)| o)
}

/// The outputs of the completed steps no other step depends on (they carry the rest).
fn findings(outcome: &Outcome) -> Vec<(StepId, String)> {
    final_outputs(outcome)
        .into_iter()
        .map(|(s, o)| (s.id.clone(), o))
        .collect()
}

#[cfg(test)]
mod tests {
    use plan_tools::search::SearchHit;

    use super::*;

    fn source(n: usize, file: &str, score: f32, coverage: f32) -> Source {
        Source {
            tag: format!("doc#{n}"),
            step: StepId::new("doc"),
            query: "q".to_owned(),
            hit: SearchHit::new(file, file, "text", Some(1), score).with_coverage(coverage),
        }
    }

    #[test]
    fn question_words_are_left_out_of_the_query() {
        assert_eq!(
            question_query("Who designed the Quillon programming language?"),
            "designed the Quillon programming language"
        );
        assert_eq!(
            question_query("How long can the Wren W2 drone fly?"),
            "the Wren W2 drone fly"
        );
        assert_eq!(question_query("Who?"), "Who?");
    }

    #[test]
    fn grounds_are_the_relevant_passages_close_to_the_best() {
        let config = GroundingConfig::default();
        let passages = vec![
            source(1, "a.md", 12.0, 0.8),
            source(2, "b.md", 9.0, 0.7),  // close and relevant
            source(3, "c.md", 11.0, 0.3), // close but off-topic
            source(4, "d.md", 4.0, 1.0),  // relevant but far behind
        ];
        let files: Vec<String> = grounds_of(&passages, &config)
            .into_iter()
            .map(|s| s.hit.source)
            .collect();
        assert_eq!(files, ["a.md", "b.md"]);
    }

    #[test]
    fn an_off_topic_first_passage_does_not_hide_a_relevant_one() {
        let config = GroundingConfig::default();
        let passages = vec![source(1, "a.md", 5.0, 0.5), source(2, "b.md", 4.0, 0.9)];
        let files: Vec<String> = grounds_of(&passages, &config)
            .into_iter()
            .map(|s| s.hit.source)
            .collect();
        assert_eq!(files, ["b.md"]);
        let off_topic = vec![source(1, "a.md", 5.0, 0.5), source(2, "b.md", 4.0, 0.3)];
        assert!(grounds_of(&off_topic, &config).is_empty());
        assert!(grounds_of(&[], &config).is_empty());
    }

    #[test]
    fn a_reports_source_list_is_cut_from_its_body() {
        assert_eq!(
            body_of("Answer [s#1].\n\nSources:\n[s#1] a.md:1 — A\n"),
            "Answer [s#1]."
        );
        assert_eq!(
            body_of("Answer.\n\nSources consulted (none cited):\n[s#1] a.md — A\n"),
            "Answer."
        );
        assert_eq!(body_of("Plain."), "Plain.");
    }
}
