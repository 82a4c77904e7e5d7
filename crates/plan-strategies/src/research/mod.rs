//! The research agent: `search` steps query a [`SearchBackend`], `analyze` steps work on
//! the results, `synthesize` writes the report with verified citations.
//!
//! Every search hit gets a citation tag made of the search step's id and its rank
//! (`[find#1]`); analyses and the report cite those tags, and the report's `Sources`
//! section is built from the hits the searches really returned, so a citation can never
//! point at a file no search found. Tags the model made up are removed and reported.

mod grounded_run;
mod grounding;
mod parts;
mod prompts;
mod setup;

pub use grounded_run::GroundedRun;

pub use grounding::{
    Grounded, GroundedAnswer, GroundingConfig, PartRetrieval, RETRIEVAL_TAG, Retrieval,
    question_query,
};
pub use parts::{QuestionPart, question_parts};

#[cfg(feature = "search-index")]
pub use setup::ResearchSetup;

use std::sync::{Arc, Mutex};

use plan_core::{Step, StepId, StepKind};
use plan_llm::{CallRecord, LlmError, Message, Provider, Purpose, Request};
use plan_tools::search::{SearchBackend, SearchError, SearchHit, SearchQuery};
use serde::{Deserialize, Serialize};

/// A search hit with its citation tag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Source {
    /// The tag to cite it by, without brackets (`find#1`).
    pub tag: String,
    /// The search step that found it.
    pub step: StepId,
    /// The query that found it.
    pub query: String,
    /// The hit.
    pub hit: SearchHit,
}

/// The sources found in one research run, shared by its steps. Cloning shares the ledger.
#[derive(Clone, Debug, Default)]
pub struct SourceLedger {
    sources: Arc<Mutex<Vec<Source>>>,
}

impl SourceLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the hits of a search step, replacing what an earlier attempt of the same
    /// step recorded, and returns them tagged.
    pub fn record(&self, step: &StepId, query: &str, hits: Vec<SearchHit>) -> Vec<Source> {
        self.record_found(
            step,
            hits.into_iter().map(|h| (query.to_owned(), h)).collect(),
        )
    }

    /// As [`record`](Self::record), for hits of several queries (each with the query that
    /// found it), tagged in order.
    pub fn record_found(&self, step: &StepId, hits: Vec<(String, SearchHit)>) -> Vec<Source> {
        let tagged: Vec<Source> = hits
            .into_iter()
            .enumerate()
            .map(|(i, (query, hit))| Source {
                tag: format!("{step}#{}", i + 1),
                step: step.clone(),
                query,
                hit,
            })
            .collect();
        if let Ok(mut all) = self.sources.lock() {
            all.retain(|s| &s.step != step);
            all.extend(tagged.iter().cloned());
        }
        tagged
    }

    /// Every source recorded so far.
    pub fn sources(&self) -> Vec<Source> {
        self.sources.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The source with this tag (without brackets).
    pub fn get(&self, tag: &str) -> Option<Source> {
        self.sources
            .lock()
            .ok()
            .and_then(|s| s.iter().find(|s| s.tag == tag).cloned())
    }
}

/// The citation tags (`[step#n]`, returned without brackets) in a text, in order of first
/// appearance, without repeats.
pub fn citation_tags(text: &str) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else { break };
        let inner = &after[..close];
        // Several tags may share brackets: [a#1, b#2] or [a#1; b#2].
        for part in inner.split([',', ';']) {
            let part = part.trim();
            if is_tag(part) && !tags.iter().any(|t| t == part) {
                tags.push(part.to_owned());
            }
        }
        rest = &after[close..];
    }
    tags
}

