//! The web view: `/` lists runs and starts one, `/runs/{id}` shows a run's plan as a DAG
//! (SVG, laid out by dependency level, one `data-step-id`/`data-status` element per step)
//! and beside it a timeline (one bar per step attempt, drawn by `web/timeline.js` from the
//! events) and the plan's versions (`web/versions.js`: a version picked marks what it
//! changed on the DAG), all updating live over Server-Sent Events, a step's details on
//! click, usage, the answer (Markdown), and approve / edit / reject while the run waits for
//! approval. Server-rendered HTML with a little plain JavaScript, served from `/assets/`
//! (no inline script or style, so the strict Content-Security-Policy of `guard` holds);
//! nothing is loaded from elsewhere.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use plan_core::{PlanGraph, RunId, RunStatus, StepStatus};
use plan_exec::report::RunReport;

use crate::PlanService;
use crate::api::ApiError;

/// Escapes text for HTML (element content and quoted attributes).
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Markdown to HTML, with any raw HTML in it shown as text, and links and images kept
/// only for `http`, `https` and `mailto` URLs (and relative ones): a model's answer, which
/// a prompt-injected document can steer, cannot inject markup, scripts or `javascript:`
/// links. The page's Content-Security-Policy is the second line of defence.
pub(crate) fn markdown(text: &str) -> String {
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd, html};
    let mut dropped = Vec::new();
    let parser = Parser::new_ext(text, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH)
        .filter_map(|event| match event {
            Event::Html(raw) | Event::InlineHtml(raw) => Some(Event::Text(raw)),
            Event::Start(Tag::Link { ref dest_url, .. } | Tag::Image { ref dest_url, .. }) => {
                let keep = safe_url(dest_url);
                dropped.push(!keep);
                keep.then_some(event)
            }
            Event::End(TagEnd::Link | TagEnd::Image) => {
                let was_dropped = dropped.pop().unwrap_or(false);
                (!was_dropped).then_some(event)
            }
            other => Some(other),
        });
    let mut out = String::new();
    html::push_html(&mut out, parser);
    out
}

/// Whether a link's URL may stay a link: `http`, `https`, `mailto`, or no scheme (a
/// relative URL). Browsers ignore tabs, newlines and leading spaces or controls in a URL,
/// so they are ignored here too before the scheme is read.
fn safe_url(url: &str) -> bool {
    let cleaned: String = url.chars().filter(|c| !c.is_ascii_control()).collect();
    let cleaned = cleaned.trim_start();
    let scheme_end = cleaned.find([':', '/', '?', '#']);
    match scheme_end {
        Some(i) if cleaned[i..].starts_with(':') => {
            let scheme = cleaned[..i].to_ascii_lowercase();
            matches!(scheme.as_str(), "http" | "https" | "mailto")
        }
        _ => true,
    }
}

