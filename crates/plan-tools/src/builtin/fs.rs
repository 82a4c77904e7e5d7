//! Built-in tools that read and list files under a root folder, never outside it.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::{Tool, ToolContext, ToolError, ToolOutput};

/// A folder that file tools are confined to.
///
/// Paths given to [`resolve`](Self::resolve) must be relative; `..` components are
/// rejected outright, and the resolved path (symlinks followed) must still lie inside the
/// canonical root, so a symlink pointing out of the root is refused too.
#[derive(Clone, Debug)]
pub struct FsRoot {
    root: Arc<PathBuf>,
}

impl FsRoot {
    /// Confines tools to `root`.
    ///
    /// # Errors
    /// [`ToolError::Failed`] when `root` is not an existing folder.
    pub fn new(root: impl AsRef<Path>) -> Result<Self, ToolError> {
        let root = root.as_ref();
        let canonical = std::fs::canonicalize(root).map_err(|e| {
            ToolError::failed(
                "fs",
                format!("cannot open the root folder {}: {e}", root.display()),
            )
        })?;
        if !canonical.is_dir() {
            return Err(ToolError::failed(
                "fs",
                format!("the root {} is not a folder", root.display()),
            ));
        }
        Ok(Self {
            root: Arc::new(canonical),
        })
    }

    /// The canonical root.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The absolute path of `relative` inside the root.
    ///
    /// # Errors
    /// [`ToolError::PathOutsideRoot`] for absolute paths, `..` components and symlinks that
    /// lead out of the root; [`ToolError::NotFound`] when nothing is there.
    pub fn resolve(&self, relative: &str) -> Result<PathBuf, ToolError> {
        let outside = || ToolError::PathOutsideRoot {
            path: relative.to_owned(),
        };
        let rel = Path::new(relative.trim());
        let mut joined = self.root.as_ref().clone();
        for component in rel.components() {
            match component {
                Component::Normal(part) => joined.push(part),
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(outside());
                }
            }
        }
        let canonical = std::fs::canonicalize(&joined).map_err(|_| {
            // A dangling symlink or a missing file: say which, without resolving further.
            if std::fs::symlink_metadata(&joined).is_ok() {
                outside()
            } else {
                ToolError::NotFound {
                    path: relative.to_owned(),
                }
            }
        })?;
        if !canonical.starts_with(self.root.as_ref()) {
            return Err(outside());
        }
        Ok(canonical)
    }

    /// `path` relative to the root, with `/` separators.
    pub fn relative(&self, path: &Path) -> String {
        let rel = path.strip_prefix(self.root.as_ref()).unwrap_or(path);
        let text = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        if text.is_empty() {
            ".".to_owned()
        } else {
            text
        }
    }
}

/// Arguments of [`ReadFileTool`].
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadFileArgs {
    /// Path of the file, relative to the root folder.
    pub path: String,
    /// First line to return (1-based, default 1).
    #[serde(default)]
    pub start_line: Option<u32>,
    /// Most lines to return (default 200).
    #[serde(default)]
    pub max_lines: Option<u32>,
}

/// Reads a text file under the root; lines come numbered so that answers can cite them.
#[derive(Clone, Debug)]
pub struct ReadFileTool {
    root: FsRoot,
}

impl ReadFileTool {
    /// A reader confined to `root`.
    pub fn new(root: FsRoot) -> Self {
        Self { root }
    }
}

impl Tool for ReadFileTool {
    type Args = ReadFileArgs;

    fn name(&self) -> &str {
        "read_file"
    }

    fn description(&self) -> &str {
        "Read a text file under the allowed folder. Returns numbered lines \
         (`12: text`); use start_line and max_lines to page through long files."
    }

