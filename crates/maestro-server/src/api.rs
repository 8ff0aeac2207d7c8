//! The `/v1` routes. Each handler parses, authorises, calls the library the CLI calls, and maps
//! the outcome to a status code.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maestro_core::JobId;
use maestro_core::audit::AuditRecord;
use maestro_core::control::{LookupError, find_job};
use maestro_core::progress::{self, JobFilter};
use maestro_core::runner::{Accepted, RunError, SubmitRequest};
use maestro_core::spec::SpecFormat;
use maestro_core::state::{JobRecord, JobState, PageQuery, StateStore};
use maestro_core::trace::TraceId;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::AppState;
use crate::auth::{Caller, RequestTrace};
use crate::error::{ApiError, ErrorBody};
use crate::scheduler::Taken;
use crate::tokens::Role;

type Shared = State<Arc<AppState>>;

/// The OpenAPI document of the API (served at `/v1/openapi.json`, kept in `docs/openapi.json`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Maestro API",
        description = "Submit, watch, approve and cancel jobs on a Maestro server (`mc serve`). Every request but health and this document needs `Authorization: Bearer <token>`; errors are `{\"error\": \"...\"}`.",
        license(name = "Apache-2.0")
    ),
    paths(
        submit_job,
        validate_job,
        list_jobs,
        show_job,
        job_logs,
        cancel_job,
        approve_job,
        reject_job,
        health,
        metrics
    ),
    components(schemas(
        ErrorBody,
        Submitted,
        Validated,
        JobSummary,
        JobList,
        UnreadableJob,
        JobDetail,
        Decision,
        ActionResult,
        Health
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document as served and committed: pretty JSON with a final newline.
pub fn openapi_json() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
    text.push('\n');
    text
}

/// A job was accepted.
#[derive(Debug, Serialize, ToSchema)]
pub struct Submitted {
    /// The new job's id.
    pub job_id: String,
    /// `SUBMITTED` (queued) or `AWAITING_APPROVAL`.
    pub state: String,
    /// The trace id every record of the job carries.
    pub trace_id: String,
    /// Jobs that run before it as the queue stood when it was accepted (owners take turns;
    /// `0` for a job awaiting approval).
    pub queue_position: usize,
}

/// What a job would get on this server, were it submitted now.
#[derive(Debug, Serialize, ToSchema)]
pub struct Validated {
    /// The job's name.
    pub name: String,
    /// Whether policy lets it in (a production job is let in, then awaits approval).
    pub allowed: bool,
    /// Whether it would wait for an approver (`AWAITING_APPROVAL`) before it runs.
    pub awaits_approval: bool,
    /// Every policy's verdict, as `mc validate` prints them.
    #[schema(value_type = Vec<Object>)]
    pub policies: serde_json::Value,
}

/// One job in a listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobSummary {
    /// Its id.
    pub job_id: String,
    /// Its name.
    pub name: String,
    /// Its owner.
    pub owner: Option<String>,
    /// Its environment.
    pub environment: Option<String>,
    /// Its current state.
    pub state: String,
    /// When it was submitted.
    pub submitted_at: String,
    /// Its trace id.
    pub trace_id: String,
    /// Not over, yet nothing drives it any more (its process or server died): `mc gc`, or a
    /// server's start, settles it.
    pub stale: bool,
    /// How long it has taken so far, in seconds (`null` before it started).
    pub duration_seconds: Option<f64>,
}

/// A page of jobs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    /// The jobs of this page.
    pub jobs: Vec<JobSummary>,
    /// Pass as `cursor` for the next page; absent on the last page. A filtered page may hold
    /// fewer than `limit` jobs, or none, and still have one: the server looks at no more than
    /// a fixed number of jobs per page, so that a page costs the same whatever the store's size.
    pub next_cursor: Option<String>,
    /// How many jobs this page and the pages after it hold, when the listing is unfiltered and
    /// truncated (the store counts them from its index); absent otherwise.
    pub total: Option<usize>,
    /// Jobs this page came to and could not read (a corrupt history), left out of `jobs`
    /// and named here so that a listing never hides them; absent when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<UnreadableJob>,
}

/// A job a listing could not read.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnreadableJob {
    /// Its id.
    pub job_id: String,
    /// Why it could not be read.
    pub error: String,
}

