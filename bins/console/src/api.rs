//! The JSON API (docs/console.md, `GET /api/openapi.json`). Errors are
//! `{"error": "...", "code": "..."}` with the matching status; nothing in a
//! response carries the Redis password or a token.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use spool_queue::{CancelOutcome, Error, JobId, JobOptions, JobState, NewJob, Queue};

use crate::AppState;
use crate::auth::Role;
pub(crate) use crate::error::ApiError;
use crate::extract::{Admin, AdminQueue, ReadQueue, Reader};

/// Most jobs one page lists.
const MAX_PAGE: usize = 500;
/// Nodes of a flow's tree one job page shows at most.
const MAX_FLOW_NODES: usize = 1000;

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Runs a read, and once more when the first try met a broken connection:
/// the first command after Redis comes back may still be sent on the dead
/// one, and a read is safe to repeat. Writes are never repeated here.
pub(crate) async fn read<T, F, Fut>(f: F) -> Result<T, Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    match f().await {
        Err(e) if e.is_transient() => {
            tracing::debug!(error = %e, "a read failed; trying once more");
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            f().await
        }
        other => other,
    }
}

/// A queue that exists (one that was ever enqueued to): an unknown name is
/// a 404, not an empty queue. For a caller already checked.
pub(crate) async fn known(st: &AppState, name: &str) -> ApiResult<Queue> {
    let client = st.client()?;
    let queue = client.queue(name)?;
    let names = read(|| client.queues()).await?;
    if !names.iter().any(|q| q == name) {
        return Err(ApiError::new(
            404,
            "unknown_queue",
            format!("no queue {name:?}"),
        ));
    }
    Ok(queue)
}

/// A job id from a path: the queue's own rules (1 to 256 bytes, no
/// whitespace or control characters).
fn job_id(id: &str) -> ApiResult<&str> {
    if id.is_empty() || id.len() > 256 || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::new(
            400,
            "invalid_id",
            "a job id is 1 to 256 bytes without whitespace",
        ));
    }
    Ok(id)
}

pub(crate) async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    let client = match st.client() {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    match read(|| client.ping()).await {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(e) => ApiError::new(503, "redis_unavailable", e.to_string()).into_response(),
    }
}

pub(crate) async fn queues(_: Reader, State(st): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    let mut out = Vec::new();
    let client = st.client()?;
    for name in read(|| client.queues()).await? {
        let Ok(q) = client.queue(&name) else {
            continue;
        };
        match read(|| q.stats()).await {
            Ok(s) => out.push(serde_json::to_value(s).unwrap_or(Value::Null)),
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => out.push(json!({ "queue": name, "error": e.to_string() })),
        }
    }
    Ok(Json(Value::Array(out)))
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

pub(crate) async fn list_jobs(
    ReadQueue(queue, _): ReadQueue,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let state: JobState = q
        .state
        .as_deref()
        .unwrap_or("ready")
        .parse()
        .map_err(|e: String| ApiError::new(400, "invalid_state", e))?;
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let offset: usize = match q.cursor.as_deref() {
        None | Some("") => 0,
        // A cursor is a position Redis can take (LRANGE/ZRANGE take a
        // signed 64-bit index): a larger one is not a cursor.
        Some(c) => c
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= i64::MAX as usize / 2)
            .ok_or_else(|| {
                ApiError::new(
                    400,
                    "invalid_cursor",
                    "use the next_cursor of the previous page",
                )
            })?,
    };
    // One unreadable job is reported beside the page, never fails it.
    let page = read(|| queue.jobs_page(state, offset, limit)).await?;
    let next = (page.ids_read == limit).then(|| (offset + limit).to_string());
    Ok(Json(
        json!({ "jobs": page.jobs, "unreadable": page.unreadable, "next_cursor": next }),
    ))
}

