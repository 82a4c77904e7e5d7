//! [`LocalIndex`]: a BM25 full-text index over a folder of text and markdown documents,
//! built with tantivy and refreshed incrementally.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::query::QueryParser;
use tantivy::schema::{
    Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
    Value,
};
use tantivy::snippet::SnippetGenerator;
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use super::{SearchBackend, SearchError, SearchHit, SearchQuery};

/// Bumped whenever the schema, the tokenizer or the chunking changes: an index with another
/// version is rebuilt from scratch.
const FORMAT_VERSION: u32 = 1;
const MANIFEST_FILE: &str = "plan-manifest.json";
const TOKENIZER: &str = "plan_en";
const WRITER_BUDGET_BYTES: usize = 20_000_000;

/// Where and what [`LocalIndex`] indexes.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LocalIndexConfig {
    root: PathBuf,
    index_dir: Option<PathBuf>,
    extensions: Vec<String>,
    max_file_bytes: u64,
    chunk_lines: usize,
    snippet_chars: usize,
}

impl LocalIndexConfig {
    /// Index the documents under `root` (`.md`, `.markdown`, `.txt`, `.rst`, `.adoc`,
    /// `.org`), keeping the index in memory. Hidden files and folders are skipped.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            index_dir: None,
            extensions: ["md", "markdown", "txt", "rst", "adoc", "org"]
                .map(String::from)
                .to_vec(),
            max_file_bytes: 4 * 1024 * 1024,
            chunk_lines: 8,
            snippet_chars: 200,
        }
    }

    /// Keeps the index in `dir`, so that a later [`LocalIndex::open`] re-indexes only the
    /// files that changed. The folder is created if needed; it must be empty or hold an
    /// index made by this type.
    pub fn with_index_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.index_dir = Some(dir.into());
        self
    }

    /// Keeps the index in a subfolder of `cache_dir` named after the root's path, so that
    /// several roots can share one cache folder (the CLI passes the user's cache folder).
    pub fn with_cache_dir(mut self, cache_dir: impl AsRef<Path>) -> Self {
        let root = std::fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        let digest = Sha256::digest(root.to_string_lossy().as_bytes());
        let name: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        self.index_dir = Some(cache_dir.as_ref().join(name));
        self
    }

    /// Sets the file extensions (without the dot, case-insensitive) that are indexed.
    pub fn with_extensions<I, S>(mut self, extensions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extensions = extensions
            .into_iter()
            .map(|e| e.into().trim_start_matches('.').to_ascii_lowercase())
            .collect();
        self
    }

    /// Files larger than this are skipped (default 4 MiB).
    pub fn with_max_file_bytes(mut self, bytes: u64) -> Self {
        self.max_file_bytes = bytes;
        self
    }

    /// The most lines in one indexed passage (default 8). Documents are split into passages
    /// at blank lines, so that a hit points at the paragraph that matched.
    pub fn with_chunk_lines(mut self, lines: usize) -> Self {
        self.chunk_lines = lines.max(1);
        self
    }

    /// The most characters of a hit's snippet (default 200).
    pub fn with_snippet_chars(mut self, chars: usize) -> Self {
        self.snippet_chars = chars.max(1);
        self
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The index folder, when the index is kept on disk.
    pub fn index_dir(&self) -> Option<&Path> {
        self.index_dir.as_deref()
    }
}

/// What a [`LocalIndex::refresh`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RefreshStats {
    /// Files indexed for the first time.
    pub added: usize,
    /// Files whose content changed and were re-indexed.
    pub updated: usize,
    /// Files that disappeared and were dropped from the index.
    pub removed: usize,
    /// Files left as they were (same size and time, or same content).
    pub unchanged: usize,
    /// Files skipped: too large or not UTF-8 text.
    pub skipped: usize,
}