/// Everything recorded about a job.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobDetail {
    /// The job, as listed.
    #[serde(flatten)]
    pub summary: JobSummary,
    /// Where its spec came from.
    pub source: String,
    /// The name its spec is stored under in the job's record.
    pub spec_file: String,
    /// Its history, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub transitions: serde_json::Value,
    /// Every policy's verdict (`null` before policy decided).
    #[schema(value_type = Option<Vec<Object>>)]
    pub verdicts: serde_json::Value,
    /// Step results.
    #[schema(value_type = Vec<Object>)]
    pub steps: serde_json::Value,
    /// The step running now.
    #[schema(value_type = Object, nullable = true)]
    pub current_step: serde_json::Value,
    /// How long it has taken so far, in seconds.
    pub duration_seconds: Option<f64>,
}

/// An approver's decision.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Why (kept in the job's record and the audit log).
    pub reason: Option<String>,
}

/// What a cancel, approve or reject did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionResult {
    /// The job.
    pub job_id: String,
    /// Its state afterwards.
    pub state: String,
    /// What happened, in words.
    pub message: String,
}

/// The server's health.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `draining` while it shuts down.
    pub status: String,
    /// The server's version.
    pub version: String,
}

/// Jobs a filtered page of `GET /v1/jobs` looks at, at most, in a store that filters by reading
/// jobs (the file store): a rare filter then gets short pages with a cursor rather than one
/// request that reads the whole store.
const MAX_EXAMINED_PER_PAGE: usize = 1000;

/// Filters and paging of `GET /v1/jobs`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Only jobs in these states (comma-separated, e.g. `running,failed`).
    pub state: Option<String>,
    /// Only jobs of this owner.
    pub owner: Option<String>,
    /// Only jobs for this environment.
    pub environment: Option<String>,
    /// Only jobs submitted since: a duration ago (`30m`, `2h`, `7d`) or an RFC 3339 time.
    pub since: Option<String>,
    /// Jobs per page (1 to 500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page (or any job id, or an unambiguous prefix of
    /// one: the page starts after that job).
    pub cursor: Option<String>,
}

/// Options of `GET /v1/jobs/{id}/logs`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct LogsQuery {
    /// Keep the response open and stream new lines until the job ends.
    pub follow: Option<bool>,
    /// Resume: only lines whose `seq` is greater than this.
    pub after: Option<u64>,
}

fn audit(
    state: &AppState,
    job_id: Option<JobId>,
    trace_id: &TraceId,
    caller: &Caller,
    event: &str,
    details: serde_json::Value,
) -> Result<(), ApiError> {
    let mut details = details;
    details["identity"] = json!(caller.identity());
    details["via"] = json!("api");
    state
        .audit
        .append(&AuditRecord::new(
            job_id,
            trace_id,
            Some(caller.identity()),
            event,
            details,
        ))
        .map_err(ApiError::internal)
}

fn lookup(state: &AppState, text: &str) -> Result<JobId, ApiError> {
    find_job(state.store.as_ref(), text).map_err(|error| match error {
        LookupError::Store(error) => ApiError::from(error),
        LookupError::NoMatch { .. } => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{error}; GET /v1/jobs lists the jobs"),
        ),
        other => ApiError::bad_request(other),
    })
}

fn summary(store: &dyn StateStore, record: &JobRecord) -> Result<JobSummary, ApiError> {
    Ok(JobSummary {
        job_id: record.meta.job_id.to_string(),
        name: record.meta.name.clone(),
        owner: record.meta.owner.clone(),
        environment: record.meta.environment.clone(),
        state: record.state().to_string(),
        submitted_at: record.meta.submitted_at.clone(),
        trace_id: record.meta.trace_id.to_string(),
        stale: store.is_abandoned(record)?,
        duration_seconds: progress::duration_seconds(record),
    })
}

fn spec_format(headers: &HeaderMap) -> Result<SpecFormat, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" => Ok(SpecFormat::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
            Ok(SpecFormat::Yaml)
        }
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type {content_type:?} is not a job spec: send the spec as application/json or application/yaml"
            ),
        )),
    }
}

fn spec_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the spec is larger than {} bytes, the limit of a job spec",
                    maestro_core::spec::MAX_SPEC_BYTES
                ),
            )
        } else {
            ApiError::bad_request(format!("cannot read the request body: {rejection}"))
        }
    })
}

