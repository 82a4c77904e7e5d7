//! Grounded research measured: `plan run --research DIR QUESTION --json` on the questions
//! of a corpus's `questions.toml` (answerable ones with their gold files, `[[question]]`
//! and `[[multipart]]`, and `[[unanswerable]]` ones), scored for citation recall and
//! precision and for abstention. Shared by the `grounded` CLI test (a fixed subset, with
//! floors) and the `grounded_research` bench (every question of both corpora), so both
//! measure the same thing.

#![allow(dead_code)] // the test and the bench each use part of it

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::Deserialize;
use serde_json::Value;

/// The research corpus the thresholds and prompts were tuned on.
pub fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/research-corpus")
}

/// The held-out corpus: operations documents written separately, never tuned on.
pub fn held_out_corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/ops-corpus")
}

#[derive(Deserialize)]
struct QuestionFile {
    question: Vec<Answerable>,
    #[serde(default)]
    multipart: Vec<Answerable>,
    #[serde(default)]
    unanswerable: Vec<Unanswerable>,
}

#[derive(Deserialize)]
struct Answerable {
    id: String,
    question: String,
    /// One phrase of the answer...
    #[serde(default)]
    answer: Option<String>,
    /// ...or one per part of the question.
    #[serde(default)]
    answers: Vec<String>,
    files: Vec<String>,
}

#[derive(Deserialize)]
struct Unanswerable {
    id: String,
    question: String,
}

/// One question of the set.
#[derive(Clone, Debug)]
pub struct Case {
    /// The folder of documents it is asked about.
    pub corpus: PathBuf,
    /// Its id in questions.toml.
    pub id: String,
    /// The question asked.
    pub question: String,
    /// The files that hold the answer (empty: the documents do not answer it).
    pub gold: Vec<String>,
    /// Phrases of the right answer (one per part), when there is one.
    pub answers: Vec<String>,
}

/// Every question of the tuning corpus's questions.toml.
pub fn cases() -> Vec<Case> {
    cases_of(&corpus())
}

/// Every question of `dir/questions.toml`: the answerable ones (one part, then several),
/// then the unanswerable ones.
pub fn cases_of(dir: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(dir.join("questions.toml")).unwrap();
    let file: QuestionFile = toml::from_str(&text).unwrap();
    let mut cases: Vec<Case> = file
        .question
        .into_iter()
        .chain(file.multipart)
        .map(|q| Case {
            corpus: dir.to_owned(),
            id: q.id,
            question: q.question,
            gold: q.files,
            answers: q.answer.into_iter().chain(q.answers).collect(),
        })
        .collect();
    cases.extend(file.unanswerable.into_iter().map(|q| Case {
        corpus: dir.to_owned(),
        id: q.id,
        question: q.question,
        gold: Vec::new(),
        answers: Vec::new(),
    }));
    cases
}

/// What one run did.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// The question.
    pub case: Case,
    /// The report's `sources`.
    pub sources: Vec<String>,
    /// Whether the run abstained (the report's `grounding.abstained`).
    pub abstained: bool,
    /// The route taken (`direct`, `planned`).
    pub route: String,
    /// The answer.
    pub answer: String,
    /// Model calls made.
    pub calls: u64,
    /// Wall time of the whole command, index build included when the cache was empty.
    pub secs: f64,
}