impl RefreshStats {
    /// Whether the index changed.
    pub fn changed(&self) -> bool {
        self.added + self.updated + self.removed > 0
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct FileStamp {
    mtime_ns: u128,
    size: u64,
    sha256: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Manifest {
    version: u32,
    root: String,
    files: BTreeMap<String, FileStamp>,
}

#[derive(Clone, Copy)]
struct Fields {
    path: Field,
    title: Field,
    body: Field,
    start_line: Field,
}

/// A BM25 full-text index over the text documents of a folder.
///
/// Documents are split into passages (paragraphs, at most
/// [`chunk_lines`](LocalIndexConfig::with_chunk_lines) lines), indexed with an English
/// stemming analyzer, and ranked with BM25; a search returns the best passage of each
/// matching file with a snippet and its line. [`refresh`](Self::refresh) re-indexes only
/// the files that were added, changed (size and modification time, then content hash) or
/// deleted since the last refresh; with an [index folder](LocalIndexConfig::with_index_dir)
/// that holds across processes.
///
/// Cloning is cheap and clones share the index.
#[derive(Clone)]
pub struct LocalIndex {
    inner: Arc<Inner>,
}

struct Inner {
    config: LocalIndexConfig,
    root: PathBuf,
    index: Index,
    reader: IndexReader,
    fields: Fields,
    manifest: Mutex<Manifest>,
    /// Serialises refreshes (one writer at a time).
    writing: Mutex<()>,
}

impl std::fmt::Debug for LocalIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIndex")
            .field("root", &self.inner.root)
            .field("index_dir", &self.inner.config.index_dir)
            .finish_non_exhaustive()
    }
}

fn index_err(e: impl std::fmt::Display) -> SearchError {
    SearchError::Index(e.to_string())
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> SearchError {
    SearchError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn build_schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(TOKENIZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_stored();
    let path = builder.add_text_field("path", STRING | STORED);
    let title = builder.add_text_field("title", text.clone());
    let body = builder.add_text_field("body", text);
    let start_line = builder.add_u64_field("start_line", STORED | INDEXED);
    (
        builder.build(),
        Fields {
            path,
            title,
            body,
            start_line,
        },
    )
}

fn analyzer() -> TextAnalyzer {
    let builder = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser);
    match StopWordFilter::new(Language::English) {
        Some(stop) => builder
            .filter(stop)
            .filter(Stemmer::new(Language::English))
            .build(),
        None => builder.filter(Stemmer::new(Language::English)).build(),
    }
}

impl LocalIndex {
    /// Opens (or creates) the index described by `config`. Nothing is indexed until
    /// [`refresh`](Self::refresh). Blocking: call it from a blocking context or
    /// `spawn_blocking` in async code.
    ///
    /// # Errors
    /// [`SearchError::Config`] when the root is not a folder or the index folder holds
    /// something else; [`SearchError::Io`]/[`SearchError::Index`] when the index cannot be
    /// opened (another process may be writing it).
    pub fn open(config: LocalIndexConfig) -> Result<Self, SearchError> {
        let root = std::fs::canonicalize(&config.root).map_err(|e| {
            SearchError::Config(format!(
                "cannot open the document folder {}: {e}; pass an existing folder",
                config.root.display()
            ))
        })?;
        if !root.is_dir() {
            return Err(SearchError::Config(format!(
                "{} is not a folder; pass the folder that holds the documents",
                root.display()
            )));
        }
        let (schema, fields) = build_schema();
        let root_text = root.to_string_lossy().into_owned();
        let (index, manifest) = match &config.index_dir {
            None => (
                Index::create_in_ram(schema),
                Manifest {
                    version: FORMAT_VERSION,
                    root: root_text,
                    files: BTreeMap::new(),
                },
            ),
            Some(dir) => open_dir_index(dir, schema, &root_text)?,
        };
        index.tokenizers().register(TOKENIZER, analyzer());
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(index_err)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                root,
                index,
                reader,
                fields,
                manifest: Mutex::new(manifest),
                writing: Mutex::new(()),
            }),
        })
    }

    /// The canonical root folder.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// How many files are indexed.
    pub fn file_count(&self) -> usize {
        self.inner
            .manifest
            .lock()
            .map(|m| m.files.len())
            .unwrap_or(0)
    }

    /// Brings the index up to date with the folder, re-indexing only added, changed and
    /// deleted files. Blocking; see [`refresh_async`](Self::refresh_async).
    ///
    /// # Errors
    /// [`SearchError::Io`] when the folder cannot be read, [`SearchError::Index`] when the
    /// index cannot be written.
    pub fn refresh(&self) -> Result<RefreshStats, SearchError> {
        self.inner.refresh()
    }

    /// [`refresh`](Self::refresh) on a blocking thread.
    ///
    /// # Errors
    /// As [`refresh`](Self::refresh).
    pub async fn refresh_async(&self) -> Result<RefreshStats, SearchError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.refresh())
            .await
            .map_err(|e| SearchError::Index(format!("the refresh task failed: {e}")))?
    }

    /// Runs a query on the calling thread (blocking; the async
    /// [`SearchBackend::search`] runs it on a blocking thread).
    ///
    /// # Errors
    /// [`SearchError::EmptyQuery`] for a blank query; [`SearchError::Index`] when the index
    /// cannot be read.
    pub fn search_blocking(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, SearchError> {
        self.inner.search(query)
    }
}