/// The name a client read the spec from (`X-Spec-Source`), to place errors as `mc validate`
/// places them (`job.yaml:5:3: ...`); only printable text of a sane length is taken.
fn spec_source(headers: &HeaderMap) -> String {
    headers
        .get("x-spec-source")
        .and_then(|value| value.to_str().ok())
        .filter(|name| !name.is_empty() && name.len() <= 256 && !name.chars().any(char::is_control))
        .unwrap_or("request body")
        .to_owned()
}

/// Validate a job as this server would admit it from the caller (the caller is its owner, a
/// spec's `approval` block does not count), storing and running nothing: `mc validate` through
/// the server.
#[utoipa::path(
    post,
    path = "/v1/validate",
    tag = "jobs",
    request_body(content = String, description = "The job spec, JSON or YAML (see docs/spec.md)", content_type = "application/yaml"),
    params(("X-Spec-Source" = Option<String>, Header, description = "The file the spec was read from, to place errors in it (default: `request body`)")),
    responses(
        (status = 200, description = "Every policy's verdict", body = Validated),
        (status = 400, description = "Invalid spec (the CLI's messages)", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "The wrong role, or another owner", body = ErrorBody),
        (status = 413, description = "Spec larger than the limit", body = ErrorBody),
        (status = 415, description = "Not JSON or YAML", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn validate_job(
    State(state): Shared,
    caller: Caller,
    RequestTrace(trace_id): RequestTrace,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Validated>, ApiError> {
    caller.require(Role::Submit, "validate jobs")?;
    let format = spec_format(&headers)?;
    let body = spec_body(body)?;
    let source = spec_source(&headers);
    let request = SubmitRequest {
        spec_bytes: body.to_vec(),
        source: source.clone(),
        format,
        trace_id,
        runtime_override: None,
        invocation_dir: state.invocation_dir.clone(),
        caller_env: maestro_core::secret::CallerEnv::from_process_for_jobs(),
    };
    let validation = state
        .runner
        .validate_as(&request, caller.identity())
        .await
        .map_err(|error| match error {
            RunError::Spec(error) => ApiError::bad_request(error.describe(&source, &body)),
            RunError::OwnerMismatch { .. } => ApiError::forbidden(error),
            error if error.is_user_error() => ApiError::bad_request(error),
            error => ApiError::internal(error),
        })?;
    let denials: Vec<_> = validation.policies.denials().collect();
    let awaits_approval = !denials.is_empty()
        && denials
            .iter()
            .all(|verdict| verdict.policy == maestro_core::runner::APPROVAL_POLICY);
    Ok(Json(Validated {
        name: validation.spec.name.clone(),
        allowed: denials.is_empty() || awaits_approval,
        awaits_approval,
        policies: serde_json::to_value(&validation.policies.verdicts).unwrap_or_default(),
    }))
}

/// Submit a job: the body is the spec, stored byte for byte.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    request_body(content = String, description = "The job spec, JSON or YAML (see docs/spec.md)", content_type = "application/yaml"),
    params(("X-Trace-Id" = Option<String>, Header, description = "Trace id for every record of the job (default: a new one)")),
    responses(
        (status = 201, description = "Accepted and queued (or awaiting approval)", body = Submitted),
        (status = 400, description = "Invalid spec (the CLI's messages)", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Denied by policy (with every verdict), the wrong role, or another owner", body = ErrorBody),
        (status = 413, description = "Spec larger than the limit", body = ErrorBody),
        (status = 415, description = "Not JSON or YAML", body = ErrorBody),
        (status = 429, description = "The queue is full, or the caller has as many jobs waiting as one owner may", body = ErrorBody),
        (status = 503, description = "The server is shutting down", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn submit_job(
    State(state): Shared,
    caller: Caller,
    RequestTrace(trace_id): RequestTrace,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Submitted>), ApiError> {
    caller.require(Role::Submit, "submit jobs")?;
    let format = spec_format(&headers)?;
    let body = spec_body(body)?;
    if state.scheduler.is_full() {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "the queue is full ({} jobs wait to run); retry later",
                state.scheduler.queue_limit()
            ),
        ));
    }
    // On the server the owner is the caller: its line is the one this job would join.
    if let Some((waiting, limit)) = state.scheduler.owner_is_full(caller.identity()) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{} has {waiting} jobs waiting to run, the most one owner may queue (--queue-limit-per-owner {limit}, counted on every server of a shared queue); retry when some have started",
                caller.identity()
            ),
        ));
    }
    let request = SubmitRequest {
        spec_bytes: body.to_vec(),
        source: format!(
            "{}{}",
            maestro_core::state::SERVER_SOURCE,
            caller.identity()
        ),
        format,
        trace_id: trace_id.clone(),
        runtime_override: None,
        invocation_dir: state.invocation_dir.clone(),
        // `env` secrets and passed-through variables of server jobs come from the server's own
        // environment, its `MAESTRO_*` settings left out.
        caller_env: maestro_core::secret::CallerEnv::from_process_for_jobs(),
    };
    let accepted = state
        .runner
        .accept(request, caller.identity())
        .await
        .map_err(|error| match error {
            RunError::OwnerMismatch { .. } => ApiError::forbidden(error),
            error if error.is_user_error() => ApiError::bad_request(error),
            error => ApiError::internal(error),
        })?;
    let (job, job_state) = match accepted {
        Accepted::Denied(report) => {
            state
                .scheduler
                .metrics()
                .set(report.job_id, JobState::Denied);
            let reasons: Vec<String> = report
                .policies
                .denials()
                .flat_map(|verdict| {
                    verdict
                        .reasons
                        .iter()
                        .map(move |reason| format!("{}: {reason}", verdict.policy))
                })
                .collect();
            return Err(ApiError {
                status: StatusCode::FORBIDDEN,
                body: ErrorBody {
                    error: format!("denied by policy: {}", reasons.join("; ")),
                    job_id: Some(report.job_id.to_string()),
                    state: Some(JobState::Denied.to_string()),
                    verdicts: serde_json::to_value(&report.policies.verdicts).ok(),
                },
            });
        }
        Accepted::Queued(job) => (job, JobState::Submitted),
        Accepted::AwaitingApproval(job) => (job, JobState::AwaitingApproval),
    };
    let job_id = job.job_id();
    state.scheduler.metrics().set(job_id, job_state);
    state.scheduler.mark(job_id).map_err(|error| {
        ApiError::internal(format!(
            "cannot record job {job_id} in the queue {}: {error}",
            state.scheduler.describe_queue()
        ))
    })?;
    audit(
        &state,
        Some(job_id),
        &trace_id,
        &caller,
        "api.job_submitted",
        json!({ "state": job_state }),
    )?;
    let queue_position = if job_state == JobState::AwaitingApproval {
        state.scheduler.hold(job);
        0
    } else {
        state.scheduler.enqueue(job)
    };
    Ok((
        StatusCode::CREATED,
        Json(Submitted {
            job_id: job_id.to_string(),
            state: job_state.to_string(),
            trace_id: trace_id.to_string(),
            queue_position,
        }),
    ))
}

