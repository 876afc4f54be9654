//! The dashboard in a real headless Chromium (driven over WebDriver by
//! chromedriver), against a real redis-server, a real sleep_worker and the
//! console process: every page renders real data, the job page keeps its
//! log after the job ends, bulk actions report their counts, read-only
//! users see no admin buttons, one banner marks stale data while Redis is
//! down, a 200 kB error does not widen the page, the layout fits a phone,
//! and dark mode applies. Screenshots go to `$SPOOL_SCREENSHOTS` when set
//! (docs/console.md's come from there), else to the test's artefacts.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use spool_queue::{Client, JobOptions, NewJob, Settle};
use spool_testkit::{RedisServer, free_port};

use common::{ADMIN, READ, sleep_worker};

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    base: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session.
struct Browser {
    http: reqwest::Client,
    session: String,
    _driver: Driver,
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

impl Browser {
    async fn start() -> Result<Option<Browser>> {
        let (Some(driver), Some(chrome)) = (
            which("chromedriver"),
            which("chromium").or_else(|| which("chromium-browser")),
        ) else {
            spool_testkit::skipped(
                "chromium and chromedriver are not installed (scripts/deps.sh installs them)",
            )?;
            return Ok(None);
        };
        let port = free_port()?;
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let start = Instant::now();
        while http
            .get(format!("{}/status", driver.base))
            .send()
            .await
            .is_err()
        {
            ensure!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver never answered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chrome,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900",
                         "--hide-scrollbars", "--force-device-scale-factor=1"]
            }
        } } });
        let r: Value = http
            .post(format!("{}/session", driver.base))
            .json(&caps)
            .send()
            .await?
            .json()
            .await?;
        let session = r["value"]["sessionId"]
            .as_str()
            .with_context(|| format!("no session: {r}"))?
            .to_owned();
        Ok(Some(Browser {
            http,
            session,
            _driver: driver,
        }))
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Value) -> Result<Value> {
        let url = format!("{}/session/{}{path}", self._driver.base, self.session);
        let mut r = self.http.request(method.clone(), url);
        if method != reqwest::Method::GET {
            r = r.json(&body);
        }
        let v: Value = r.send().await?.json().await?;
        if let Some(e) = v["value"]["error"].as_str() {
            bail!("webdriver {path}: {e}: {}", v["value"]["message"]);
        }
        Ok(v["value"].clone())
    }

    async fn go(&self, url: &str) -> Result<()> {
        self.cmd(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await?;
        Ok(())
    }

    /// Runs `script` (a function body; `arguments` as in WebDriver).
    async fn js(&self, script: &str) -> Result<Value> {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// The text `expr` evaluates to in the page ('' when it is not a string).
    async fn text(&self, expr: &str) -> Result<String> {
        let v = self.js(&format!("return {expr};")).await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// The document's width and the window's, in CSS pixels.
    async fn widths(&self) -> Result<(f64, f64)> {
        let w = self
            .js("return [document.documentElement.scrollWidth, window.innerWidth];")
            .await?;
        Ok((
            w[0].as_f64().context("scrollWidth")?,
            w[1].as_f64().context("innerWidth")?,
        ))
    }

    /// Waits until `expr` is truthy in the page.
    async fn until(&self, what: &str, expr: &str) -> Result<()> {
        let start = Instant::now();
        loop {
            if self
                .js(&format!("return Boolean({expr});"))
                .await?
                .as_bool()
                == Some(true)
            {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(30) {
                let page = self
                    .js("return document.body.innerText.slice(0, 2000);")
                    .await?;
                bail!("timed out waiting for {what} ({expr}); the page says: {page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn size(&self, width: u32, height: u32) -> Result<()> {
        self.cmd(
            reqwest::Method::POST,
            "/window/rect",
            json!({ "width": width, "height": height }),
        )
        .await?;
        Ok(())
    }

    async fn dark(&self, on: bool) -> Result<()> {
        let value = if on { "dark" } else { "light" };
        self.cmd(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            json!({ "cmd": "Emulation.setEmulatedMedia",
                    "params": { "features": [{ "name": "prefers-color-scheme", "value": value }] } }),
        )
        .await?;
        Ok(())
    }

    async fn screenshot(&self, name: &str) -> Result<()> {
        let dir = std::env::var_os("SPOOL_SCREENSHOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| spool_testkit::artefact_dir().join("console-screenshots"));
        std::fs::create_dir_all(&dir)?;
        let png = self
            .cmd(reqwest::Method::GET, "/screenshot", Value::Null)
            .await?;
        let png = base64_decode(png.as_str().context("screenshot")?)?;
        ensure!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(dir.join(format!("{name}.png")), png)?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver's kill ends the browser too; closing the session first
        // lets Chromium exit cleanly when the runtime still runs.
        let url = format!("{}/session/{}", self._driver.base, self.session);
        let _ = std::thread::spawn(move || {
            let _ = std::process::Command::new("curl")
                .args(["-s", "-X", "DELETE", &url])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        })
        .join();
    }
}

fn base64_decode(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => bail!("not base64: {c}"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// Dead jobs on `queue`, one per error.
async fn dead_jobs(client: &Client, queue: &str, errors: &[String]) -> Result<()> {
    let q = client.queue(queue)?;
    let jobs = errors
        .iter()
        .enumerate()
        .map(|(i, _)| NewJob::new(format!("{{\"n\":{i}}}").into_bytes()))
        .collect();
    q.enqueue_batch(jobs).await?;
    let got = q.reserve(errors.len(), Duration::from_secs(2)).await?;
    ensure!(got.len() == errors.len(), "reserved {}", got.len());
    let settles = got
        .iter()
        .zip(errors)
        .map(|(j, e)| (j, Settle::Dead(e.clone())))
        .collect();
    for r in q.settle_many(settles).await? {
        r?;
    }
    Ok(())
}

#[tokio::test]
async fn the_dashboard_in_a_real_browser() -> Result<()> {
    let Some(b) = Browser::start().await? else {
        return Ok(());
    };
    let mut redis = RedisServer::start()?;
    let con = common::console(&redis.url(), None, None, &[])?;
    let client = Client::connect(&redis.url()).await?;
    let base = con.base.clone();

    // Data: a worker on "renders" runs a job that fails once then
    // completes; "ingest" holds dead jobs, one with a 200 kB error.
    let _worker = sleep_worker(&redis, "renders")?;
    let renders = client.queue("renders")?;
    let story = renders
        .enqueue(
            br#"{"sleep_ms": 50, "fail_times": 1, "log": ["fetching input", "encoding 1080p"]}"#
                .to_vec(),
            JobOptions::default().backoff(Duration::from_millis(200), Duration::from_millis(400)),
        )
        .await?;
    let mut errors: Vec<String> = (0..5)
        .map(|i| format!("input {i}: moov atom not found"))
        .collect();
    errors.push("x".repeat(200_000));
    dead_jobs(&client, "ingest", &errors).await?;

    // Overview: both queues with their counts and last-hour lines; no
    // error greets a first visit.
    b.go(&format!("{base}/")).await?;
    b.until("the queue table", "document.querySelector('tr[data-queue=\"ingest\"]') && document.querySelector('tr[data-queue=\"renders\"]')").await?;
    b.until(
        "the charts' history",
        "document.querySelectorAll('svg.spark').length >= 2",
    )
    .await?;
    ensure!(
        b.js("return document.getElementById('banner').hidden;")
            .await?
            == true,
        "the first visit shows an error"
    );
    ensure!(
        b.js("return document.querySelector('tr[data-queue=\"ingest\"] [data-state=dead]').textContent;")
            .await?
            == "6"
    );
    b.screenshot("overview").await?;

    // The job page tells the story: both attempts, the failure's error,
    // times, and the log.
    let start = Instant::now();
    while renders.info(&story).await?.state != spool_queue::JobState::Completed {
        ensure!(
            start.elapsed() < Duration::from_secs(60),
            "the story job never completed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.go(&format!("{base}/#/q/renders/job/{story}")).await?;
    b.until(
        "the attempts table",
        "document.querySelectorAll('main table tbody tr').length === 2",
    )
    .await?;
    let text = b.text("document.querySelector('main').innerText").await?;
    for want in [
        "failing attempt 1 of the first 1 on purpose",
        "Enqueued",
        "First start",
        "waited",
        "encoding 1080p",
        "completed",
    ] {
        ensure!(text.contains(want), "the job page lacks {want:?}:\n{text}");
    }
    b.screenshot("job").await?;

    // A job followed while it runs keeps its log once it ends.
    let live = renders
        .enqueue(
            br#"{"sleep_ms": 2500, "log": ["started on the GPU pool"]}"#.to_vec(),
            JobOptions::default(),
        )
        .await?;
    b.go(&format!("{base}/#/q/renders/job/{live}")).await?;
    b.until(
        "the running job",
        "document.getElementById('state')?.textContent === 'active'",
    )
    .await?;
    b.until(
        "the end",
        "document.getElementById('state')?.textContent === 'completed'",
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ensure!(
        b.text("document.getElementById('log')?.textContent ?? ''")
            .await?
            .contains("started on the GPU pool"),
        "the log vanished after the job ended"
    );
    ensure!(
        b.text("document.getElementById('said').textContent")
            .await?
            .contains("completed"),
        "the end was not announced"
    );

    // The dead tab: a 200 kB error folds away instead of widening the page
    // (it made it 1.9 million pixels wide); retry all reports its count.
    b.go(&format!("{base}/#/q/ingest/dead")).await?;
    b.until(
        "the dead table",
        "document.querySelectorAll('table.jobs tbody tr').length === 6",
    )
    .await?;
    b.until(
        "the charts",
        "document.querySelectorAll('figure.chart').length === 2",
    )
    .await?;
    let (page, window) = b.widths().await?;
    ensure!(
        page <= window + 2.0,
        "the page is wider than the window: {page} > {window}"
    );
    ensure!(
        b.js("return document.querySelectorAll('details.long').length;")
            .await?
            .as_u64()
            >= Some(1)
    );
    b.screenshot("dead").await?;
    // Search by error text.
    b.js("const f = document.getElementById('find'); f.q.value = 'MOOV atom'; f.requestSubmit();")
        .await?;
    b.until(
        "search results",
        "document.getElementById('results')?.innerText.includes('5 jobs with that text')",
    )
    .await?;
    // Retry all: confirm() answers yes; the count is reported and announced.
    b.js("window.confirm = () => true; document.getElementById('retry-all').click();")
        .await?;
    b.until(
        "the count",
        "document.querySelector('.notice')?.textContent.includes('6 dead jobs retried')",
    )
    .await?;
    ensure!(
        b.text("document.getElementById('said').textContent")
            .await?
            .contains("6 dead jobs retried; 0 dead now"),
        "the bulk count was not announced"
    );
    ensure!(
        b.js("return document.querySelector('main').getAttribute('aria-live');")
            .await?
            .is_null(),
        "the whole page must not be a live region"
    );

    // Workers: host, version, uptime, running jobs.
    b.go(&format!("{base}/#/workers")).await?;
    b.until("a worker row", "document.querySelector('tr[data-worker]')")
        .await?;
    let row = b
        .text("document.querySelector('tr[data-worker]').innerText")
        .await?;
    ensure!(
        row.contains(env!("CARGO_PKG_VERSION"))
            && row.contains("renders")
            && row.contains("working"),
        "{row}"
    );
    b.screenshot("workers").await?;

    // One banner, marking the page stale, while Redis is down; gone after.
    b.go(&format!("{base}/")).await?;
    b.until("the overview", "document.querySelector('tr[data-queue]')")
        .await?;
    redis.kill();
    b.until(
        "the banner",
        "!document.getElementById('banner').hidden && document.querySelector('main.stale')",
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    ensure!(
        b.js("return document.querySelectorAll('.banner, .err').length;")
            .await?
            == 1,
        "errors pile up"
    );
    let said = b
        .text("document.getElementById('banner').textContent")
        .await?;
    ensure!(said.contains("may be stale"), "{said}");
    redis.restart()?;
    b.until(
        "the banner to go",
        "document.getElementById('banner').hidden && !document.querySelector('main.stale')",
    )
    .await?;

    // A phone: nothing wider than the screen; tables scroll on their own.
    b.size(390, 844).await?;
    b.go(&format!("{base}/#/q/renders/completed")).await?;
    b.until(
        "the completed tab",
        "document.querySelectorAll('table.jobs tbody tr a').length >= 2",
    )
    .await?;
    let (page, screen) = b.widths().await?;
    ensure!(
        page <= screen + 2.0,
        "on a phone the page is wider than the screen: {page} > {screen}"
    );
    b.screenshot("phone").await?;
    b.size(1280, 900).await?;

    // Dark mode follows the system's.
    b.dark(true).await?;
    b.go(&format!("{base}/#/q/renders")).await?;
    b.until(
        "the queue page",
        "document.querySelectorAll('figure.chart').length === 2",
    )
    .await?;
    let bg = b
        .js("return getComputedStyle(document.documentElement).backgroundColor;")
        .await?;
    ensure!(bg == "rgb(21, 23, 26)", "dark mode background: {bg}");
    b.screenshot("dark").await?;
    b.dark(false).await?;

    // Read-only users see no admin buttons; the login form greets without
    // an error.
    // (A new client: the first one's connection died with the restart.)
    let client = Client::connect(&redis.url()).await?;
    dead_jobs(&client, "ingest", &["still broken".to_owned()]).await?;
    let guarded = common::console(&redis.url(), Some(ADMIN), Some(READ), &[])?;
    b.go(&format!("{}/#/q/ingest/dead", guarded.base)).await?;
    b.until("the login form", "document.getElementById('login')")
        .await?;
    ensure!(
        b.js("return document.getElementById('banner').hidden;")
            .await?
            == true
    );
    b.js(&format!(
        "const f = document.getElementById('login'); f.token.value = '{READ}'; f.requestSubmit();"
    ))
    .await?;
    b.until(
        "the dead job",
        "document.querySelectorAll('table.jobs tbody tr a').length === 1",
    )
    .await?;
    ensure!(
        b.js("return document.getElementById('role').textContent;")
            .await?
            == "role: read"
    );
    let buttons = b
        .js("return document.querySelectorAll('#pause, #resume, #retry-all, #purge, [data-retry], #cancel').length;")
        .await?;
    ensure!(
        buttons == 0,
        "a read-only user sees {buttons} admin buttons"
    );
    Ok(())
}
