//! Background processing: `POST /process`, `GET /jobs` and `GET /jobs/{job_id}`, its
//! cancellation and its events (Server-Sent Events).
//!
//! `POST /process` answers 202 only once the job row is committed. Its body may be large
//! (`LARDER_IMPORT_MAX_BODY`, 64 MiB by default, instead of `LARDER_MAX_BODY`), so it is never
//! turned into a `serde_json::Value`: the top level is split into raw members, and the raw
//! `items` array text is stored as the job's payload for the worker to parse chunk by chunk.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{
    ApiError, ApiResult, FieldError, FieldErrorSchema, ProblemBody, ValidationProblemBody,
};
use super::extract::{
    QueryParams, UuidPath, is_json_body, missing_body, query_error, read_limited,
};
use super::idempotency::{self as idem, Begin, MaybeIdempotencyKey};
use super::items::ItemInput;
use super::openapi::{BadJobId, JobExpired, NotJson, NotJsonMediaType, StillRunning, Unauthorized};
use crate::domain::fields::not_an_object;
use crate::domain::job::JobStatus;
use crate::http::auth_user::AuthUser;
use crate::http::state::AppState;
use crate::jobs::kinds::IMPORT_ITEMS;
use crate::jobs::{Kinds, MAX_ATTEMPTS};
use crate::store::idempotency::KeyRef;
use crate::store::jobs::{self, Cancel, Enqueued, Job, JobFilter, NewJob};
use crate::store::{Db, now_millis};

/// Seconds a client over its job quota is told to wait: about one import's run.
const QUOTA_RETRY_AFTER: Duration = Duration::from_secs(5);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_job))
        .routes(routes!(list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(cancel_job))
        .routes(routes!(job_events))
}

/// What `POST /process` accepts.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ProcessInput {
    /// The job kind.
    #[schema(example = "import_items")]
    kind: JobKind,
    /// The rows to import, each shaped like `ItemInput`. Every row is validated on its own:
    /// a row that is not a valid item is reported in `result.rejected`, it does not refuse
    /// the job, so any JSON values are accepted here.
    #[schema(value_type = Vec<Value>)]
    items: Vec<ItemInput>,
}

#[derive(Debug, ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum JobKind {
    ImportItems,
}

/// The answer to `POST /process`.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobAccepted {
    #[schema(example = "processing")]
    pub status: &'static str,
    pub job_id: Uuid,
    #[schema(example = "/jobs/0193a0c4-8f7e-4b8e-9c51-3f1f4c1c2a11")]
    pub status_url: String,
}

/// Committed rows out of all rows.
#[derive(Debug, Serialize, ToSchema)]
pub struct Progress {
    pub done: i64,
    pub total: i64,
}

// The `ImportResult` that `jobs::kinds::import_items` stores, as the document shows it.
/// The `result` of a succeeded `import_items` job: every created id, and the first 100
/// rejected rows; the counts are exact.
#[derive(ToSchema)]
#[schema(as = ImportResult, example = json!({"created": [1, 3], "created_count": 2, "rejected": [{"index": 1, "errors": [{"loc": ["price"], "msg": "Field required", "type": "missing"}]}], "rejected_count": 1}))]
#[allow(dead_code)]
struct ImportResultSchema {
    /// The created items' ids, in row order.
    created: Vec<i64>,
    created_count: i64,
    /// The first 100 rejected rows, in row order.
    rejected: Vec<RejectedRowSchema>,
    rejected_count: i64,
}

/// A row `import_items` did not create, and why.
#[derive(ToSchema)]
#[schema(as = RejectedRow)]
#[allow(dead_code)]
struct RejectedRowSchema {
    /// The row's index in `items` (from 0).
    index: i64,
    /// Its errors, with `loc` relative to the row (`["price"]`).
    errors: Vec<FieldErrorSchema>,
}

/// Where a job is in its life: `queued` → `running` → `succeeded` or `failed` (a retry goes
/// back to `queued`); `cancelled` from `queued` at once, or from `running` after its current
/// chunk.
#[derive(ToSchema)]
#[schema(as = JobStatus, example = "running")]
#[allow(dead_code, non_camel_case_types)]
enum JobStatusSchema {
    queued,
    running,
    succeeded,
    failed,
    cancelled,
}

