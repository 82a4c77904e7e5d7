//! The local full-text index: ranking on the research corpus, snippets with lines,
//! incremental refresh.

use std::path::{Path, PathBuf};

use plan_tools::search::{LocalIndex, LocalIndexConfig, SearchBackend, SearchError, SearchQuery};
use serde::Deserialize;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/research-corpus")
}

#[derive(Deserialize)]
struct Questions {
    question: Vec<Question>,
}

#[derive(Deserialize)]
struct Question {
    id: String,
    query: String,
    #[serde(default)]
    second_query: Option<String>,
    answer: String,
    files: Vec<String>,
}

fn questions() -> Vec<Question> {
    let text = std::fs::read_to_string(corpus().join("questions.toml")).unwrap();
    toml::from_str::<Questions>(&text).unwrap().question
}

fn corpus_index() -> LocalIndex {
    let index = LocalIndex::open(LocalIndexConfig::new(corpus())).unwrap();
    let stats = index.refresh().unwrap();
    assert_eq!(stats.added, 35, "34 documents and the README: {stats:?}");
    index
}

#[tokio::test]
async fn every_question_retrieves_its_files_first() {
    let index = corpus_index();
    for q in questions() {
        let hits = index
            .search(&SearchQuery::new(&q.query).with_limit(3))
            .await
            .unwrap();
        assert_eq!(
            hits[0].source,
            q.files[0],
            "question {}: top hits {:?}",
            q.id,
            hits.iter().map(|h| &h.source).collect::<Vec<_>>()
        );
        if let Some(second) = &q.second_query {
            let hits = index
                .search(&SearchQuery::new(second).with_limit(3))
                .await
                .unwrap();
            assert!(
                hits.iter().take(2).any(|h| h.source == q.files[1]),
                "question {} (second hop): {:?}",
                q.id,
                hits.iter().map(|h| &h.source).collect::<Vec<_>>()
            );
        }
        // The answer is in one of the question's files.
        let found = q.files.iter().any(|f| {
            std::fs::read_to_string(corpus().join(f))
                .unwrap()
                .contains(&q.answer)
        });
        assert!(found, "question {}: answer not in its files", q.id);
    }
}

#[test]
fn snippets_point_at_the_matching_line() {
    let index = corpus_index();
    let hits = index
        .search_blocking(&SearchQuery::new("Kestrel telescope primary mirror"))
        .unwrap();
    let top = &hits[0];
    assert_eq!(top.source, "astronomy/sorrel-ridge-observatory.md");
    let text = std::fs::read_to_string(corpus().join(&top.source)).unwrap();
    let line = top.line.unwrap() as usize;
    let first_word = top.snippet.split_whitespace().next().unwrap();
    assert!(
        text.lines().nth(line - 1).unwrap().contains(first_word),
        "line {line} does not start the snippet {:?}",
        top.snippet
    );
    assert!(top.snippet.contains("Kestrel"), "{:?}", top.snippet);
    assert_eq!(
        top.location(),
        format!("astronomy/sorrel-ridge-observatory.md:{line}")
    );
    assert_eq!(line, 6, "the Kestrel sentence is on line 6");
}

#[test]
fn one_hit_per_file_best_first_and_limit_respected() {
    let index = corpus_index();
    let hits = index
        .search_blocking(&SearchQuery::new("Marrowby").with_limit(5))
        .unwrap();
    assert_eq!(hits.len(), 5);
    let mut sources: Vec<_> = hits.iter().map(|h| h.source.clone()).collect();
    sources.sort();
    sources.dedup();
    assert_eq!(sources.len(), 5, "one hit per file");
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
}

#[test]
fn stemming_matches_word_forms() {
    let index = corpus_index();
    // "recalls" and "recalled" share the stem of "recall".
    let hits = index
        .search_blocking(&SearchQuery::new("recalls of robots"))
        .unwrap();
    assert_eq!(hits[0].source, "companies/tessaly-recall.md");
}