fn open_dir_index(
    dir: &Path,
    schema: Schema,
    root_text: &str,
) -> Result<(Index, Manifest), SearchError> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let manifest_path = dir.join(MANIFEST_FILE);
    let existing: Option<Manifest> = std::fs::read(&manifest_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let usable = existing
        .as_ref()
        .is_some_and(|m| m.version == FORMAT_VERSION && m.root == root_text)
        && dir.join("meta.json").exists();
    if usable {
        let directory = MmapDirectory::open(dir).map_err(index_err)?;
        if let Ok(index) = Index::open(directory)
            && index.schema() == schema
        {
            let manifest = existing.unwrap_or_default();
            return Ok((index, manifest));
        }
    }
    // Start afresh, but only in a folder that is empty or that we made.
    let entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .filter_map(Result::ok)
        .collect();
    let ours = manifest_path.exists() || dir.join("meta.json").exists();
    if !entries.is_empty() && !ours {
        return Err(SearchError::Config(format!(
            "the index folder {} is not empty and holds no plan index; choose an empty folder",
            dir.display()
        )));
    }
    for entry in entries {
        let path = entry.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| io_err(&path, e))?;
    }
    let directory = MmapDirectory::open(dir).map_err(index_err)?;
    let index = Index::create(directory, schema, Default::default()).map_err(index_err)?;
    let manifest = Manifest {
        version: FORMAT_VERSION,
        root: root_text.to_owned(),
        files: BTreeMap::new(),
    };
    Ok((index, manifest))
}

/// A passage of a document: its first line (1-based) and its text (whole lines).
struct Chunk {
    start_line: u32,
    text: String,
}

/// Splits text into passages at blank lines, merging paragraphs up to `max_lines` lines and
/// cutting longer paragraphs.
fn chunk_text(text: &str, max_lines: usize) -> Vec<Chunk> {
    let lines: Vec<&str> = text.lines().collect();
    let mut chunks = Vec::new();
    let mut paragraphs: Vec<(usize, usize)> = Vec::new(); // [start, end) line indices
    let mut start = None;
    for (i, line) in lines.iter().enumerate() {
        match (line.trim().is_empty(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                paragraphs.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        paragraphs.push((s, lines.len()));
    }
    let mut current: Option<(usize, usize)> = None;
    let flush = |range: (usize, usize), chunks: &mut Vec<Chunk>| {
        chunks.push(Chunk {
            start_line: u32::try_from(range.0 + 1).unwrap_or(u32::MAX),
            text: lines[range.0..range.1].join("\n"),
        });
    };
    for (s, e) in paragraphs {
        // Cut a long paragraph into pieces of `max_lines`.
        let mut piece_start = s;
        while piece_start < e {
            let piece_end = (piece_start + max_lines).min(e);
            let piece = (piece_start, piece_end);
            current = match current {
                Some((cs, _)) if piece.1 - cs <= max_lines => Some((cs, piece.1)),
                Some(prev) => {
                    flush(prev, &mut chunks);
                    Some(piece)
                }
                None => Some(piece),
            };
            piece_start = piece_end;
        }
    }
    if let Some(range) = current {
        flush(range, &mut chunks);
    }
    chunks
}

fn title_of(text: &str, rel: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .filter(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim().to_owned())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| {
            Path::new(rel)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| rel.to_owned())
        })
}

fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

struct Seen {
    rel: String,
    path: PathBuf,
    mtime_ns: u128,
    size: u64,
}

impl Inner {
    fn scan(&self) -> Result<(Vec<Seen>, usize), SearchError> {
        let mut seen = Vec::new();
        let mut skipped = 0;
        let index_dir = self
            .config
            .index_dir
            .as_ref()
            .and_then(|d| std::fs::canonicalize(d).ok());
        let walker = walkdir::WalkDir::new(&self.root)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| {
                e.depth() == 0
                    || (!e.file_name().to_string_lossy().starts_with('.')
                        && index_dir.as_deref() != Some(e.path()))
            });
        for entry in walker {
            let entry = entry.map_err(|e| {
                let path = e.path().map(Path::to_path_buf).unwrap_or_default();
                io_err(&path, e)
            })?;
            if !entry.file_type().is_file() {
                continue;
            }
            let path = entry.path();
            let ext_ok = path
                .extension()
                .map(|x| x.to_string_lossy().to_ascii_lowercase())
                .is_some_and(|x| self.config.extensions.contains(&x));
            if !ext_ok {
                continue;
            }
            let meta = entry.metadata().map_err(|e| io_err(path, e))?;
            if meta.len() > self.config.max_file_bytes {
                skipped += 1;
                continue;
            }
            let mtime_ns = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let rel = path
                .strip_prefix(&self.root)
                .unwrap_or(path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            seen.push(Seen {
                rel,
                path: path.to_path_buf(),
                mtime_ns,
                size: meta.len(),
            });
        }
        Ok((seen, skipped))
    }