/// List jobs, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of jobs", body = JobList),
        (status = 400, description = "A bad filter", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_jobs(
    State(state): Shared,
    _caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobList>, ApiError> {
    let Query(query) = query.map_err(|error| ApiError::bad_request(error.body_text()))?;
    let mut filter = JobFilter::default();
    if let Some(states) = &query.state {
        for name in states.split(',').filter(|name| !name.trim().is_empty()) {
            filter
                .states
                .push(JobFilter::parse_state(name).map_err(ApiError::bad_request)?);
        }
    }
    filter.owner = query.owner.clone();
    filter.environment = query.environment.clone();
    if let Some(since) = &query.since {
        filter.since = Some(
            JobFilter::parse_since(since, progress::Timestamp::now())
                .map_err(ApiError::bad_request)?,
        );
    }
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and 500, not {limit}"
        )));
    }
    // A job id (the next_cursor of a page, whether or not that job still exists), or an
    // unambiguous prefix of one, as job ids are taken everywhere (`mc status --before 01a2`).
    let cursor = match &query.cursor {
        Some(text) => Some(match JobId::try_parse(text) {
            Ok(job_id) => job_id,
            Err(_) => lookup(&state, text)?,
        }),
        None => None,
    };
    let unfiltered = filter.is_empty();
    let page = state.store.list_page(&PageQuery {
        before: cursor,
        limit,
        filter,
        max_examined: MAX_EXAMINED_PER_PAGE,
    })?;
    let total = match page.next_cursor {
        Some(next) if unfiltered => Some(page.jobs.len() + state.store.count_older(next)?),
        Some(_) | None => None,
    };
    let jobs = page
        .jobs
        .iter()
        .map(|record| summary(state.store.as_ref(), record))
        .collect::<Result<_, _>>()?;
    let unreadable = page
        .unreadable
        .iter()
        .map(|(job_id, error)| UnreadableJob {
            job_id: job_id.to_string(),
            error: error.clone(),
        })
        .collect();
    Ok(Json(JobList {
        jobs,
        unreadable,
        next_cursor: page.next_cursor.map(|cursor| cursor.to_string()),
        total,
    }))
}

