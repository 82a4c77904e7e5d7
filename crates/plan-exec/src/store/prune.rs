//! Journal retention: which runs [`RunStore::prune`] deletes ([`Prune`]), what it reports
//! ([`Pruned`]), ages as people write them (`30d`), and [`keep_pruning`], the loop that
//! applies a retention period while a server or worker lives.

use std::time::{Duration, UNIX_EPOCH};

use plan_core::{RunId, RunStatus, Timestamp};
use serde::{Deserialize, Serialize};

use super::RunStore;
use crate::error::StoreError;

/// Which runs [`RunStore::prune`] deletes: the ended ones whose last activity is before a
/// cut-off. Last activity is the run's `updated` time, as [`RunSummary`](super::RunSummary)
/// has it: the last write of its status, a plan or a step output (and, in the PostgreSQL
/// store, an event), so for an ended run, when it ended unless something was written to it
/// since. Not the creation time: a long run that ended yesterday is a day old.
///
/// A run that has not ended (`queued`, `running`, `awaiting_approval`) is never deleted,
/// whatever its age: a `running` run whose process died is resumable, so it stays until it
/// is resumed and ends. `succeeded`, `failed`, `cancelled` and `rejected` runs are deleted;
/// with [`keep_failed`](Prune::keep_failed), `failed` and `cancelled` runs (those a person
/// may still want to look into or resume: cancelled is also how an interrupted run ends)
/// are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Prune {
    /// Runs whose last activity is strictly before this are candidates.
    pub older_than: Timestamp,
    /// Keep `failed` and `cancelled` runs.
    pub keep_failed: bool,
    /// Report what would be deleted, and delete nothing.
    pub dry_run: bool,
}

impl Prune {
    /// Ended runs whose last activity is before `cutoff`; failed ones included, for real.
    pub fn before(cutoff: Timestamp) -> Self {
        Self {
            older_than: cutoff,
            keep_failed: false,
            dry_run: false,
        }
    }

    /// Ended runs inactive for longer than `age` (the cut-off is now minus `age`).
    pub fn inactive_for(age: Duration) -> Self {
        let now = Timestamp::now().system_time();
        Self::before(Timestamp::from(now.checked_sub(age).unwrap_or(UNIX_EPOCH)))
    }

    /// Keeps `failed` and `cancelled` runs (or not).
    pub fn keep_failed(mut self, keep: bool) -> Self {
        self.keep_failed = keep;
        self
    }

    /// Only reports what would be deleted (or deletes it).
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Whether a run with `status` may be deleted under this rule (its age aside).
    pub fn allows(&self, status: RunStatus) -> bool {
        status.is_terminal()
            && !(self.keep_failed && matches!(status, RunStatus::Failed | RunStatus::Cancelled))
    }

    /// The statuses [`allows`](Prune::allows) (for stores that filter in a query).
    pub fn statuses(&self) -> Vec<RunStatus> {
        RunStatus::ALL
            .into_iter()
            .filter(|s| self.allows(*s))
            .collect()
    }
}

/// One run [`RunStore::prune`] deleted, or would delete.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PrunedRun {
    /// The run's id.
    #[serde(rename = "run_id")]
    pub id: RunId,
    /// Its status.
    pub status: RunStatus,
    /// Its last activity.
    pub updated: Timestamp,
    /// Events its journal held.
    pub events: u64,
}

impl PrunedRun {
    /// A run of `status`, last active at `updated`, with `events` events.
    pub fn new(id: RunId, status: RunStatus, updated: Timestamp, events: u64) -> Self {
        Self {
            id,
            status,
            updated,
            events,
        }
    }
}

/// What [`RunStore::prune`] deleted, or would have deleted in a dry run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Pruned {
    /// The runs, least recently active first.
    pub runs: Vec<PrunedRun>,
    /// Whether nothing was deleted ([`Prune::dry_run`]).
    pub dry_run: bool,
}

impl Pruned {
    /// A result listing `runs`.
    pub fn new(runs: Vec<PrunedRun>, dry_run: bool) -> Self {
        Self { runs, dry_run }
    }

    /// Events of every listed run.
    pub fn events(&self) -> u64 {
        self.runs.iter().map(|r| r.events).sum()
    }
}

/// The error of a store that does not implement [`RunStore::prune`].
pub(crate) fn cannot_prune() -> StoreError {
    StoreError::new(
        "this run store cannot prune runs (its RunStore implementation has no `prune`): \
         delete old runs with the database's own tools, or use the SQLite or PostgreSQL store",
    )
}

