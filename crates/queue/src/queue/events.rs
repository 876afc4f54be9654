//! Job events: the queue's capped stream (`spool:{q}:events`,
//! docs/protocol.md "Events"), written by the scripts only for jobs someone
//! watches ([`Queue::watch`]) or while a subscriber keeps the queue's events
//! on.

use super::*;

/// One job event, as [`Queue::read_events`] returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobEvent {
    /// The stream entry's id: read after it to resume.
    pub id: String,
    /// The job.
    pub job: String,
    /// `completed`, `failed` (the job runs again), `dead`, `cancelled` or
    /// `progress`.
    pub event: String,
    /// The attempt it happened in.
    pub attempt: u32,
    /// The result, the error or the progress (JSON when it is JSON); `None`
    /// for a result over 64 KiB (`big`) or an event without data.
    pub data: Option<serde_json::Value>,
    /// The result was too large to carry: read the job.
    pub big: bool,
}

impl JobEvent {
    /// Whether the job ended with this event.
    pub fn is_end(&self) -> bool {
        matches!(self.event.as_str(), "completed" | "dead" | "cancelled")
    }
}

impl Queue {
    /// The events after `after` (a [`JobEvent::id`], or the id
    /// [`Queue::watch`] returned), at most `count`, waiting up to `block`
    /// for the first (on a connection of its own, so other commands are not
    /// held up); empty when none came.
    pub async fn read_events(
        &self,
        after: &str,
        block: Duration,
        count: usize,
    ) -> Result<Vec<JobEvent>> {
        let key = format!("{}events", self.keys.prefix);
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(count.max(1));
        let pool = &self.client.inner.blocking;
        let lease = if block.is_zero() {
            None
        } else {
            pool.get(block, self.client.addr()).await?
        };
        let reply: Value = match lease {
            Some(mut conn) => {
                cmd.arg("BLOCK")
                    .arg(block.as_millis().max(1) as u64)
                    .arg("STREAMS")
                    .arg(&key)
                    .arg(after);
                let r: redis::RedisResult<Value> = cmd.query_async(&mut conn).await;
                pool.put(conn, r.is_ok());
                r.map_err(|e| self.client.err(e))?
            }
            // No blocking connection free (or no wait asked): read what is there.
            None => {
                cmd.arg("STREAMS").arg(&key).arg(after);
                self.client.query(&cmd).await?
            }
        };
        Ok(decode_events(&reply))
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// An XREAD reply (RESP2 arrays or a RESP3 map) as events; entries that do
/// not parse are skipped.
fn decode_events(reply: &Value) -> Vec<JobEvent> {
    let streams: Vec<&Value> = match reply {
        Value::Array(streams) => streams
            .iter()
            .filter_map(|s| match s {
                Value::Array(pair) => pair.get(1),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs.iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for entries in streams {
        let Value::Array(entries) = entries else {
            continue;
        };
        for entry in entries {
            let Value::Array(parts) = entry else { continue };
            let (Some(id), Some(Value::Array(flat))) = (parts.first().and_then(text), parts.get(1))
            else {
                continue;
            };
            let mut fields = HashMap::new();
            for kv in flat.chunks(2) {
                if let [k, v] = kv
                    && let (Some(k), Some(v)) = (text(k), text(v))
                {
                    fields.insert(k, v);
                }
            }
            let data = fields.get("data").map(|d| {
                serde_json::from_str(d).unwrap_or_else(|_| serde_json::Value::String(d.clone()))
            });
            out.push(JobEvent {
                id,
                job: fields.get("job").cloned().unwrap_or_default(),
                event: fields.get("event").cloned().unwrap_or_default(),
                attempt: fields
                    .get("attempt")
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(0),
                data,
                big: fields.get("big").is_some_and(|b| b == "1"),
            });
        }
    }
    out
}
