//! http(s) inputs: downloaded by spool, never fetched by FFmpeg.
//!
//! FFmpeg's own HTTP client follows redirects by itself, resolves names again
//! after any check spool could make, and (through `ffmpeg-next`'s packet
//! iterator) retries failed reads forever. So when a worker allows http(s)
//! inputs, spool downloads the input to a private temporary file first and
//! FFmpeg only ever reads local files:
//!
//! - every hop (the URL and each redirect, at most [`MAX_REDIRECTS`]) is
//!   resolved here, each address checked, and the connection made only to the
//!   checked addresses (no second lookup, so no DNS rebinding);
//! - loopback, private, link-local (cloud metadata), CGNAT, unique-local,
//!   multicast and unspecified addresses are refused unless an operator lists
//!   their range in [`HttpPolicy::allow_nets`] (`SPOOL_HTTP_ALLOW_NETS`);
//! - connecting and every read have a timeout ([`HttpPolicy::io_timeout`]);
//! - cancellation (a cancel, a lost lease, the drain deadline) drops the
//!   request at once, which closes the socket;
//! - the body is bounded by the encoder's input limit
//!   ([`crate::EncoderConfig::max_input_bytes`], the same for object storage).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

use tokio_util::sync::CancellationToken;

use crate::error::EncodeError;

/// Redirect hops followed at most; browsers allow 20, media URLs need one or
/// two (a CDN's signed-URL hop).
pub const MAX_REDIRECTS: usize = 5;
/// The I/O timeout when the operator sets none: long enough for a slow origin's
/// first byte, short enough that a dead one frees its slot quickly.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest input downloaded (http or object storage) when the operator
/// sets no limit: 50 GiB, a long mezzanine file with margin.
pub const DEFAULT_MAX_BYTES: u64 = 50 << 30;

/// How http(s) inputs may be fetched.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpPolicy {
    /// Address ranges that may be reached although not public (e.g. an
    /// in-cluster media server). Empty by default: public addresses only.
    pub allow_nets: Vec<ipnet::IpNet>,
    /// Timeout for connecting and for each read.
    pub io_timeout: Duration,
    /// The slowest average a download may keep after its first
    /// `io_timeout`, bytes a second: a body sent a byte every few seconds
    /// never stalls a read, and must still end.
    pub min_bytes_per_s: u64,
}

impl HttpPolicy {
    /// This value with `allow_nets` set to `v`.
    pub fn with_allow_nets(mut self, v: Vec<ipnet::IpNet>) -> Self {
        self.allow_nets = v;
        self
    }

    /// This value with `io_timeout` set to `v`.
    pub fn with_io_timeout(mut self, v: Duration) -> Self {
        self.io_timeout = v;
        self
    }

    /// This value with `min_bytes_per_s` set to `v`.
    pub fn with_min_bytes_per_s(mut self, v: u64) -> Self {
        self.min_bytes_per_s = v;
        self
    }
}

/// [`HttpPolicy::min_bytes_per_s`] by default: 64 KiB/s.
pub const DEFAULT_MIN_BYTES_PER_S: u64 = 64 << 10;

impl Default for HttpPolicy {
    fn default() -> Self {
        HttpPolicy {
            allow_nets: Vec::new(),
            io_timeout: DEFAULT_IO_TIMEOUT,
            min_bytes_per_s: DEFAULT_MIN_BYTES_PER_S,
        }
    }
}

/// Parses `SPOOL_HTTP_ALLOW_NETS`: comma-separated CIDR ranges or single
/// addresses (`10.0.0.0/8, 192.168.1.5`).
pub fn parse_allow_nets(s: &str) -> Result<Vec<ipnet::IpNet>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<ipnet::IpNet>()
                .or_else(|_| p.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("{p:?} is not an address range like 10.0.0.0/8"))
        })
        .collect()
}