fn is_tag(text: &str) -> bool {
    match text.rsplit_once('#') {
        Some((step, n)) => {
            !step.is_empty()
                && !step.contains(char::is_whitespace)
                && !step.contains('[')
                && !n.is_empty()
                && n.chars().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

/// Removes the given tags from `[...]` groups, dropping groups left empty.
fn remove_tags(text: &str, bad: &[String]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else { break };
        let inner = &after[..close];
        let parts: Vec<&str> = inner.split([',', ';']).map(str::trim).collect();
        let all_tags = parts.iter().all(|p| is_tag(p));
        out.push_str(&rest[..open]);
        if all_tags {
            let kept: Vec<&str> = parts
                .into_iter()
                .filter(|p| !bad.iter().any(|b| b == p))
                .collect();
            if kept.is_empty() {
                // Drop the space before a removed citation too.
                while out.ends_with(' ') {
                    out.pop();
                }
            } else {
                out.push('[');
                out.push_str(&kept.join(", "));
                out.push(']');
            }
        } else {
            out.push('[');
            out.push_str(inner);
            out.push(']');
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Settings of a [`ResearchAgent`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ResearchConfig {
    /// Hits per search step (default 5).
    pub hits_per_search: usize,
    /// Most characters of each dependency output put in a prompt (default 6000); longer
    /// outputs are cut with a visible marker.
    pub max_context_chars: usize,
    /// Most tokens of a model reply; `None` leaves the provider's default.
    pub max_tokens: Option<u32>,
}

impl Default for ResearchConfig {
    fn default() -> Self {
        Self {
            hits_per_search: 5,
            max_context_chars: 6_000,
            max_tokens: None,
        }
    }
}

impl ResearchConfig {
    /// Sets the hits per search step.
    pub fn with_hits_per_search(mut self, n: usize) -> Self {
        self.hits_per_search = n.max(1);
        self
    }
}

/// What can go wrong in a research step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResearchError {
    /// The search backend failed.
    #[error("search failed: {0}")]
    Search(#[from] SearchError),
    /// A model call failed.
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// The step is not a research step.
    #[error(
        "step `{step}` is of kind `{kind}`; the research agent runs search, analyze and synthesize steps"
    )]
    WrongKind {
        /// The step.
        step: StepId,
        /// Its kind.
        kind: StepKind,
    },
}

impl ResearchError {
    /// Whether trying the step again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ResearchError::Search(e) => e.is_retryable(),
            ResearchError::Llm(e) => e.is_retryable(),
            ResearchError::WrongKind { .. } => false,
        }
    }
}

/// What a research step is given: the goal, the step, and its direct dependencies'
/// outputs (the context contract).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ResearchInput {
    /// The run's goal (the question).
    pub goal: String,
    /// The step.
    pub step: Step,
    /// `(dependency id, its output)`, in the step's dependency order.
    pub dependencies: Vec<(StepId, String)>,
}

impl ResearchInput {
    /// An input.
    pub fn new(goal: impl Into<String>, step: Step, dependencies: Vec<(StepId, String)>) -> Self {
        Self {
            goal: goal.into(),
            step,
            dependencies,
        }
    }
}

/// What a research step produced.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ResearchOutput {
    /// The step's output text (for a synthesize step, the report with its sources).
    pub text: String,
    /// The model call made, if any.
    pub model_call: Option<CallRecord>,
    /// The sources the output cites, resolved through the ledger.
    pub cited: Vec<Source>,
    /// Tags the model cited that no search returned (removed from the text).
    pub unknown_citations: Vec<String>,
}

/// Runs research steps over a search backend and a model.
#[derive(Clone)]
pub struct ResearchAgent {
    backend: Arc<dyn SearchBackend>,
    provider: Arc<dyn Provider>,
    ledger: SourceLedger,
    config: ResearchConfig,
}

impl std::fmt::Debug for ResearchAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResearchAgent")
            .field("backend", &self.backend.name())
            .field("provider", &self.provider.name())
            .field("config", &self.config)
            .finish()
    }
}

/// The words a search step's description may start with that are instructions, not
/// search terms.
const INSTRUCTION_WORDS: &[&str] = &[
    "search",
    "find",
    "look",
    "up",
    "for",
    "research",
    "query",
    "retrieve",
    "gather",
    "locate",
    "identify",
    "the",
    "documents",
    "docs",
    "in",
    "about",
    "information",
    "on",
];

