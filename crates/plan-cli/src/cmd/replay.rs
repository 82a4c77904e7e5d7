//! `plan replay`: a stored run driven again with every call served from its recording.

use std::process::ExitCode;
use std::sync::Arc;

use plan_core::RunId;
use plan_exec::replay::Replayer;
use plan_strategies::RunSpec;
use plan_strategies::replay::Replay;
use serde_json::json;

use crate::cli::ReplayArgs;
use crate::config::{Overrides, Settings};
use crate::exit::Usage;
use crate::session;
use crate::style::Palette;

/// `plan replay RUN_ID [--check] [--json]`.
pub async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_process(&Overrides::store(args.store.clone()))?;
    let (_, stored) = crate::cmd::runs::load(&settings, &args.run_id).await?;
    let id = stored.record.id.clone();
    let mut spec = RunSpec::from_record(&stored.record)
        .map_err(|e| Usage::new(format!("run `{id}` cannot be replayed: {e}")))?;
    if let Some(why) = unsupported(&spec) {
        return Err(Usage::new(format!(
            "run `{id}` cannot be replayed: it used {why}, which replay does not serve yet (runs of models, tools, MCP servers and code steps can be replayed)"
        ))
        .into());
    }
    // Replay re-drives what was decided: a plan or replan a person approved as it was
    // runs on, served from the recording, and one they edited shows as a divergence.
    spec.approve = plan_strategies::Approval::None;
    let replayer = Arc::new(Replayer::of(&stored));
    let made_calls = plan_exec::report::usage_of(&stored.events).llm_calls > 0;
    if replayer.recorded() == 0 && made_calls {
        return Err(Usage::new(format!(
            "run `{id}` recorded none of its calls: it was made by a version of plan from before replay; run it again to replay it"
        ))
        .into());
    }
    let runtime = session::runtime(&settings, true).for_replay(&replayer);
    let builder = session::headless_agent(&runtime, &spec)?;
    // The tools the run was offered, as stand-ins with the same specs, so its requests
    // list the same tools; their calls are served from the recording, and no MCP server
    // is started.
    let builder = if replayer.tool_specs().is_empty() {
        builder
    } else {
        builder.tools(plan_tools::replay::recorded_tools(&replayer))
    };
    let replay = plan_strategies::replay::replay(&stored, replayer, builder).await;
    let replay = replay.map_err(session::strategy_error)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&as_json(&id, &replay, !args.check))?
        );
    } else {
        print!("{}", text(&id, &replay, !args.check, &Palette::stdout()));
    }
    Ok(if replay.is_faithful() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::exit::RUN_FAILED)
    })
}

/// What the run used that replay does not serve, in words.
fn unsupported(spec: &RunSpec) -> Option<String> {
    let needs = &spec.needs;
    let mut what = Vec::new();
    if needs.agents {
        what.push("agent profiles");
    }
    if needs.research.is_some() {
        what.push("research");
    }
    (!what.is_empty()).then(|| what.join(" and "))
}

fn as_json(id: &RunId, r: &Replay, with_report: bool) -> serde_json::Value {
    let divergence = r.divergence.as_ref().map(|d| {
        json!({
            "kind": d.kind.as_str(),
            "purpose": d.purpose,
            "step": d.step,
            "message": d.to_string(),
            "request_diff": d.request_diff(),
        })
    });
    let unserved: Vec<_> = r
        .unserved
        .iter()
        .map(|c| json!({"kind": c.kind.as_str(), "purpose": c.purpose, "step": c.step}))
        .collect();
    let mut out = json!({
        "run_id": id,
        "faithful": r.is_faithful(),
        "calls_recorded": r.calls_recorded,
        "calls_served": r.calls_served,
        "calls_made": 0,
        "divergence": divergence,
        "unserved": unserved,
        "differences": r.differences,
    });
    match &r.report {
        Ok(report) if with_report => out["report"] = json!(report),
        Ok(_) => {}
        Err(e) => out["error"] = json!(e),
    }
    out
}

fn text(id: &RunId, r: &Replay, with_report: bool, p: &Palette) -> String {
    let mut out = format!(
        "replay of {id}: {} of {} recorded calls served, none made\n",
        r.calls_served, r.calls_recorded
    );
    if with_report && let Ok(report) = &r.report {
        out.push_str(&format!("status: {}\n", report.status));
        if let Some(answer) = &report.answer {
            out.push_str(&format!("answer:\n{answer}\n"));
        }
    }
    if let Err(e) = &r.report {
        out.push_str(&format!("the replay stopped: {e}\n"));
    }
    if r.is_faithful() {
        out.push_str(&format!(
            "{}the replay did what the run did: the same requests and the same report{:#}\n",
            p.ok, p.ok
        ));
        return out;
    }
    if let Some(d) = &r.divergence {
        out.push_str(&format!("{}diverged: {d}{:#}\n", p.error, p.error));
        match d.request_diff() {
            Some(diff) => out.push_str(&diff),
            None if d.had_counterpart => out.push_str(
                "  (the run kept only request hashes: make it with --record-requests to see how the request changed)\n",
            ),
            None => {}
        }
    }
    for c in &r.unserved {
        out.push_str(&format!(
            "not asked for: the {} call{}{}\n",
            c.kind.as_str(),
            c.purpose
                .as_deref()
                .map(|p| format!(" for `{p}`"))
                .unwrap_or_default(),
            c.step
                .as_ref()
                .map(|s| format!(" of step `{s}`"))
                .unwrap_or_default()
        ));
    }
    for d in &r.differences {
        out.push_str(&format!("differs: {d}\n"));
    }
    out
}