    async fn call(&self, args: ReadFileArgs, _ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let path = self.root.resolve(&args.path)?;
        if path.is_dir() {
            return Err(ToolError::failed(
                self.name(),
                format!("`{}` is a folder; use list_files for folders", args.path),
            ));
        }
        let bytes = tokio::task::spawn_blocking({
            let path = path.clone();
            move || std::fs::read(path)
        })
        .await
        .map_err(|e| ToolError::failed("read_file", e.to_string()))?
        .map_err(|e| ToolError::failed("read_file", format!("cannot read `{}`: {e}", args.path)))?;
        let text = String::from_utf8(bytes).map_err(|_| {
            ToolError::failed("read_file", format!("`{}` is not UTF-8 text", args.path))
        })?;
        let start = args.start_line.unwrap_or(1).max(1) as usize;
        let max = args.max_lines.unwrap_or(200).max(1) as usize;
        let total = text.lines().count();
        let mut out = String::new();
        for (i, line) in text.lines().enumerate().skip(start - 1).take(max) {
            out.push_str(&format!("{}: {line}\n", i + 1));
        }
        let shown_end = (start - 1 + max).min(total);
        if shown_end < total {
            out.push_str(&format!(
                "[lines {start}-{shown_end} of {total}; call again with start_line={} for more]\n",
                shown_end + 1
            ));
        }
        if out.is_empty() {
            out = format!("[`{}` has {total} lines]", args.path);
        }
        Ok(ToolOutput::Text(out))
    }
}

/// Arguments of [`ListFilesTool`].
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListFilesArgs {
    /// Folder to list, relative to the root folder (default: the root).
    #[serde(default)]
    pub path: Option<String>,
    /// How many levels to descend (1 = this folder only; default 1, at most 8).
    #[serde(default)]
    pub depth: Option<u32>,
}

/// Lists files and folders under the root (hidden entries skipped, symlinks not followed).
#[derive(Clone, Debug)]
pub struct ListFilesTool {
    root: FsRoot,
    max_entries: usize,
}

impl ListFilesTool {
    /// A lister confined to `root`, returning at most 500 entries.
    pub fn new(root: FsRoot) -> Self {
        Self {
            root,
            max_entries: 500,
        }
    }
}

impl Tool for ListFilesTool {
    type Args = ListFilesArgs;

    fn name(&self) -> &str {
        "list_files"
    }

    fn description(&self) -> &str {
        "List files and folders under the allowed folder. Folders end with `/`; \
         files show their size in bytes; symbolic links are marked."
    }

    async fn call(&self, args: ListFilesArgs, _ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let rel = args.path.unwrap_or_else(|| ".".to_owned());
        let dir = self.root.resolve(&rel)?;
        if !dir.is_dir() {
            return Err(ToolError::failed(
                "list_files",
                format!("`{rel}` is a file; use read_file to read it"),
            ));
        }
        let depth = args.depth.unwrap_or(1).clamp(1, 8) as usize;
        let root = self.root.clone();
        let max = self.max_entries;
        let lines = tokio::task::spawn_blocking(move || {
            let mut lines = Vec::new();
            let walker = walkdir::WalkDir::new(&dir)
                .min_depth(1)
                .max_depth(depth)
                .follow_links(false)
                .sort_by_file_name()
                .into_iter()
                .filter_entry(|e| !e.file_name().to_string_lossy().starts_with('.'));
            for entry in walker.filter_map(Result::ok) {
                if lines.len() == max {
                    lines.push(format!("[stopped after {max} entries]"));
                    break;
                }
                let rel = root.relative(entry.path());
                if entry.path_is_symlink() {
                    lines.push(format!("{rel} (symlink)"));
                } else if entry.file_type().is_dir() {
                    lines.push(format!("{rel}/"));
                } else {
                    let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    lines.push(format!("{rel} ({size} bytes)"));
                }
            }
            lines
        })
        .await
        .map_err(|e| ToolError::failed("list_files", e.to_string()))?;
        Ok(ToolOutput::Text(if lines.is_empty() {
            format!("`{rel}` is empty")
        } else {
            lines.join("\n")
        }))
    }
}