/// The query a search step sends: its description without the leading instruction words
/// and without question words ("Search the documents for who discovered Vessa" →
/// "discovered Vessa"; see [`question_query`]).
pub fn query_for_step(step: &Step) -> String {
    let words: Vec<&str> = step.description.split_whitespace().collect();
    let start = words
        .iter()
        .position(|w| {
            let w = w
                .trim_matches(|c: char| !c.is_alphanumeric())
                .to_ascii_lowercase();
            !INSTRUCTION_WORDS.contains(&w.as_str())
        })
        .unwrap_or(0);
    let query = question_query(&words[start..].join(" "));
    if query.trim().is_empty() {
        step.description.clone()
    } else {
        query
    }
}

fn cap(text: &str, max: usize) -> String {
    let total = text.chars().count();
    if total <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max).collect();
    cut.push_str(&format!(
        "\n…[truncated: {max} of {total} characters shown]"
    ));
    cut
}

impl ResearchAgent {
    /// A research agent searching `backend` and thinking with `provider`, with a fresh
    /// ledger.
    pub fn new(backend: Arc<dyn SearchBackend>, provider: Arc<dyn Provider>) -> Self {
        Self {
            backend,
            provider,
            ledger: SourceLedger::new(),
            config: ResearchConfig::default(),
        }
    }

    /// Sets the settings.
    pub fn with_config(mut self, config: ResearchConfig) -> Self {
        self.config = config;
        self
    }

    /// The ledger of sources found so far.
    pub fn ledger(&self) -> &SourceLedger {
        &self.ledger
    }

    /// The step kinds this agent runs.
    pub fn kinds() -> [StepKind; 3] {
        [StepKind::Search, StepKind::Analyze, StepKind::Synthesize]
    }

    /// Runs a research step according to its kind.
    ///
    /// # Errors
    /// [`ResearchError::WrongKind`] for other kinds; search and model errors.
    pub async fn run_step(&self, input: &ResearchInput) -> Result<ResearchOutput, ResearchError> {
        match input.step.kind {
            StepKind::Search => self.search(input).await,
            StepKind::Analyze => self.analyze(input).await,
            StepKind::Synthesize => self.synthesize(input).await,
            kind => Err(ResearchError::WrongKind {
                step: input.step.id.clone(),
                kind,
            }),
        }
    }

    /// A search step: queries the backend with [`query_for_step`] and lists the hits with
    /// their tags, locations and snippets.
    ///
    /// # Errors
    /// [`ResearchError::Search`].
    pub async fn search(&self, input: &ResearchInput) -> Result<ResearchOutput, ResearchError> {
        let query = query_for_step(&input.step);
        let hits = self
            .backend
            .search(&SearchQuery::new(&query).with_limit(self.config.hits_per_search))
            .await?;
        let sources = self.ledger.record(&input.step.id, &query, hits);
        let mut text = format!(
            "Search results for \"{query}\" ({} search):\n",
            self.backend.name()
        );
        if sources.is_empty() {
            text.push_str("No results.\n");
        }
        for s in &sources {
            text.push_str(&format!(
                "[{}] {} — {}\n    {}\n",
                s.tag,
                s.hit.location(),
                s.hit.title,
                s.hit.snippet
            ));
        }
        Ok(ResearchOutput {
            text,
            model_call: None,
            cited: sources,
            unknown_citations: Vec::new(),
        })
    }

    /// The passages retrieved for the question before planning (none when the run did
    /// not retrieve).
    fn retrieved(&self) -> Vec<Source> {
        self.ledger
            .sources()
            .into_iter()
            .filter(|s| s.step.as_str() == grounding::RETRIEVAL_TAG)
            .collect()
    }

    /// The passages retrieved for the question, as the steps' prompts begin with them
    /// (the same for every step of the run, so a model that keeps the cache of a shared
    /// prompt prefix reads them once).
    fn passages(retrieved: &[Source]) -> String {
        if retrieved.is_empty() {
            return String::new();
        }
        let mut text = String::from("## Passages retrieved for the question\n");
        for s in retrieved {
            text.push_str(&grounding::passage_line(s));
        }
        text.push('\n');
        text
    }

