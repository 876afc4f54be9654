//! The console's one error shape: `{"error": "...", "code": "..."}` with
//! the matching status. Redis' own errors (which name its host) are logged,
//! not shown.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use spool_queue::Error;

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: u16,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Json(json!({ "error": self.message, "code": self.code })),
        )
            .into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match &e {
            Error::NotFound { .. } => ApiError::new(404, "not_found", e.to_string()),
            Error::InvalidOption { .. }
            | Error::PayloadTooLarge { .. }
            | Error::InvalidQueueName { .. } => ApiError::new(400, "invalid", e.to_string()),
            // Redis' own errors name its host and port: logged here, not
            // shown to whoever sent the request.
            _ if e.is_transient() => {
                tracing::warn!(error = %e, "Redis unavailable");
                ApiError::new(
                    503,
                    "redis_unavailable",
                    "Redis is not answering; try again (the console's log has the details)",
                )
            }
            _ => {
                tracing::error!(error = %e, "internal error");
                ApiError::new(
                    500,
                    "internal",
                    "internal error (the console's log has the details)",
                )
            }
        }
    }
}