pub(crate) async fn get_job(
    ReadQueue(queue, _): ReadQueue,
    Path((_, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let id = job_id(&id)?;
    let info = read(|| queue.info(id)).await?;
    let log = read(|| queue.job_log(id)).await?;
    let flow = match info.child_count {
        Some(_) => {
            let mut budget = MAX_FLOW_NODES;
            Some(flow_tree(&queue, id, &mut budget).await?)
        }
        None => None,
    };
    let mut v = serde_json::to_value(info).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("log".into(), serde_json::to_value(log).unwrap_or_default());
        if let Some(flow) = flow {
            obj.insert("children".into(), flow);
        }
    }
    Ok(Json(v))
}

/// A flow parent's children as a tree: each child with its state, what it
/// left, and its own children below it; at most `budget` nodes in all (a
/// child past it is listed without its children).
fn flow_tree<'a>(
    queue: &'a Queue,
    id: &'a str,
    budget: &'a mut usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ApiResult<Value>> + Send + 'a>> {
    Box::pin(async move {
        let children = read(|| queue.children(id)).await?;
        *budget = budget.saturating_sub(children.len());
        let mut out = Vec::with_capacity(children.len());
        for c in children {
            let below = if c.child_count > 0 && *budget > 0 {
                // A child of another queue has its own children there.
                match &c.queue {
                    Some(name) => {
                        let other = queue.client().queue(name)?;
                        flow_tree(&other, &c.id, budget).await?
                    }
                    None => flow_tree(queue, &c.id, budget).await?,
                }
            } else {
                json!([])
            };
            let mut node = serde_json::to_value(&c).unwrap_or(Value::Null);
            if let Some(obj) = node.as_object_mut() {
                obj.insert("completed".into(), json!(c.completed()));
                obj.insert("children".into(), below);
            }
            out.push(node);
        }
        Ok(Value::Array(out))
    })
}

#[derive(Deserialize)]
pub(crate) struct EnqueueQuery {
    priority: Option<i32>,
}

pub(crate) async fn enqueue(
    _: Admin,
    State(st): State<Arc<AppState>>,
    Path(queue): Path<String>,
    Query(q): Query<EnqueueQuery>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    // Enqueueing may create a queue: no existence check here.
    let queue = st.client()?.queue(&queue)?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(400, "invalid_json", format!("the body is not JSON: {e}")))?;
    let opts = JobOptions::default().priority(q.priority.unwrap_or(0));
    let (payloads, many) = match value {
        Value::Array(items) => (items, true),
        one => (vec![one], false),
    };
    if payloads.is_empty() {
        return Err(ApiError::new(
            400,
            "invalid",
            "an empty array enqueues nothing",
        ));
    }
    let jobs = payloads
        .iter()
        .map(|p| NewJob::with_options(p.to_string().into_bytes(), opts.clone()))
        .collect();
    let ids: Vec<String> = queue
        .enqueue_batch(jobs)
        .await?
        .into_iter()
        .map(|i| i.to_string())
        .collect();
    let body = if many {
        json!({ "ids": ids })
    } else {
        json!({ "id": ids[0] })
    };
    Ok((StatusCode::CREATED, Json(body)))
}