    /// The outputs of the step's dependencies, each cut to `max_context_chars` (a note
    /// that there are none when the prompt has no passages either).
    fn outputs(&self, input: &ResearchInput, has_passages: bool) -> String {
        let mut text = String::new();
        for (id, output) in &input.dependencies {
            text.push_str(&format!(
                "## Output of step `{id}`\n{}\n\n",
                cap(output, self.config.max_context_chars)
            ));
        }
        if text.is_empty() && !has_passages {
            text.push_str("(no earlier results)\n");
        }
        text
    }

    /// The sources cited in the dependency outputs, as a list for the prompt (the
    /// retrieved passages are already at its top).
    fn cited_in_context(&self, input: &ResearchInput) -> Vec<Source> {
        let mut tags = Vec::new();
        for (_, output) in &input.dependencies {
            for tag in citation_tags(output) {
                if !tags.contains(&tag) {
                    tags.push(tag);
                }
            }
        }
        tags.iter().filter_map(|t| self.ledger.get(t)).collect()
    }

    async fn ask(
        &self,
        purpose: Purpose,
        system: &str,
        user: String,
        max_tokens: Option<u32>,
    ) -> Result<(String, CallRecord), LlmError> {
        let mut request =
            Request::new(vec![Message::system(system), Message::user(user)]).with_purpose(purpose);
        request.max_tokens = max_tokens;
        let (response, call) =
            plan_llm::complete_recorded(self.provider.as_ref(), &request).await?;
        Ok((response.content, call))
    }

    /// Keeps only citations of real sources; returns the cleaned text, the cited sources
    /// and the unknown tags.
    fn verify(&self, text: &str) -> (String, Vec<Source>, Vec<String>) {
        let mut cited = Vec::new();
        let mut unknown = Vec::new();
        for tag in citation_tags(text) {
            match self.ledger.get(&tag) {
                Some(source) => cited.push(source),
                None => unknown.push(tag),
            }
        }
        if !unknown.is_empty() {
            tracing::warn!(?unknown, "removed citations of sources no search returned");
        }
        (remove_tags(text, &unknown), cited, unknown)
    }

    /// An analyze step: the model works on the dependency outputs (search results and
    /// earlier analyses), keeping the citation tags.
    ///
    /// # Errors
    /// [`ResearchError::Llm`].
    pub async fn analyze(&self, input: &ResearchInput) -> Result<ResearchOutput, ResearchError> {
        let retrieved = self.retrieved();
        let user = prompts::analyze_user(
            &Self::passages(&retrieved),
            &input.goal,
            &input.step,
            &self.outputs(input, !retrieved.is_empty()),
        );
        let (reply, call) = self
            .ask(
                Purpose::Analyze,
                prompts::ANALYZE_SYSTEM,
                user,
                self.config.max_tokens,
            )
            .await?;
        let (text, cited, unknown) = self.verify(&reply);
        Ok(ResearchOutput {
            text,
            model_call: Some(call),
            cited,
            unknown_citations: unknown,
        })
    }

    /// A synthesize step: the model writes the report citing tags; the report gets a
    /// `Sources` section listing the cited files (with lines) as the searches found them.
    ///
    /// # Errors
    /// [`ResearchError::Llm`].
    pub async fn synthesize(&self, input: &ResearchInput) -> Result<ResearchOutput, ResearchError> {
        let retrieved = self.retrieved();
        let mut available = self.cited_in_context(input);
        let user = prompts::synthesize_user(
            &Self::passages(&retrieved),
            &input.goal,
            &input.step,
            &self.outputs(input, !retrieved.is_empty()),
            &available,
        );
        // The passages at the top of the prompt may be cited too.
        for s in retrieved {
            if !available.iter().any(|k| k.tag == s.tag) {
                available.push(s);
            }
        }
        let (reply, call) = self
            .ask(
                Purpose::Synthesize,
                prompts::SYNTHESIZE_SYSTEM,
                user,
                self.config.max_tokens,
            )
            .await?;
        let (mut text, cited, unknown) = self.verify(&reply);
        let text_trimmed = text.trim_end().to_owned();
        text = text_trimmed;
        if cited.is_empty() {
            if !available.is_empty() {
                text.push_str("\n\nSources consulted (none cited):\n");
                for s in &available {
                    text.push_str(&source_line(s));
                }
            }
        } else {
            text.push_str("\n\nSources:\n");
            for s in &cited {
                text.push_str(&source_line(s));
            }
        }
        Ok(ResearchOutput {
            text,
            model_call: Some(call),
            cited,
            unknown_citations: unknown,
        })
    }
}

