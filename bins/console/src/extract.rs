//! The steps every API handler shares, as extractors: the caller's check
//! ([`Reader`], [`Admin`]) and, for `/api/queues/{queue}/…`, the queue that
//! must exist ([`ReadQueue`], [`AdminQueue`]). The check runs before
//! anything else of the request is looked at.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use spool_queue::Queue;

use crate::AppState;
use crate::api::known;
use crate::auth::Role;
use crate::error::ApiError;

/// A caller allowed to read, with its role.
pub(crate) struct Reader(pub(crate) Role);

/// A caller allowed to act (admin).
pub(crate) struct Admin;

/// A caller allowed to read, and the queue of the path, which exists.
pub(crate) struct ReadQueue(pub(crate) Queue, pub(crate) Role);

/// An admin caller, and the queue of the path, which exists.
pub(crate) struct AdminQueue(pub(crate) Queue);

fn check(parts: &Parts, st: &AppState, need: Role) -> Result<Role, ApiError> {
    st.auth.check(&parts.headers, &parts.method, need)
}

/// The `{queue}` of the path, opened when it exists.
async fn path_queue(parts: &mut Parts, st: &Arc<AppState>) -> Result<Queue, ApiError> {
    let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, st)
        .await
        .map_err(|e| ApiError::new(400, "invalid_path", e.body_text()))?;
    let name = params
        .get("queue")
        .ok_or_else(|| ApiError::new(500, "internal", "a queue route without {queue}"))?;
    known(st, name).await
}

impl FromRequestParts<Arc<AppState>> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &Arc<AppState>) -> Result<Self, ApiError> {
        check(parts, st, Role::Read).map(Reader)
    }
}

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &Arc<AppState>) -> Result<Self, ApiError> {
        check(parts, st, Role::Admin).map(|_| Admin)
    }
}

impl FromRequestParts<Arc<AppState>> for ReadQueue {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &Arc<AppState>) -> Result<Self, ApiError> {
        let role = check(parts, st, Role::Read)?;
        Ok(ReadQueue(path_queue(parts, st).await?, role))
    }
}

impl FromRequestParts<Arc<AppState>> for AdminQueue {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &Arc<AppState>) -> Result<Self, ApiError> {
        check(parts, st, Role::Admin)?;
        Ok(AdminQueue(path_queue(parts, st).await?))
    }
}
