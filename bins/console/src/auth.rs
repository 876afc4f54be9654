//! Who may do what: `Authorization: Bearer <token>` for API clients, or the
//! login cookie for the browser (HttpOnly, SameSite=Strict), whose POSTs
//! must also carry the CSRF token (double submit: the `spool_csrf` cookie's
//! value in an `X-CSRF-Token` header, which another site can neither read
//! nor set). Without configured tokens (loopback only) everyone is admin.

use axum::http::{HeaderMap, Method};

use crate::api::ApiError;

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "spool_session";
/// The CSRF cookie's name.
pub(crate) const CSRF_COOKIE: &str = "spool_csrf";

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Role {
    Read,
    Admin,
}

/// The configured tokens.
pub(crate) struct Tokens {
    admin: Option<String>,
    read: Option<String>,
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
        Ok(Tokens { admin, read })
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
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let (token, from_cookie) = match bearer {
            Some(t) => (Some(t.trim().to_owned()), false),
            None => (cookie(headers, SESSION_COOKIE), true),
        };
        let Some(token) = token else {
            return Err(ApiError::new(
                401,
                "unauthorized",
                "send Authorization: Bearer <token>, or log in",
            ));
        };
        let Some(role) = self.role_of(&token) else {
            return Err(ApiError::new(401, "unauthorized", "the token is not valid"));
        };
        if from_cookie && method != Method::GET && method != Method::HEAD {
            let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
            let expected = cookie(headers, CSRF_COOKIE);
            if sent.is_none() || expected.is_none() || sent != expected.as_deref() {
                return Err(ApiError::new(403, "csrf", "missing or wrong X-CSRF-Token"));
            }
        }
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
}