/// What a planner should know to plan research over documents: put this in its prompt
/// (with the agent catalogue's [`planner_brief`](crate::AgentCatalogue::planner_brief)).
pub const RESEARCH_PLANNER_GUIDANCE: &str = "This goal is answered by researching a collection \
of documents. Plan it as: one or more steps of kind \"search\", each describing in plain words \
what to look for (one topic per search step; independent searches have no dependencies so they \
run in parallel); steps of kind \"analyze\" that depend on the searches they examine and \
extract or compare the facts; and exactly one final step of kind \"synthesize\" that depends \
on the analyses and writes the answer with citations.";

/// The plan used when no planner is asked: search for the question, analyze the results,
/// synthesize the answer.
pub fn default_research_plan(question: &str) -> plan_core::Plan {
    plan_core::Plan::new(
        question,
        vec![
            Step::new("search", question).with_kind(StepKind::Search),
            Step::new(
                "analyze",
                "Extract from the search results the facts that answer the question",
            )
            .with_kind(StepKind::Analyze)
            .depends_on(["search"]),
            Step::new(
                "report",
                "Write a concise answer to the question, citing the sources",
            )
            .with_kind(StepKind::Synthesize)
            .depends_on(["analyze"]),
        ],
    )
}

/// The agent profiles of the research agent (`researcher` for search steps, `analyst` for
/// analyze steps, `writer` for synthesize steps), for routing and for the planner's brief.
pub fn research_catalogue() -> crate::AgentCatalogue {
    let mut catalogue = crate::AgentCatalogue::new();
    let profiles = [
        crate::AgentProfile::new(
            "researcher",
            "searches the document collection (kind `search`): the step's description is \
             what to look for, in plain words, one topic per step; independent searches run \
             in parallel",
        )
        .with_kinds([StepKind::Search]),
        crate::AgentProfile::new(
            "analyst",
            "extracts and compares the facts in the search results it depends on (kind \
             `analyze`), keeping their citations",
        )
        .with_system_prompt(prompts::ANALYZE_SYSTEM)
        .with_kinds([StepKind::Analyze]),
        crate::AgentProfile::new(
            "writer",
            "writes the final answer with citations to the documents (kind `synthesize`): \
             exactly one such step, last, depending on the analyses",
        )
        .with_system_prompt(prompts::SYNTHESIZE_SYSTEM)
        .with_kinds([StepKind::Synthesize]),
    ];
    for profile in profiles {
        // The names are fixed and distinct, so adding cannot fail.
        let _ = catalogue.add(profile);
    }
    catalogue
}

fn source_line(s: &Source) -> String {
    format!("[{}] {} — {}\n", s.tag, s.hit.location(), s.hit.title)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tags() {
        let text =
            "Vessa was found by Lindqvist [s1#1]. Pell too [s1#1, s2#3]; see [note] and [x #2].";
        assert_eq!(citation_tags(text), vec!["s1#1", "s2#3"]);
    }

    #[test]
    fn removes_unknown_tags_only() {
        let text = "A [s1#1]. B [s9#9]. C [s1#1; s9#9]. D [not a tag].";
        assert_eq!(
            remove_tags(text, &["s9#9".to_owned()]),
            "A [s1#1]. B. C [s1#1]. D [not a tag]."
        );
    }

    #[test]
    fn queries_drop_instruction_words() {
        let step = Step::new("s", "Search the documents for who discovered Vessa");
        assert_eq!(query_for_step(&step), "discovered Vessa");
        let step = Step::new("s", "Find information on the Quillon compiler");
        assert_eq!(query_for_step(&step), "Quillon compiler");
        let step = Step::new("s", "search");
        assert_eq!(query_for_step(&step), "search");
    }
}