/// A job as `GET /jobs/{job_id}` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: Uuid,
    #[schema(example = "import_items")]
    pub kind: String,
    #[schema(value_type = JobStatusSchema)]
    pub status: JobStatus,
    pub progress: Progress,
    /// Attempts started so far (an attempt handed back at shutdown does not count).
    pub attempts: i32,
    /// What a finished job produced (`null` until then); for a cancelled import, what its
    /// committed chunks did.
    #[schema(value_type = Option<ImportResultSchema>)]
    pub result: Option<Box<RawValue>>,
    /// The last attempt's error.
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl JobView {
    fn from_job(job: Job) -> Self {
        JobView {
            id: job.id,
            kind: job.kind,
            status: job.status,
            progress: Progress {
                done: job.done,
                total: job.total,
            },
            attempts: job.attempts,
            result: job.result.and_then(|text| RawValue::from_string(text).ok()),
            error: job.error,
            created_at: job.created_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
        }
    }
}

/// Reads the body within the import limit: 413 past it, without buffering the rest.
async fn read_import_body(request: Request, limit: u64) -> ApiResult<Bytes> {
    if !is_json_body(request.headers()) {
        return Err(ApiError::unsupported_media_type("application/json"));
    }
    read_limited(request, limit).await
}

/// A checked `POST /process` body, borrowing from the request bytes.
struct ProcessRequest<'a> {
    kind: &'static str,
    /// The raw `items` array text (`[]` for kinds without items).
    items: &'a str,
    total: i64,
    /// Every top-level member, raw, for the fingerprint.
    members: BTreeMap<String, &'a RawValue>,
}

fn body_error(field: &str, kind: &str, msg: impl Into<String>) -> FieldError {
    FieldError::new(vec!["body".into(), field.into()], kind, msg)
}

/// Syntax errors are 400; a body that is JSON of the wrong shape is 422, every field at once.
// `ApiError` is large for every handler alike; boxing it is a crate-wide decision.
#[allow(clippy::result_large_err)]
fn parse_process<'a>(bytes: &'a [u8], kinds: &Kinds) -> ApiResult<ProcessRequest<'a>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(missing_body());
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::malformed_json("Malformed JSON: the body is not UTF-8"))?;
    // One pass splits the top level into raw members; only a body that is not an object
    // needs a second pass, to tell a syntax error (400) from the wrong shape (422).
    let members: BTreeMap<String, &RawValue> = match serde_json::from_str(text) {
        Ok(members) => members,
        Err(error) if error.classify() == serde_json::error::Category::Data => {
            return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => ApiError::validation(vec![not_an_object().under("body")]),
                Err(error) => ApiError::malformed_json(format!("Malformed JSON: {error}")),
            });
        }
        Err(error) => return Err(ApiError::malformed_json(format!("Malformed JSON: {error}"))),
    };
    let mut errors = Vec::new();
    let kind = match members
        .get("kind")
        .map(|raw| serde_json::from_str::<Value>(raw.get()))
    {
        None => {
            errors.push(body_error("kind", "missing", "Field required"));
            None
        }
        Some(Ok(Value::String(kind))) => match kinds.get(&kind) {
            Some(job) => Some(job.kind()),
            None => {
                errors.push(body_error(
                    "kind",
                    "literal_error",
                    format!("Input should be {}", kinds.expected()),
                ));
                None
            }
        },
        Some(_) => {
            errors.push(body_error(
                "kind",
                "string_type",
                "Input should be a valid string",
            ));
            None
        }
    };
    let items = match members.get("items") {
        Some(items) if items.get().starts_with('[') => {
            let rows: Vec<&RawValue> = serde_json::from_str(items.get())
                .map_err(|error| ApiError::malformed_json(format!("Malformed JSON: {error}")))?;
            Some((items.get(), rows.len() as i64))
        }
        Some(_) => {
            errors.push(body_error(
                "items",
                "list_type",
                "Input should be a valid list",
            ));
            None
        }
        None if kind == Some(IMPORT_ITEMS) => {
            errors.push(body_error("items", "missing", "Field required"));
            None
        }
        None => Some(("[]", 0)),
    };
    match (kind, items) {
        (Some(kind), Some((items, total))) if errors.is_empty() => Ok(ProcessRequest {
            kind,
            items,
            total,
            members,
        }),
        _ => Err(ApiError::validation(errors)),
    }
}