/// Whether `ip` is an ordinary public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                // 100.64.0.0/10: carrier-grade NAT, used inside clouds.
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                // 192.0.0.0/24: IETF protocol assignments.
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                // 198.18.0.0/15: benchmarking.
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                // 240.0.0.0/4: reserved.
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            // 64:ff9b::/96 (NAT64) embeds an IPv4 address.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|x| *x == 0) {
                let v4 = std::net::Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                );
                return is_public(IpAddr::V4(v4));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // ::/96, IPv4-compatible (deprecated): any embedded address.
                || s[..6].iter().all(|x| *x == 0)
                // ::ffff:0:0:0/96, IPv4-translated (SIIT).
                || (s[..4].iter().all(|x| *x == 0) && s[4] == 0xffff && s[5] == 0)
                // 64:ff9b:1::/48, local-use NAT64 (RFC 8215).
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
                // 2002::/16 6to4 and 2001::/32 Teredo tunnel to IPv4 hosts
                // that may be anywhere, private ones included.
                || s[0] == 0x2002
                || (s[0] == 0x2001 && s[1] == 0)
                // 100::/64 discard-only.
                || (s[0] == 0x100 && s[1..4].iter().all(|x| *x == 0))
                // fc00::/7 unique local, fe80::/10 link-local, fec0::/10
                // site-local (deprecated, still routed inside some sites).
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                // 2001:db8::/32 documentation.
                || (s[0] == 0x2001 && s[1] == 0x0db8))
        }
    }
}

impl HttpPolicy {
    fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        is_public(ip) || self.allow_nets.iter().any(|n| n.contains(&ip))
    }
}

/// `url` as it may appear in a job's error: scheme, host, port and path
/// only. User info, query and fragment are dropped (a presigned URL's
/// signature, a password), and control characters are escaped, so neither
/// a secret nor a forged line reaches `last_error`, logs or a terminal.
pub fn shown_url(url: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .take(300)
            .flat_map(|c| {
                if c.is_control() {
                    c.escape_default().collect::<Vec<_>>()
                } else {
                    vec![c]
                }
            })
            .collect()
    };
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let hidden = if u.username().is_empty() && u.password().is_none() && u.query().is_none()
            {
                ""
            } else {
                " (credentials and query hidden)"
            };
            clean(&format!(
                "{}://{}{port}{}{hidden}",
                u.scheme(),
                u.host_str().unwrap_or(""),
                u.path()
            ))
        }
        Err(_) => {
            // What follows the last '@' (no user info), up to any query.
            let no_user = url.rsplit('@').next().unwrap_or("");
            let no_query = no_user.split(['?', '#']).next().unwrap_or("");
            format!("{} (not a URL)", clean(no_query))
        }
    }
}

fn refused(url: &str, reason: impl Into<String>) -> EncodeError {
    EncodeError::PathRefused {
        path: shown_url(url),
        reason: reason.into(),
    }
}

/// Downloads `url` into a new temporary file in `dir`, refusing a body over
/// `max_bytes`. `progress` hears (bytes so far, bytes in all when the
/// server said), at most four times a second.
pub(crate) async fn download(
    url: &str,
    policy: &HttpPolicy,
    max_bytes: u64,
    dir: &Path,
    progress: &mut (dyn FnMut(u64, Option<u64>) + Send),
    cancel: &CancellationToken,
) -> Result<tempfile::NamedTempFile, EncodeError> {
    let (file, out) = spool_storage::scratch::download_file(dir).map_err(|e| {
        EncodeError::Failed(format!(
            "cannot create a download file in {} (SPOOL_SCRATCH_DIR): {e}",
            dir.display()
        ))
    })?;
    let mut out = tokio::fs::File::from_std(out);
    tokio::select! {
        _ = cancel.cancelled() => Err(EncodeError::Cancelled),
        r = fetch(url, policy, max_bytes, &mut out, progress) => r,
    }?;
    Ok(file)
}

/// Where progress reports go.
type Reports<'a> = &'a mut (dyn FnMut(u64, Option<u64>) + Send);