    fn refresh(&self) -> Result<RefreshStats, SearchError> {
        let _writing = self
            .writing
            .lock()
            .map_err(|_| SearchError::Index("a previous refresh panicked".to_owned()))?;
        let (seen, skipped) = self.scan()?;
        let old = self
            .manifest
            .lock()
            .map_err(|_| SearchError::Index("the manifest lock is poisoned".to_owned()))?
            .clone();
        let mut stats = RefreshStats {
            skipped,
            ..RefreshStats::default()
        };
        let mut files = BTreeMap::new();
        // (rel, text) of files to (re)index.
        let mut to_index: Vec<(String, String)> = Vec::new();
        let mut to_delete: Vec<String> = Vec::new();
        for file in &seen {
            let previous = old.files.get(&file.rel);
            if let Some(prev) = previous
                && prev.mtime_ns == file.mtime_ns
                && prev.size == file.size
            {
                stats.unchanged += 1;
                files.insert(file.rel.clone(), prev.clone());
                continue;
            }
            let bytes = std::fs::read(&file.path).map_err(|e| io_err(&file.path, e))?;
            let sha256: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let stamp = FileStamp {
                mtime_ns: file.mtime_ns,
                size: file.size,
                sha256,
            };
            if previous.is_some_and(|p| p.sha256 == stamp.sha256) {
                stats.unchanged += 1;
                files.insert(file.rel.clone(), stamp);
                continue;
            }
            let Ok(text) = String::from_utf8(bytes) else {
                stats.skipped += 1;
                if previous.is_some() {
                    to_delete.push(file.rel.clone());
                    stats.removed += 1;
                }
                continue;
            };
            if previous.is_some() {
                stats.updated += 1;
            } else {
                stats.added += 1;
            }
            files.insert(file.rel.clone(), stamp);
            to_index.push((file.rel.clone(), text));
        }
        let present: HashMap<&str, ()> = seen.iter().map(|s| (s.rel.as_str(), ())).collect();
        for rel in old.files.keys() {
            if !present.contains_key(rel.as_str()) {
                to_delete.push(rel.clone());
                stats.removed += 1;
            }
        }

        if !to_index.is_empty() || !to_delete.is_empty() {
            let mut writer: IndexWriter<TantivyDocument> = self
                .index
                .writer_with_num_threads(1, WRITER_BUDGET_BYTES)
                .map_err(|e| {
                    SearchError::Index(format!(
                        "cannot write the index (is another process refreshing it?): {e}"
                    ))
                })?;
            let f = self.fields;
            for rel in to_delete.iter().chain(to_index.iter().map(|(rel, _)| rel)) {
                writer.delete_term(Term::from_field_text(f.path, rel));
            }
            for (rel, text) in &to_index {
                let title = title_of(text, rel);
                for chunk in chunk_text(text, self.config.chunk_lines) {
                    let mut doc = TantivyDocument::default();
                    doc.add_text(f.path, rel);
                    doc.add_text(f.title, &title);
                    doc.add_text(f.body, &chunk.text);
                    doc.add_u64(f.start_line, u64::from(chunk.start_line));
                    writer.add_document(doc).map_err(index_err)?;
                }
            }
            writer.commit().map_err(index_err)?;
            writer.wait_merging_threads().map_err(index_err)?;
            self.reader.reload().map_err(index_err)?;
        }

        let manifest = Manifest {
            version: FORMAT_VERSION,
            root: old.root.clone(),
            files,
        };
        if let Some(dir) = &self.config.index_dir {
            let path = dir.join(MANIFEST_FILE);
            let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
            let bytes = serde_json::to_vec(&manifest).map_err(index_err)?;
            std::fs::write(&tmp, bytes).map_err(|e| io_err(&tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
        }
        if let Ok(mut slot) = self.manifest.lock() {
            *slot = manifest;
        }
        tracing::debug!(
            added = stats.added,
            updated = stats.updated,
            removed = stats.removed,
            unchanged = stats.unchanged,
            "refreshed the local index of {}",
            self.root.display()
        );
        Ok(stats)
    }

    fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, SearchError> {
        let text = query.text.trim();
        if text.is_empty() {
            return Err(SearchError::EmptyQuery);
        }
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let f = self.fields;
        let searcher = self.reader.searcher();
        let mut parser = QueryParser::for_index(&self.index, vec![f.title, f.body]);
        parser.set_field_boost(f.title, 0.5);
        let (parsed, _ignored) = parser.parse_query_lenient(text);
        let candidates = searcher
            .search(
                &*parsed,
                &TopDocs::with_limit(query.limit.saturating_mul(8).max(16)).order_by_score(),
            )
            .map_err(index_err)?;
        let weights = term_weights(&searcher, f.body, text)?;
        let mut snippets =
            SnippetGenerator::create(&searcher, &*parsed, f.body).map_err(index_err)?;
        snippets.set_max_num_chars(self.config.snippet_chars);
        let mut hits: Vec<SearchHit> = Vec::new();
        for (score, address) in candidates {
            let doc: TantivyDocument = searcher.doc(address).map_err(index_err)?;
            let get_text = |field| {
                doc.get_first(field)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            let source = get_text(f.path);
            if hits.iter().any(|h| h.source == source) {
                continue; // the best passage of each file only
            }
            let body = get_text(f.body);
            let start_line = doc
                .get_first(f.start_line)
                .and_then(|v| v.as_u64())
                .unwrap_or(1);
            let snippet = snippets.snippet(&body);
            let (snippet_text, line) = if snippet.fragment().trim().is_empty() {
                let first: String = body.chars().take(self.config.snippet_chars).collect();
                (first, start_line)
            } else {
                let offset = snippet.fragment_range().start.min(body.len());
                let before = body.get(..offset).unwrap_or_default();
                let skipped_blank = snippet
                    .fragment()
                    .chars()
                    .take_while(|c| c.is_whitespace())
                    .filter(|c| *c == '\n')
                    .count();
                let line = start_line + (before.matches('\n').count() + skipped_blank) as u64;
                (snippet.fragment().to_owned(), line)
            };
            let title = get_text(f.title);
            let coverage = coverage(&weights, &format!("{title}\n{body}"));
            hits.push(
                SearchHit::new(
                    source,
                    title,
                    collapse_whitespace(&snippet_text),
                    Some(u32::try_from(line).unwrap_or(u32::MAX)),
                    score,
                )
                .with_coverage(coverage),
            );
            if hits.len() == query.limit {
                break;
            }
        }
        Ok(hits)
    }
}

/// The distinct terms of `text` as the index analyses them (lower-cased, stemmed, stop
/// words removed).
fn analysed_terms(text: &str) -> Vec<String> {
    let mut analyzer = analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut terms: Vec<String> = Vec::new();
    while let Some(token) = stream.next() {
        if !terms.contains(&token.text) {
            terms.push(token.text.clone());
        }
    }
    terms
}

/// Each term of the query with its BM25 inverse document frequency in the collection: a
/// term no passage holds weighs the most.
fn term_weights(
    searcher: &tantivy::Searcher,
    body: Field,
    query: &str,
) -> Result<Vec<(String, f32)>, SearchError> {
    let passages = searcher.num_docs() as f32;
    analysed_terms(query)
        .into_iter()
        .map(|term| {
            let df = searcher
                .doc_freq(&Term::from_field_text(body, &term))
                .map_err(index_err)? as f32;
            let idf = (1.0 + (passages - df + 0.5) / (df + 0.5)).ln();
            Ok((term, idf))
        })
        .collect()
}

/// The weighted share of the query's terms that `text` holds (0 for a query without terms).
fn coverage(weights: &[(String, f32)], text: &str) -> f32 {
    let total: f32 = weights.iter().map(|(_, w)| w).sum();
    if total <= 0.0 {
        return 0.0;
    }
    let held = analysed_terms(text);
    let found: f32 = weights
        .iter()
        .filter(|(t, _)| held.contains(t))
        .map(|(_, w)| w)
        .sum();
    found / total
}

#[async_trait]
impl SearchBackend for LocalIndex {
    fn name(&self) -> &str {
        "local"
    }

    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, SearchError> {
        let inner = Arc::clone(&self.inner);
        let query = query.clone();
        tokio::task::spawn_blocking(move || inner.search(&query))
            .await
            .map_err(|e| SearchError::Index(format!("the search task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_split_at_paragraphs_and_keep_line_numbers() {
        let text = "# T\n\nline a\nline b\n\n\nline c\n";
        let chunks = chunk_text(text, 3);
        let starts: Vec<u32> = chunks.iter().map(|c| c.start_line).collect();
        assert_eq!(starts, vec![1, 3, 7]);
        assert_eq!(chunks[1].text, "line a\nline b");
        let merged = chunk_text(text, 8);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].text, "# T\n\nline a\nline b\n\n\nline c");
    }

    #[test]
    fn long_paragraphs_are_cut() {
        let text = (1..=10)
            .map(|i| format!("l{i}"))
            .collect::<Vec<_>>()
            .join("\n");
        let chunks = chunk_text(&text, 4);
        let starts: Vec<u32> = chunks.iter().map(|c| c.start_line).collect();
        assert_eq!(starts, vec![1, 5, 9]);
        assert_eq!(chunks[2].text, "l9\nl10");
    }

    #[test]
    fn title_from_heading_or_file_name() {
        assert_eq!(title_of("\n# Vessa\ntext", "a/vessa.md"), "Vessa");
        assert_eq!(title_of("plain text", "a/notes.txt"), "notes");
    }
}
