//! The record `sleep_worker` keeps when `SPOOL_SLEEP_RECORD` names a file: one
//! line per handler start, finish and stop, which tests check exactly-once
//! and restart timing against.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// One line of the sleep_worker record.
#[derive(Debug, Clone)]
pub struct Event {
    /// `start`, `done` or `stop`.
    pub kind: String,
    /// The job.
    pub id: String,
    /// Its attempt.
    pub attempt: u32,
    /// The worker process.
    pub pid: u32,
    /// Unix milliseconds.
    pub ms: u64,
    /// On a flow parent's `done`: how many children results it read.
    pub children_read: Option<u32>,
}

/// The handlers' record, parsed.
#[derive(Debug)]
pub struct Record(pub Vec<Event>);

impl Record {
    /// Reads the record file (missing: empty).
    pub fn read(path: &Path) -> Record {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        Record(
            text.lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split(' ').collect();
                    Some(Event {
                        kind: f.first()?.to_string(),
                        id: f.get(1)?.to_string(),
                        attempt: f.get(2)?.parse().ok()?,
                        pid: f.get(3)?.parse().ok()?,
                        ms: f.get(4)?.parse().ok()?,
                        children_read: f.get(5).and_then(|n| n.parse().ok()),
                    })
                })
                .collect(),
        )
    }

    /// Reads a record that must exist and hold events: for the final checks
    /// of a test, where an empty record would make every check pass vacuously.
    pub fn read_required(path: &Path) -> crate::Result<Record> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            crate::Error(format!(
                "the record {} is unreadable ({e}): did the workers get SPOOL_SLEEP_RECORD?",
                path.display()
            ))
        })?;
        let r = Record::read(path);
        let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
        if r.0.is_empty() || r.0.len() != lines {
            return Err(crate::Error(format!(
                "the record {} has {} events in {lines} lines: empty or malformed",
                path.display(),
                r.0.len()
            )));
        }
        Ok(r)
    }

    /// How many times each job's handler finished.
    pub fn done_counts(&self) -> HashMap<&str, usize> {
        let mut m = HashMap::new();
        for e in self.0.iter().filter(|e| e.kind == "done") {
            *m.entry(e.id.as_str()).or_default() += 1;
        }
        m
    }

    /// Handler starts in all.
    pub fn starts(&self) -> usize {
        self.0.iter().filter(|e| e.kind == "start").count()
    }

    /// For each stop (a drained or abandoned handler), the delay until the same
    /// job started again, if it did.
    pub fn restart_delays(&self) -> Vec<(String, Option<Duration>)> {
        self.0
            .iter()
            .filter(|e| e.kind == "stop")
            .map(|stop| {
                let next = self
                    .0
                    .iter()
                    .filter(|e| {
                        e.kind == "start" && e.id == stop.id && e.ms >= stop.ms && e.pid != stop.pid
                    })
                    .map(|e| e.ms)
                    .min();
                (
                    stop.id.clone(),
                    next.map(|ms| Duration::from_millis(ms - stop.ms)),
                )
            })
            .collect()
    }
}
