//! The `redis+sentinel://` URL form: the sentinels, the master's name, its
//! database and credentials.

use super::{SENTINEL_PORT, mask_password};
use crate::error::{Error, Result};

/// `redis+sentinel://[user:pass@]host1[:port],host2[:port]/<master>[/db]`
/// (`rediss+sentinel://` for TLS to the sentinels and the master). The
/// credentials are the master's; the sentinels are asked without any.
#[derive(Clone)]
pub(super) struct SentinelSpec {
    pub(super) sentinels: Vec<(String, u16)>,
    pub(super) master: String,
    pub(super) db: i64,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) tls: bool,
}

impl SentinelSpec {
    /// `None` when `url` is not a sentinel URL.
    pub(super) fn parse(url: &str) -> Result<Option<SentinelSpec>> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("redis+sentinel://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("rediss+sentinel://") {
            (true, r)
        } else {
            return Ok(None);
        };
        let bad = |why: &str| Error::InvalidUrl {
            reason: format!(
                "{} ({why}); expected redis+sentinel://[user:password@]host1:26379,host2:26379/<master-name>[/db]",
                mask_password(url)
            ),
        };
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (Some(a), r),
            None => (None, rest),
        };
        let (hosts, path) = rest.split_once('/').ok_or_else(|| bad("no master name"))?;
        let (master, db) = match path.split_once('/') {
            Some((m, d)) if !d.is_empty() => (
                m,
                d.parse::<i64>()
                    .ok()
                    .filter(|d| (0..=15_000).contains(d))
                    .ok_or_else(|| bad("the database is not a number"))?,
            ),
            Some((m, _)) => (m, 0),
            None => (path, 0),
        };
        if master.is_empty()
            || !master
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
        {
            return Err(bad(
                "the master name must be letters, digits, '-', '_' or '.'",
            ));
        }
        let mut sentinels = Vec::new();
        for h in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            let (host, port) = match h.rsplit_once(':') {
                Some((host, port)) if !host.ends_with(':') => (
                    host.trim_start_matches('[').trim_end_matches(']'),
                    port.parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| bad("a sentinel's port is not a number"))?,
                ),
                _ => (h, SENTINEL_PORT),
            };
            if host.is_empty() {
                return Err(bad("a sentinel's host is empty"));
            }
            sentinels.push((host.to_owned(), port));
        }
        if sentinels.is_empty() {
            return Err(bad("no sentinel address"));
        }
        let decode = |s: &str| {
            percent_decode(s).ok_or_else(|| bad("the credentials are not valid percent-encoding"))
        };
        let (username, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (
                    (!u.is_empty()).then(|| decode(u)).transpose()?,
                    Some(decode(p)?),
                ),
                None => (Some(decode(a)?), None),
            },
        };
        Ok(Some(SentinelSpec {
            sentinels,
            master: master.to_owned(),
            db,
            username,
            password,
            tls,
        }))
    }

    /// `sentinel:<master>@h1:26379,h2:26379/db`, never the password.
    pub(super) fn display(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect();
        format!("sentinel:{}@{}/{}", self.master, hosts.join(","), self.db)
    }
}

/// `%XX` decoding for URL credentials.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
