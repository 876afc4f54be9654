//! The API described as OpenAPI 3.0 (`GET /api/openapi.json`), with a
//! schema for every request body and answer. The schemas are written here
//! beside the handlers rather than derived, and `tests/api.rs` checks real
//! answers against them both ways: a field an answer has and the schema
//! lacks fails the test (`additionalProperties: false`), as does a required
//! field an answer lacks.

use serde_json::{Value, json};

/// A field's schema from a short name: `s` string, `i` integer, `n`
/// number, `b` boolean, `any` (any JSON), `#Name` a component; `?`
/// before one makes it nullable, `[]` after one makes it an array.
fn ty(t: &str) -> Value {
    if let Some(inner) = t.strip_suffix("[]") {
        return json!({ "type": "array", "items": ty(inner) });
    }
    if let Some(inner) = t.strip_prefix('?') {
        let mut v = ty(inner);
        if let Some(r) = v.get("$ref").cloned() {
            return json!({ "nullable": true, "allOf": [{ "$ref": r }] });
        }
        if let Some(o) = v.as_object_mut() {
            o.insert("nullable".into(), Value::Bool(true));
        }
        return v;
    }
    if let Some(name) = t.strip_prefix('#') {
        return json!({ "$ref": format!("#/components/schemas/{name}") });
    }
    match t {
        "s" => json!({ "type": "string" }),
        "i" => json!({ "type": "integer" }),
        "n" => json!({ "type": "number" }),
        "b" => json!({ "type": "boolean" }),
        "obj" => json!({ "type": "object" }),
        _ => json!({}),
    }
}

/// An object whose every field is listed; those marked `!` are required.
fn obj(fields: &[(&str, &str)]) -> Value {
    let mut props = serde_json::Map::new();
    let mut required = Vec::new();
    for (name, t) in fields {
        let (name, req) = match name.strip_suffix('!') {
            Some(n) => (n, true),
            None => (*name, false),
        };
        props.insert(name.to_owned(), ty(t));
        if req {
            required.push(name.to_owned());
        }
    }
    json!({ "type": "object", "additionalProperties": false, "required": required, "properties": props })
}

fn schemas() -> Value {
    let job: &[(&str, &str)] = &[
        ("id!", "s"),
        ("queue!", "s"),
        ("state!", "s"),
        ("attempts!", "i"),
        ("max_attempts!", "i"),
        ("priority!", "i"),
        ("payload!", "s"),
        ("progress!", "any"),
        ("result!", "any"),
        ("last_error!", "?s"),
        ("enqueued_at_ms!", "?i"),
        ("run_at_ms!", "?i"),
        ("started_at_ms!", "?i"),
        ("finished_at_ms!", "?i"),
        ("cancel_requested!", "b"),
        ("dedup_key!", "?s"),
        ("timeout_ms!", "?i"),
        ("timeout_retry!", "?b"),
        ("failures!", "#Failure[]"),
        ("parent!", "?s"),
        ("parent_queue!", "?s"),
        ("child_count!", "?i"),
        ("on_child_failure!", "?s"),
        ("failed_by!", "?s"),
    ];
    let mut job_with_log = job.to_vec();
    job_with_log.push(("log!", "#LogLine[]"));
    job_with_log.push(("children", "#FlowNode[]"));
    json!({
        "Error": obj(&[("error!", "s"), ("code!", "s")]),
        "QueueStats": obj(&[("queue!", "s"), ("ready!", "i"), ("scheduled!", "i"), ("active!", "i"),
            ("outstanding!", "i"), ("dead!", "i"), ("completed!", "i"), ("cancelled!", "i"),
            ("paused!", "b"), ("parked!", "i"), ("waiting!", "i"), ("lateness_ms!", "i")]),
        "FlowNode": obj(&[("id!", "s"), ("queue!", "?s"), ("state!", "?s"), ("completed!", "b"),
            ("result!", "any"), ("error!", "?s"), ("child_count!", "i"), ("children!", "#FlowNode[]")]),
        "QueueError": obj(&[("queue!", "s"), ("error!", "s")]),
        "Failure": obj(&[("attempt!", "i"), ("started_at_ms!", "i"), ("at_ms!", "i"), ("error!", "s")]),
        "LogLine": obj(&[("at_ms!", "i"), ("level!", "s"), ("message!", "s")]),
        "Job": obj(job),
        "JobWithLog": obj(&job_with_log),
        "Unreadable": obj(&[("id!", "s"), ("reason!", "s")]),
        "JobPage": obj(&[("jobs!", "#Job[]"), ("unreadable!", "#Unreadable[]"), ("next_cursor!", "?s")]),
        "Enqueued": obj(&[("id", "s"), ("ids", "s[]")]),
        "Cancelled": obj(&[("id!", "s"), ("outcome!", "s")]),
        "PauseState": obj(&[("paused!", "b"), ("paused_at_ms!", "?i"), ("parked!", "i"), ("ready!", "i"), ("active!", "i")]),
        "DeadSelection": obj(&[("ids", "s[]"), ("all", "b")]),
        "DeadResult": obj(&[("retried", "i"), ("purged", "i"), ("remaining_dead!", "i")]),
        "Worker": obj(&[("id!", "s"), ("pod!", "?s"), ("host!", "s"), ("version!", "s"), ("queue!", "s"),
            ("concurrency!", "i"), ("active!", "s[]"), ("draining!", "b"), ("started_at_ms!", "i"),
            ("last_seen_ms!", "i"), ("protocol!", "i"), ("extra!", "any"), ("progress!", "obj")]),
        "Minute": obj(&[("at_ms!", "i"), ("completed!", "i"), ("failed!", "i"), ("dead!", "i"),
            ("started!", "i"), ("wait_ms!", "i")]),
        "History": obj(&[("window_minutes!", "i"), ("minutes!", "#Minute[]")]),
        "Whoami": obj(&[("role!", "s"), ("auth!", "b")]),
        "Search": obj(&[("job!", "?#Job"), ("matches!", "#Job[]"), ("scanned!", "i"), ("truncated!", "b")]),
        "Login": obj(&[("token!", "s")]),
        "Role": obj(&[("role!", "s")]),
    })
}

