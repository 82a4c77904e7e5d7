//! The JSON API: routes, handlers and errors.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{Stream, StreamExt as _};
use plan_core::{Plan, PlanDiff, PlanGraph, PlanVersion, RunId};
use plan_exec::context::CancelToken;
use plan_exec::error::{ExecError, StoreError};
use plan_exec::report::RunReport;
use plan_strategies::{
    Agent, CancelRequests, Continuable, Continuation, Rerun, RunHandle, RunSettings, RunSpec,
    RunsError, RuntimeError, StrategyError,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Fleet, PlanService, RunRequest, auth, is_loopback_host};

/// An API error: a status and `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.message}))).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        let status = match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, format!("bad request body: {}", e.body_text()))
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A JSON body that may be empty (then the default).
fn optional_json<T: serde::de::DeserializeOwned + Default>(
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<T> {
    let bytes = body.map_err(|e| {
        let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, format!("bad request body: {}", e.body_text()))
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad(format!("bad request body: {e}")))
}

pub(crate) fn router(service: Arc<PlanService>) -> Router {
    let limit = service.config.body_limit;
    Router::new()
        .route("/", get(crate::web::index))
        .route("/runs/{id}", get(crate::web::run_page))
        .route("/runs/{id}/summary", get(crate::web::summary_fragment))
        .route("/assets/{name}", get(crate::web::asset))
        .route("/api/runs", post(start_run).get(list_runs))
        .route("/api/runs/{id}", get(get_run))
        .route("/api/runs/{id}/events", get(events))
        .route("/api/runs/{id}/plan", get(plan_of))
        .route("/api/runs/{id}/cancel", post(cancel))
        .route("/api/runs/{id}/resume", post(resume))
        .route("/api/runs/{id}/approve", post(approve))
        .route("/api/runs/{id}/reject", post(reject))
        .route("/api/runs/{id}/rerun", post(rerun))
        .route("/api/runs/{id}/versions", get(versions_of))
        .route("/api/runs/{id}/diff", get(diff_of))
        .layer(axum::middleware::from_fn_with_state(
            service.clone(),
            auth::require_token,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            service.clone(),
            crate::guard::guard,
        ))
        .with_state(service)
}

async fn load(service: &PlanService, id: &str) -> ApiResult<plan_exec::store::StoredRun> {
    service
        .runs
        .load(&RunId::new(id))
        .await
        .map_err(|e| runs_error(e, id))
}

/// The error of an operation on the stored run `id`, with the status that fits it and
/// the API's routes named.
fn runs_error(e: RunsError, id: &str) -> ApiError {
    let conflict = |message: String| ApiError::new(StatusCode::CONFLICT, message);
    match e {
        RunsError::NotFound(_) => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no run `{id}`: GET /api/runs lists them"),
        ),
        RunsError::AwaitsApproval(_) => conflict(format!(
            "run `{id}` awaits approval: POST /api/runs/{id}/approve or /reject"
        )),
        RunsError::Running(_) => conflict(format!("run `{id}` is running in this server")),
        RunsError::NotRunningHere { status, .. } => conflict(format!(
            "run `{id}` is {status} and not running in this server"
        )),
        RunsError::Spec { source, .. } => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, source.to_string())
        }
        e @ (RunsError::NotAwaitingApproval { .. }
        | RunsError::AlreadySucceeded(_)
        | RunsError::NotCancellable { .. }
        | RunsError::StillWaiting { .. }) => conflict(e.to_string()),
        e => ApiError::internal(e),
    }
}

/// Cancellations asked through a fleet's shared store: whoever holds the run stops it.
pub(crate) struct FleetCancel(pub(crate) Arc<dyn Fleet>);

#[async_trait::async_trait]
impl CancelRequests for FleetCancel {
    async fn request_cancel(&self, run: &RunId) -> Result<bool, StoreError> {
        self.0.cancel(run).await.map_err(|e| {
            StoreError::new(format!(
                "cannot ask for the cancellation of run `{run}`: {e}"
            ))
        })
    }
}

/// The error of a library call, with the status that fits it.
fn strategy_error(e: StrategyError) -> ApiError {
    match e {
        StrategyError::Plan(problems) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, problems.to_string())
        }
        StrategyError::Exec(ExecError::NotAwaitingApproval { .. })
        | StrategyError::Exec(ExecError::AwaitsApproval(_)) => {
            ApiError::new(StatusCode::CONFLICT, e.to_string())
        }
        StrategyError::Exec(ExecError::UnknownRun(_)) => {
            ApiError::new(StatusCode::NOT_FOUND, e.to_string())
        }
        StrategyError::Config(_) => ApiError::bad(e.to_string()),
        e => ApiError::internal(e),
    }
}

