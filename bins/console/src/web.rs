//! Routes: the API, the login for browsers, and the dashboard (one page,
//! embedded in the binary: plain HTML, CSS and JS, no build step).

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};

use crate::api;
use crate::auth::{CSRF_COOKIE, Role, SESSION_COOKIE};
use crate::error::ApiError;
use crate::{AppState, MAX_BODY};

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
/// No inline script or style, nothing from elsewhere, no forms posted
/// elsewhere, no `<base>` rewriting, never framed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'";
/// Largest login body: a token is at most a few hundred bytes, and nothing
/// larger is read from someone not yet authenticated.
pub(crate) const LOGIN_BODY: usize = 4 << 10;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/app.css", get(app_css))
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
        .route("/api/whoami", get(api::whoami))
        .route("/api/queues/{queue}/history", get(api::history))
        .route("/api/queues/{queue}/search", get(api::search))
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

/// Every error in the documented shape (`{"error", "code"}`), also those
/// the framework answers itself (an unknown method, a bad query or path, a
/// body over the limit, a timeout). A body over the limit is refused before
/// it is read to the end, and the server then closes the connection: say
/// so (`Connection: close`), or a client puts the connection back in its
/// pool and its next request fails.
async fn close_after_refused_body(r: Response) -> Response {
    let status = r.status();
    let json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let mut r = if status.as_u16() >= 400 && !json {
        let code = match status.as_u16() {
            400 => "bad_request",
            404 => "not_found",
            405 => "method_not_allowed",
            408 => "timeout",
            413 => "too_large",
            415 => "unsupported_media_type",
            422 => "invalid",
            _ => "error",
        };
        let (_, body) = r.into_parts();
        let text = axum::body::to_bytes(body, 4096)
            .await
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .unwrap_or_default();
        let message = if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            text
        };
        ApiError::new(status.as_u16(), code, message).into_response()
    } else {
        r
    };
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        r.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    // Every answer, the API's included, is what its type says.
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    r
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
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
    if !st.auth.enabled() {
        // Without tokens there is no session: nothing the request sent is
        // echoed into a cookie.
        return axum::Json(serde_json::json!({ "role": "admin" })).into_response();
    }
    if !st.auth.login_allowed() {
        return ApiError::new(
            429,
            "too_many_logins",
            "too many failed logins this minute: wait and try again",
        )
        .into_response();
    }
    let Some(role) = st.auth.role_of(&token) else {
        st.auth.login_failed();
        return ApiError::new(401, "unauthorized", "the token is not valid").into_response();
    };
    let (session, csrf) = st.auth.open_session(role);
    let max_age = crate::auth::SESSION_TTL.as_secs();
    let cookies = [
        format!("{SESSION_COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}"),
        format!("{CSRF_COOKIE}={csrf}; SameSite=Strict; Path=/; Max-Age={max_age}"),
    ];
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
    // The session ends on the server: its cookie is worthless from now on.
    if let Some(id) = crate::auth::cookie(&headers, SESSION_COOKIE) {
        st.auth.close_session(&id);
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