/// The request's fingerprint for `Idempotency-Key`: SHA-256 of its canonical JSON, exactly
/// as [`idem::fingerprint`] makes it for other routes (object keys sorted, no whitespace), but
/// written out one member — and one `items` row — at a time, so a 64 MiB import never
/// becomes a single `Value`.
fn fingerprint(members: &BTreeMap<String, &RawValue>) -> Result<Vec<u8>, serde_json::Error> {
    let mut hasher = Sha256::new();
    hasher.update(b"{");
    for (n, (name, value)) in members.iter().enumerate() {
        if n > 0 {
            hasher.update(b",");
        }
        hasher.update(serde_json::to_vec(name)?);
        hasher.update(b":");
        if name == "items" && value.get().starts_with('[') {
            let rows: Vec<&RawValue> = serde_json::from_str(value.get())?;
            hasher.update(b"[");
            for (i, row) in rows.iter().enumerate() {
                if i > 0 {
                    hasher.update(b",");
                }
                hasher.update(serde_json::to_vec(&serde_json::from_str::<Value>(
                    row.get(),
                )?)?);
            }
            hasher.update(b"]");
        } else {
            hasher.update(serde_json::to_vec(&serde_json::from_str::<Value>(
                value.get(),
            )?)?);
        }
    }
    hasher.update(b"}");
    Ok(hasher.finalize().to_vec())
}

/// Start a background job. `import_items` creates the given items for the caller; the answer
/// comes as soon as the job is stored durably. With `Idempotency-Key`, a repeat replays it.
#[utoipa::path(post, path = "/process", tag = "jobs",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[A-Za-z0-9!#$%&'*+.^_`|~:/-]{1,255}$",
        description = "A token, or a structured-field string such as `\"8e03\"`; repeats replay the first answer for 24 hours")),
    request_body(content = ProcessInput, content_type = "application/json",
        description = "Up to LARDER_IMPORT_MAX_BODY bytes (64 MiB by default)"),
    responses(
        (status = 202, description = "The job is stored and will run", body = JobAccepted,
            headers(("Location" = String, description = "/jobs/{job_id}")),
            links(("GetJobById" = (operation_id = "get_job", parameters(("job_id" = "$response.body#/job_id")))))),
        (status = 400, response = NotJson),
        (status = 401, response = Unauthorized),
        (status = 409, response = StillRunning),
        (status = 413, description = "The body is larger than LARDER_IMPORT_MAX_BODY, or holds more items than LARDER_IMPORT_MAX_ITEMS", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, response = NotJsonMediaType),
        (status = 422, description = "Unknown kind, a body that is not an object, items that are not a list, or the key was used with another body",
            body = ValidationProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "The caller already has LARDER_JOB_QUOTA jobs queued or running", body = ProblemBody, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ))]
