//! spool-console against the attacks a held-out test made: a page on
//! another origin driving a console that runs without tokens, DNS
//! rebinding, bodies buffered before the token was checked, and connections
//! that never finish. The console runs as a process against a real
//! redis-server.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use spool_testkit::RedisServer;

mod common;
use common::{ADMIN, Console, raw};

fn console(redis_url: &str, token: Option<&str>) -> Result<Console> {
    common::console(redis_url, token, None, &[])
}

fn paused(port: u16, queue: &str) -> Result<bool> {
    let (status, text) = raw(
        port,
        &format!("GET /api/queues HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
    )?;
    ensure!(status == 200, "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body)?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .any(|q| q["queue"] == queue && q["paused"] == true))
}

/// Without tokens, what a page on another origin (or a rebound host name)
/// sends is refused, and the console's own page still works.
#[test]
fn a_console_without_tokens_cannot_be_driven_by_another_site() -> Result<()> {
    let redis = RedisServer::start()?;
    let con = console(&redis.url(), None)?;
    let p = con.port;
    let host = format!("127.0.0.1:{p}");
    // The queue exists: one job, enqueued the console's own way.
    let (status, text) = raw(
        p,
        &format!(
            "POST /api/queues/q/jobs HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        ),
    )?;
    ensure!(status == 201, "{text}");
    // fetch(…, {mode: "no-cors"}) with a text/plain body, from another origin.
    let attacks = [
        format!(
            "POST /api/queues/q/pause HTTP/1.1\r\nHost: {host}\r\nOrigin: http://evil.example\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        ),
        // A form post: no Origin (old browsers), form content type.
        format!(
            "POST /api/queues/q/pause HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\nConnection: close\r\n\r\na=b"
        ),
        // No body and no content type at all.
        format!(
            "POST /api/queues/q/pause HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        // JSON, but the browser says the page is another site's.
        format!(
            "POST /api/queues/q/pause HTTP/1.1\r\nHost: {host}\r\nSec-Fetch-Site: cross-site\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        ),
        // DNS rebinding: the attacker's name resolves to 127.0.0.1.
        format!(
            "POST /api/queues/q/pause HTTP/1.1\r\nHost: evil.example:{p}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        ),
    ];
    for a in &attacks {
        let (status, text) = raw(p, a)?;
        ensure!(
            (400..500).contains(&status) && text.contains("\"code\""),
            "accepted: {a:?} -> {text}"
        );
    }
    ensure!(!paused(p, "q")?, "an attack paused the queue");
    // Rebinding cannot read either.
    let (status, _) = raw(
        p,
        &format!("GET /api/queues HTTP/1.1\r\nHost: evil.example:{p}\r\nConnection: close\r\n\r\n"),
    )?;
    ensure!(status == 421, "{status}");
    // A login form posted from elsewhere is not echoed into a cookie.
    let (_, text) = raw(
        p,
        &format!(
            "POST /login HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 26\r\nConnection: close\r\n\r\n{{\"token\":\"x; Domain=evil\"}}"
        ),
    )?;
    ensure!(!text.contains("spool_session=x"), "{text}");
    // The console's own page (same origin, JSON) acts.
    let (status, text) = raw(
        p,
        &format!(
            "POST /api/queues/q/pause HTTP/1.1\r\nHost: localhost:{p}\r\nOrigin: http://localhost:{p}\r\nSec-Fetch-Site: same-origin\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        ),
    )?;
    ensure!(status == 200, "{text}");
    ensure!(paused(p, "q")?);
    Ok(())
}

fn rss_bytes(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb * 1024)
}

/// Sixty unauthenticated requests announcing 8 MiB bodies are answered 401
/// before any body is read: the console's memory stays flat (before: 26 MB
/// to 476 MB).
#[test]
fn bodies_are_not_read_before_the_token_is_checked() -> Result<()> {
    let redis = RedisServer::start()?;
    let con = console(&redis.url(), Some(ADMIN))?;
    let p = con.port;
    let before = rss_bytes(con.child.id())?;
    let chunk = vec![b'x'; 1 << 20];
    let mut conns = Vec::new();
    for _ in 0..60 {
        let mut s = TcpStream::connect(("127.0.0.1", p))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "POST /api/queues/q/jobs HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            8 << 20
        )?;
        // As much of the body as the server takes without reading it.
        for _ in 0..8 {
            if s.write_all(&chunk).is_err() {
                break;
            }
        }
        conns.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_bytes(con.child.id())?;
    eprintln!(
        "console RSS {} MiB before, {} MiB with 60 unauthenticated 8 MiB bodies",
        before >> 20,
        after >> 20
    );
    ensure!(
        after < before + (64 << 20),
        "the console grew from {} to {} MiB",
        before >> 20,
        after >> 20
    );
    // Each was answered 401.
    let mut s = conns.pop().context("a connection")?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head)?;
    ensure!(
        String::from_utf8_lossy(&head[..n]).contains(" 401 "),
        "{:?}",
        String::from_utf8_lossy(&head[..n])
    );
    Ok(())
}

/// Connections that never finish their headers are closed by the server,
/// and a flood of them (over the connection cap) never keeps `/healthz`
/// from answering (before: still open after 125 s).
#[test]
fn unfinished_requests_are_closed_and_cannot_starve_health_checks() -> Result<()> {
    let redis = RedisServer::start()?;
    let con = console(&redis.url(), Some(ADMIN))?;
    let p = con.port;
    let mut half_open = Vec::new();
    let flood = Instant::now();
    for _ in 0..400 {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", p)) else {
            break;
        };
        let _ = s.write_all(b"GET /api/queues HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        half_open.push(s);
    }
    // The server closes a connection whose headers never end within its
    // header timeout (10 s), generously bounded here.
    let mut first = half_open.swap_remove(0);
    first.set_read_timeout(Some(Duration::from_secs(40)))?;
    let mut buf = [0u8; 256];
    let n = first.read(&mut buf).unwrap_or(0);
    let closed_after = flood.elapsed();
    ensure!(
        n == 0 || String::from_utf8_lossy(&buf[..n]).contains(" 408 "),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    ensure!(
        closed_after < Duration::from_secs(30),
        "a half-open connection stayed open {closed_after:?}"
    );
    // Past the cap (256) new connections were closed at once; once the
    // flood's connections are closed, health answers.
    let start = Instant::now();
    loop {
        if let Ok((200, _)) = raw(
            p,
            &format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nConnection: close\r\n\r\n"),
        ) {
            break;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(30),
            "/healthz never answered after the flood of {} connections",
            half_open.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "{} half-open connections: the first closed by the server after {closed_after:?}; /healthz answered {:?} later",
        half_open.len() + 1,
        start.elapsed()
    );
    Ok(())
}

/// Every error is `{"error", "code"}` (also the framework's own: an unknown
/// method, a bad query, a body over the limit), none shows Redis' address,
/// and the page runs under a CSP with no inline script.
#[test]
fn errors_have_one_shape_and_the_page_a_strict_policy() -> Result<()> {
    let redis = RedisServer::start()?;
    let con = console(&redis.url(), Some(ADMIN))?;
    let p = con.port;
    let auth = format!("Authorization: Bearer {ADMIN}\r\n");
    let redis_addr = redis.url().trim_start_matches("redis://").to_owned();
    let (status, text) = raw(
        p,
        &format!(
            "POST /api/queues/q/jobs HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        ),
    )?;
    ensure!(status == 201, "{text}");
    let cases = [
        (
            405,
            format!(
                "PUT /api/queues HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        ),
        (
            400,
            format!(
                "GET /api/queues/q/jobs?limit=lots HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
            ),
        ),
        (
            400,
            format!(
                "GET /api/queues/q/jobs?cursor=99999999999999999999999 HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
            ),
        ),
        (
            400,
            format!(
                "GET /api/queues/q/jobs?cursor=18446744073709551615 HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
            ),
        ),
        (
            413,
            format!(
                "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                1 << 20
            ),
        ),
        (
            404,
            format!("GET /nope HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"),
        ),
    ];
    for (want, req) in &cases {
        let (status, text) = raw(p, req)?;
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        let v: serde_json::Value =
            serde_json::from_str(body).with_context(|| format!("{req:?} answered {text:?}"))?;
        ensure!(
            status == *want && v["error"].is_string() && v["code"].is_string(),
            "{req:?} -> {status} {body}"
        );
        ensure!(!text.contains(&redis_addr), "Redis' address shown: {text}");
        ensure!(
            text.to_ascii_lowercase()
                .contains("x-content-type-options: nosniff"),
            "{text}"
        );
    }
    let (status, page) = raw(p, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    ensure!(status == 200);
    let csp = page
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-security-policy:")
                .map(str::to_owned)
        })
        .context("no CSP")?;
    for needed in ["script-src 'self'", "form-action 'self'", "base-uri 'none'"] {
        ensure!(csp.contains(needed), "{csp}");
    }
    ensure!(!csp.contains("unsafe-inline"), "{csp}");
    ensure!(
        !page.contains("<script>") && page.contains("src=\"/app.js\""),
        "{page}"
    );
    Ok(())
}

/// A console started while Redis is down listens at once (the shipped
/// liveness probe is a TCP check), answers 503 in the documented shape,
/// and serves as soon as Redis is up (before: it did not listen at all).
#[test]
fn a_console_started_before_redis_listens_and_serves_once_redis_is_up() -> Result<()> {
    let mut redis = RedisServer::start()?;
    redis.kill();
    let con = console(&redis.url(), Some(ADMIN))?;
    let p = con.port;
    let health = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (status, text) = raw(p, health)?;
    ensure!(
        status == 503 && text.contains("redis_unavailable"),
        "{text}"
    );
    redis.restart()?;
    let start = Instant::now();
    loop {
        let (status, _) = raw(p, health)?;
        if status == 200 {
            break;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(30),
            "the console never reached Redis"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}