async fn fetch(
    url: &str,
    policy: &HttpPolicy,
    max_bytes: u64,
    out: &mut tokio::fs::File,
    reports: Reports<'_>,
) -> Result<(), EncodeError> {
    let mut current =
        reqwest::Url::parse(url).map_err(|e| refused(url, format!("not a URL: {e}")))?;
    for _hop in 0..=MAX_REDIRECTS {
        let client = client_for(url, &current, policy).await?;
        let resp = tokio::time::timeout(policy.io_timeout, client.get(current.clone()).send())
            .await
            .map_err(|_| timed_out(url, policy))?
            .map_err(|e| transport(url, policy, e))?;
        let status = resp.status();
        if status.is_redirection() {
            let loc = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| bad(url, format!("HTTP {status} without a Location")))?;
            current = current
                .join(loc)
                .map_err(|e| bad(url, format!("a redirect to {}: {e}", shown_url(loc))))?;
            continue;
        }
        if !status.is_success() {
            let msg = format!("the server answered HTTP {status}");
            // 5xx and 429 may pass; anything else will answer the same again.
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                EncodeError::Failed(format!("downloading {}: {msg}", shown_url(url)))
            } else {
                bad(url, msg)
            });
        }
        if let Some(n) = resp.content_length()
            && n > max_bytes
        {
            return Err(too_big(url, max_bytes));
        }
        return body(url, resp, policy, max_bytes, out, reports).await;
    }
    Err(bad(url, format!("more than {MAX_REDIRECTS} redirects")))
}

async fn body(
    url: &str,
    mut resp: reqwest::Response,
    policy: &HttpPolicy,
    max_bytes: u64,
    out: &mut tokio::fs::File,
    reports: Reports<'_>,
) -> Result<(), EncodeError> {
    let mut total: u64 = 0;
    let expected = resp.content_length();
    let started = tokio::time::Instant::now();
    let mut last_report = started;
    reports(0, expected);
    loop {
        // A read may wait `io_timeout`; the download as a whole must keep
        // `min_bytes_per_s` on average after its first `io_timeout`.
        let allowed =
            policy.io_timeout + Duration::from_secs(total / policy.min_bytes_per_s.max(1));
        let deadline = started + allowed;
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(too_slow(url, policy, total, started.elapsed()));
        }
        let wait = policy.io_timeout.min(deadline - now);
        let chunk = match tokio::time::timeout(wait, resp.chunk()).await {
            Ok(c) => c.map_err(|e| transport(url, policy, e))?,
            Err(_) if tokio::time::Instant::now() >= deadline => {
                return Err(too_slow(url, policy, total, started.elapsed()));
            }
            Err(_) => return Err(timed_out(url, policy)),
        };
        let Some(chunk) = chunk else { break };
        total += chunk.len() as u64;
        if total > max_bytes {
            return Err(too_big(url, max_bytes));
        }
        if last_report.elapsed() >= Duration::from_millis(250) {
            last_report = tokio::time::Instant::now();
            reports(total, expected);
        }
        out.write_all(&chunk).await.map_err(|e| {
            EncodeError::Failed(format!("writing the download of {}: {e}", shown_url(url)))
        })?;
    }
    out.flush().await.map_err(|e| {
        EncodeError::Failed(format!("writing the download of {}: {e}", shown_url(url)))
    })?;
    reports(total, expected);
    Ok(())
}

/// A download slower on average than the policy allows (retryable: the
/// server may be faster later).
fn too_slow(url: &str, policy: &HttpPolicy, total: u64, took: Duration) -> EncodeError {
    EncodeError::Failed(format!(
        "downloading {}: {total} bytes in {:.0} s, slower than {} KiB/s on average",
        shown_url(url),
        took.as_secs_f64(),
        policy.min_bytes_per_s >> 10
    ))
}

