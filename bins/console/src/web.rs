//! Routes: the API, the login for browsers, and the dashboard (one page,
//! embedded in the binary: plain HTML, CSS and JS, no build step).

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};

use crate::api::{self, ApiError};
use crate::auth::{CSRF_COOKIE, Role, SESSION_COOKIE};
use crate::{AppState, MAX_BODY};

const INDEX: &str = include_str!("../assets/index.html");
/// Largest login body: a token is at most a few hundred bytes, and nothing
/// larger is read from someone not yet authenticated.
const LOGIN_BODY: usize = 4 << 10;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/login",
            post(login).layer(DefaultBodyLimit::max(LOGIN_BODY)),
        )
        .route("/logout", post(logout))
        .route("/healthz", get(api::healthz))
        .route("/api/openapi.json", get(openapi))
        .route("/api/queues", get(api::queues))
        .route(
            "/api/queues/{queue}/jobs",
            get(api::list_jobs).post(api::enqueue),
        )
        .route("/api/queues/{queue}/jobs/{id}", get(api::get_job))
        .route("/api/queues/{queue}/jobs/{id}/cancel", post(api::cancel))
        .route("/api/queues/{queue}/pause", post(api::pause))
        .route("/api/queues/{queue}/resume", post(api::resume))
        .route("/api/queues/{queue}/dead/retry", post(api::retry_dead))
        .route("/api/queues/{queue}/dead", delete(api::purge_dead))
        .route("/api/workers", get(api::workers))
        .fallback(api::not_found)
        // Every request but an event stream is answered in bounded time.
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            crate::serve::REQUEST_TIMEOUT,
        ))
        .route("/api/queues/{queue}/jobs/{id}/events", get(api::events))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            crate::serve::BODY_TIMEOUT,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::gate::gate,
        ))
        .layer(axum::middleware::map_response(close_after_refused_body))
        .with_state(state)
}

/// A body over the limit is refused before it is read to the end, and the
/// server then closes the connection: say so (`Connection: close`), or a
/// client puts the connection back in its pool and its next request fails
/// with "connection closed before message completed".
async fn close_after_refused_body(mut r: Response) -> Response {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        r.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    r
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline' 'self'; connect-src 'self'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Html(INDEX),
    )
        .into_response()
}

async fn openapi() -> Response {
    axum::Json(crate::openapi::document()).into_response()
}

/// `POST /login` with the token as a form field or JSON: sets the session
/// cookie (HttpOnly, SameSite=Strict) and a CSRF cookie the page echoes.
async fn login(State(st): State<Arc<AppState>>, body: axum::body::Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    let token = text
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(url_decode)
        .or_else(|| {
            serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("token").and_then(|t| t.as_str()).map(str::to_owned))
        })
        .unwrap_or_default();
    let role = if st.auth.enabled() {
        match st.auth.role_of(&token) {
            Some(r) => r,
            None => {
                return ApiError::new(401, "unauthorized", "the token is not valid")
                    .into_response();
            }
        }
    } else {
        Role::Admin
    };
    let csrf = uuid::Uuid::new_v4().simple().to_string();
    let mut cookies = vec![format!("{CSRF_COOKIE}={csrf}; SameSite=Strict; Path=/")];
    // Without tokens there is no session: nothing the request sent is
    // echoed into a cookie.
    if st.auth.enabled() {
        cookies.push(format!(
            "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
        ));
    }
    let mut headers = HeaderMap::new();
    for c in cookies {
        if let Ok(v) = c.parse() {
            headers.append(header::SET_COOKIE, v);
        }
    }
    let role = if role == Role::Admin { "admin" } else { "read" };
    (
        StatusCode::OK,
        headers,
        axum::Json(serde_json::json!({ "role": role })),
    )
        .into_response()
}

async fn logout(State(st): State<Arc<AppState>>, headers: HeaderMap, method: Method) -> Response {
    if let Err(e) = st.auth.check(&headers, &method, Role::Read) {
        return e.into_response();
    }
    let mut out = HeaderMap::new();
    for c in [
        format!("{SESSION_COOKIE}=; Max-Age=0; HttpOnly; SameSite=Strict; Path=/"),
        format!("{CSRF_COOKIE}=; Max-Age=0; SameSite=Strict; Path=/"),
    ] {
        if let Ok(v) = c.parse() {
            out.append(header::SET_COOKIE, v);
        }
    }
    (StatusCode::NO_CONTENT, out).into_response()
}

fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
