//! What every request passes before a handler (and before its body is
//! read):
//!
//! - **Without tokens** (loopback only, everyone is admin), the browser of
//!   the person running the console must not be usable by other sites: the
//!   `Host` must be the loopback address the console is bound to (a DNS
//!   rebinding attack arrives with the attacker's host name), an `Origin`
//!   or `Sec-Fetch-Site` must say the request comes from the console's own
//!   page.
//! - **Writes** (anything but GET and HEAD) must be `application/json` or
//!   carry an `Authorization` header: a page on another origin can send
//!   neither without a CORS preflight, which the console never answers,
//!   so `fetch(…, {mode: "no-cors"})` and form posts are refused.
//! - **The API checks credentials first**: a request without valid ones is
//!   answered 401 before a byte of its body is read (bodies up to 8 MiB are
//!   buffered only for those allowed to send them).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::api::ApiError;
use crate::auth::Role;

/// The host names a loopback console answers to, with its port (kept in
/// [`AppState::hosts`], made once at start).
pub(crate) fn loopback_hosts(bound: SocketAddr) -> Vec<String> {
    let port = bound.port();
    let mut hosts = vec![
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ];
    hosts.push(match bound {
        SocketAddr::V4(a) => format!("{}:{port}", a.ip()),
        SocketAddr::V6(a) => format!("[{}]:{port}", a.ip()),
    });
    hosts
}

/// Checks a request against the rules in the module docs.
pub(crate) fn check(
    st: &AppState,
    headers: &HeaderMap,
    method: &Method,
    path: &str,
) -> Result<(), ApiError> {
    let write = method != Method::GET && method != Method::HEAD;
    if !st.auth.enabled() {
        let hosts = &st.hosts;
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase);
        if !host
            .as_deref()
            .is_some_and(|h| hosts.iter().any(|a| a == h))
        {
            return Err(ApiError::new(
                421,
                "wrong_host",
                "a console without tokens answers only to its loopback address (127.0.0.1, localhost or [::1] with its port)",
            ));
        }
        if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            let own = hosts
                .iter()
                .any(|h| origin.eq_ignore_ascii_case(&format!("http://{h}")));
            if !own {
                return Err(ApiError::new(
                    403,
                    "cross_origin",
                    "requests from another site's pages are refused",
                ));
            }
        }
        if headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"))
        {
            return Err(ApiError::new(
                403,
                "cross_origin",
                "requests from another site's pages are refused",
            ));
        }
    }
    if write {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
            });
        if !json && !headers.contains_key(header::AUTHORIZATION) {
            return Err(ApiError::new(
                415,
                "unsupported_media_type",
                "writes must be sent as Content-Type: application/json",
            ));
        }
    }
    if path.starts_with("/api/") && path != "/api/openapi.json" {
        st.auth.check(headers, method, Role::Read)?;
    }
    // A login (from someone not yet authenticated) announcing a body over
    // its small limit is refused before any of it is read. An
    // authenticated request over the API's limit is refused by the body
    // limit while it is read: refusing it unread would reset the
    // connection under a client still sending, which then never sees the
    // 413.
    let limit = crate::web::LOGIN_BODY;
    if path == "/login"
        && headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > limit as u64)
    {
        return Err(ApiError::new(
            413,
            "too_large",
            format!("the body is over {limit} bytes"),
        ));
    }
    Ok(())
}

/// The middleware around every route.
pub(crate) async fn gate(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    match check(&st, req.headers(), req.method(), &path) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            let mut r = e.into_response();
            // The body was never read: the connection cannot be reused.
            r.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            r
        }
    }
}
