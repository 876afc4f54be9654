//! The API described as OpenAPI 3 (`GET /api/openapi.json`).

use serde_json::{Value, json};

fn op(summary: &str, admin: bool, params: &[&str], ok: &str) -> Value {
    let mut parameters: Vec<Value> = params
        .iter()
        .map(|p| json!({ "name": p, "in": "path", "required": true, "schema": { "type": "string" } }))
        .collect();
    if summary.starts_with("List jobs") {
        for (name, desc) in [
            (
                "state",
                "ready (run order), scheduled, active, dead, completed, cancelled (newest first)",
            ),
            ("limit", "1..=500, default 50"),
            ("cursor", "next_cursor of the previous page"),
        ] {
            parameters.push(json!({ "name": name, "in": "query", "required": false, "description": desc, "schema": { "type": "string" } }));
        }
    }
    json!({
        "summary": summary,
        "description": if admin { "Needs the admin token." } else { "Needs the read or the admin token." },
        "parameters": parameters,
        "responses": {
            ok: { "description": "OK" },
            "400": { "$ref": "#/components/responses/Error" },
            "401": { "$ref": "#/components/responses/Error" },
            "403": { "$ref": "#/components/responses/Error" },
            "404": { "$ref": "#/components/responses/Error" },
            "503": { "$ref": "#/components/responses/Error" }
        }
    })
}

/// The document.
pub(crate) fn document() -> Value {
    let q = ["queue"];
    let qi = ["queue", "id"];
    json!({
        "openapi": "3.0.3",
        "info": { "title": "spool-console", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Queues, jobs, dead letters and workers of a spool deployment (docs/console.md)." },
        "security": [{ "bearer": [] }],
        "paths": {
            "/healthz": { "get": { "summary": "Redis answers", "security": [], "responses": { "200": { "description": "ok" }, "503": { "$ref": "#/components/responses/Error" } } } },
            "/api/queues": { "get": op("Every queue's counts by state", false, &[], "200") },
            "/api/queues/{queue}/jobs": {
                "get": op("List jobs of a state, paginated", false, &q, "200"),
                "post": op("Enqueue one job (a JSON value) or many (an array); ?priority=", true, &q, "201")
            },
            "/api/queues/{queue}/jobs/{id}": { "get": op("One job, with its log (`log`: `{at_ms, level, message}`, oldest first)", false, &qi, "200") },
            "/api/queues/{queue}/jobs/{id}/cancel": { "post": op("Cancel a job", true, &qi, "200") },
            "/api/queues/{queue}/jobs/{id}/events": { "get": op("Server-Sent Events: progress, then done with the final job", false, &qi, "200") },
            "/api/queues/{queue}/pause": { "post": op("Pause the queue: nothing new starts, running jobs finish, enqueues are held, the KEDA keys read 0", true, &q, "200") },
            "/api/queues/{queue}/resume": { "post": op("Resume a paused queue, its backlog in its order", true, &q, "200") },
            "/api/queues/{queue}/dead/retry": { "post": op("Retry dead jobs: {\"ids\":[…]} or {\"all\":true}", true, &q, "200") },
            "/api/queues/{queue}/dead": { "delete": op("Purge dead jobs: {\"ids\":[…]} or {\"all\":true}", true, &q, "200") },
            "/api/workers": { "get": op("The live worker registry", false, &[], "200") }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "responses": {
                "Error": {
                    "description": "An error",
                    "content": { "application/json": { "schema": {
                        "type": "object", "required": ["error", "code"],
                        "properties": { "error": { "type": "string" }, "code": { "type": "string" } }
                    } } }
                }
            }
        }
    })
}
