//! Per-job logs: lines a handler (or FFmpeg, through the encoder) attaches to
//! the job it runs, kept in Redis beside the job, capped, and gone with it.

use super::*;

/// Lines a job's log keeps: the latest, older ones are trimmed.
pub const MAX_LOG_LINES: usize = 200;
/// Bytes of one line's message kept; longer ones are cut (with `…`).
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
        let message = if message.len() > MAX_LOG_MESSAGE {
            let mut end = MAX_LOG_MESSAGE - '…'.len_utf8();
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &message[..end])
        } else {
            message.to_owned()
        };
        LogLine {
            at_ms,
            level,
            message,
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
                inv.arg(serde_json::to_string(line).unwrap_or_default());
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

    #[test]
    fn foreign_lines_read_as_text() {
        let l = LogLine::parse(b"not json");
        assert_eq!((l.level, l.message.as_str()), (LogLevel::Info, "not json"));
    }
}