/// The request in a `POST /api/runs` body: its `goal` and its settings, each refused (422)
/// naming the member that is wrong.
fn run_request(body: Value) -> ApiResult<RunRequest> {
    let unprocessable = |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message);
    let mut members = match body {
        Value::Object(members) => members,
        other => {
            let kind = match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            };
            return Err(unprocessable(format!(
                "the body is {kind}: send an object, {{\"goal\": \"...\"}} and any settings"
            )));
        }
    };
    let goal = match members.remove("goal") {
        Some(Value::String(goal)) => goal,
        None | Some(Value::Null) => {
            return Err(unprocessable(
                "goal is missing: say what the run should achieve".to_owned(),
            ));
        }
        Some(other) => return Err(unprocessable(format!("goal = {other}: must be a string"))),
    };
    let settings = RunSettings::from_map(members).map_err(|e| unprocessable(e.to_string()))?;
    Ok(RunRequest::new(goal, settings))
}

/// The spec of a new run: the server's, with what the request names in its place;
/// nonsense values are refused (422) naming the value.
fn spec_for(service: &PlanService, request: &RunRequest) -> ApiResult<RunSpec> {
    request
        .settings
        .apply(&service.defaults)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
}

/// On a fleet, a worker builds the run's agent; a dollar budget the server cannot price
/// is refused here (422) rather than failing the run there. (Other checks are the
/// worker's: it may have keys or model files this server lacks.)
fn check_price(service: &PlanService, spec: &RunSpec) -> ApiResult<()> {
    if spec.budget.usd.is_none() {
        return Ok(());
    }
    match service.runtime.agent(spec) {
        Err(e @ RuntimeError::UnknownPrice(_)) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            e.to_string(),
        )),
        _ => Ok(()),
    }
}

/// Builds the agent of a new run's spec: its model, limits and strategy, the store.
fn agent_for(service: &Arc<PlanService>, spec: &RunSpec) -> ApiResult<Agent> {
    service
        .runtime
        .agent(spec)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?
        .store(service.store.clone())
        .cancel_token(CancelToken::new())
        .build()
        .map_err(strategy_error)
}

/// Whether a run may call `url`, the `base_url` its request names, and whether without
/// the server's keys: the server's own endpoint and those the operator named
/// (`--allow-base-url`) get the keys; another loopback endpoint is called without them;
/// any other is refused (403), so the server is no proxy to other hosts and never sends
/// its keys where the operator did not say.
fn without_keys(service: &PlanService, url: Option<&str>) -> ApiResult<bool> {
    let Some(url) = url else { return Ok(false) };
    if service.defaults.base_url.as_deref() == Some(url) {
        return Ok(false);
    }
    let parsed =
        url::Url::parse(url).map_err(|e| ApiError::bad(format!("base_url is not a URL: {e}")))?;
    if service.config.base_urls.contains(&crate::endpoint(&parsed)) {
        return Ok(false);
    }
    let host = parsed.host_str().unwrap_or_default();
    if is_loopback_host(host) {
        Ok(true)
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "base_url {host} is not an endpoint this server may call: the operator names those with --allow-base-url URL (loopback endpoints are called without the server's keys)"
            ),
        ))
    }
}

/// `POST /api/runs`: starts a run in this process and answers with its id as soon as it
/// has one.
async fn start_run(
    State(service): State<Arc<PlanService>>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(body) = body?;
    let request = run_request(body)?;
    if request.goal.trim().is_empty() {
        return Err(ApiError::bad(
            "goal is empty: say what the run should achieve",
        ));
    }
    let no_keys = without_keys(&service, request.settings.base_url.as_deref())?;
    let mut spec = spec_for(&service, &request)?;
    spec.no_keys = no_keys;
    if let Some(fleet) = &service.fleet {
        check_price(&service, &spec)?;
        // A worker plans and runs it; the id is the queued run's.
        let id = fleet
            .submit(spec.to_record(request.goal.clone()))
            .await
            .map_err(ApiError::bad)?;
        return Ok((
            StatusCode::CREATED,
            Json(json!({"run_id": id.as_str(), "status": "queued"})),
        )
            .into_response());
    }
    let agent = agent_for(&service, &spec)?;
    // An agent of its own per run: cancelling it stops this run only.
    let handle = agent
        .start(request.goal.clone())
        .await
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let id = in_background(&service, handle)?;
    Ok((StatusCode::CREATED, Json(json!({"run_id": id.as_str()}))).into_response())
}

