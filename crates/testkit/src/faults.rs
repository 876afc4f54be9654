//! A fault-injecting HTTP proxy for the object-storage tests: it sits
//! between a client and a real server ([`crate::S3Server`]) and, for the
//! requests a [`Rule`] picks, answers an error, never answers, holds the
//! request until a [`Gate`] opens, or sends the answer a few bytes a second.
//! Everything else is forwarded unchanged (one request per connection, so
//! a rule applies to exactly the request it names). The `Host` header is
//! kept, so SigV4 signatures still verify upstream.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::{Result, err};

/// A gate a held request waits on.
#[derive(Debug, Default)]
pub struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
    /// How many requests have reached it.
    reached: Mutex<usize>,
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Arc<Gate> {
        Arc::new(Gate::default())
    }

    /// Lets every held request (and every later one) through.
    pub fn open(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_all();
    }

    /// How many requests have reached the gate so far.
    pub fn reached(&self) -> usize {
        *self.reached.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `n` requests have reached the gate, up to `timeout`.
    pub fn wait_reached(&self, n: usize, timeout: Duration) -> bool {
        let end = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < end {
            if self.reached() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn pass(&self, stop: &AtomicBool) {
        *self.reached.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        while !*open && !stop.load(Ordering::SeqCst) {
            open = self
                .cv
                .wait_timeout(open, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// What the proxy does to a request a rule picks.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answers this status with an S3 error body carrying `code`.
    Fail(u16, &'static str),
    /// Reads the request and never answers (until the proxy is dropped).
    Stall,
    /// Waits for the gate, then forwards.
    Hold(Arc<Gate>),
    /// Forwards, then sends the answer at this many bytes a second.
    Trickle(usize),
}

/// Which requests a fault applies to, and how many times.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `GET`, `PUT`, `POST`, `DELETE`, `HEAD`; `None` for any.
    pub method: Option<&'static str>,
    /// A substring of the request target (path and query).
    pub target: String,
    /// Requests it still applies to; `None` for every one.
    pub times: Option<usize>,
    /// What happens to them.
    pub fault: Fault,
}

impl Rule {
    /// A rule for `method` requests whose target contains `target`.
    pub fn new(method: Option<&'static str>, target: &str, fault: Fault) -> Rule {
        Rule {
            method,
            target: target.to_owned(),
            times: None,
            fault,
        }
    }

    /// This rule, for the first `n` matching requests only.
    pub fn times(mut self, n: usize) -> Rule {
        self.times = Some(n);
        self
    }
}

#[derive(Debug, Default)]
struct Shared {
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<String>>,
    stop: AtomicBool,
    frozen: AtomicBool,
}

/// The proxy; stops (and ends every held or stalled request) when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`http://host:port`) on a free
    /// loopback port.
    pub fn start(upstream: &str) -> Result<FaultProxy> {
        let up: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .map_err(|e| err(format!("proxy upstream {upstream}: {e}")))?;
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| err(format!("proxy bind: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| err(format!("proxy address: {e}")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| err(format!("proxy listener: {e}")))?;
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::spawn(move || {
            while !s.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let s = s.clone();
                        std::thread::spawn(move || {
                            let _ = serve(conn, up, &s);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(FaultProxy { addr, shared })
    }

    /// `http://127.0.0.1:<port>`, for the client's endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a rule (the first matching rule applies).
    pub fn add(&self, rule: Rule) {
        self.shared
            .rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(rule);
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.shared
            .rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.freeze(false);
    }

    /// Stalls every request from now on (`true`), or none (`false`).
    pub fn freeze(&self, on: bool) {
        self.shared.frozen.store(on, Ordering::SeqCst);
    }

    /// Every request seen, as `METHOD target`, in arrival order.
    pub fn seen(&self) -> Vec<String> {
        self.shared
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

fn pick(shared: &Shared, method: &str, target: &str) -> Option<Fault> {
    if shared.frozen.load(Ordering::SeqCst) {
        return Some(Fault::Stall);
    }
    let mut rules = shared.rules.lock().unwrap_or_else(|p| p.into_inner());
    let r = rules.iter_mut().find(|r| {
        r.method.is_none_or(|m| m == method)
            && target.contains(&r.target)
            && r.times.is_none_or(|n| n > 0)
    })?;
    if let Some(n) = &mut r.times {
        *n -= 1;
    }
    Some(r.fault.clone())
}

fn serve(conn: TcpStream, up: SocketAddr, shared: &Shared) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut head = Vec::new();
    let mut length = 0usize;
    let mut line = String::new();
    let mut first = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if first.is_empty() {
            first = line.trim_end().to_owned();
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") {
            continue;
        }
        if line == "\r\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        head.extend_from_slice(line.as_bytes());
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("").to_owned();
    shared
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(format!("{method} {target}"));
    let mut conn = conn;
    let mut trickle = None;
    match pick(shared, &method, &target) {
        Some(Fault::Fail(status, code)) => {
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
            );
            write!(
                conn,
                "HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            return Ok(());
        }
        Some(Fault::Stall) => {
            while !shared.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return Ok(());
        }
        Some(Fault::Hold(gate)) => gate.pass(&shared.stop),
        Some(Fault::Trickle(bps)) => trickle = Some(bps.max(1)),
        None => {}
    }
    let mut upstream = TcpStream::connect(up)?;
    upstream.set_read_timeout(Some(Duration::from_secs(120)))?;
    upstream.write_all(&head)?;
    upstream.write_all(&body)?;
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer)?;
    // The answer's head gets `Connection: close`: this connection ends here.
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |i| i + 2);
    let (h, rest) = answer.split_at(split);
    let mut out = Vec::new();
    for l in String::from_utf8_lossy(h).split("\r\n") {
        if l.is_empty() || l.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        out.extend_from_slice(l.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n");
    match trickle {
        None => {
            conn.write_all(&out)?;
            conn.write_all(rest)?;
        }
        Some(bps) => {
            conn.write_all(&out)?;
            conn.write_all(&rest[..rest.len().min(2)])?;
            for chunk in rest[rest.len().min(2)..].chunks(bps) {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
                conn.write_all(chunk)?;
            }
        }
    }
    Ok(())
}