/// What one operation answers and takes.
struct Op<'a> {
    summary: &'a str,
    admin: bool,
    path: &'a [&'a str],
    query: &'a [(&'a str, &'a str)],
    body: Option<Value>,
    ok: (&'a str, Value),
}

fn op(o: Op<'_>) -> Value {
    let mut parameters: Vec<Value> = o
        .path
        .iter()
        .map(|p| json!({ "name": p, "in": "path", "required": true, "schema": { "type": "string" } }))
        .collect();
    for (name, desc) in o.query {
        parameters.push(json!({ "name": name, "in": "query", "required": false, "description": desc, "schema": { "type": "string" } }));
    }
    let mut v = json!({
        "summary": o.summary,
        "description": if o.admin { "Needs the admin token." } else { "Needs the read or the admin token." },
        "parameters": parameters,
        "responses": {
            o.ok.0: { "description": "OK", "content": { "application/json": { "schema": o.ok.1 } } },
            "400": { "$ref": "#/components/responses/Error" },
            "401": { "$ref": "#/components/responses/Error" },
            "403": { "$ref": "#/components/responses/Error" },
            "404": { "$ref": "#/components/responses/Error" },
            "429": { "$ref": "#/components/responses/Error" },
            "503": { "$ref": "#/components/responses/Error" }
        }
    });
    if let (Some(body), Some(obj)) = (o.body, v.as_object_mut()) {
        obj.insert(
            "requestBody".into(),
            json!({ "required": true, "content": { "application/json": { "schema": body } } }),
        );
    }
    v
}