pub async fn create_job(
    State(state): State<AppState>,
    user: AuthUser,
    MaybeIdempotencyKey(key): MaybeIdempotencyKey,
    request: Request,
) -> ApiResult<Response> {
    let bytes = read_import_body(request, state.settings.import_max_body).await?;
    let process = parse_process(&bytes, &state.jobs.kinds)?;
    let max_items = state.settings.import_max_items;
    if process.total as u64 > max_items {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Too many items: an import holds at most {max_items}"),
        ));
    }
    let key = key.as_ref().map(|key| KeyRef {
        user_id: user.id(),
        scope: "POST /process",
        key: key.as_str(),
    });
    if let Some(key) = &key {
        // The body was parsed once already; this cannot fail.
        let fingerprint = fingerprint(&process.members)
            .map_err(|error| ApiError::malformed_json(format!("Malformed JSON: {error}")))?;
        if let Begin::Answer(response) =
            idem::begin_with_fingerprint(&state.db, key, &fingerprint).await?
        {
            return Ok(response);
        }
    }
    let id = Uuid::new_v4();
    let status_url = format!("/jobs/{id}");
    let accepted = JobAccepted {
        status: "processing",
        job_id: id,
        status_url: status_url.clone(),
    };
    let response = idem::stored_json(
        StatusCode::ACCEPTED,
        &[(header::LOCATION, status_url)],
        &accepted,
    );
    let job = NewJob {
        id,
        kind: process.kind,
        owner_id: user.id(),
        payload: process.items,
        total: process.total,
        max_attempts: MAX_ATTEMPTS,
    };
    let quota = i64::try_from(state.settings.job_quota).unwrap_or(i64::MAX);
    let stored = jobs::enqueue(
        &state.db,
        &job,
        quota,
        key.as_ref().map(|key| (key, &response)),
    );
    match stored.await {
        Ok(Enqueued::Stored) => {
            state.jobs.wake_workers();
            Ok(idem::replay(&response))
        }
        Ok(Enqueued::OverQuota) => {
            idem::abandon(&state.db, key.as_ref()).await;
            Err(ApiError::too_many(
                format!("Too many jobs: at most {quota} queued or running per user"),
                QUOTA_RETRY_AFTER,
            ))
        }
        Err(error) => {
            idem::abandon(&state.db, key.as_ref()).await;
            Err(error.into())
        }
    }
}

/// A job's status and progress; its owner or an admin only.
#[utoipa::path(get, path = "/jobs/{job_id}", tag = "jobs",
    security(("bearer" = [])),
    params(("job_id" = Uuid, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 401, response = Unauthorized),
        (status = 403, description = "Another user's job", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "Job not found", body = ProblemBody, content_type = "application/problem+json"),
        (status = 410, response = JobExpired),
        (status = 422, response = BadJobId),
    ))]
pub async fn get_job(
    State(state): State<AppState>,
    user: AuthUser,
    UuidPath(job_id): UuidPath,
) -> ApiResult<Json<JobView>> {
    let job = visible_job(&state, &user, job_id).await?;
    Ok(Json(JobView::from_job(job)))
}

/// The job, if the caller may see it: 404 unknown, 403 another user's, 410 past its retention.
async fn visible_job(state: &AppState, user: &AuthUser, job_id: Uuid) -> ApiResult<Job> {
    let job = jobs::find(&state.db, job_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Job not found"))?;
    if !user.may_change(job.owner_id) {
        return Err(ApiError::forbidden("Not enough permissions"));
    }
    if job.is_expired(retention_ms(state), now_millis()) {
        return Err(ApiError::new(StatusCode::GONE, "Job expired"));
    }
    Ok(job)
}

fn retention_ms(state: &AppState) -> i64 {
    i64::try_from(state.settings.job_retention.as_millis()).unwrap_or(i64::MAX)
}

/// Jobs per page unless `limit` says otherwise, and the most it may say.
const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;

/// A page of jobs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobPage {
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A page's cursor: the last job's creation instant (µs) and id. Opaque to clients.
fn encode_cursor(job: &Job) -> String {
    format!("{}_{}", job.created_us, job.id.simple())
}

fn decode_cursor(cursor: &str) -> Option<(i64, Uuid)> {
    let (us, id) = cursor.split_once('_')?;
    if us.is_empty() || us.len() > 18 || !us.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((us.parse().ok()?, Uuid::try_parse(id).ok()?))
}

// `ApiError` is large for every handler alike; boxing it is a crate-wide decision.
#[allow(clippy::result_large_err)]
fn parse_limit(raw: Option<&String>) -> ApiResult<i64> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_LIMIT);
    };
    match raw.parse::<i64>() {
        Ok(limit) if limit < 1 => Err(query_error(
            "limit",
            "greater_than_equal",
            "Input should be greater than or equal to 1",
        )),
        Ok(limit) if limit > MAX_LIMIT => Err(query_error(
            "limit",
            "less_than_equal",
            format!("Input should be less than or equal to {MAX_LIMIT}"),
        )),
        Ok(limit) => Ok(limit),
        Err(_) => Err(query_error(
            "limit",
            "int_parsing",
            "Input should be a valid integer, unable to parse string as an integer",
        )),
    }
}

