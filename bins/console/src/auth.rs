//! Who may do what: `Authorization: Bearer <token>` for API clients, or a
//! session for the browser. Logging in with a token creates a server-side
//! session: a random id in an HttpOnly, SameSite=Strict cookie (never the
//! token itself), with its role, its own CSRF token and an expiry; logout
//! deletes it. A cookie-authenticated write must carry the session's CSRF
//! token in `X-CSRF-Token` (the page reads it from the `spool_csrf` cookie,
//! which another site can neither read nor set). Failed logins are logged
//! and throttled. Without configured tokens (loopback only) everyone is
//! admin.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method};

use crate::error::ApiError;

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "spool_session";
/// The CSRF cookie's name (the page reads it; the server checks the
/// session's own copy).
pub(crate) const CSRF_COOKIE: &str = "spool_csrf";

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Role {
    Read,
    Admin,
}

/// How long a browser session lasts.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most (the oldest go first).
const MAX_SESSIONS: usize = 10_000;
/// Failed logins allowed per minute, from everywhere together; past it,
/// logins are refused (429) until the minute is over.
const MAX_FAILED_LOGINS: u32 = 10;

/// A browser session.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) role: Role,
    pub(crate) csrf: String,
    expires: Instant,
}

/// The configured tokens, and the browser sessions they opened.
pub(crate) struct Tokens {
    admin: Option<String>,
    read: Option<String>,
    sessions: Mutex<HashMap<String, Session>>,
    /// Failed logins in the current minute: (window start, count).
    failures: Mutex<(Instant, u32)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("admin", &self.admin.as_ref().map(|_| "***"))
            .field("read", &self.read.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Shortest token accepted: guessing must be hopeless.
const MIN_TOKEN: usize = 16;

impl Tokens {
    pub(crate) fn new(admin: Option<String>, read: Option<String>) -> Result<Tokens, String> {
        let admin = admin.filter(|t| !t.is_empty());
        let read = read.filter(|t| !t.is_empty());
        for (name, t) in [
            ("SPOOL_CONSOLE_TOKEN", &admin),
            ("SPOOL_CONSOLE_READ_TOKEN", &read),
        ] {
            if let Some(t) = t
                && (t.len() < MIN_TOKEN
                    || !t
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.~+/=".contains(c)))
            {
                return Err(format!(
                    "invalid {name}: use at least {MIN_TOKEN} characters of letters, digits and - _ . ~ + / =, e.g. `openssl rand -hex 24`"
                ));
            }
        }
        if read.is_some() && admin.is_none() {
            return Err(
                "SPOOL_CONSOLE_READ_TOKEN is set without SPOOL_CONSOLE_TOKEN: set both".into(),
            );
        }
        Ok(Tokens {
            admin,
            read,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new((Instant::now(), 0)),
        })
    }

    /// Opens a session for `role`; returns its id and CSRF token.
    pub(crate) fn open_session(&self, role: Role) -> (String, String) {
        let id = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let csrf = uuid::Uuid::new_v4().simple().to_string();
        let mut m = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        m.retain(|_, s| s.expires > now);
        if m.len() >= MAX_SESSIONS
            && let Some(oldest) = m
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            m.remove(&oldest);
        }
        m.insert(
            id.clone(),
            Session {
                role,
                csrf: csrf.clone(),
                expires: now + SESSION_TTL,
            },
        );
        (id, csrf)
    }

    /// The live session `id` names.
    fn session(&self, id: &str) -> Option<Session> {
        let m = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        m.get(id).filter(|s| s.expires > Instant::now()).cloned()
    }

    /// Ends the session `id` (logout).
    pub(crate) fn close_session(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Counts a failed login; `false` when logins are throttled now.
    pub(crate) fn login_allowed(&self) -> bool {
        let f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.0.elapsed() >= Duration::from_secs(60) || f.1 < MAX_FAILED_LOGINS
    }

    /// Records a failed login.
    pub(crate) fn login_failed(&self) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if f.0.elapsed() >= Duration::from_secs(60) {
            *f = (Instant::now(), 0);
        }
        f.1 += 1;
        tracing::warn!(
            failed_this_minute = f.1,
            "a console login with a wrong token"
        );
    }

    pub(crate) fn enabled(&self) -> bool {
        self.admin.is_some()
    }

    /// The role a token grants.
    pub(crate) fn role_of(&self, token: &str) -> Option<Role> {
        if self.admin.as_deref().is_some_and(|t| eq(t, token)) {
            Some(Role::Admin)
        } else if self.read.as_deref().is_some_and(|t| eq(t, token)) {
            Some(Role::Read)
        } else {
            None
        }
    }

    /// Checks a request for `need`: 401 without credentials, 403 with too
    /// few rights or a cookie POST without its CSRF token.
    pub(crate) fn check(
        &self,
        headers: &HeaderMap,
        method: &Method,
        need: Role,
    ) -> Result<Role, ApiError> {
        if !self.enabled() {
            return Ok(Role::Admin);
        }
        // The scheme is case-insensitive (RFC 9110).
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            });
        let role = match bearer {
            Some(t) => self
                .role_of(t)
                .ok_or_else(|| ApiError::new(401, "unauthorized", "the token is not valid"))?,
            None => {
                let Some(id) = cookie(headers, SESSION_COOKIE) else {
                    return Err(ApiError::new(
                        401,
                        "unauthorized",
                        "send Authorization: Bearer <token>, or log in",
                    ));
                };
                let session = self.session(&id).ok_or_else(|| {
                    ApiError::new(401, "unauthorized", "the session is over: log in again")
                })?;
                if method != Method::GET && method != Method::HEAD {
                    let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
                    if !sent.is_some_and(|t| !t.is_empty() && eq(t, &session.csrf)) {
                        return Err(ApiError::new(403, "csrf", "missing or wrong X-CSRF-Token"));
                    }
                }
                session.role
            }
        };
        if role < need {
            return Err(ApiError::new(
                403,
                "forbidden",
                "the read-only token cannot act",
            ));
        }
        Ok(role)
    }
}