/// A client that reaches `hop`'s host only at checked addresses.
async fn client_for(
    url: &str,
    hop: &reqwest::Url,
    policy: &HttpPolicy,
) -> Result<reqwest::Client, EncodeError> {
    if !matches!(hop.scheme(), "http" | "https") {
        return Err(refused(
            url,
            format!("{hop}: only http and https are fetched"),
        ));
    }
    let host = hop
        .host()
        .ok_or_else(|| refused(url, format!("{hop} names no host")))?;
    let port = hop.port_or_known_default().unwrap_or(80);
    let addrs: Vec<SocketAddr> = match host {
        url::Host::Ipv4(ip) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        url::Host::Ipv6(ip) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        url::Host::Domain(name) => {
            tokio::time::timeout(policy.io_timeout, tokio::net::lookup_host((name, port)))
                .await
                .map_err(|_| timed_out(url, policy))?
                .map_err(|e| {
                    EncodeError::Failed(format!(
                        "downloading {}: cannot resolve {name}: {e}",
                        shown_url(url)
                    ))
                })?
                .collect()
        }
    };
    let denied: Vec<IpAddr> = addrs
        .iter()
        .map(SocketAddr::ip)
        .filter(|ip| !policy.allows(*ip))
        .collect();
    if !denied.is_empty() || addrs.is_empty() {
        return Err(refused(
            url,
            format!(
                "{} resolves to {denied:?}: loopback, private, link-local and other non-public addresses are not fetched unless SPOOL_HTTP_ALLOW_NETS lists them",
                hop.host_str().unwrap_or_default()
            ),
        ));
    }
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(policy.io_timeout)
        .read_timeout(policy.io_timeout)
        .user_agent(concat!("spool-encoder/", env!("CARGO_PKG_VERSION")));
    if let url::Host::Domain(name) = host {
        b = b.resolve_to_addrs(name, &addrs);
    }
    b.build()
        .map_err(|e| EncodeError::Failed(format!("cannot build an HTTP client: {e}")))
}

fn bad(url: &str, reason: String) -> EncodeError {
    EncodeError::BadInput {
        path: shown_url(url),
        reason,
    }
}

fn too_big(url: &str, max_bytes: u64) -> EncodeError {
    EncodeError::LimitExceeded {
        path: shown_url(url),
        reason: format!("larger than {max_bytes} bytes (SPOOL_MAX_INPUT_BYTES)"),
    }
}

fn timed_out(url: &str, policy: &HttpPolicy) -> EncodeError {
    EncodeError::Failed(format!(
        "downloading {}: no answer within {:?} (SPOOL_HTTP_TIMEOUT)",
        shown_url(url),
        policy.io_timeout
    ))
}

fn transport(url: &str, policy: &HttpPolicy, e: reqwest::Error) -> EncodeError {
    if e.is_timeout() {
        return timed_out(url, policy);
    }
    // reqwest names the URL in its message, credentials and all.
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    EncodeError::Failed(format!("downloading {}: {msg}", shown_url(url)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_errors_carry_no_secret_and_no_line_break() {
        let shown =
            shown_url("https://user:hunter2@media.example/a%0Ab.mp4?X-Amz-Signature=s3cr3t#f");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cr3t") && !shown.contains("user"),
            "{shown}"
        );
        assert!(
            shown.starts_with("https://media.example/a%0Ab.mp4"),
            "{shown}"
        );
        let raw = shown_url("http://a\nb@x y");
        assert!(!raw.contains('\n') && !raw.contains("a\nb"), "{raw}");
        assert_eq!(
            shown_url("http://h.example:8080/v.mp4"),
            "http://h.example:8080/v.mp4"
        );
    }

    #[test]
    fn only_public_addresses_pass_by_default() -> Result<(), Box<dyn std::error::Error>> {
        let p = HttpPolicy::default();
        for denied in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "224.0.0.1",
            // Forms that embed or route to IPv4 or site-internal hosts.
            "::a9fe:a9fe",
            "::ffff:0:a9fe:a9fe",
            "64:ff9b:1::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "fec0::1",
            "100::1",
        ] {
            assert!(!p.allows(denied.parse()?), "{denied} allowed");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(p.allows(public.parse()?), "{public} refused");
        }
        let p = HttpPolicy {
            allow_nets: parse_allow_nets("10.0.0.0/8, 127.0.0.1")?,
            ..HttpPolicy::default()
        };
        assert!(p.allows("10.9.9.9".parse()?));
        assert!(p.allows("127.0.0.1".parse()?));
        assert!(!p.allows("127.0.0.2".parse()?));
        assert!(!p.allows("169.254.169.254".parse()?));
        assert!(parse_allow_nets("10.0.0.0/33").is_err());
        assert!(parse_allow_nets("example.com").is_err());
        Ok(())
    }
}