pub(crate) async fn cancel(
    AdminQueue(queue): AdminQueue,
    Path((_, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let outcome = match queue.cancel(job_id(&id)?).await? {
        CancelOutcome::Cancelled => "cancelled".to_owned(),
        CancelOutcome::Requested => "requested".to_owned(),
        CancelOutcome::AlreadyFinished(s) => format!("finished:{s}"),
        other => format!("{other:?}"),
    };
    Ok(Json(json!({ "id": id, "outcome": outcome })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeadBody {
    #[serde(default)]
    ids: Option<Vec<String>>,
    #[serde(default)]
    all: bool,
}

fn dead_ids(body: &axum::body::Bytes) -> ApiResult<(Vec<JobId>, bool)> {
    let b: DeadBody = if body.is_empty() {
        DeadBody::default()
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                400,
                "invalid_json",
                format!("expected {{\"ids\":[…]}} or {{\"all\":true}}: {e}"),
            )
        })?
    };
    match (b.ids, b.all) {
        (Some(ids), false) if !ids.is_empty() => {
            for id in &ids {
                job_id(id)?;
            }
            Ok((ids.into_iter().map(JobId::from).collect(), false))
        }
        (None, true) => Ok((Vec::new(), true)),
        _ => Err(ApiError::new(
            400,
            "invalid",
            "give either a non-empty \"ids\" or \"all\": true",
        )),
    }
}

pub(crate) async fn pause(AdminQueue(queue): AdminQueue) -> ApiResult<Json<Value>> {
    pause_action(&queue, true).await
}

pub(crate) async fn resume(AdminQueue(queue): AdminQueue) -> ApiResult<Json<Value>> {
    pause_action(&queue, false).await
}

/// Pauses or resumes a queue; answers with where that left it.
async fn pause_action(queue: &Queue, pause: bool) -> ApiResult<Json<Value>> {
    let state = if pause {
        queue.pause().await?
    } else {
        queue.resume().await?
    };
    Ok(Json(serde_json::to_value(state).unwrap_or(Value::Null)))
}

/// Dead jobs touched at most per call when acting on all of them.
const DEAD_ALL: usize = 10_000;

pub(crate) async fn retry_dead(
    AdminQueue(queue): AdminQueue,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    dead_action(queue, &body, "retried").await
}

pub(crate) async fn purge_dead(
    AdminQueue(queue): AdminQueue,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    dead_action(queue, &body, "purged").await
}

/// Retries or purges the dead jobs the body names (or all of them).
async fn dead_action(
    queue: Queue,
    body: &axum::body::Bytes,
    done: &'static str,
) -> ApiResult<Json<Value>> {
    let (ids, all) = dead_ids(body)?;
    let act = |ids: Vec<JobId>| {
        let queue = queue.clone();
        async move {
            if done == "retried" {
                queue.dead_retry(&ids, DEAD_ALL).await
            } else {
                queue.dead_purge(&ids, DEAD_ALL).await
            }
        }
    };
    let mut n = 0u64;
    if all {
        // Every job dead when the call came, in batches; jobs that die
        // again meanwhile are not chased, and a call that runs out of time
        // says how many are left rather than stopping silently.
        let target = queue.stats().await?.dead;
        let until = tokio::time::Instant::now() + ALL_BUDGET;
        while n < target && tokio::time::Instant::now() < until {
            let moved = act(Vec::new()).await?;
            n += moved;
            if moved < DEAD_ALL as u64 {
                break;
            }
        }
    } else {
        n = act(ids).await?;
    }
    let remaining = queue.stats().await?.dead;
    Ok(Json(json!({ done: n, "remaining_dead": remaining })))
}

/// How long one "all" action keeps going before it answers with what is
/// left (the request timeout is 60 s).
const ALL_BUDGET: std::time::Duration = std::time::Duration::from_secs(40);

pub(crate) async fn workers(_: Reader, State(st): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    let mut out = Vec::new();
    let client = st.client()?;
    let mut glanced = 0;
    for name in read(|| client.queues()).await? {
        let Ok(q) = client.queue(&name) else {
            continue;
        };
        for w in read(|| q.workers()).await? {
            // Each running job's progress (two fields each, read together),
            // for the first MAX_PAGE running jobs of the fleet.
            let ids: Vec<String> = w
                .active
                .iter()
                .take(MAX_PAGE.saturating_sub(glanced))
                .cloned()
                .collect();
            glanced += ids.len();
            let seen = futures::future::join_all(ids.iter().map(|id| q.glance(id))).await;
            let progress: serde_json::Map<String, Value> = ids
                .into_iter()
                .zip(seen)
                .filter_map(|(id, g)| Some((id, g.ok()?.1?)))
                .collect();
            let mut v = serde_json::to_value(&w).unwrap_or(Value::Null);
            if let Some(obj) = v.as_object_mut() {
                obj.insert("progress".into(), Value::Object(progress));
            }
            out.push(v);
        }
    }
    Ok(Json(Value::Array(out)))
}

/// Server-Sent Events for one job: `progress` with each new progress value,
/// then `done` with the final job (completed, dead or cancelled), or `gone`.
/// Subscribers of one job share one poller (see [`crate::events`]).
pub(crate) async fn events(
    ReadQueue(queue, role): ReadQueue,
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((_, id)): Path<(String, String)>,
) -> ApiResult<Sse<impl futures::Stream<Item = Result<Event, std::convert::Infallible>>>> {
    let caller = st.auth.caller(&headers, role);
    let id = job_id(&id)?.to_owned();
    let first = read(|| queue.info(&id)).await?;
    let (rx, ticket) = st.events.subscribe(&caller, queue, id, first).await?;
    Ok(Sse::new(crate::events::stream(rx, ticket)).keep_alive(KeepAlive::default()))
}

/// The queue-name form of an error for unknown routes.
pub(crate) async fn not_found() -> ApiError {
    ApiError::new(404, "no_route", "no such endpoint; see /api/openapi.json")
}

/// `GET /api/whoami`: the caller's role, for the page to show only the
/// buttons it may use.
pub(crate) async fn whoami(
    Reader(role): Reader,
    State(st): State<Arc<AppState>>,
) -> ApiResult<Json<Value>> {
    let role = if role == Role::Admin { "admin" } else { "read" };
    Ok(Json(json!({ "role": role, "auth": st.auth.enabled() })))
}

/// `GET /api/queues/{queue}/history`: the last day, minute by minute.
pub(crate) async fn history(ReadQueue(queue, _): ReadQueue) -> ApiResult<Json<Value>> {
    let minutes = read(|| queue.history()).await?;
    Ok(Json(json!({
        "window_minutes": spool_queue::HISTORY_MINUTES,
        "minutes": minutes,
    })))
}

#[derive(Deserialize)]
pub(crate) struct SearchQuery {
    q: Option<String>,
}

/// Jobs a search reads at most, newest first, per state searched.
const SEARCH_SCAN: usize = 2000;

/// `GET /api/queues/{queue}/search?q=`: the job with that id, and the dead,
/// scheduled (waiting for a retry) and active jobs whose errors contain the
/// text (case-insensitive), newest first; the answer says how many jobs it
/// read and whether it stopped at its limit.
pub(crate) async fn search(
    ReadQueue(queue, _): ReadQueue,
    Query(q): Query<SearchQuery>,
) -> ApiResult<Json<Value>> {
    let text = q.q.unwrap_or_default();
    let text = text.trim();
    if text.is_empty() || text.len() > 256 {
        return Err(ApiError::new(
            400,
            "invalid_query",
            "q is 1 to 256 bytes of a job id or error text",
        ));
    }
    let mut by_id = None;
    if job_id(text).is_ok() {
        match read(|| queue.info(text)).await {
            Ok(j) => by_id = Some(j),
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let needle = text.to_lowercase();
    let mut matches = Vec::new();
    let mut scanned = 0usize;
    let mut truncated = false;
    for state in [JobState::Dead, JobState::Scheduled, JobState::Active] {
        let mut offset = 0;
        while offset < SEARCH_SCAN {
            let page = read(|| queue.jobs_page(state, offset, MAX_PAGE)).await?;
            scanned += page.jobs.len();
            for job in page.jobs {
                let hit = job
                    .last_error
                    .as_deref()
                    .into_iter()
                    .chain(job.failures.iter().map(|f| f.error.as_str()))
                    .any(|e| e.to_lowercase().contains(&needle));
                if hit && matches.len() < MAX_PAGE {
                    matches.push(job);
                }
            }
            if page.ids_read < MAX_PAGE {
                break;
            }
            offset += MAX_PAGE;
            if offset >= SEARCH_SCAN {
                truncated = true;
            }
        }
    }
    Ok(Json(json!({
        "job": by_id,
        "matches": matches,
        "scanned": scanned,
        "truncated": truncated,
    })))
}
