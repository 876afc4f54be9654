//! spool-console as a process against a real redis-server and real
//! sleep_worker processes: every endpoint, the three auth levels, CSRF,
//! pagination, SSE to completion, the worker registry, and bad input.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use reqwest::StatusCode;
use serde_json::{Value, json};
use spool_testkit::RedisServer;

mod common;
use common::{ADMIN, Console, READ, sleep_worker};

fn console(redis_url: &str, env: &[(&str, &str)]) -> Result<Console> {
    common::console(redis_url, Some(ADMIN), Some(READ), env)
}

fn http() -> Result<reqwest::Client> {
    // The console closes keep-alive connections idle for 10 s: a client
    // pools them for less (this test blocks its runtime while workers
    // start, so the client would not see the close before reusing one).
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(5))
        .build()?)
}

async fn call(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<(StatusCode, Value)> {
    let write = method != reqwest::Method::GET;
    let mut r = c.request(method, url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    } else if write {
        // Writes are JSON, also when they carry no body.
        r = r.header("content-type", "application/json");
    }
    let resp = r.send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

#[tokio::test]
async fn every_endpoint_with_auth_pagination_events_and_workers() -> Result<()> {
    use reqwest::Method as M;
    let redis = RedisServer::start()?;
    let con = console(&redis.url(), &[])?;
    let c = http()?;
    let u = |p: &str| format!("{}{p}", con.base);

    // Health and the API description need no token.
    let (s, _) = call(&c, M::GET, &u("/healthz"), None, None).await?;
    ensure!(s == StatusCode::OK);
    let (s, doc) = call(&c, M::GET, &u("/api/openapi.json"), None, None).await?;
    ensure!(s == StatusCode::OK && doc["openapi"] == "3.0.3", "{doc}");
    ensure!(doc["paths"]["/api/queues/{queue}/jobs/{id}/events"].is_object());

    // Auth: none → 401, read → reads but 403 on writes, admin → all.
    let (s, e) = call(&c, M::GET, &u("/api/queues"), None, None).await?;
    ensure!(
        s == StatusCode::UNAUTHORIZED && e["code"] == "unauthorized",
        "{e}"
    );
    let (s, _) = call(
        &c,
        M::GET,
        &u("/api/queues"),
        Some("wrong-token-0123456789"),
        None,
    )
    .await?;
    ensure!(s == StatusCode::UNAUTHORIZED);
    let (s, e) = call(
        &c,
        M::POST,
        &u("/api/queues/renders/jobs"),
        Some(READ),
        Some(json!({"sleep_ms": 1})),
    )
    .await?;
    ensure!(
        s == StatusCode::FORBIDDEN && e["code"] == "forbidden",
        "{e}"
    );

    // Enqueue one, then 10,000 as one array; pages walk them all.
    let (s, one) = call(
        &c,
        M::POST,
        &u("/api/queues/renders/jobs?priority=5"),
        Some(ADMIN),
        Some(json!({"sleep_ms": 1500})),
    )
    .await?;
    ensure!(
        s == StatusCode::CREATED && one["id"].is_string(),
        "{s} {one}"
    );
    let many: Vec<Value> = (0..10_000)
        .map(|i| json!({"sleep_ms": 1, "tag": i}))
        .collect();
    let (s, ids) = call(
        &c,
        M::POST,
        &u("/api/queues/bulk/jobs"),
        Some(ADMIN),
        Some(Value::Array(many)),
    )
    .await?;
    ensure!(s == StatusCode::CREATED && ids["ids"].as_array().map(Vec::len) == Some(10_000));
    let mut seen = std::collections::HashSet::new();
    let mut cursor = String::new();
    loop {
        let url = u(&format!(
            "/api/queues/bulk/jobs?state=ready&limit=500&cursor={cursor}"
        ));
        let (s, page) = call(&c, M::GET, &url, Some(READ), None).await?;
        ensure!(s == StatusCode::OK, "{page}");
        for j in page["jobs"].as_array().context("jobs")? {
            seen.insert(j["id"].as_str().unwrap_or_default().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(n) => cursor = n.to_owned(),
            None => break,
        }
    }
    ensure!(
        seen.len() == 10_000,
        "pages held {} distinct jobs",
        seen.len()
    );
    let (s, qs) = call(&c, M::GET, &u("/api/queues"), Some(READ), None).await?;
    ensure!(s == StatusCode::OK);
    let bulk = qs
        .as_array()
        .and_then(|a| a.iter().find(|q| q["queue"] == "bulk"))
        .context("bulk")?;
    ensure!(bulk["ready"] == 10_000, "{bulk}");

    // A worker runs the first job; its events stream progress until done,
    // and it shows in the registry while it works.
    let mut worker = sleep_worker(&redis, "renders")?;
    let id = one["id"].as_str().context("id")?;
    let resp = c
        .get(u(&format!("/api/queues/renders/jobs/{id}/events")))
        .bearer_auth(READ)
        .send()
        .await?;
    ensure!(resp.status() == StatusCode::OK);
    let (s, ws) = call(&c, M::GET, &u("/api/workers"), Some(READ), None).await?;
    ensure!(
        s == StatusCode::OK && ws.as_array().map(Vec::len) == Some(1),
        "{ws}"
    );
    let body = resp.text().await?;
    ensure!(
        body.contains("event: progress") && body.contains("event: done"),
        "{body}"
    );
    let done = body
        .split("event: done\ndata: ")
        .nth(1)
        .and_then(|d| d.lines().next())
        .context("done data")?;
    let done: Value = serde_json::from_str(done)?;
    ensure!(
        done["state"] == "completed" && done["result"]["slept_ms"] == 1500,
        "{done}"
    );

    // Dead letters: a job that fails its only attempt, retried, then purged.
    let (_, bad) = call(
        &c,
        M::POST,
        &u("/api/queues/renders/jobs"),
        Some(ADMIN),
        Some(json!({"sleep_ms": 10, "fail_times": 9})),
    )
    .await?;
    let bad_id = bad["id"].as_str().context("id")?.to_owned();
    let start = Instant::now();
    loop {
        let (_, j) = call(
            &c,
            M::GET,
            &u(&format!("/api/queues/renders/jobs/{bad_id}")),
            Some(READ),
            None,
        )
        .await?;
        if j["state"] == "dead" {
            break;
        }
        ensure!(start.elapsed() < Duration::from_secs(60), "never dead: {j}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (s, r) = call(
        &c,
        M::POST,
        &u("/api/queues/renders/dead/retry"),
        Some(ADMIN),
        Some(json!({"ids": [bad_id]})),
    )
    .await?;
    ensure!(s == StatusCode::OK && r["retried"] == 1, "{r}");
    let (s, e) = call(
        &c,
        M::POST,
        &u("/api/queues/renders/dead/retry"),
        Some(ADMIN),
        Some(json!({})),
    )
    .await?;
    ensure!(s == StatusCode::BAD_REQUEST, "{e}");
    let (s, r) = call(
        &c,
        M::DELETE,
        &u("/api/queues/renders/dead"),
        Some(ADMIN),
        Some(json!({"all": true})),
    )
    .await?;
    ensure!(s == StatusCode::OK && r["purged"].is_number(), "{r}");

    // Cancel a waiting job.
    let (_, w) = call(
        &c,
        M::POST,
        &u("/api/queues/bulk/jobs"),
        Some(ADMIN),
        Some(json!({"x": 1})),
    )
    .await?;
    let wid = w["id"].as_str().context("id")?;
    let (s, r) = call(
        &c,
        M::POST,
        &u(&format!("/api/queues/bulk/jobs/{wid}/cancel")),
        Some(ADMIN),
        None,
    )
    .await?;
    ensure!(s == StatusCode::OK && r["outcome"] == "cancelled", "{r}");
    let (_, j) = call(
        &c,
        M::GET,
        &u(&format!("/api/queues/bulk/jobs/{wid}")),
        Some(READ),
        None,
    )
    .await?;
    ensure!(
        j["state"] == "cancelled" && j["log"].as_array().is_some_and(Vec::is_empty),
        "a job comes with its (empty) log: {j}"
    );

    // A SIGKILLed worker leaves the registry within two lease periods (4 s).
    worker.kill();
    let start = Instant::now();
    loop {
        let (_, ws) = call(&c, M::GET, &u("/api/workers"), Some(READ), None).await?;
        if ws.as_array().is_some_and(Vec::is_empty) {
            break;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(8),
            "the killed worker stayed: {ws}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Bad input: each a clear 4xx, nothing changed.
    for (method, path, body, want) in [
        (M::GET, "/api/queues/nope/jobs", None, 404u16),
        (M::GET, "/api/queues/bad%7Bname%7D/jobs", None, 400),
        (M::GET, "/api/queues/bulk/jobs?state=sleeping", None, 400),
        (M::GET, "/api/queues/bulk/jobs?cursor=abc", None, 400),
        (M::GET, "/api/queues/bulk/jobs/a%20b", None, 400),
        (M::GET, "/api/queues/bulk/jobs/..%2F..%2Fetc", None, 404),
        (M::GET, "/api/queues/bulk/jobs/does-not-exist", None, 404),
        (M::POST, "/api/queues/bulk/jobs", Some(json!([])), 400),
        (M::GET, "/api/nothing", None, 404),
    ] {
        let (s, e) = call(&c, method.clone(), &u(path), Some(ADMIN), body).await?;
        ensure!(
            s.as_u16() == want && e["code"].is_string(),
            "{method} {path}: {s} {e}"
        );
    }
    let malformed = c
        .post(u("/api/queues/bulk/jobs"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await?;
    ensure!(malformed.status() == StatusCode::BAD_REQUEST);
    let huge = c
        .post(u("/api/queues/bulk/jobs"))
        .bearer_auth(ADMIN)
        .body(vec![b' '; 9 << 20])
        .send()
        .await?;
    ensure!(
        huge.status() == StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        huge.status()
    );
    // The server stops reading the refused body and closes the connection:
    // it must say so, or a client reuses the connection for its next
    // request and gets "connection closed before message completed" (CI
    // saw exactly that on the next call).
    ensure!(
        huge.headers()
            .get("connection")
            .is_some_and(|v| v == "close"),
        "{:?}",
        huge.headers()
    );
    let (_, qs) = call(&c, M::GET, &u("/api/queues"), Some(READ), None).await?;
    let bulk = qs
        .as_array()
        .and_then(|a| a.iter().find(|q| q["queue"] == "bulk"))
        .context("bulk")?;
    ensure!(bulk["ready"] == 10_000 && bulk["cancelled"] == 1, "{bulk}");

    // Pause and resume: read tokens may not; the paused queue lists its
    // held jobs as ready, in order, and the KEDA key reads 0.
    let (s, _) = call(&c, M::POST, &u("/api/queues/bulk/pause"), Some(READ), None).await?;
    ensure!(s == StatusCode::FORBIDDEN, "a read token paused: {s}");
    let (s, p) = call(&c, M::POST, &u("/api/queues/bulk/pause"), Some(ADMIN), None).await?;
    ensure!(
        s == StatusCode::OK && p["paused"] == true && p["parked"] == 10_000 && p["ready"] == 0,
        "{s} {p}"
    );
    let (_, qs) = call(&c, M::GET, &u("/api/queues"), Some(READ), None).await?;
    ensure!(
        qs.as_array()
            .and_then(|a| a.iter().find(|q| q["queue"] == "bulk"))
            .is_some_and(|b| b["paused"] == true && b["parked"] == 10_000 && b["ready"] == 0),
        "{qs}"
    );
    let (_, held) = call(
        &c,
        M::GET,
        &u("/api/queues/bulk/jobs?state=ready&limit=3"),
        Some(READ),
        None,
    )
    .await?;
    ensure!(
        held["jobs"].as_array().is_some_and(|j| j.len() == 3),
        "{held}"
    );
    let (s, r) = call(
        &c,
        M::POST,
        &u("/api/queues/bulk/resume"),
        Some(ADMIN),
        None,
    )
    .await?;
    ensure!(
        s == StatusCode::OK && r["paused"] == false && r["ready"] == 10_000,
        "{s} {r}"
    );

    let log = std::fs::read_to_string(&con.log)?;
    ensure!(
        !log.contains(ADMIN) && !log.contains(READ),
        "a token reached the log:\n{log}"
    );
    Ok(())
}

#[tokio::test]
async fn the_browser_session_needs_its_csrf_token() -> Result<()> {
    let redis = RedisServer::start()?;
    let con = console(&redis.url(), &[])?;
    let c = http()?;
    let u = |p: &str| format!("{}{p}", con.base);
    let page = c.get(u("/")).send().await?;
    ensure!(page.status() == StatusCode::OK);
    ensure!(page.text().await?.contains("spool console"));
    let login = c
        .post(u("/login"))
        .json(&json!({"token": ADMIN}))
        .send()
        .await?;
    ensure!(login.status() == StatusCode::OK);
    let cookies: Vec<String> = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("spool_session="))
        .context("session cookie")?;
    ensure!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    let csrf = cookies
        .iter()
        .find_map(|c| c.strip_prefix("spool_csrf="))
        .and_then(|c| c.split(';').next())
        .context("csrf cookie")?
        .to_owned();
    // The session cookie is a random id, never the token itself.
    let session_id = session
        .strip_prefix("spool_session=")
        .and_then(|c| c.split(';').next())
        .context("session id")?
        .to_owned();
    ensure!(
        !session_id.contains(ADMIN) && session_id.len() >= 32,
        "{session}"
    );
    let jar = format!("spool_session={session_id}; spool_csrf={csrf}");
    // Reads with the cookie work; a POST without the CSRF header does not.
    let r = c
        .get(u("/api/queues"))
        .header("cookie", &jar)
        .send()
        .await?;
    ensure!(r.status() == StatusCode::OK);
    let r = c
        .post(u("/api/queues/x/jobs"))
        .header("cookie", &jar)
        .json(&json!({}))
        .send()
        .await?;
    ensure!(r.status() == StatusCode::FORBIDDEN, "{}", r.status());
    let r = c
        .post(u("/api/queues/x/jobs"))
        .header("cookie", &jar)
        .header("x-csrf-token", "forged")
        .json(&json!({}))
        .send()
        .await?;
    ensure!(r.status() == StatusCode::FORBIDDEN);
    let r = c
        .post(u("/api/queues/x/jobs"))
        .header("cookie", &jar)
        .header("x-csrf-token", &csrf)
        .json(&json!({}))
        .send()
        .await?;
    ensure!(r.status() == StatusCode::CREATED, "{}", r.status());
    // Logout ends the session on the server: the same cookie is refused
    // afterwards.
    let r = c
        .post(u("/logout"))
        .header("cookie", &jar)
        .header("x-csrf-token", &csrf)
        .header("content-type", "application/json")
        .send()
        .await?;
    ensure!(r.status() == StatusCode::NO_CONTENT, "{}", r.status());
    let r = c
        .get(u("/api/queues"))
        .header("cookie", &jar)
        .send()
        .await?;
    ensure!(r.status() == StatusCode::UNAUTHORIZED, "{}", r.status());
    // A forged session cookie is refused.
    let r = c
        .get(u("/api/queues"))
        .header("cookie", "spool_session=forged-forged-forged")
        .send()
        .await?;
    ensure!(r.status() == StatusCode::UNAUTHORIZED);
    let r = c
        .post(u("/login"))
        .json(&json!({"token": "nope"}))
        .send()
        .await?;
    ensure!(r.status() == StatusCode::UNAUTHORIZED);
    // Failed logins are throttled: ten a minute, then 429 even for the
    // right token until the minute is over.
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let r = c
            .post(u("/login"))
            .json(&json!({"token": "guess-guess-guess-guess"}))
            .send()
            .await?;
        statuses.push(r.status().as_u16());
    }
    ensure!(statuses.contains(&429), "{statuses:?}");
    let r = c
        .post(u("/login"))
        .json(&json!({"token": ADMIN}))
        .send()
        .await?;
    ensure!(
        r.status() == StatusCode::TOO_MANY_REQUESTS,
        "{}",
        r.status()
    );
    Ok(())
}

#[test]
fn without_tokens_it_refuses_to_serve_beyond_loopback() -> Result<()> {
    let o = Command::new(env!("CARGO_BIN_EXE_spool-console"))
        .env("SPOOL_CONSOLE_ADDR", "0.0.0.0:0")
        .env_remove("SPOOL_CONSOLE_TOKEN")
        .env_remove("SPOOL_CONSOLE_READ_TOKEN")
        .stdin(Stdio::null())
        .output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    ensure!(
        o.status.code() == Some(2) && err.contains("SPOOL_CONSOLE_TOKEN"),
        "{err}"
    );
    for (k, v) in [
        ("SPOOL_CONSOLE_TOKEN", "short"),
        ("SPOOL_CONSOLE_ADDR", "nowhere"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_spool-console"))
            .env(k, v)
            .output()?;
        let err = String::from_utf8_lossy(&o.stderr);
        if o.status.code() != Some(2) || !err.contains(k) {
            bail!("{k}={v}: {:?} {err}", o.status);
        }
    }
    Ok(())
}

/// Checks `v` against an OpenAPI 3.0 schema of the console's own document:
/// `$ref`, `allOf`, `oneOf`, `nullable`, `type`, `properties`,
/// `additionalProperties: false`, `required`, `items`.
fn conforms(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<()> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap_or_default();
        return conforms(doc, &doc["components"]["schemas"][name], v, at);
    }
    if v.is_null() && schema["nullable"] == true {
        return Ok(());
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            conforms(doc, s, v, at)?;
        }
        return Ok(());
    }
    if let Some(any) = schema["oneOf"].as_array() {
        ensure!(
            any.iter().any(|s| conforms(doc, s, v, at).is_ok()),
            "{at}: {v} matches none of {any:?}"
        );
        return Ok(());
    }
    let ok = match schema["type"].as_str() {
        None => true,
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some(t) => bail!("{at}: unknown type {t}"),
    };
    ensure!(ok, "{at}: {v} is not {}", schema["type"]);
    if let (Some(props), Some(o)) = (schema["properties"].as_object(), v.as_object()) {
        for req in schema["required"].as_array().into_iter().flatten() {
            let req = req.as_str().unwrap_or_default();
            ensure!(o.contains_key(req), "{at}: no required field {req} in {v}");
        }
        for (k, x) in o {
            match props.get(k) {
                Some(s) => conforms(doc, s, x, &format!("{at}.{k}"))?,
                None => ensure!(
                    schema["additionalProperties"] != false,
                    "{at}: field {k} is not in the schema"
                ),
            }
        }
    }
    if let (Some(items), Some(a)) = (schema.get("items"), v.as_array()) {
        for (i, x) in a.iter().enumerate() {
            conforms(doc, items, x, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// The schema the document gives for `method path`'s answer `status`.
fn answer_schema(doc: &Value, method: &str, path: &str, status: u16) -> Value {
    let r = &doc["paths"][path][method]["responses"][status.to_string()];
    if let Some(name) = r["$ref"].as_str() {
        let name = name.rsplit('/').next().unwrap_or_default();
        return doc["components"]["responses"][name]["content"]["application/json"]["schema"]
            .clone();
    }
    r["content"]["application/json"]["schema"].clone()
}

#[tokio::test]
async fn answers_match_the_openapi_document_and_a_job_tells_its_whole_story() -> Result<()> {
    use reqwest::Method as M;
    let redis = RedisServer::start()?;
    let con = console(&redis.url(), &[])?;
    let c = http()?;
    let u = |p: &str| format!("{}{p}", con.base);
    let (_, doc) = call(&c, M::GET, &u("/api/openapi.json"), None, None).await?;
    // Every answer below is checked against the document.
    let checked = |method: &str, path: &str, s: StatusCode, v: &Value| -> Result<()> {
        let schema = answer_schema(&doc, method, path, s.as_u16());
        ensure!(
            !schema.is_null(),
            "{method} {path} answered {s}, which the document does not list"
        );
        conforms(&doc, &schema, v, &format!("{method} {path} {s}"))
    };

    // A job that fails once then completes, and one that dies.
    let (s, one) = call(
        &c,
        M::POST,
        &u("/api/queues/story/jobs"),
        Some(ADMIN),
        Some(json!({"sleep_ms": 10, "fail_times": 1})),
    )
    .await?;
    checked("post", "/api/queues/{queue}/jobs", s, &one)?;
    let (s, many) = call(
        &c,
        M::POST,
        &u("/api/queues/story/jobs"),
        Some(ADMIN),
        Some(json!([{"sleep_ms": 10, "fail_times": 99}])),
    )
    .await?;
    checked("post", "/api/queues/{queue}/jobs", s, &many)?;
    let id = one["id"].as_str().context("id")?.to_owned();
    let dead_id = many["ids"][0].as_str().context("ids")?.to_owned();
    let _worker = sleep_worker(&redis, "story")?;
    let start = Instant::now();
    let (job, dead) = loop {
        let (s, j) = call(
            &c,
            M::GET,
            &u(&format!("/api/queues/story/jobs/{id}")),
            Some(READ),
            None,
        )
        .await?;
        checked("get", "/api/queues/{queue}/jobs/{id}", s, &j)?;
        let (_, d) = call(
            &c,
            M::GET,
            &u(&format!("/api/queues/story/jobs/{dead_id}")),
            Some(READ),
            None,
        )
        .await?;
        if j["state"] == "completed" && d["state"] == "dead" {
            break (j, d);
        }
        ensure!(
            start.elapsed() < Duration::from_secs(90),
            "never finished: {j} {d}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The story: each failed attempt with its times and error, then the
    // successful one in started/finished.
    let f = job["failures"].as_array().context("failures")?;
    ensure!(f.len() == 1 && f[0]["attempt"] == 1, "{job}");
    ensure!(
        f[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("failing attempt 1 of the first 1")),
        "{job}"
    );
    let (enq, started, finished) = (
        job["enqueued_at_ms"].as_u64().context("enqueued")?,
        job["started_at_ms"].as_u64().context("started")?,
        job["finished_at_ms"].as_u64().context("finished")?,
    );
    let first_start = f[0]["started_at_ms"].as_u64().context("first start")?;
    ensure!(
        enq <= first_start && first_start < started && started <= finished,
        "{job}"
    );
    let tries = dead["failures"].as_array().map(Vec::len).unwrap_or(0) as u64;
    ensure!(
        tries >= 1 && Some(tries) == dead["attempts"].as_u64(),
        "{dead}"
    );

    // History counts every job, whatever its retention.
    let (s, h) = call(
        &c,
        M::GET,
        &u("/api/queues/story/history"),
        Some(READ),
        None,
    )
    .await?;
    checked("get", "/api/queues/{queue}/history", s, &h)?;
    let total = |f: &str| {
        h["minutes"]
            .as_array()
            .map_or(0, |m| m.iter().filter_map(|x| x[f].as_u64()).sum::<u64>())
    };
    ensure!(total("completed") == 1 && total("dead") == 1, "{h}");
    ensure!(
        total("failed") == 1 + tries && total("started") == 2 + tries,
        "{h}"
    );

    // Search: by id, and by text in errors (case-insensitive).
    let (s, r) = call(
        &c,
        M::GET,
        &u("/api/queues/story/search?q=FAILING%20ATTEMPT"),
        Some(READ),
        None,
    )
    .await?;
    checked("get", "/api/queues/{queue}/search", s, &r)?;
    ensure!(
        r["matches"].as_array().map(Vec::len) == Some(1)
            && r["matches"][0]["id"] == dead_id.as_str(),
        "{r}"
    );
    let (s, r) = call(
        &c,
        M::GET,
        &u(&format!("/api/queues/story/search?q={id}")),
        Some(READ),
        None,
    )
    .await?;
    ensure!(s == StatusCode::OK && r["job"]["id"] == id.as_str(), "{r}");
    let (s, e) = call(
        &c,
        M::GET,
        &u("/api/queues/story/search?q="),
        Some(READ),
        None,
    )
    .await?;
    checked("get", "/api/queues/{queue}/search", s, &e)?;
    ensure!(s == StatusCode::BAD_REQUEST, "{e}");

    // The rest of the read side, each against the document.
    for (path, real) in [
        ("/api/whoami", "/api/whoami"),
        ("/api/queues", "/api/queues"),
        ("/api/workers", "/api/workers"),
        (
            "/api/queues/{queue}/jobs",
            "/api/queues/story/jobs?state=dead",
        ),
        (
            "/api/queues/{queue}/jobs",
            "/api/queues/story/jobs?state=completed",
        ),
        ("/api/queues/{queue}/jobs", "/api/queues/nope/jobs"),
    ] {
        let (s, v) = call(&c, M::GET, &u(real), Some(READ), None).await?;
        checked("get", path, s, &v)?;
    }
    let (s, me) = call(&c, M::GET, &u("/api/whoami"), Some(READ), None).await?;
    ensure!(
        s == StatusCode::OK && me["role"] == "read" && me["auth"] == true,
        "{me}"
    );
    for (method, path, real) in [
        (
            M::POST,
            "/api/queues/{queue}/pause",
            "/api/queues/story/pause",
        ),
        (
            M::POST,
            "/api/queues/{queue}/resume",
            "/api/queues/story/resume",
        ),
    ] {
        let (s, v) = call(&c, method.clone(), &u(real), Some(ADMIN), None).await?;
        checked(&method.as_str().to_lowercase(), path, s, &v)?;
    }

    // "All" means all: more dead jobs than one batch (10,000), each moved,
    // and the answer says how many and how many are left.
    let client = spool_queue::Client::connect(&redis.url()).await?;
    let q = client.queue("graveyard")?;
    let n = 10_050;
    for chunk in (0..n).collect::<Vec<_>>().chunks(5_000) {
        let jobs = chunk
            .iter()
            .map(|i| spool_queue::NewJob::new(format!("{{\"n\":{i}}}").into_bytes()))
            .collect();
        q.enqueue_batch(jobs).await?;
    }
    let mut died = 0;
    while died < n {
        let got = q.reserve(1_000, Duration::from_secs(1)).await?;
        ensure!(!got.is_empty(), "only {died} reserved");
        let settles = got
            .iter()
            .map(|j| (j, spool_queue::Settle::Dead("corrupt input".into())))
            .collect();
        for r in q.settle_many(settles).await? {
            r?;
        }
        died += got.len();
    }
    let (s, r) = call(
        &c,
        M::POST,
        &u("/api/queues/graveyard/dead/retry"),
        Some(ADMIN),
        Some(json!({"all": true})),
    )
    .await?;
    checked("post", "/api/queues/{queue}/dead/retry", s, &r)?;
    ensure!(r["retried"] == n as u64 && r["remaining_dead"] == 0, "{r}");
    Ok(())
}

#[tokio::test]
async fn event_streams_are_capped_per_caller_and_reads_survive_a_redis_restart() -> Result<()> {
    use reqwest::Method as M;
    let mut redis = RedisServer::start()?;
    let con = console(&redis.url(), &[])?;
    let c = http()?;
    let u = |p: &str| format!("{}{p}", con.base);
    let (_, one) = call(
        &c,
        M::POST,
        &u("/api/queues/watched/jobs"),
        Some(ADMIN),
        Some(json!({"sleep_ms": 1})),
    )
    .await?;
    let id = one["id"].as_str().context("id")?;
    let events = u(&format!("/api/queues/watched/jobs/{id}/events"));
    // Each stream on its own connection, held open.
    let open = |token: &'static str| {
        let url = events.clone();
        async move {
            reqwest::Client::builder()
                .build()?
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .map_err(anyhow::Error::from)
        }
    };
    let mut held = Vec::new();
    for i in 0..32 {
        let r = open(READ).await?;
        ensure!(r.status() == StatusCode::OK, "stream {i}: {}", r.status());
        held.push(r);
    }
    let r = open(READ).await?;
    ensure!(
        r.status() == StatusCode::TOO_MANY_REQUESTS,
        "{}",
        r.status()
    );
    let e: Value = r.json().await?;
    ensure!(e["code"] == "too_many_streams", "{e}");
    // Another caller has its own allowance; a closed stream frees a place.
    ensure!(open(ADMIN).await?.status() == StatusCode::OK);
    drop(held.pop());
    let start = Instant::now();
    loop {
        let r = open(READ).await?;
        if r.status() == StatusCode::OK {
            held.push(r);
            break;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "a closed stream never freed its place"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(held);

    // Redis restarts (its data kept): the very next read answers.
    redis.restart()?;
    let (s, qs) = call(&c, M::GET, &u("/api/queues"), Some(READ), None).await?;
    ensure!(
        s == StatusCode::OK && qs[0]["queue"] == "watched",
        "the first read after a Redis restart: {s} {qs}"
    );
    Ok(())
}

#[tokio::test]
async fn followed_jobs_are_read_on_events_not_polled() -> Result<()> {
    use reqwest::Method as M;
    let redis = RedisServer::start()?;
    let con = console(&redis.url(), &[])?;
    let c = http()?;
    let u = |p: &str| format!("{}{p}", con.base);
    let mut raw = redis.connection()?;
    use spool_queue::deadpool_redis::redis;
    let hmgets = |conn: &mut redis::Connection| -> Result<u64> {
        let info: String = redis::cmd("INFO").arg("commandstats").query(conn)?;
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_hmget:calls="))
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    };
    // 30 jobs nobody runs, each followed by a browser.
    let mut held = Vec::new();
    for i in 0..30 {
        let (_, one) = call(
            &c,
            M::POST,
            &u("/api/queues/idle/jobs"),
            Some(ADMIN),
            Some(json!({ "n": i })),
        )
        .await?;
        let id = one["id"].as_str().context("id")?;
        let r = reqwest::Client::new()
            .get(u(&format!("/api/queues/idle/jobs/{id}/events")))
            .bearer_auth(READ)
            .send()
            .await?;
        ensure!(r.status() == StatusCode::OK);
        held.push(r);
    }
    let before = hmgets(&mut raw)?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let reads = hmgets(&mut raw)? - before;
    // A poller every 250 ms would read each job 16 times in 4 s (480 in
    // all); the events reader reads each once per quiet 2 s.
    ensure!(
        reads <= 120,
        "{reads} job reads in 4 s for 30 followed jobs"
    );
    drop(held);
    Ok(())
}

#[tokio::test]
async fn a_flow_parent_shows_its_tree_with_each_nodes_state() -> Result<()> {
    use reqwest::Method as M;
    use spool_queue::{Flow, JobOptions, NewJob};
    let redis = RedisServer::start()?;
    let client = spool_queue::Client::connect(&redis.url()).await?;
    let q = client.queue("tree")?;
    let id = |s: &str| NewJob::with_options("{}", JobOptions::default().id(s));
    q.enqueue_flow(
        &Flow::new(id("top"))
            .child(Flow::new(id("mid")).child(id("leaf")))
            .child(id("side")),
    )
    .await?;
    // One child done, so the tree shows states and a result.
    let got = q.reserve(10, Duration::from_secs(1)).await?;
    let side = got
        .iter()
        .find(|j| j.id == "side")
        .context("side is ready")?;
    q.complete(side, br#"{"frames": 12}"#).await?;

    let con = console(&redis.url(), &[])?;
    let c = http()?;
    let u = |p: &str| format!("{}{p}", con.base);
    let (_, doc) = call(&c, M::GET, &u("/api/openapi.json"), None, None).await?;
    let (s, top) = call(
        &c,
        M::GET,
        &u("/api/queues/tree/jobs/top"),
        Some(READ),
        None,
    )
    .await?;
    ensure!(s == StatusCode::OK, "{s} {top}");
    let schema = answer_schema(&doc, "get", "/api/queues/{queue}/jobs/{id}", 200);
    conforms(&doc, &schema, &top, "the parent's page")?;
    ensure!(
        top["state"] == "waiting" && top["child_count"] == 2,
        "{top}"
    );
    let kids = top["children"].as_array().context("children")?;
    ensure!(kids.len() == 2, "{top}");
    ensure!(
        kids[0]["id"] == "mid" && kids[0]["state"] == "waiting",
        "{top}"
    );
    ensure!(kids[0]["children"][0]["id"] == "leaf", "{top}");
    ensure!(kids[0]["children"][0]["state"] == "active", "{top}");
    ensure!(
        kids[1]["state"] == "completed" && kids[1]["completed"] == true,
        "{top}"
    );
    ensure!(kids[1]["result"]["frames"] == 12, "{top}");
    let (_, leaf) = call(
        &c,
        M::GET,
        &u("/api/queues/tree/jobs/leaf"),
        Some(READ),
        None,
    )
    .await?;
    ensure!(
        leaf["parent"] == "mid" && leaf.get("children").is_none(),
        "{leaf}"
    );
    // The queue list counts the waiting parents.
    let (_, queues) = call(&c, M::GET, &u("/api/queues"), Some(READ), None).await?;
    ensure!(queues[0]["waiting"] == 2, "{queues}");
    Ok(())
}