/// Parses an age as `plan runs prune --older-than` and `retention` in plan.toml take it:
/// a whole number and a unit, `s`, `m`, `h`, `d` or `w` (`90m`, `12h`, `30d`).
///
/// # Errors
/// A message saying what is accepted, for a missing or unknown unit, a number that is not
/// one, zero, or an age too large.
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let expected = "give a whole number and a unit: s, m, h, d or w (such as 90m, 12h, 30d)";
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit: {expected}"))?;
    let (number, unit) = text.split_at(split);
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("`{text}` is not an age: {expected}")),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not an age: {expected}"))?;
    if n == 0 {
        return Err(format!("`{text}` is zero: give an age of at least 1s"));
    }
    n.checked_mul(unit_secs)
        .filter(|secs| *secs <= 100 * 365 * 86_400)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is more than 100 years"))
}

/// An age in the largest unit that divides it (`30d`, `90m`), as [`parse_age`] reads it.
pub fn format_age(age: Duration) -> String {
    let secs = age.as_secs();
    for (unit, size) in [("w", 7 * 86_400), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs > 0 && secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

/// A retention period applied while a process lives ([`keep_pruning`]): ended runs
/// inactive for longer than `age` are deleted, every `every`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// How long ended runs are kept after their last activity.
    pub age: Duration,
    /// How often to prune (the first time at once).
    pub every: Duration,
    /// Keep `failed` and `cancelled` runs.
    pub keep_failed: bool,
}

impl Retention {
    /// Keeps ended runs for `age` after their last activity, pruning hourly.
    pub fn new(age: Duration) -> Self {
        Self {
            age,
            every: Duration::from_secs(3600),
            keep_failed: false,
        }
    }

    /// Prunes every `every` instead of hourly.
    pub fn every(mut self, every: Duration) -> Self {
        self.every = every;
        self
    }

    /// Keeps `failed` and `cancelled` runs (or not).
    pub fn keep_failed(mut self, keep: bool) -> Self {
        self.keep_failed = keep;
        self
    }
}

/// Applies `retention` to `store` forever: prunes at once, then every
/// [`Retention::every`], handing each outcome to `report` (to log it). A failed prune is
/// reported and tried again at the next tick. Spawn it, and drop or abort the task to
/// stop it.
pub async fn keep_pruning<S, F>(store: S, retention: Retention, mut report: F)
where
    S: RunStore,
    F: FnMut(Result<Pruned, StoreError>) + Send,
{
    let mut ticks = tokio::time::interval(retention.every.max(Duration::from_secs(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let rule = Prune::inactive_for(retention.age).keep_failed(retention.keep_failed);
        report(store.prune(&rule).await);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse_and_print() {
        for (text, secs) in [
            ("30d", 30 * 86_400),
            ("12h", 12 * 3600),
            ("90m", 90 * 60),
            ("45s", 45),
            ("2w", 14 * 86_400),
            (" 7d ", 7 * 86_400),
        ] {
            assert_eq!(parse_age(text), Ok(Duration::from_secs(secs)), "{text}");
        }
        assert_eq!(format_age(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(format_age(Duration::from_secs(90 * 60)), "90m");
        assert_eq!(format_age(Duration::from_secs(14 * 86_400)), "2w");
        assert_eq!(format_age(Duration::from_secs(61)), "61s");
    }

    #[test]
    fn bad_ages_say_what_is_accepted() {
        for (text, needle) in [
            ("30", "has no unit"),
            ("", "has no unit"),
            ("30x", "is not an age"),
            ("d", "is not an age"),
            ("1.5h", "is not an age"),
            ("-3d", "is not an age"),
            ("30 d", "is not an age"),
            ("0h", "is zero"),
            ("99999999999999w", "more than 100 years"),
        ] {
            let err = parse_age(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
            assert!(err.contains(text.trim()), "{text:?}: {err}");
        }
    }

    #[test]
    fn only_ended_runs_are_allowed_and_keep_failed_keeps_failed_and_cancelled() {
        let all = Prune::before(Timestamp::now());
        assert_eq!(
            all.statuses(),
            [
                RunStatus::Succeeded,
                RunStatus::Failed,
                RunStatus::Cancelled,
                RunStatus::Rejected
            ]
        );
        let keep = all.clone().keep_failed(true);
        assert_eq!(keep.statuses(), [RunStatus::Succeeded, RunStatus::Rejected]);
        for waiting in [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::AwaitingApproval,
        ] {
            assert!(!all.allows(waiting) && !keep.allows(waiting), "{waiting}");
        }
    }

    #[test]
    fn an_age_larger_than_the_epoch_cuts_off_at_the_epoch() {
        let rule = Prune::inactive_for(Duration::from_secs(u64::MAX / 4));
        assert_eq!(rule.older_than.unix_millis(), 0);
    }
}