impl Tokens {
    /// Who a checked request comes from, for per-caller limits: its
    /// session, else the role its bearer token grants (a token is shared by
    /// whoever holds it), else the local user of a console without tokens.
    pub(crate) fn caller(&self, headers: &HeaderMap, role: Role) -> String {
        if !self.enabled() {
            return "local".to_owned();
        }
        match cookie(headers, SESSION_COOKIE) {
            Some(id) if headers.get(axum::http::header::AUTHORIZATION).is_none() => {
                format!("session:{id}")
            }
            _ => format!("token:{role:?}"),
        }
    }
}

/// Compares without an early exit, so timing says nothing about the token.
fn eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// A cookie's value.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_and_short_ones_refused() {
        assert!(Tokens::new(Some("short".into()), None).is_err());
        assert!(Tokens::new(None, Some("r".repeat(20))).is_err());
        let t = Tokens::new(Some("a".repeat(20)), Some("r".repeat(20))).expect("valid");
        assert_eq!(t.role_of(&"a".repeat(20)), Some(Role::Admin));
        assert_eq!(t.role_of(&"r".repeat(20)), Some(Role::Read));
        assert_eq!(t.role_of(&"a".repeat(19)), None);
        assert!(format!("{t:?}").contains("***") && !format!("{t:?}").contains("aaaa"));
    }

    #[test]
    fn sessions_carry_their_role_and_csrf_and_end_at_logout() {
        let t = Tokens::new(Some("a".repeat(20)), Some("r".repeat(20))).expect("valid");
        let (id, csrf) = t.open_session(Role::Read);
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            format!("{SESSION_COOKIE}={id}").parse().expect("header"),
        );
        assert_eq!(t.check(&h, &Method::GET, Role::Read).ok(), Some(Role::Read));
        // A write needs the session's own CSRF token; an empty one is not it.
        h.insert("x-csrf-token", "".parse().expect("header"));
        assert!(t.check(&h, &Method::POST, Role::Read).is_err());
        h.insert("x-csrf-token", csrf.parse().expect("header"));
        assert!(t.check(&h, &Method::POST, Role::Read).is_ok());
        t.close_session(&id);
        assert!(t.check(&h, &Method::GET, Role::Read).is_err());
        // Bearer in any case.
        let mut b = HeaderMap::new();
        b.insert(
            axum::http::header::AUTHORIZATION,
            format!("bearer {}", "a".repeat(20))
                .parse()
                .expect("header"),
        );
        assert_eq!(
            t.check(&b, &Method::POST, Role::Admin).ok(),
            Some(Role::Admin)
        );
        // Throttling after repeated failures.
        for _ in 0..MAX_FAILED_LOGINS {
            assert!(t.login_allowed());
            t.login_failed();
        }
        assert!(!t.login_allowed());
    }
}
