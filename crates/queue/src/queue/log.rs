//! Per-job logs: lines a handler (or FFmpeg, through the encoder) attaches to
//! the job it runs, kept in Redis beside the job, capped, and gone with it.

use super::*;

/// Lines a job's log keeps: the latest, older ones are trimmed.
pub const MAX_LOG_LINES: usize = 200;
/// Bytes of one line's message kept, counted as stored (JSON-escaped: a
/// control character costs six); longer ones are cut (with `…`). With the
/// line's other fields a stored line stays under 1,100 bytes, so a full log
/// is at most about 220 KB.
pub const MAX_LOG_MESSAGE: usize = 1000;

/// How serious a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Something the handler wanted recorded.
    Info,
    /// Something looked wrong but the work went on (a damaged frame).
    Warning,
    /// Something failed.
    Error,
}

/// One line of a job's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LogLine {
    /// When it was logged, ms since the Unix epoch (the worker's clock).
    pub at_ms: u64,
    /// How serious.
    pub level: LogLevel,
    /// The text, at most [`MAX_LOG_MESSAGE`] bytes.
    pub message: String,
}

impl LogLine {
    /// A line logged now, its message cut to [`MAX_LOG_MESSAGE`] bytes.
    pub fn now(level: LogLevel, message: &str) -> Self {
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        LogLine {
            at_ms,
            level,
            message: bounded(message),
        }
    }

    /// Reads a stored line; anything that is not one of ours (written by
    /// hand, or cut by the script's own bound) becomes an info line holding
    /// the raw text.
    fn parse(raw: &[u8]) -> Self {
        serde_json::from_slice(raw).unwrap_or_else(|_| LogLine {
            at_ms: 0,
            level: LogLevel::Info,
            message: String::from_utf8_lossy(raw).into_owned(),
        })
    }
}

/// How many bytes `c` takes inside a JSON string.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// `message` cut so that its JSON-escaped form is at most
/// [`MAX_LOG_MESSAGE`] bytes, ending in `…` when cut. Cutting the raw text
/// first and escaping after let a line of control characters grow sixfold
/// past the script's bound, which then cut it into broken JSON.
fn bounded(message: &str) -> String {
    if message.chars().map(escaped_len).sum::<usize>() <= MAX_LOG_MESSAGE {
        return message.to_owned();
    }
    let room = MAX_LOG_MESSAGE - '…'.len_utf8();
    let mut used = 0;
    let mut end = 0;
    for (i, c) in message.char_indices() {
        used += escaped_len(c);
        if used > room {
            break;
        }
        end = i + c.len_utf8();
    }
    format!("{}…", &message[..end])
}

impl Queue {
    /// Appends lines to job `id`'s log (at most [`MAX_LOG_LINES`] a call; the
    /// log keeps the latest [`MAX_LOG_LINES`]). Returns the log's length, or
    /// 0 when the job no longer exists (nothing is written then).
    pub async fn append_log(&self, id: &str, lines: &[LogLine]) -> Result<u64> {
        let mut total = 0;
        for chunk in lines.chunks(MAX_LOG_LINES) {
            let mut inv = self.invocation(&scripts::LOG);
            inv.arg(id);
            for line in chunk {
                // A line built by hand may be longer: bounded here too.
                let line = LogLine {
                    message: bounded(&line.message),
                    ..line.clone()
                };
                inv.arg(serde_json::to_string(&line).unwrap_or_default());
            }
            total = self.invoke(&inv).await?;
        }
        Ok(total)
    }

    /// Job `id`'s log, oldest line first (empty when it has none).
    pub async fn job_log(&self, id: &str) -> Result<Vec<LogLine>> {
        let raw: Vec<Vec<u8>> = self
            .client
            .query(
                redis::cmd("LRANGE")
                    .arg(format!("{}log:{id}", self.keys.prefix))
                    .arg(0)
                    .arg(-1),
            )
            .await?;
        Ok(raw.iter().map(|l| LogLine::parse(l)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let l = LogLine::now(LogLevel::Warning, &"é".repeat(900));
        assert!(l.message.len() <= MAX_LOG_MESSAGE, "{}", l.message.len());
        assert!(l.message.ends_with('…'));
        assert_eq!(LogLine::now(LogLevel::Info, "short").message, "short");
    }

    /// Control characters cost six bytes each once escaped: a line of them
    /// is cut by its stored size, stays valid JSON, and reads back whole.
    #[test]
    fn control_characters_are_counted_as_stored() {
        let l = LogLine::now(LogLevel::Warning, &"\u{1}".repeat(1000));
        let json = serde_json::to_string(&l).unwrap_or_default();
        assert!(json.len() <= 1100, "{} bytes stored", json.len());
        assert!(l.message.ends_with('…'));
        assert_eq!(LogLine::parse(json.as_bytes()), l);
        let quotes = LogLine::now(LogLevel::Info, &"\"".repeat(999));
        let json = serde_json::to_string(&quotes).unwrap_or_default();
        assert!(json.len() <= 1100, "{}", json.len());
    }

    #[test]
    fn foreign_lines_read_as_text() {
        let l = LogLine::parse(b"not json");
        assert_eq!((l.level, l.message.as_str()), (LogLevel::Info, "not json"));
    }
}
