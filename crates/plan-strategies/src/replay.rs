//! Replaying a stored run with no calls at all: its strategy and runner are driven again,
//! with every model reply, tool result and program run served from what the run recorded
//! (see [`plan_exec::replay`]).
//!
//! A replay runs in memory and writes nothing to any store. A run is driven as it was
//! started: a goal planned, a given plan executed, a re-run re-run (reusing from its own
//! journal the outputs it reused). Its report is compared with
//! the stored one (status, answer, failure, the final plan, each step's status and
//! output); any difference, any request the recording does not hold (a
//! [`Divergence`]) and any recorded call the replay never asked for is reported, so
//! [`Replay::is_faithful`] is the regression check a project's own tests can use on a few
//! recorded runs kept as fixtures.

use std::sync::Arc;

use plan_core::{EventKind, Plan, RecordedCall};
use plan_exec::replay::{Divergence, ReplaySandbox, Replayer, replaying};
use plan_exec::report::RunReport;
use plan_exec::store::StoredRun;

use crate::builder::AgentBuilder;
use crate::error::StrategyError;

/// What a replay found.
#[derive(Debug)]
#[non_exhaustive]
pub struct Replay {
    /// The replay's report, or why the replay could not produce one.
    pub report: Result<RunReport, String>,
    /// The stored run's report, as its journal says.
    pub recorded: RunReport,
    /// Calls the run recorded.
    pub calls_recorded: usize,
    /// Calls the replay was served from the recording.
    pub calls_served: usize,
    /// The first request the recording did not hold.
    pub divergence: Option<Divergence>,
    /// Recorded calls the replay never asked for.
    pub unserved: Vec<RecordedCall>,
    /// How the replay's report differs from the stored one, in words.
    pub differences: Vec<String>,
}

impl Replay {
    /// Whether the replay did exactly what the recorded run did: every request found in
    /// the recording, every recorded call asked for, and the same report (timings aside).
    pub fn is_faithful(&self) -> bool {
        self.report.is_ok()
            && self.divergence.is_none()
            && self.unserved.is_empty()
            && self.differences.is_empty()
    }
}

/// Whether `stored` ran a plan it was given (`plan exec`): its first plan came before any
/// planning call. Returns that plan.
fn given_plan(stored: &StoredRun) -> Option<Plan> {
    const PLANNING: [&str; 3] = ["plan", "decompose", "route"];
    for e in &stored.events {
        match &e.kind {
            EventKind::CallRecorded { call }
                if call
                    .purpose
                    .as_deref()
                    .is_some_and(|p| PLANNING.contains(&p)) =>
            {
                return None;
            }
            EventKind::PlanCreated { plan, revision: 0 } => return Some(plan.clone()),
            _ => {}
        }
    }
    None
}

/// The steps a re-run (`plan rerun`) reused, when `stored` is one.
fn reused_steps(stored: &StoredRun) -> Option<std::collections::HashSet<String>> {
    let reused = stored.extras.get("rerun")?.get("reused")?.as_array()?;
    Some(
        reused
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect(),
    )
}

/// Replays `stored` with the agent `builder` makes: build it for the run's own spec with
/// every model standing in for the run's ([`Runtime::for_replay`](crate::Runtime::for_replay)),
/// and without a store. The replay runs the goal as the run did (a given plan as a given
/// plan), serving every call from the recording; nothing is called, and nothing is
/// written.
///
/// # Errors
/// [`StrategyError::Config`] when the agent cannot be built.
pub async fn replay(
    stored: &StoredRun,
    replayer: Arc<Replayer>,
    builder: AgentBuilder,
) -> Result<Replay, StrategyError> {
    let agent = builder.sandbox(ReplaySandbox).build()?;
    let goal = stored.record.goal.clone();
    let given = given_plan(stored);
    let reused = reused_steps(stored);
    let run = async {
        match (reused, given) {
            // A re-run: the steps it reused are reused again, from its own journal.
            (Some(reused), _) => {
                let mut own = stored.clone();
                own.outputs.retain(|o| reused.contains(o.step.as_str()));
                agent.rerun(&own, crate::Rerun::new()).await
            }
            (None, Some(plan)) => agent.execute(plan).await,
            (None, None) => agent.run(goal).await,
        }
    };
    let report = replaying(replayer.clone(), run)
        .await
        .map_err(|e| e.to_string());
    let recorded = RunReport::from_stored(stored);
    let differences = match &report {
        Ok(report) => differences(&recorded, report),
        Err(_) => Vec::new(),
    };
    Ok(Replay {
        report,
        recorded,
        calls_recorded: replayer.recorded(),
        calls_served: replayer.served(),
        divergence: replayer.divergence(),
        unserved: replayer.unserved(),
        differences,
    })
}

/// How `now` differs from `then`, timings and usage aside.
fn differences(then: &RunReport, now: &RunReport) -> Vec<String> {
    let mut out = Vec::new();
    if then.status != now.status {
        out.push(format!("status: {} then, {} now", then.status, now.status));
    }
    if then.answer != now.answer {
        out.push("the answer differs".to_owned());
    }
    if then.failure != now.failure {
        out.push(format!(
            "the failure differs: {:?} then, {:?} now",
            then.failure, now.failure
        ));
    }
    let ids = |r: &RunReport| -> Vec<String> {
        r.plan
            .iter()
            .flat_map(|p| &p.steps)
            .map(|s| s.id.to_string())
            .collect()
    };
    if ids(then) != ids(now) {
        out.push(format!(
            "the final plan's steps: [{}] then, [{}] now",
            ids(then).join(", "),
            ids(now).join(", ")
        ));
    } else if then.plan != now.plan {
        out.push("the final plan's steps say different things".to_owned());
    }
    for step in &then.steps {
        match now.step(step.id.as_str()) {
            None => out.push(format!("step `{}` is missing", step.id)),
            Some(s) if s.status != step.status => out.push(format!(
                "step `{}`: {} then, {} now",
                step.id, step.status, s.status
            )),
            Some(s) if s.output != step.output => {
                out.push(format!("step `{}`: its output differs", step.id));
            }
            Some(_) => {}
        }
    }
    out
}