/// The caller's jobs, newest first; an admin's: everyone's, or one user's with `user_id`.
#[utoipa::path(get, path = "/jobs", tag = "jobs",
    security(("bearer" = [])),
    params(
        ("status" = Option<JobStatusSchema>, Query, description = "Only jobs in this status"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Jobs per page (default 20)"),
        ("cursor" = Option<String>, Query, pattern = "^[0-9]{1,18}_[0-9a-f]{32}$", description = "The `next_cursor` of the previous page"),
        ("user_id" = Option<i64>, Query, description = "Admins: only this user's jobs (everyone's without it). Others see only their own jobs whatever it says"),
    ),
    responses(
        (status = 200, description = "A page of jobs, newest first", body = JobPage),
        (status = 401, response = Unauthorized),
        (status = 422, description = "An unknown status, or a bad limit, cursor or user_id", body = ValidationProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn list_jobs(
    State(state): State<AppState>,
    user: AuthUser,
    QueryParams(query): QueryParams,
) -> ApiResult<Json<JobPage>> {
    let status = match query.get("status") {
        None => None,
        Some(name) => Some(JobStatus::parse(name).ok_or_else(|| {
            query_error(
                "status",
                "enum",
                "Input should be 'queued', 'running', 'succeeded', 'failed' or 'cancelled'",
            )
        })?),
    };
    let limit = parse_limit(query.get("limit"))?;
    let after = match query.get("cursor") {
        None => None,
        Some(cursor) => Some(
            decode_cursor(cursor)
                .ok_or_else(|| query_error("cursor", "value_error", "Invalid cursor"))?,
        ),
    };
    let asked: Option<i64> = match query.get("user_id") {
        None => None,
        Some(raw) => Some(raw.parse().map_err(|_| {
            query_error(
                "user_id",
                "int_parsing",
                "Input should be a valid integer, unable to parse string as an integer",
            )
        })?),
    };
    let owner_id = if user.is_admin() {
        asked
    } else {
        Some(user.id())
    };
    if !user.is_admin() && asked.is_some_and(|asked| asked != user.id()) {
        // Another user's jobs, asked by someone who may not see them: none.
        return Ok(Json(JobPage {
            jobs: Vec::new(),
            next_cursor: None,
        }));
    }
    let filter = JobFilter {
        owner_id,
        status,
        finished_after_ms: now_millis().saturating_sub(retention_ms(&state)),
        after,
    };
    let mut page = jobs::list(&state.db, &filter, limit + 1).await?;
    let next_cursor = if page.len() as i64 > limit {
        page.truncate(limit as usize);
        page.last().map(encode_cursor)
    } else {
        None
    };
    Ok(Json(JobPage {
        jobs: page.into_iter().map(JobView::from_job).collect(),
        next_cursor,
    }))
}

/// Cancels a job: a queued one at once (200, `cancelled`); a running one stops after its
/// current chunk (202, then `cancelled`, its committed rows kept and counted in `result`).
#[utoipa::path(post, path = "/jobs/{job_id}/cancel", tag = "jobs",
    security(("bearer" = [])),
    params(("job_id" = Uuid, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job was queued: it is cancelled", body = JobView),
        (status = 202, description = "The job is running: it stops after its current chunk, then is `cancelled`", body = JobView),
        (status = 401, response = Unauthorized),
        (status = 403, description = "Another user's job", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "Job not found", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "Job already finished", body = ProblemBody, content_type = "application/problem+json"),
        (status = 410, response = JobExpired),
        (status = 422, response = BadJobId),
    ))]
pub async fn cancel_job(
    State(state): State<AppState>,
    user: AuthUser,
    UuidPath(job_id): UuidPath,
) -> ApiResult<Response> {
    let job = visible_job(&state, &user, job_id).await?;
    let outcome = crate::jobs::cancel(&state.db, &state.jobs.kinds, &job.kind, job_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Job not found"))?;
    let status = match outcome {
        Cancel::Cancelled => StatusCode::OK,
        Cancel::Requested => StatusCode::ACCEPTED,
        Cancel::Finished(_) => return Err(ApiError::conflict("Job already finished")),
    };
    let job = jobs::find(&state.db, job_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Job not found"))?;
    Ok((status, Json(JobView::from_job(job))).into_response())
}

/// What a progress event carries: where the job stood once the chunk committed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProgressEvent {
    /// The chunk's number (1, 2, …), also the event's `id`.
    pub chunk: i64,
    /// Rows handled so far.
    pub done: i64,
    pub total: i64,
    /// Rows created so far.
    pub created: i64,
    /// Rows rejected so far.
    pub rejected: i64,
}

/// How long a follower waits for a notification before reading the job again anyway.
const FOLLOW_POLL: Duration = Duration::from_secs(1);
/// Progress events read at a time.
const FOLLOW_BATCH: i64 = 500;

/// A job's progress as Server-Sent Events: one `progress` event per committed chunk (its
/// `id` is the chunk's number; data: `ProgressEvent`), then one `status` event (data: the
/// job, as `GET /jobs/{job_id}` shows it), then the stream ends. Without `Last-Event-ID`, a
/// job not yet finished replays its chunks from the first, a finished one sends only its
/// status; with it, the stream resumes after that chunk. A server shutting down ends the
/// stream without a status event (a client reconnects with `Last-Event-ID`).
#[utoipa::path(get, path = "/jobs/{job_id}/events", tag = "jobs",
    security(("bearer" = [])),
    params(
        ("job_id" = Uuid, Path, description = "The job's id"),
        ("Last-Event-ID" = Option<String>, Header, nullable = false, description = "The last `progress` id received (digits): resume after it"),
    ),
    responses(
        (status = 200, description = "`event: progress` (`id`: the chunk's number, data: a ProgressEvent) per committed chunk, then `event: status` (data: a JobView); then the stream ends",
            content_type = "text/event-stream", body = String),
        (status = 401, response = Unauthorized),
        (status = 403, description = "Another user's job", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "Job not found", body = ProblemBody, content_type = "application/problem+json"),
        (status = 410, response = JobExpired),
        (status = 422, response = BadJobId),
    ))]
pub async fn job_events(
    State(state): State<AppState>,
    user: AuthUser,
    UuidPath(job_id): UuidPath,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    // Subscribed before the first read: a change made meanwhile still wakes the stream.
    let changes = state.db.job_events().subscribe();
    let job = visible_job(&state, &user, job_id).await?;
    let resume = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<i64>().ok())
        .filter(|id| *id >= 0);
    let after = match resume {
        Some(id) => id,
        // A finished job sends its status only.
        None if job.status.is_finished() => i64::MAX,
        None => 0,
    };
    let follow = Follow {
        db: state.db.clone(),
        id: job_id,
        total: job.total,
        after,
        pending: VecDeque::new(),
        changes,
        closing: state.jobs.closing.clone(),
        ended: false,
    };
    let stream = futures::stream::unfold(follow, |mut follow| async move {
        let event = follow.next_event().await?;
        Some((Ok(event), follow))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A follower of one job's events.
struct Follow {
    db: Db,
    id: Uuid,
    total: i64,
    /// The last progress event sent.
    after: i64,
    pending: VecDeque<Event>,
    changes: tokio::sync::broadcast::Receiver<Uuid>,
    /// The server is shutting down: end the stream.
    closing: tokio_util::sync::CancellationToken,
    ended: bool,
}

impl Follow {
    /// The next event, waiting for the job to move; `None` once the status was sent (or the
    /// job cannot be read any more).
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.ended || self.closing.is_cancelled() {
                return None;
            }
            // The status first: once it says finished, every chunk is committed already.
            let job = match jobs::find(&self.db, self.id).await {
                Ok(Some(job)) => job,
                Ok(None) => return None,
                Err(error) => {
                    tracing::warn!(job_id = %self.id, %error, "following a job failed");
                    return None;
                }
            };
            let rows = if self.after == i64::MAX {
                Vec::new()
            } else {
                match jobs::progress_after(&self.db, self.id, self.after, FOLLOW_BATCH).await {
                    Ok(rows) => rows,
                    Err(error) => {
                        tracing::warn!(job_id = %self.id, %error, "following a job failed");
                        return None;
                    }
                }
            };
            let more = rows.len() as i64 == FOLLOW_BATCH;
            for row in rows {
                self.after = row.seq;
                let data = ProgressEvent {
                    chunk: row.seq,
                    done: row.done,
                    total: self.total,
                    created: row.done - row.rejected_count,
                    rejected: row.rejected_count,
                };
                self.pending.push_back(
                    Event::default()
                        .event("progress")
                        .id(row.seq.to_string())
                        .data(serde_json::to_string(&data).expect("progress serialises")),
                );
            }
            if job.status.is_finished() && !more {
                let view =
                    serde_json::to_string(&JobView::from_job(job)).expect("a job serialises");
                self.pending
                    .push_back(Event::default().event("status").data(view));
                self.ended = true;
            }
            if self.pending.is_empty() {
                self.wait().await;
            }
        }
    }

    /// Until this job changes (as told in-process, or by PostgreSQL's `NOTIFY` from any
    /// process), or `FOLLOW_POLL` passes.
    async fn wait(&mut self) {
        use tokio::sync::broadcast::error::RecvError;
        let id = self.id;
        let changes = &mut self.changes;
        let changed = async {
            loop {
                match changes.recv().await {
                    Ok(changed) if changed == id => return,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => return,
                    Err(RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        tokio::select! {
            () = changed => {}
            () = tokio::time::sleep(FOLLOW_POLL) => {}
            () = self.closing.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(body: &str) -> StatusCode {
        match parse_process(body.as_bytes(), &Kinds::default()) {
            Ok(_) => StatusCode::ACCEPTED,
            Err(error) => error.status(),
        }
    }

    #[test]
    fn bodies_are_checked_without_building_values() {
        assert_eq!(
            status_of(r#"{"kind":"import_items","items":[{"name":"a","price":1}]}"#),
            StatusCode::ACCEPTED
        );
        assert_eq!(status_of("{"), StatusCode::BAD_REQUEST);
        assert_eq!(status_of("[1]"), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status_of("\"text\""), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status_of("[1, oops]"), StatusCode::BAD_REQUEST);
        assert_eq!(
            status_of(r#"{"kind": "import_items", "items": []} trailing"#),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of(r#"{"kind": "import_items", "items": [1,]}"#),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of(r#"{"kind":"nope","items":[]}"#),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            status_of(r#"{"kind":"test_panic"}"#),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            status_of(r#"{"kind":"import_items","items":{}}"#),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            status_of(r#"{"kind":"import_items"}"#),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let parsed = parse_process(
            br#"{"kind":"import_items","items":[1, 2 ,3]}"#,
            &Kinds::default(),
        )
        .unwrap();
        assert_eq!((parsed.total, parsed.items), (3, "[1, 2 ,3]"));
    }

    #[test]
    fn fingerprints_are_the_canonical_json_of_the_whole_body() {
        let print = |body: &[u8]| {
            fingerprint(&parse_process(body, &Kinds::default()).unwrap().members).unwrap()
        };
        let a = br#"{"kind":"import_items","items":[{"name":"a b","price":1.5,"quantity":2}]}"#;
        let b = b"{ \"items\" : [ {\"quantity\": 2, \"name\": \"a b\", \"price\": 1.5} ],\n \"kind\": \"import_items\" }";
        let c = br#"{"kind":"import_items","items":[{"name":"ab","price":1.5,"quantity":2}]}"#;
        assert_eq!(print(a), print(b));
        assert_ne!(print(a), print(c));
        let whole: Value = serde_json::from_slice(b).unwrap();
        assert_eq!(print(b), idem::fingerprint(&whole));
    }
}