#[test]
fn bad_queries_and_roots_are_reported() {
    let index = corpus_index();
    assert!(matches!(
        index.search_blocking(&SearchQuery::new("   ")),
        Err(SearchError::EmptyQuery)
    ));
    assert!(
        index
            .search_blocking(&SearchQuery::new("zzzunknownword"))
            .unwrap()
            .is_empty()
    );
    // Query syntax characters do not break a search.
    index
        .search_blocking(&SearchQuery::new("what's \"Quillon: (tidepools"))
        .unwrap();
    let err = LocalIndex::open(LocalIndexConfig::new(corpus().join("nope"))).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious.txt"), "keep me").unwrap();
    let err =
        LocalIndex::open(LocalIndexConfig::new(corpus()).with_index_dir(dir.path())).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    assert!(dir.path().join("precious.txt").exists());
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn bump_mtime(path: &Path) {
    // Make sure the modification time differs even on coarse-grained file systems.
    let file = std::fs::File::options().write(true).open(path).unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    file.set_modified(later).unwrap();
}

#[test]
fn refresh_is_incremental_and_persists() {
    let docs = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    write(
        &docs.path().join("a.md"),
        "# Alpha\n\nThe alpha file mentions apricots.\n",
    );
    write(
        &docs.path().join("sub/b.txt"),
        "Bravo talks about bananas.\n",
    );
    write(
        &docs.path().join("c.md"),
        "# Charlie\n\nCharlie grows cherries.\n",
    );
    write(
        &docs.path().join("ignored.bin"),
        "not text we index: apricots",
    );
    write(&docs.path().join(".hidden/d.md"), "hidden apricots");
    let config = LocalIndexConfig::new(docs.path()).with_cache_dir(cache.path());

    let index = LocalIndex::open(config.clone()).unwrap();
    let first = index.refresh().unwrap();
    assert_eq!((first.added, first.updated, first.removed), (3, 0, 0));
    let again = index.refresh().unwrap();
    assert!(!again.changed());
    assert_eq!(again.unchanged, 3);
    let apricots = index
        .search_blocking(&SearchQuery::new("apricots"))
        .unwrap();
    assert_eq!(apricots.len(), 1, "hidden and non-text files are skipped");

    // Change one, add one, delete one; rewrite one with the same content.
    write(
        &docs.path().join("a.md"),
        "# Alpha\n\nThe alpha file now mentions avocados.\n",
    );
    bump_mtime(&docs.path().join("a.md"));
    write(&docs.path().join("e.md"), "Echo likes elderberries.\n");
    std::fs::remove_file(docs.path().join("c.md")).unwrap();
    write(
        &docs.path().join("sub/b.txt"),
        "Bravo talks about bananas.\n",
    );
    bump_mtime(&docs.path().join("sub/b.txt"));
    let stats = index.refresh().unwrap();
    assert_eq!(
        (stats.added, stats.updated, stats.removed, stats.unchanged),
        (1, 1, 1, 1),
        "{stats:?}"
    );
    let q = |index: &LocalIndex, text: &str| -> Vec<String> {
        index
            .search_blocking(&SearchQuery::new(text))
            .unwrap()
            .into_iter()
            .map(|h| h.source)
            .collect()
    };
    assert_eq!(q(&index, "avocados"), vec!["a.md"]);
    assert!(q(&index, "apricots").is_empty(), "the old text is gone");
    assert!(q(&index, "cherries").is_empty(), "the deleted file is gone");
    assert_eq!(q(&index, "elderberries"), vec!["e.md"]);
    assert_eq!(q(&index, "bananas"), vec!["sub/b.txt"]);
    drop(index);

    // A new process (a new index object) reuses the stored index: nothing to re-index.
    let reopened = LocalIndex::open(config).unwrap();
    assert_eq!(reopened.file_count(), 3);
    assert_eq!(q(&reopened, "avocados"), vec!["a.md"]);
    let stats = reopened.refresh().unwrap();
    assert!(!stats.changed(), "{stats:?}");
    assert_eq!(stats.unchanged, 3);
}

#[tokio::test]
async fn coverage_tells_a_passage_about_the_query_from_a_near_miss() {
    let index = corpus_index();
    let hits = index
        .search(&SearchQuery::new("discovered the planet Vessa"))
        .await
        .unwrap();
    assert_eq!(hits[0].source, "astronomy/vessa.md");
    assert!(hits[0].coverage.unwrap() > 0.99, "{hits:?}");
    // The same words about a planet the documents never name: the passages about other
    // discoveries match, but cover little of the query, the unknown name weighing most.
    let miss = index
        .search(&SearchQuery::new("discovered the planet Zorblax"))
        .await
        .unwrap();
    assert!(!miss.is_empty());
    assert!(miss.iter().all(|h| h.coverage.unwrap() < 0.6), "{miss:?}");
}