/// The job id of a request's path; one that cannot be read (not UTF-8) is a JSON error, as
/// every error is.
fn job_path(id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    id.map(|Path(id)| id).map_err(|error| {
        ApiError::bad_request(format!(
            "not a job id: {}; ids are UUIDs or prefixes of them",
            error.body_text()
        ))
    })
}

/// One job: transitions, verdicts, steps, the step running now.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "A job id, or an unambiguous prefix of one")),
    responses(
        (status = 200, description = "The job", body = JobDetail),
        (status = 400, description = "Not a job id, or an ambiguous prefix", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn show_job(
    State(state): Shared,
    _caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<JobDetail>, ApiError> {
    let id = job_path(id)?;
    let job_id = lookup(&state, &id)?;
    let record = state.store.load(job_id)?;
    let steps = crate::logs::step_names(state.store.as_ref(), &record)?;
    let current = progress::current_step(state.store.as_ref(), &record, &steps);
    Ok(Json(JobDetail {
        summary: summary(state.store.as_ref(), &record)?,
        source: record.meta.source.clone(),
        spec_file: record.meta.spec_file.clone(),
        transitions: serde_json::to_value(&record.transitions).unwrap_or_default(),
        verdicts: progress::verdicts(&record),
        steps: serde_json::to_value(&record.steps).unwrap_or_default(),
        current_step: serde_json::to_value(current).unwrap_or_default(),
        duration_seconds: progress::duration_seconds(&record),
    }))
}

/// A job's recorded output as JSON lines (`{"seq", "step", "line"}`); with `follow=true`, new
/// lines as they are written until the job ends, then `{"end": true, "state": ...}`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/logs",
    tag = "jobs",
    params(("id" = String, Path, description = "A job id, or an unambiguous prefix of one"), LogsQuery),
    responses(
        (status = 200, description = "JSON lines", content_type = "application/x-ndjson", body = String),
        (status = 400, description = "Not a job id, an ambiguous prefix, or a bad query", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 429, description = "Too many log followers", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn job_logs(
    State(state): Shared,
    _caller: Caller,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let id = job_path(id)?;
    let Query(query) = query.map_err(|error| ApiError::bad_request(error.body_text()))?;
    let job_id = lookup(&state, &id)?;
    let record = state.store.load(job_id)?;
    let steps = crate::logs::step_names(state.store.as_ref(), &record)?;
    let after = query.after.unwrap_or(0);
    let ndjson = [(header::CONTENT_TYPE, "application/x-ndjson")];
    if !query.follow.unwrap_or(false) {
        let body = crate::logs::recorded(state.store.as_ref(), job_id, &steps, after)?;
        return Ok((ndjson, body).into_response());
    }
    let permit = Arc::clone(&state.followers)
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many clients follow logs now; retry later, or read without follow",
            )
        })?;
    let stream = crate::logs::follow(
        Arc::clone(&state.store),
        job_id,
        steps,
        after,
        permit,
        state.scheduler.settles_abandoned_within(),
    );
    Ok((ndjson, Body::from_stream(stream)).into_response())
}

/// Cancel a job: a queued one never runs, a running one is stopped as Ctrl-C would stop it.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    tag = "jobs",
    params(("id" = String, Path, description = "A job id, or an unambiguous prefix of one")),
    responses(
        (status = 200, description = "Cancelled, or had already ended", body = ActionResult),
        (status = 400, description = "Not a job id, or an ambiguous prefix", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Neither the owner nor the cancel role", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is not driven by this server", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn cancel_job(
    State(state): Shared,
    caller: Caller,
    RequestTrace(trace_id): RequestTrace,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ActionResult>, ApiError> {
    let id = job_path(id)?;
    let job_id = lookup(&state, &id)?;
    let record = state.store.load(job_id)?;
    let owns = record
        .meta
        .owner
        .as_deref()
        .is_some_and(|owner| maestro_core::identity::same_identity(owner, caller.identity()));
    if !owns {
        caller.require(Role::Cancel, "cancel another identity's job")?;
    }
    let result = |job_state: JobState, message: String| {
        Json(ActionResult {
            job_id: job_id.to_string(),
            state: job_state.to_string(),
            message,
        })
    };
    if record.state().is_terminal() {
        let job_state = record.state();
        return Ok(result(
            job_state,
            format!("job {job_id} had already ended {job_state}; nothing to do"),
        ));
    }
    audit(
        &state,
        Some(job_id),
        &trace_id,
        &caller,
        "job.cancel_requested",
        json!({ "by": caller.identity() }),
    )?;
    let taken = match state.scheduler.take_for_cancel(job_id) {
        // Waiting in a shared queue: any server may take it out to cancel it.
        Taken::Unknown => match state
            .scheduler
            .take_shared(job_id, &state.invocation_dir)
            .await
        {
            Some(job) => Taken::Pending(Box::new(job)),
            None => Taken::Unknown,
        },
        taken => taken,
    };
    match taken {
        Taken::Pending(job) => {
            let job_state = state
                .scheduler
                .cancel_pending(*job)
                .await
                .map_err(ApiError::internal)?;
            Ok(result(
                job_state,
                format!("job {job_id} was cancelled before it ran"),
            ))
        }
        taken @ (Taken::Running(_) | Taken::Unknown) => {
            match taken {
                Taken::Running(token) => token.cancel(),
                // Run or held for an approver by another server of a shared queue (a server's
                // job names no driver process; an `mc submit`'s does): that server stops it,
                // or ends it before it runs.
                _ if state.scheduler.is_shared()
                    && record.meta.driver.is_none()
                    && state.store.is_live(job_id)? =>
                {
                    state
                        .scheduler
                        .record_cancel(job_id, caller.identity())
                        .map_err(ApiError::internal)?;
                }
                _ => {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        not_driven_here(&state, &record)?,
                    ));
                }
            }
            // Wait (a bounded time) until the runner has recorded the end.
            let deadline = tokio::time::Instant::now() + state.cancel_wait;
            loop {
                let job_state = state.store.load(job_id)?.state();
                if job_state == JobState::Cancelled {
                    return Ok(result(job_state, format!("job {job_id} was cancelled")));
                }
                if job_state.is_terminal() {
                    return Ok(result(
                        job_state,
                        format!("job {job_id} ended {job_state} before the cancel reached it"),
                    ));
                }
                if tokio::time::Instant::now() >= deadline {
                    return Ok(result(
                        job_state,
                        format!(
                            "job {job_id} is being cancelled; GET /v1/jobs/{job_id} shows when it ends"
                        ),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Why a job that has not ended cannot be cancelled through this server.
fn not_driven_here(state: &AppState, record: &JobRecord) -> Result<String, ApiError> {
    let job_id = record.meta.job_id;
    let job_state = record.state();
    Ok(if !state.store.is_live(job_id)? {
        let settles = if state.scheduler.is_shared() {
            "a server settles it once its lease runs out, or `mc gc`"
        } else {
            "`mc gc` settles it"
        };
        format!(
            "job {job_id} is {job_state} but nobody drives it any more (its server or mc died): {settles}"
        )
    } else {
        format!(
            "job {job_id} is {job_state}, run by an `mc submit`, not a server: `mc cancel {job_id}` on its machine"
        )
    })
}

/// On a shared queue, `decision` recorded first, or `409` when another came first (the first
/// counts): as the holder answers once it has applied it. Elsewhere (one server) nothing.
fn claim_decision(
    state: &AppState,
    job_id: JobId,
    decision: &crate::scheduler::RemoteDecision,
) -> Result<(), ApiError> {
    if !state.scheduler.is_shared() {
        return Ok(());
    }
    match state.scheduler.claim_decision(job_id, decision)? {
        Some(taken) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "job {job_id} was {} already by {}: the first decision counts",
                if taken.approve {
                    "approved"
                } else {
                    "rejected"
                },
                taken.by
            ),
        )),
        None => Ok(()),
    }
}

fn decision(body: &[u8]) -> Result<Decision, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Decision::default());
    }
    serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(format!(
            "the body must be empty or {{\"reason\": \"...\"}}: {error}"
        ))
    })
}

/// Where a job awaiting an approver's decision is.
enum Awaiting {
    /// Held by this server.
    Here(Box<maestro_core::runner::PendingJob>),
    /// Held by another server of the shared queue (or by none yet): the decision is recorded
    /// for the server that holds it.
    Elsewhere {
        /// The job's owner.
        owner: Option<String>,
    },
}

fn awaiting(state: &AppState, job_id: JobId) -> Result<Awaiting, ApiError> {
    if let Some(job) = state.scheduler.take_awaiting(job_id) {
        return Ok(Awaiting::Here(Box::new(job)));
    }
    if state.scheduler.is_queued(job_id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("job {job_id} is approved already and waits for its turn in the queue"),
        ));
    }
    let record = state.store.load(job_id)?;
    let job_state = record.state();
    if job_state != JobState::AwaitingApproval {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "job {job_id} is {job_state}, not AWAITING_APPROVAL: only a production job waiting for approval can be approved or rejected"
            ),
        ));
    }
    if !state.scheduler.is_shared() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "job {job_id} awaits approval but this server does not hold it (another process submitted it): approve it where it was submitted"
            ),
        ));
    }
    Ok(Awaiting::Elsewhere {
        owner: record.meta.owner,
    })
}

