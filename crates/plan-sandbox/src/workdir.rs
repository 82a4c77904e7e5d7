//! The directories a run uses on the host: a private work dir and the program's source,
//! writing input files and reading declared files back without following symlinks.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use plan_core::CodeLang;

use super::types::check_relative;
use super::{MissingFile, OutputFile, Program, SandboxError};

/// The uid and gid files are handed to when the caller is root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// The host directories of one run; the temporary ones are removed on drop.
#[derive(Debug)]
pub(crate) struct RunDirs {
    base: PathBuf,
    /// The work dir (the program's cwd, `/work` under bwrap).
    pub work: PathBuf,
    /// The directory holding the program's source (`/program` under bwrap).
    pub program_dir: PathBuf,
    /// The source file's name inside `program_dir`.
    pub script_name: &'static str,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl RunDirs {
    /// Creates the directories under `temp_root`, writes the source and the input files.
    pub fn prepare(
        temp_root: &Path,
        program: &Program,
        owner: Option<Owner>,
    ) -> Result<RunDirs, SandboxError> {
        let script_name = match program.lang {
            CodeLang::Python => "main.py",
            CodeLang::Bash => "main.sh",
            other => {
                return Err(SandboxError::InvalidProgram(format!(
                    "language `{other}` is not supported; use python or bash"
                )));
            }
        };
        for (path, _) in &program.files {
            check_relative(path)?;
        }
        for path in &program.collect_paths {
            check_relative(path)?;
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "plan-sandbox-{}-{}-{nanos:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let base = temp_root.join(name);
        DirBuilder::new()
            .mode(0o711)
            .create(&base)
            .map_err(|e| SandboxError::io(format!("creating {}", base.display()), e))?;
        let mut dirs = RunDirs {
            work: base.join("work"),
            program_dir: base.join("program"),
            base,
            script_name,
        };
        if let Some(dir) = &program.work_dir {
            let meta = fs::metadata(dir).map_err(|e| {
                SandboxError::io(format!("opening the work dir {}", dir.display()), e)
            })?;
            if !meta.is_dir() {
                return Err(SandboxError::InvalidProgram(format!(
                    "work dir {} is not a directory",
                    dir.display()
                )));
            }
            dirs.work = dir.clone();
        } else {
            mkdir(&dirs.work, 0o700)?;
        }
        if let Some(o) = owner {
            chown(&dirs.work, o)?;
        }
        mkdir(&dirs.program_dir, 0o755)?;
        let script = dirs.program_dir.join(script_name);
        write_new(&script, program.source.as_bytes(), 0o644)?;
        for (path, contents) in &program.files {
            write_input(&dirs.work, path, contents, owner)?;
        }
        Ok(dirs)
    }

    /// Reads the declared files back, refusing symlinks and anything not a regular file.
    pub fn collect(&self, paths: &[String], cap: u64) -> (Vec<OutputFile>, Vec<MissingFile>) {
        let mut files = Vec::new();
        let mut missing = Vec::new();
        for path in paths {
            match read_back(&self.work, path, cap) {
                Ok((contents, truncated)) => files.push(OutputFile {
                    path: path.clone(),
                    contents,
                    truncated,
                }),
                Err(reason) => missing.push(MissingFile {
                    path: path.clone(),
                    reason,
                }),
            }
        }
        (files, missing)
    }
}

impl Drop for RunDirs {
    fn drop(&mut self) {
        if fs::remove_dir_all(&self.base).is_err() {
            // The program may have made directories unreadable; open them up and retry.
            open_up(&self.base);
            if let Err(e) = fs::remove_dir_all(&self.base) {
                tracing::warn!(dir = %self.base.display(), error = %e, "could not remove sandbox dir");
            }
        }
    }
}

fn open_up(dir: &Path) {
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                open_up(&entry.path());
            }
        }
    }
}

fn mkdir(path: &Path, mode: u32) -> Result<(), SandboxError> {
    DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(|e| SandboxError::io(format!("creating {}", path.display()), e))
}

fn chown(path: &Path, o: Owner) -> Result<(), SandboxError> {
    std::os::unix::fs::lchown(path, Some(o.uid), Some(o.gid))
        .map_err(|e| SandboxError::io(format!("handing {} to uid {}", path.display(), o.uid), e))
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), SandboxError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| SandboxError::io(format!("creating {}", path.display()), e))?;
    f.write_all(contents)
        .map_err(|e| SandboxError::io(format!("writing {}", path.display()), e))
}

/// Writes an input file, creating parent dirs, never following a symlink.
fn write_input(
    work: &Path,
    rel: &str,
    contents: &[u8],
    owner: Option<Owner>,
) -> Result<(), SandboxError> {
    let parts: Vec<_> = Path::new(rel)
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    let mut at = work.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let last = i + 1 == parts.len();
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(SandboxError::InvalidProgram(format!(
                    "input file `{rel}`: {} is a symlink",
                    at.display()
                )));
            }
            Ok(m) if !last && !m.is_dir() => {
                return Err(SandboxError::InvalidProgram(format!(
                    "input file `{rel}`: {} is not a directory",
                    at.display()
                )));
            }
            Ok(_) => {}
            Err(_) if !last => {
                mkdir(&at, 0o755)?;
                if let Some(o) = owner {
                    chown(&at, o)?;
                }
            }
            Err(_) => {}
        }
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&at)
        .map_err(|e| SandboxError::io(format!("creating input file {}", at.display()), e))?;
    f.write_all(contents)
        .map_err(|e| SandboxError::io(format!("writing input file {}", at.display()), e))?;
    if let Some(o) = owner {
        chown(&at, o)?;
    }
    Ok(())
}

/// Reads a declared file: every component must be a real directory (no symlinks), the file
/// a regular file.
fn read_back(work: &Path, rel: &str, cap: u64) -> Result<(Vec<u8>, bool), String> {
    let parts: Vec<_> = Path::new(rel)
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    let mut at = work.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let last = i + 1 == parts.len();
        let meta = fs::symlink_metadata(&at).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                "not found".to_owned()
            } else {
                e.to_string()
            }
        })?;
        if meta.file_type().is_symlink() {
            return Err("is a symlink (not followed)".to_owned());
        }
        if !last && !meta.is_dir() {
            return Err("a parent is not a directory".to_owned());
        }
        if last && !meta.is_file() {
            return Err("not a regular file".to_owned());
        }
    }
    let f: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&at)
        .map_err(|e| e.to_string())?;
    if !f.metadata().map_err(|e| e.to_string())?.is_file() {
        return Err("not a regular file".to_owned());
    }
    let mut contents = Vec::new();
    f.take(cap.saturating_add(1))
        .read_to_end(&mut contents)
        .map_err(|e| e.to_string())?;
    let truncated = contents.len() as u64 > cap;
    contents.truncate(usize::try_from(cap).unwrap_or(usize::MAX));
    Ok((contents, truncated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_checked() {
        assert!(check_relative("a/b.txt").is_ok());
        assert!(check_relative("./a").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../x", ".", "a\0b"] {
            assert!(check_relative(bad).is_err(), "{bad:?} accepted");
        }
    }
}