const STYLE: &str = r#"
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem; color: #1d1d1f; max-width: 1200px; }
table { border-collapse: collapse; width: 100%; }
td, th { padding: .35rem .6rem; border-bottom: 1px solid #ddd; text-align: left; }
.status { font-weight: 600; }
.st-succeeded, .st-completed { color: #1a7f37; } .st-failed, .st-rejected { color: #cf222e; }
.st-running { color: #0969da; } .st-awaiting_approval, .st-queued { color: #9a6700; }
svg .step rect { stroke: #57606a; stroke-width: 1.2; rx: 6; cursor: pointer; }
svg .step[data-status=pending] rect { fill: #f6f8fa; }
svg .step[data-status=running] rect { fill: #ddf4ff; stroke: #0969da; }
svg .step[data-status=completed] rect { fill: #dafbe1; stroke: #1a7f37; }
svg .step[data-status=failed] rect { fill: #ffebe9; stroke: #cf222e; }
svg .step[data-status=skipped] rect, svg .step[data-status=cancelled] rect { fill: #eaeef2; }
svg .step text { font-size: 12px; pointer-events: none; }
svg path { fill: none; stroke: #8c959f; stroke-width: 1.2; marker-end: url(#arrow); }
.views { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }
.views > section { max-width: 100%; overflow: auto; }
#timeline-box { max-height: 36rem; }
.views h2 { margin: .2rem 0 .5rem; font-size: 1.1rem; }
svg .bar rect { fill: #eaeef2; stroke: #57606a; stroke-width: 1; rx: 3; cursor: pointer; }
svg .bar text, svg .tick { font-size: 11px; }
svg .bar text { pointer-events: none; }
svg .axis { stroke: #8c959f; }
svg .bar.completed rect, .key.completed { fill: #dafbe1; stroke: #1a7f37; background: #dafbe1; }
svg .bar.running rect, .key.running { fill: #ddf4ff; stroke: #0969da; stroke-dasharray: 4 2; background: #ddf4ff; }
svg .bar.retried rect, .key.retried { fill: #fff8c5; stroke: #9a6700; background: #fff8c5; }
svg .bar.failed rect, svg .bar.interrupted rect, svg .bar.cancelled rect, .key.failed { fill: #ffebe9; stroke: #cf222e; background: #ffebe9; }
svg .bar.fallback rect, .key.fallback { fill: #fbefff; stroke: #8250df; background: #fbefff; }
svg .bar.critical rect, svg .step.critical rect { stroke: #bf3989; stroke-width: 3; }
.key.critical { border: 3px solid #bf3989; }
svg .bar.reused rect { fill-opacity: .4; stroke-dasharray: 2 2; }
svg .bar.reused text, .key.reused { font-style: italic; }
svg .step.diff-added rect { stroke: #1a7f37; stroke-width: 3; stroke-dasharray: 6 3; }
svg .step.diff-changed rect { stroke: #9a6700; stroke-width: 3; stroke-dasharray: 6 3; }
svg .step.diff-removed, svg .step.diff-absent { opacity: .35; }
.key.diff-added { border: 2px dashed #1a7f37; } .key.diff-changed { border: 2px dashed #9a6700; }
.key.diff-absent { opacity: .45; }
#versions { margin: .2rem 0; padding-left: 0; list-style: none; }
#versions li { display: inline-block; margin: 0 .3rem .3rem 0; }
.version { font: inherit; font-size: 12px; border: 1px solid #8c959f; border-radius: 4px; background: #f6f8fa; cursor: pointer; }
.version.selected { background: #ddf4ff; border-color: #0969da; }
#version-diff { font-size: 13px; }
.legend { font-size: 12px; margin: .4rem 0; max-width: 34rem; line-height: 1.9; }
.key { display: inline-block; padding: 0 .4rem; margin-right: .3rem; border: 1px solid #8c959f; border-radius: 3px; }
#details { white-space: pre-wrap; background: #f6f8fa; padding: .8rem; border-radius: 6px; }
textarea { width: 100%; height: 16rem; font: 13px monospace; }
form input[name=goal] { width: 60%; }
"#;

/// The script of `/`: the form that starts a run.
const INDEX_JS: &str = include_str!("web/index.js");

/// The script of a run's page: the live DAG, step details, approval.
const RUN_JS: &str = include_str!("web/run.js");

/// The run page's timeline (one bar per step attempt), which `run.js` feeds the events.
const TIMELINE_JS: &str = include_str!("web/timeline.js");

/// The run page's plan versions and their differences on the DAG, fed by `run.js`.
const VERSIONS_JS: &str = include_str!("web/versions.js");

/// A page: its styles and scripts come from this server (`/assets/`), never inline, as
/// the Content-Security-Policy requires; `scripts` run in their order.
fn page(title: &str, body: &str, scripts: &[&str]) -> Html<String> {
    let script: String = scripts
        .iter()
        .map(|s| format!("<script src=\"/assets/{s}\" defer></script>"))
        .collect();
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title><link rel=\"stylesheet\" href=\"/assets/style.css\">{script}</head><body>{body}</body></html>",
        escape(title)
    ))
}

/// `GET /assets/{name}`: the web view's stylesheet and scripts.
pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    let (kind, body) = match name.as_str() {
        "style.css" => ("text/css; charset=utf-8", STYLE),
        "index.js" => ("text/javascript; charset=utf-8", INDEX_JS),
        "run.js" => ("text/javascript; charset=utf-8", RUN_JS),
        "timeline.js" => ("text/javascript; charset=utf-8", TIMELINE_JS),
        "versions.js" => ("text/javascript; charset=utf-8", VERSIONS_JS),
        _ => {
            return ApiError::new(StatusCode::NOT_FOUND, format!("no asset `{name}`"))
                .into_response();
        }
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// `GET /`: the runs, and a form to start one.
pub(crate) async fn index(State(service): State<Arc<PlanService>>) -> Result<Response, ApiError> {
    let runs = service
        .store
        .list_runs()
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let now = plan_core::Timestamp::now().unix_millis();
    let mut rows = String::new();
    for r in &runs {
        let age = now.saturating_sub(r.created.unix_millis()) / 1000;
        rows.push_str(&format!(
            "<tr><td><a href=\"/runs/{id}\">{id}</a></td><td class=\"status st-{st}\" data-status=\"{st}\">{st}</td><td>{goal}</td><td>{strategy}</td><td>{done}/{total}</td><td>{age}</td></tr>",
            id = escape(r.id.as_str()),
            st = r.status.as_str(),
            goal = escape(&r.goal),
            strategy = escape(r.strategy.as_deref().unwrap_or("-")),
            done = r.steps_done,
            total = r.steps_total,
            age = age_text(age),
        ));
    }
    let body = format!(
        r#"<h1>plan</h1>
<form id="start"><input name="goal" placeholder="What should the run achieve?" required>
<select name="strategy"><option value="">default strategy</option><option>auto</option><option>dag</option><option>linear</option><option>adaptive</option><option>hierarchical</option><option>reflective</option></select>
<label><input type="checkbox" name="approve"> approve the plan first</label> <button>Start</button> <span id="error"></span></form>
<table><thead><tr><th>run</th><th>status</th><th>goal</th><th>strategy</th><th>progress</th><th>age</th></tr></thead><tbody>{rows}</tbody></table>
"#
    );
    Ok(page("plan: runs", &body, &["index.js"]).into_response())
}

fn age_text(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The SVG of a plan: one column per dependency level, one box per step.
fn svg(report: &RunReport) -> String {
    let Some(plan) = &report.plan else {
        return "<p id=\"no-plan\">No plan yet.</p>".to_owned();
    };
    let Ok(graph) = PlanGraph::new(plan.clone()) else {
        return "<p>The plan is not a valid graph.</p>".to_owned();
    };
    let (w, h, gap_x, gap_y) = (190.0, 44.0, 60.0, 18.0);
    let mut pos: std::collections::HashMap<&str, (f64, f64)> = std::collections::HashMap::new();
    let levels = graph.levels();
    let tallest = levels.iter().map(Vec::len).max().unwrap_or(1);
    for (x, level) in levels.iter().enumerate() {
        for (y, &i) in level.iter().enumerate() {
            let id = plan.steps[i].id.as_str();
            pos.insert(
                id,
                (20.0 + x as f64 * (w + gap_x), 20.0 + y as f64 * (h + gap_y)),
            );
        }
    }
    let width = 40.0 + levels.len() as f64 * (w + gap_x);
    let height = 40.0 + tallest as f64 * (h + gap_y);
    let mut out = format!(
        "<svg id=\"dag\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\"><defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#8c959f\"/></marker></defs>"
    );
    for step in &plan.steps {
        let Some(&(x2, y2)) = pos.get(step.id.as_str()) else {
            continue;
        };
        for dep in &step.dependencies {
            if let Some(&(x1, y1)) = pos.get(dep.as_str()) {
                let (sx, sy, ex, ey) = (x1 + w, y1 + h / 2.0, x2, y2 + h / 2.0);
                let mid = (sx + ex) / 2.0;
                out.push_str(&format!(
                    "<path d=\"M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}\"/>"
                ));
            }
        }
    }
    for step in &plan.steps {
        let Some(&(x, y)) = pos.get(step.id.as_str()) else {
            continue;
        };
        let status = report
            .step(step.id.as_str())
            .map_or(StepStatus::Pending, |s| s.status);
        let label: String = step.description.chars().take(26).collect();
        out.push_str(&format!(
            "<g class=\"step\" data-step-id=\"{id}\" data-status=\"{st}\"><title>{desc}</title><rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\"/><text x=\"{tx}\" y=\"{ty1}\" font-weight=\"600\">{id}</text><text x=\"{tx}\" y=\"{ty2}\">{label}</text></g>",
            id = escape(step.id.as_str()),
            st = status.name(),
            desc = escape(&step.description),
            tx = x + 8.0,
            ty1 = y + 17.0,
            ty2 = y + 34.0,
            label = escape(&label),
        ));
    }
    out.push_str("</svg>");
    out
}

/// The answer and usage of a run, as HTML (`GET /runs/{id}/summary` refreshes it live).
fn summary(report: &RunReport) -> String {
    let u = &report.usage;
    let mut out = format!(
        "<p id=\"usage\">{} model calls, {} prompt + {} completion tokens</p>",
        u.llm_calls, u.prompt_tokens, u.completion_tokens
    );
    if let Some(answer) = &report.answer {
        out.push_str(&format!(
            "<h2>Answer</h2><div id=\"answer\">{}</div>",
            markdown(answer)
        ));
    }
    if let Some(failure) = &report.failure {
        out.push_str(&format!(
            "<p id=\"failure\" class=\"st-failed\">{}</p>",
            escape(failure)
        ));
    }
    out
}

/// `GET /runs/{id}/summary`: the answer and usage fragment.
pub(crate) async fn summary_fragment(
    State(service): State<Arc<PlanService>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let report = report_of(&service, &id).await?;
    Ok(Html(summary(&report)).into_response())
}

async fn report_of(service: &PlanService, id: &str) -> Result<RunReport, ApiError> {
    let run = service
        .store
        .load_run(&RunId::new(id))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no run `{id}`")))?;
    Ok(RunReport::from_stored(&run))
}

/// `GET /runs/{id}`: the run's page.
pub(crate) async fn run_page(
    State(service): State<Arc<PlanService>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let report = report_of(&service, &id).await?;
    let steps_json = serde_json::to_string(&report.steps).unwrap_or_else(|_| "[]".to_owned());
    let approval = if report.status == RunStatus::AwaitingApproval {
        let plan = report
            .plan
            .as_ref()
            .map(plan_core::Plan::to_json_pretty)
            .unwrap_or_default();
        format!(
            r#"<section id="approval"><h2>Waiting for approval</h2>
<p id="approval-diff"></p>
<button id="approve">Approve</button> <button id="reject">Reject</button>
<details><summary>Edit the plan</summary><textarea id="plan-json">{}</textarea><button id="approve-edited">Approve the edited plan</button></details>
<p id="approval-error" class="st-failed"></p></section>"#,
            escape(&plan)
        )
    } else {
        String::new()
    };
    let body = format!(
        r#"<p><a href="/">all runs</a></p>
<h1>{goal}</h1>
<p id="run" data-run-id="{id}">run <code>{id}</code> · <span id="run-status" class="status st-{st}" data-status="{st}">{st}</span> · {strategy} · {model}</p>
{approval}
<div class="views"><section id="dag-box"><h2>Plan</h2>{svg}
<h3>Versions</h3><p class="legend">pick one to mark what changed against the one before: <span class="key diff-added">added</span><span class="key diff-changed">changed</span><span class="key diff-absent">not in it</span></p><ol id="versions"></ol><p id="version-diff"></p></section>
<section id="timeline-box"><h2>Timeline</h2><p class="legend">one bar per step attempt, by start: <span class="key completed">completed</span><span class="key running">running</span><span class="key retried">failed, retried</span><span class="key failed">failed</span><span class="key fallback">fallback</span><span class="key critical">critical path</span><span class="key reused">reused</span></p>
<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="516" height="30"></svg></section></div>
<h2>Step</h2><div id="details">Click a step to see its output, attempts, error and timing.</div>
<p id="step-actions"></p><p id="rerun-error" class="st-failed"></p>
<div id="summary">{summary}</div>
<script type="application/json" id="steps">{steps_json}</script>"#,
        goal = escape(&report.goal),
        id = escape(&id),
        st = report.status.as_str(),
        strategy = escape(report.strategy.as_deref().unwrap_or("-")),
        model = escape(report.model.as_deref().unwrap_or("-")),
        svg = svg(&report),
        summary = summary(&report),
        steps_json = steps_json.replace("</", "<\\/"),
    );
    let mut response = page(
        &format!("plan: {}", report.goal),
        &body,
        &["timeline.js", "versions.js", "run.js"],
    )
    .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_keep_only_safe_links_and_no_markup() {
        let html = markdown(
            "[docs](https://example.com/a) [mail](mailto:a@b.c) [here](/runs/x) \
             [bad](javascript:alert(1)) [tabbed](java\tscript:alert(2)) \
             [upper](JAVASCRIPT:alert(3)) [data](data:text/html,<b>x</b>) \
             <javascript:alert(4)> ![img](javascript:alert(5)) <script>alert(6)</script>",
        );
        assert!(
            html.contains(r#"<a href="https://example.com/a">docs</a>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<a href="mailto:a@b.c">mail</a>"#),
            "{html}"
        );
        assert!(html.contains(r#"<a href="/runs/x">here</a>"#), "{html}");
        for text in ["bad", "tabbed", "upper", "data", "img"] {
            assert!(html.contains(text), "{text} is kept as text: {html}");
        }
        assert!(
            !html.to_ascii_lowercase().contains("href=\"javascript"),
            "{html}"
        );
        assert!(!html.contains("href=\"data"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }

    #[test]
    fn urls_without_a_scheme_are_relative() {
        assert!(safe_url("page#part"));
        assert!(safe_url("/a:b"));
        assert!(safe_url("?q=a:b"));
        assert!(!safe_url(" \u{1}javascript:x"));
        assert!(!safe_url("vbscript:x"));
        assert!(safe_url("HTTPS://example.com"));
    }
}