/// Tracks a run this server started (so it can be cancelled and is saved at shutdown)
/// and lets it run to its end in the background; its id.
fn in_background(service: &PlanService, handle: RunHandle) -> ApiResult<RunId> {
    let id = handle.id().clone();
    let tracked = service
        .runs
        .track(&id, handle.cancel_token().clone())
        .map_err(|e| runs_error(e, id.as_str()))?;
    let key = id.clone();
    tokio::spawn(async move {
        if let Err(e) = handle.await {
            tracing::warn!(run = %key, error = %e, "a run started by the server stopped");
        }
        drop(tracked);
    });
    Ok(id)
}

/// `GET /api/runs`: the runs, newest first, as `plan runs --json` lists them.
async fn list_runs(State(service): State<Arc<PlanService>>) -> ApiResult<Json<Value>> {
    let runs = service
        .store
        .list_runs()
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(Value::Array(
        runs.iter()
            .map(plan_exec::store::RunSummary::to_listing)
            .collect(),
    )))
}

/// `GET /api/runs/{id}`: the report, the object `plan run --json` prints.
async fn get_run(
    State(service): State<Arc<PlanService>>,
    Path(id): Path<String>,
) -> ApiResult<Json<RunReport>> {
    let report = service
        .runs
        .report(&RunId::new(&id))
        .await
        .map_err(|e| runs_error(e, &id))?;
    Ok(Json(report))
}

#[derive(Deserialize)]
struct PlanQuery {
    #[serde(default)]
    format: Option<String>,
}

/// `GET /api/runs/{id}/plan?format=mermaid|dot|json`: the latest plan, with the steps'
/// statuses in the diagrams.
async fn plan_of(
    State(service): State<Arc<PlanService>>,
    Path(id): Path<String>,
    Query(q): Query<PlanQuery>,
) -> ApiResult<Response> {
    let run = load(&service, &id).await?;
    let report = RunReport::from_stored(&run);
    let Some(plan) = report.plan.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("run `{id}` has no plan (yet)"),
        ));
    };
    let state = plan_core::RunState::from(report.steps.clone());
    let format = q.format.as_deref().unwrap_or("json");
    let graph = || PlanGraph::new(plan.clone()).map_err(|e| ApiError::internal(e.to_string()));
    Ok(match format {
        "json" => Json(serde_json::to_value(&plan).map_err(ApiError::internal)?).into_response(),
        "mermaid" => plan_core::render_mermaid(&graph()?, Some(&state)).into_response(),
        "dot" => plan_core::render_dot(&graph()?, Some(&state)).into_response(),
        other => {
            return Err(ApiError::bad(format!(
                "format {other:?} is not known: use mermaid, dot or json"
            )));
        }
    })
}

/// `GET /api/runs/{id}/events`: the stored events, then live ones, as Server-Sent Events
/// (`id:` the event's position in the run's journal; `Last-Event-ID` resumes after it);
/// the stream ends after `run_finished`.
async fn events(
    State(service): State<Arc<PlanService>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let client = extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let slot = service
        .streams
        .open(client, service.config.streams_per_client)?;
    load(&service, &id).await?;
    let after = match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::bad("Last-Event-ID is not an event id"))?,
        None => 0,
    };
    // Every stream of a run is fed by the run's one reader (see hub.rs).
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let source = crate::hub::Source {
        store: service.store.clone(),
        fleet: service.fleet.clone(),
    };
    tokio::spawn(
        service
            .hub
            .clone()
            .stream(source, RunId::new(id), after, tx),
    );
    // The stream holds its slot until it ends; it ends when the server shuts down too.
    let closing = service.closing.clone();
    let stream = futures::stream::unfold((rx, slot), |(mut rx, slot)| async move {
        let entry: std::sync::Arc<plan_exec::store::JournalEntry> = rx.recv().await?;
        let event = SseEvent::default()
            .id(entry.seq.to_string())
            .data(entry.event.to_json_line());
        Some((Ok(event), (rx, slot)))
    })
    .take_until(async move { closing.cancelled().await });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// `POST /api/runs/{id}/cancel`: cancels a run running in this server, or, with a