/// Approve a job awaiting approval (four eyes: never one's own); it then joins the queue.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/approve",
    tag = "approvals",
    params(("id" = String, Path, description = "A job id, or an unambiguous prefix of one")),
    request_body(content = Option<Decision>, content_type = "application/json"),
    responses(
        (status = 200, description = "Approved and queued", body = ActionResult),
        (status = 400, description = "Not a job id, an ambiguous prefix, or a body other than {\"reason\": ...}", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "No approve role, or the caller owns the job", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job does not await approval", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn approve_job(
    State(state): Shared,
    caller: Caller,
    RequestTrace(trace_id): RequestTrace,
    id: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Json<ActionResult>, ApiError> {
    let id = job_path(id)?;
    caller.require(Role::Approve, "approve jobs")?;
    let decision = decision(&body)?;
    let job_id = lookup(&state, &id)?;
    let approved = || {
        audit(
            &state,
            Some(job_id),
            &trace_id,
            &caller,
            "job.approved",
            json!({ "approved_by": caller.identity(), "reason": decision.reason }),
        )
    };
    // The decision as it goes on record (`decisions` note), with the time it was given.
    let taken = crate::scheduler::RemoteDecision {
        approve: true,
        by: caller.identity().to_owned(),
        reason: decision.reason.clone(),
        at: Some(maestro_core::time::now_rfc3339()),
    };
    let message = match awaiting(&state, job_id)? {
        Awaiting::Here(mut job) => {
            let at = taken.at.as_deref().unwrap_or_default();
            // Four eyes first (nothing is recorded for an approval that is refused), then the
            // decision on record before it is acted on: on a shared queue a decision given at
            // the same moment through another server may have come first.
            if let Err(error) = maestro_core::runner::ApprovalError::check(
                job_id,
                job.meta().owner.as_deref(),
                caller.identity(),
            )
            .map_err(ApiError::forbidden)
            .and_then(|()| claim_decision(&state, job_id, &taken))
            {
                state.scheduler.hold(*job);
                return Err(error);
            }
            if let Err(error) = job.approve_at(caller.identity(), decision.reason.as_deref(), at) {
                state.scheduler.hold(*job);
                return Err(ApiError::forbidden(error));
            }
            approved()?;
            // On record, so that a restart before its turn keeps the approval (the job stays
            // `AWAITING_APPROVAL` in its history until `RUNNING` carries the approval); a
            // shared queue's claim recorded it already.
            if !state.scheduler.is_shared()
                && let Err(error) = state.scheduler.record_decision(job_id, &taken)
            {
                tracing::warn!(%job_id, %error, "the approval is not on record: a restart before its turn asks for it again");
            }
            state.scheduler.enqueue_approved(*job);
            "it runs when its turn in the queue comes"
        }
        Awaiting::Elsewhere { owner } => {
            // The four eyes are checked here, where the approver is known, and again by the
            // server that holds the job.
            maestro_core::runner::ApprovalError::check(job_id, owner.as_deref(), caller.identity())
                .map_err(ApiError::forbidden)?;
            claim_decision(&state, job_id, &taken)?;
            approved()?;
            "the server of the shared queue that holds it runs it when its turn comes"
        }
    };
    Ok(Json(ActionResult {
        job_id: job_id.to_string(),
        state: JobState::AwaitingApproval.to_string(),
        message: format!("job {job_id} approved by {}; {message}", caller.identity()),
    }))
}

/// Reject a job awaiting approval: it ends `DENIED`.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/reject",
    tag = "approvals",
    params(("id" = String, Path, description = "A job id, or an unambiguous prefix of one")),
    request_body(content = Option<Decision>, content_type = "application/json"),
    responses(
        (status = 200, description = "Rejected", body = ActionResult),
        (status = 400, description = "Not a job id, an ambiguous prefix, or a body other than {\"reason\": ...}", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "No approve role", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job does not await approval", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn reject_job(
    State(state): Shared,
    caller: Caller,
    RequestTrace(trace_id): RequestTrace,
    id: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Json<ActionResult>, ApiError> {
    let id = job_path(id)?;
    caller.require(Role::Approve, "reject jobs")?;
    let decision = decision(&body)?;
    let job_id = lookup(&state, &id)?;
    let held = awaiting(&state, job_id)?;
    let taken = crate::scheduler::RemoteDecision {
        approve: false,
        by: caller.identity().to_owned(),
        reason: decision.reason.clone(),
        at: Some(maestro_core::time::now_rfc3339()),
    };
    // On record before it is acted on (a shared queue): the first decision counts.
    if let Err(error) = claim_decision(&state, job_id, &taken) {
        if let Awaiting::Here(job) = held {
            state.scheduler.hold(*job);
        }
        return Err(error);
    }
    audit(
        &state,
        Some(job_id),
        &trace_id,
        &caller,
        "job.rejected_by_approver",
        json!({ "rejected_by": caller.identity(), "reason": decision.reason }),
    )?;
    let job_state = match held {
        Awaiting::Here(job) => {
            let report = state
                .runner
                .reject(*job, caller.identity(), decision.reason.as_deref())
                .map_err(ApiError::internal)?;
            state.scheduler.metrics().set(job_id, report.state);
            state.scheduler.ended(job_id);
            report.state
        }
        Awaiting::Elsewhere { .. } => {
            // The holder records DENIED within its next look (a quarter of a second); the
            // answer says what is recorded when it has, or after a few seconds.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let job_state = state.store.load(job_id)?.state();
                if job_state != JobState::AwaitingApproval
                    || tokio::time::Instant::now() >= deadline
                {
                    break job_state;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let message = if job_state == JobState::AwaitingApproval {
        format!(
            "the rejection of job {job_id} by {} is recorded for the server that holds it, which has not applied it yet (if it approved the job meanwhile, it will not)",
            caller.identity()
        )
    } else {
        format!("job {job_id} rejected by {}", caller.identity())
    };
    Ok(Json(ActionResult {
        job_id: job_id.to_string(),
        state: job_state.to_string(),
        message,
    }))
}

/// Whether the server is up (no token needed).
#[utoipa::path(
    get,
    path = "/v1/health",
    tag = "server",
    responses((status = 200, description = "Up", body = Health))
)]
pub(crate) async fn health(State(state): Shared) -> Json<Health> {
    Json(Health {
        status: if state.scheduler.is_draining() {
            "draining".to_owned()
        } else {
            "ok".to_owned()
        },
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

/// Prometheus metrics: queue depth, running jobs, jobs by state, step durations.
#[utoipa::path(
    get,
    path = "/v1/metrics",
    tag = "server",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 401, description = "Missing or unknown token", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn metrics(State(state): Shared, _caller: Caller) -> Result<Response, ApiError> {
    let mut text = String::new();
    let mut gauge = |name: &str, help: &str, value: usize| {
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    };
    gauge(
        "maestro_queue_depth",
        "Jobs accepted and waiting for a slot to run.",
        state.scheduler.depth(),
    );
    gauge(
        "maestro_jobs_running",
        "Jobs this server runs now.",
        state.scheduler.running(),
    );
    gauge(
        "maestro_jobs_awaiting_approval",
        "Jobs waiting for an approver.",
        state.scheduler.awaiting(),
    );
    // Kept in memory and moved on each transition: a scrape costs the same whatever the
    // store's size.
    state.scheduler.metrics().render(&mut text);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// The OpenAPI document.
pub(crate) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}
