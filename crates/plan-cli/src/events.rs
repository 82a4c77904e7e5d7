//! `--events FILE`: every event as one JSON line, written as it happens.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use plan_core::Event;

use crate::exit::Usage;

/// A JSONL file of events, flushed after every line so readers see events as they happen.
pub struct EventsFile {
    path: PathBuf,
    out: BufWriter<File>,
    failed: bool,
}

impl EventsFile {
    /// Creates (or truncates) the file.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = File::create(path).map_err(|e| {
            Usage::new(format!(
                "cannot write events to {}: {e}: check the directory exists and is writable",
                path.display()
            ))
        })?;
        Ok(EventsFile {
            path: path.to_owned(),
            out: BufWriter::new(file),
            failed: false,
        })
    }

    /// Appends one event. A write error is reported once on stderr and later events are
    /// dropped; the run itself goes on.
    pub fn write(&mut self, event: &Event) {
        if self.failed {
            return;
        }
        let result = writeln!(self.out, "{}", event.to_json_line()).and_then(|()| self.out.flush());
        if let Err(e) = result {
            self.failed = true;
            eprintln!(
                "warning: cannot write events to {}: {e}; no further events are written there",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plan_core::{EventKind, RunId};

    #[test]
    fn one_flat_object_per_line_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        let mut file = EventsFile::create(&path).unwrap();
        file.write(&Event::now(
            RunId::new("r"),
            EventKind::RunStarted { goal: "g".into() },
        ));
        file.write(&Event::now(RunId::new("r"), EventKind::progress(1, 2)));
        // Flushed already: read without dropping the writer.
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "run_started");
        assert_eq!(lines[1]["done"], 1);
        assert_eq!(lines[1]["run"], "r");
    }

    #[test]
    fn unwritable_path_is_a_usage_error() {
        let err = match EventsFile::create(Path::new("/nonexistent/dir/e.jsonl")) {
            Err(e) => e,
            Ok(_) => panic!("created"),
        };
        assert!(err.downcast_ref::<Usage>().is_some());
    }
}