/// fleet, asks whoever holds it through the store.
async fn cancel(
    State(service): State<Arc<PlanService>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    service
        .runs
        .cancel(&RunId::new(&id))
        .await
        .map_err(|e| runs_error(e, &id))?;
    Ok(accepted(&id, "cancelling"))
}

/// Continues a stored run in the background with `work`; answers 202. With a fleet, the
/// server takes the run's lease first (refused while a live process holds it), and keeps
/// it while the run goes on.
async fn continue_run<F, Fut>(
    service: &Arc<PlanService>,
    run: Continuable,
    work: F,
) -> ApiResult<Response>
where
    F: FnOnce(Agent) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<RunReport, StrategyError>> + Send + 'static,
{
    let id = run.stored.record.id.clone();
    let cancel = CancelToken::new();
    let tracked = service
        .runs
        .track(&id, cancel.clone())
        .map_err(|e| runs_error(e, id.as_str()))?;
    let held = match &service.fleet {
        Some(fleet) => Some(
            fleet
                .hold(&id, cancel.clone())
                .await
                .map_err(|e| ApiError::new(StatusCode::CONFLICT, e))?,
        ),
        None => None,
    };
    let store = held.as_ref().map(|h| h.store.clone());
    let builder = service
        .runtime
        .continuing(&run.spec, run.used())
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let agent = builder
        .store(store.unwrap_or_else(|| service.store.clone()))
        .cancel_token(cancel)
        .build()
        .map_err(strategy_error)?;
    let key = id.clone();
    tokio::spawn(async move {
        if let Err(e) = work(agent).await {
            tracing::warn!(run = %key, error = %e, "a run continued by the server stopped");
        }
        drop(held);
        drop(tracked);
    });
    Ok(accepted(id.as_str(), "running"))
}

/// 202, with the run and what it is now doing.
fn accepted(id: &str, status: &str) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(json!({"run_id": id, "status": status})),
    )
        .into_response()
}

/// How long a resume on a fleet waits for the holder of a run that has just ended to
/// give up its lease.
const LETTING_GO: std::time::Duration = std::time::Duration::from_secs(3);

/// `POST /api/runs/{id}/resume`: continues a run that stopped (a crash, a cancellation).
async fn resume(
    State(service): State<Arc<PlanService>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let rid = RunId::new(&id);
    let run = service
        .runs
        .check_continuable(&rid, Continuation::Resume)
        .await
        .map_err(|e| runs_error(e, &id))?;
    match &service.fleet {
        // A worker continues it from its journal.
        Some(fleet) => {
            // A holder that has just ended the run (cancelled, failed) lets go of its
            // lease a moment after its status is stored: give it that moment.
            let ended = run.stored.status.is_terminal();
            let deadline = tokio::time::Instant::now() + LETTING_GO;
            let mut queued = fleet.requeue(&rid).await.map_err(ApiError::internal)?;
            while !queued && ended && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                queued = fleet.requeue(&rid).await.map_err(ApiError::internal)?;
            }
            if queued {
                Ok(accepted(&id, "queued"))
            } else {
                Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "run `{id}` is {}, or a live process holds it: only a stopped run can be resumed",
                        run.stored.status
                    ),
                ))
            }
        }
        None => {
            continue_run(&service, run, move |agent| async move {
                agent.resume(&rid).await
            })
            .await
        }
    }
}