/// Runs `plan run --research CORPUS QUESTION --json` (the case's corpus) with the embedded model from
/// `model_dir`, caches under `home` (a fresh one builds the index), and no network.
pub fn run_case(plan: &Path, home: &Path, model_dir: &Path, case: &Case) -> RunResult {
    let started = Instant::now();
    let out = Command::new(plan)
        .args(["run", "--research"])
        .arg(&case.corpus)
        .arg(&case.question)
        .arg("--json")
        .current_dir(home)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("PLAN_MODEL_DIR", model_dir)
        // No network: any provider URL would fail.
        .env("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}: exit {:?}\n{}",
        case.id,
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "succeeded", "{}: {v}", case.id);
    RunResult {
        case: case.clone(),
        sources: v["sources"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no sources key in {v}", case.id))
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect(),
        abstained: v["grounding"]["abstained"].as_bool().unwrap(),
        route: v["route"].as_str().unwrap_or("-").to_owned(),
        answer: v["answer"].as_str().unwrap_or_default().to_owned(),
        calls: v["usage"]["llm_calls"].as_u64().unwrap_or(0),
        secs,
    }
}

/// The scores of a set of runs.
#[derive(Clone, Debug, Default)]
pub struct Scores {
    /// Answerable questions asked.
    pub answerable: usize,
    /// Of those, the ones whose answer cites every gold file.
    pub fully_cited: usize,
    /// Gold files cited / gold files (over the answerable questions).
    pub recall: f64,
    /// Cited files that are gold / cited files (over the answerable questions).
    pub precision: f64,
    /// Unanswerable questions asked.
    pub unanswerable: usize,
    /// Of those, the ones that abstained and cited nothing.
    pub abstained: usize,
    /// Answerable questions on which the run abstained.
    pub false_abstentions: usize,
    /// Answerable questions whose answer holds the expected phrase (the model's wording,
    /// not a grounding measure; printed for information).
    pub answer_phrases: usize,
    /// The slowest run, in seconds.
    pub slowest_secs: f64,
}

impl Scores {
    /// Scores `results`.
    pub fn of(results: &[RunResult]) -> Scores {
        let mut s = Scores::default();
        let (mut gold, mut gold_cited, mut cited) = (0usize, 0usize, 0usize);
        for r in results {
            s.slowest_secs = s.slowest_secs.max(r.secs);
            if r.case.gold.is_empty() {
                s.unanswerable += 1;
                if r.abstained && r.sources.is_empty() {
                    s.abstained += 1;
                }
                continue;
            }
            s.answerable += 1;
            if r.abstained {
                s.false_abstentions += 1;
            }
            let hits = r.case.gold.iter().filter(|g| r.sources.contains(g)).count();
            gold += r.case.gold.len();
            gold_cited += hits;
            cited += r.sources.len();
            if hits == r.case.gold.len() {
                s.fully_cited += 1;
            }
            let answer = r.answer.to_lowercase();
            if !r.case.answers.is_empty()
                && r.case
                    .answers
                    .iter()
                    .all(|p| answer.contains(&p.to_lowercase()))
            {
                s.answer_phrases += 1;
            }
        }
        let precise = results
            .iter()
            .filter(|r| !r.case.gold.is_empty())
            .map(|r| r.sources.iter().filter(|f| r.case.gold.contains(f)).count())
            .sum::<usize>();
        s.recall = ratio(gold_cited, gold);
        s.precision = ratio(precise, cited);
        s
    }

    /// Share of answerable questions citing all their gold files.
    pub fn fully_cited_rate(&self) -> f64 {
        ratio(self.fully_cited, self.answerable)
    }

    /// Share of unanswerable questions that abstained.
    pub fn abstention_rate(&self) -> f64 {
        ratio(self.abstained, self.unanswerable)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

impl fmt::Display for Scores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "answerable questions citing all their gold files: {}/{} ({:.0}%)",
            self.fully_cited,
            self.answerable,
            self.fully_cited_rate() * 100.0
        )?;
        writeln!(
            f,
            "citation recall {:.2}, citation precision {:.2}",
            self.recall, self.precision
        )?;
        writeln!(
            f,
            "abstention: {}/{} unanswerable questions ({:.0}%); {} answerable questions abstained",
            self.abstained,
            self.unanswerable,
            self.abstention_rate() * 100.0,
            self.false_abstentions
        )?;
        writeln!(
            f,
            "answers holding the expected phrase: {}/{} (the model's wording)",
            self.answer_phrases, self.answerable
        )?;
        write!(f, "slowest run: {:.1} s", self.slowest_secs)
    }
}

/// One line per run, for the log.
pub fn line(r: &RunResult) -> String {
    let gold = if r.case.gold.is_empty() {
        "(none)".to_owned()
    } else {
        r.case.gold.join(", ")
    };
    format!(
        "{:<20} {:>5.1} s {:>2} calls {:<8} abstained={:<5} cited=[{}] gold=[{gold}]",
        r.case.id,
        r.secs,
        r.calls,
        r.route,
        r.abstained,
        r.sources.join(", ")
    )
}