/// The document.
pub(crate) fn document() -> Value {
    let q: &[&str] = &["queue"];
    let qi: &[&str] = &["queue", "id"];
    let r = |name: &str| ty(&format!("#{name}"));
    let list = [
        (
            "state",
            "ready (run order), scheduled, active, dead, completed, cancelled (newest first)",
        ),
        ("limit", "1..=500, default 50"),
        ("cursor", "next_cursor of the previous page"),
    ];
    let base = |summary, admin, path, ok| {
        op(Op {
            summary,
            admin,
            path,
            query: &[],
            body: None,
            ok,
        })
    };
    json!({
        "openapi": "3.0.3",
        "info": { "title": "spool-console", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Queues, jobs, dead letters, history and workers of a spool deployment (docs/console.md). Every error is {\"error\", \"code\"}." },
        "security": [{ "bearer": [] }],
        "paths": {
            "/healthz": { "get": { "summary": "Redis answers", "security": [], "responses": { "200": { "description": "ok", "content": { "text/plain": { "schema": { "type": "string" } } } }, "503": { "$ref": "#/components/responses/Error" } } } },
            "/login": { "post": { "summary": "Open a browser session (cookies); without tokens answers the admin role and sets nothing", "security": [],
                "requestBody": { "required": true, "content": { "application/json": { "schema": r("Login") } } },
                "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": r("Role") } } }, "401": { "$ref": "#/components/responses/Error" }, "429": { "$ref": "#/components/responses/Error" } } } },
            "/logout": { "post": { "summary": "End the session on the server", "responses": { "204": { "description": "ended" }, "401": { "$ref": "#/components/responses/Error" } } } },
            "/api/whoami": { "get": base("The caller's role", false, &[], ("200", r("Whoami"))) },
            "/api/queues": { "get": base("Every queue's counts by state", false, &[], ("200", json!({ "type": "array", "items": { "oneOf": [r("QueueStats"), r("QueueError")] } }))) },
            "/api/queues/{queue}/jobs": {
                "get": op(Op { summary: "List jobs of a state, paginated", admin: false, path: q, query: &list, body: None, ok: ("200", r("JobPage")) }),
                "post": op(Op { summary: "Enqueue one job (a JSON value: {\"id\"}) or many (an array: {\"ids\"})", admin: true, path: q, query: &[("priority", "-1000..=1000, default 0")], body: Some(json!({})), ok: ("201", r("Enqueued")) })
            },
            "/api/queues/{queue}/jobs/{id}": { "get": base("One job, with its failed attempts and its log (oldest first)", false, qi, ("200", r("JobWithLog"))) },
            "/api/queues/{queue}/jobs/{id}/cancel": { "post": base("Cancel a job", true, qi, ("200", r("Cancelled"))) },
            "/api/queues/{queue}/jobs/{id}/events": { "get": { "summary": "Server-Sent Events: progress (the progress value), then done (a Job) or gone; 429 past 32 streams per caller or 1,000 jobs followed",
                "parameters": [{ "name": "queue", "in": "path", "required": true, "schema": { "type": "string" } }, { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": { "200": { "description": "an event stream", "content": { "text/event-stream": { "schema": { "type": "string" } } } }, "404": { "$ref": "#/components/responses/Error" }, "429": { "$ref": "#/components/responses/Error" } } } },
            "/api/queues/{queue}/history": { "get": base("The last 24 hours minute by minute (minutes with activity only)", false, q, ("200", r("History"))) },
            "/api/queues/{queue}/search": { "get": op(Op { summary: "The job with that id, and the dead, scheduled and active jobs whose errors contain the text", admin: false, path: q, query: &[("q", "1 to 256 bytes")], body: None, ok: ("200", r("Search")) }) },
            "/api/queues/{queue}/pause": { "post": base("Pause the queue: nothing new starts, running jobs finish, enqueues are held, the KEDA keys read 0", true, q, ("200", r("PauseState"))) },
            "/api/queues/{queue}/resume": { "post": base("Resume a paused queue, its backlog in its order", true, q, ("200", r("PauseState"))) },
            "/api/queues/{queue}/dead/retry": { "post": op(Op { summary: "Retry dead jobs: {\"ids\":[…]} or {\"all\":true}; answers how many and how many are still dead", admin: true, path: q, query: &[], body: Some(r("DeadSelection")), ok: ("200", r("DeadResult")) }) },
            "/api/queues/{queue}/dead": { "delete": op(Op { summary: "Purge dead jobs: {\"ids\":[…]} or {\"all\":true}", admin: true, path: q, query: &[], body: Some(r("DeadSelection")), ok: ("200", r("DeadResult")) }) },
            "/api/workers": { "get": base("The live worker registry, with each running job's progress", false, &[], ("200", json!({ "type": "array", "items": r("Worker") }))) }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas(),
            "responses": {
                "Error": {
                    "description": "An error",
                    "content": { "application/json": { "schema": r("Error") } }
                }
            }
        }
    })
}