/// `GET /api/runs/{id}/versions`: every plan the run had, numbered from 0 (the first
/// plan, each replan, each edit approved in place of a waiting plan), as `plan diff
/// --list --json` lists them.
async fn versions_of(
    State(service): State<Arc<PlanService>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let run = load(&service, &id).await?;
    let versions = PlanVersion::from_events(&run.events);
    Ok(Json(json!(versions)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiffQuery {
    #[serde(default)]
    from: Option<usize>,
    #[serde(default)]
    to: Option<usize>,
}

/// `GET /api/runs/{id}/diff?from=A&to=B`: how the run's plan changed between two versions
/// (the last two by default), as `plan diff --json` says it: steps added, removed and
/// changed, the finished outputs kept and invalidated, and the forecast of each version
/// (calls, tokens, time, dollars when the model's price is known) from the store's
/// history. What an approval of a replan is asked about.
async fn diff_of(
    State(service): State<Arc<PlanService>>,
    Path(id): Path<String>,
    Query(q): Query<DiffQuery>,
) -> ApiResult<Json<Value>> {
    let run = load(&service, &id).await?;
    let versions = PlanVersion::from_events(&run.events);
    let n = versions.len();
    let (from, to) = match (q.from, q.to) {
        (Some(a), Some(b)) => (a, b),
        (None, None) if n >= 2 => (n - 2, n - 1),
        (None, None) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("run `{id}` has {n} plan version(s): nothing to compare"),
            ));
        }
        _ => return Err(ApiError::bad("give both from and to, or neither")),
    };
    if from >= n || to >= n {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "run `{id}` has plan versions 0 to {}: GET /api/runs/{id}/versions lists them",
                n.saturating_sub(1)
            ),
        ));
    }
    let spec = RunSpec::from_record(&run.record).unwrap_or_default();
    let forecaster = plan_exec::forecast::Forecaster::mine(
        service.store.as_ref(),
        &spec.model,
        spec.limits.concurrency,
        service.runtime.model_price(&spec),
    )
    .await
    .planning_as(&run);
    let (a, b) = (&versions[from], &versions[to]);
    // The diff's fields at the top level, as `plan diff --json` prints them.
    let mut out = json!(PlanDiff::between_versions(a, b));
    if let Some(map) = out.as_object_mut() {
        map.insert("run_id".to_owned(), json!(id));
        map.insert(
            "from".to_owned(),
            json!({"version": a.version, "origin": a.origin, "reason": a.reason}),
        );
        map.insert(
            "to".to_owned(),
            json!({"version": b.version, "origin": b.origin, "reason": b.reason}),
        );
        map.insert(
            "forecast".to_owned(),
            json!({"before": forecaster.forecast(&a.plan), "after": forecaster.forecast(&b.plan)}),
        );
    }
    Ok(Json(out))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RerunBody {
    #[serde(default)]
    plan: Option<Value>,
    #[serde(default)]
    from: Vec<String>,
}

/// `POST /api/runs/{id}/rerun`: a new run of a stored run's goal, with its spec, running
/// only what changed (`{"plan": {...}}` an edited plan, `{"from": ["step"]}` steps to run
/// again with everything downstream). 201 with the new run's id.
async fn rerun(
    State(service): State<Arc<PlanService>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body: RerunBody = optional_json(body)?;
    if service.fleet.is_some() {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "re-runs are not served by a fleet server yet: run `plan rerun {id} --store` with the fleet's store"
            ),
        ));
    }
    let parent = load(&service, &id).await?;
    let mut spec = RunSpec::from_record(&parent.record)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    spec.overrides.clear();
    if let Some(needs) = spec.needs.local_only() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "run `{id}` used {needs}, which only the process that started it has: re-run it there with `plan rerun`"
            ),
        ));
    }
    let mut request = Rerun::new();
    if let Some(value) = body.plan {
        let plan: Plan = serde_json::from_value(value).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the plan is not a plan: {e}"),
            )
        })?;
        request = request.with_plan(plan);
    }
    for step in body.from {
        request = request.from_step(step);
    }
    let agent = agent_for(&service, &spec)?;
    let handle = agent
        .start_rerun(&parent, request)
        .await
        .map_err(strategy_error)?;
    let new = in_background(&service, handle)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"run_id": new.as_str(), "parent": id})),
    )
        .into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    #[serde(default)]
    plan: Option<Value>,
}

/// `POST /api/runs/{id}/approve`: runs the plan of a run awaiting approval, or the edited
/// plan in the body (`{"plan": {...}}`), checked first: an invalid plan is refused (422)
/// with every problem, and the run keeps waiting.
async fn approve(
    State(service): State<Arc<PlanService>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body: ApproveBody = optional_json(body)?;
    let rid = RunId::new(&id);
    let run = service
        .runs
        .check_continuable(&rid, Continuation::Approve)
        .await
        .map_err(|e| runs_error(e, &id))?;
    let edited: Option<Plan> = match body.plan {
        Some(value) => {
            let plan: Plan = serde_json::from_value(value).map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("the plan is not a plan: {e}"),
                )
            })?;
            PlanGraph::with_limits(plan.clone(), &plan_core::Limits::with_max_steps(usize::MAX))
                .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
            Some(plan)
        }
        None => None,
    };
    continue_run(&service, run, move |agent| async move {
        agent.approve(&rid, edited).await
    })
    .await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /api/runs/{id}/reject`: ends a run awaiting approval as `rejected`.
async fn reject(
    State(service): State<Arc<PlanService>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<RunReport>> {
    let body: RejectBody = optional_json(body)?;
    let report = service
        .runs
        .reject(&RunId::new(&id), body.reason)
        .await
        .map_err(|e| runs_error(e, &id))?;
    Ok(Json(report))
}
