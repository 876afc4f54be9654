//! Who an output belongs to.
//!
//! An output is owned by one *enqueue* of one job: the queue, the job id and
//! the server time it was enqueued, hashed together. A producer that reuses
//! a job id (on another queue, or after the first job's retention ran out)
//! gets a different owner, so it can never replace the first job's output;
//! the same job retried, from its backoff or from the dead letters, keeps its
//! owner and may replace what its earlier attempts wrote. Only the hash is
//! stored beside an output (object metadata, a marker file): nothing of the
//! queue's internals is public.
//!
//! Each attempt also carries a stamp, the time it started (the server's
//! clock at reserve, for queue jobs): an attempt never replaces nor removes
//! what a *later* attempt of its job wrote, so a worker that lost its lease
//! but is still running cannot undo the work of the one that took over.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The owner of an encode's outputs: one enqueue of a job, and the attempt.
#[derive(Clone, PartialEq, Eq)]
pub struct OutputOwner {
    /// 32 hex digits: a hash of the queue, the job id and its enqueue time.
    key: String,
    /// When this attempt started, in ms since the epoch.
    stamp: u64,
}

impl std::fmt::Debug for OutputOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OutputOwner({}@{})", self.key, self.stamp)
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX)
}

fn hash(parts: &[&[u8]]) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(b"spool-output-owner-v1");
    for p in parts {
        // Length-prefixed, so ("ab","c") and ("a","bc") differ.
        h.update(&(p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let mut s = h.digest().to_string();
    s.truncate(32);
    s
}

impl OutputOwner {
    /// The owner for an attempt of the job `id` on `queue`, enqueued at
    /// `enqueued_at` (server clock), the attempt having started at
    /// `attempt_started`.
    pub fn job(
        queue: &str,
        id: &str,
        enqueued_at: SystemTime,
        attempt_started: SystemTime,
    ) -> Self {
        OutputOwner {
            key: hash(&[
                queue.as_bytes(),
                id.as_bytes(),
                &millis(enqueued_at).to_be_bytes(),
            ]),
            stamp: millis(attempt_started),
        }
    }

    /// An owner named by the caller (tools, tests, benchmarks): the same
    /// `name` is the same owner. The attempt stamp is now.
    pub fn named(name: &str) -> Self {
        OutputOwner {
            key: hash(&[b"named", name.as_bytes()]),
            stamp: millis(SystemTime::now()),
        }
    }

    /// This owner with the attempt stamp `ms` (ms since the epoch).
    pub fn with_stamp(mut self, ms: u64) -> Self {
        self.stamp = ms;
        self
    }

    /// The hash stored beside outputs.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// This attempt's stamp, in ms since the epoch.
    pub fn stamp(&self) -> u64 {
        self.stamp
    }

    /// The marker text: `<key> <stamp>`.
    pub fn marker(&self) -> String {
        format!("{} {}", self.key, self.stamp)
    }
}

/// What a stored marker or object metadata says about its writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writer {
    /// Nothing says who wrote it.
    Unknown,
    /// Another job (its key).
    Other(String),
    /// An attempt of this job, with its stamp.
    Same(u64),
}

impl Writer {
    /// Sorts a stored `key` (and `stamp`) relative to `me`.
    pub fn of(key: Option<&str>, stamp: Option<&str>, me: Option<&OutputOwner>) -> Writer {
        match (key, me) {
            (None, _) => Writer::Unknown,
            (Some(k), Some(me)) if k == me.key => {
                Writer::Same(stamp.and_then(|s| s.trim().parse().ok()).unwrap_or(0))
            }
            (Some(k), _) => Writer::Other(k.to_owned()),
        }
    }

    /// Parses a marker (`<key> <stamp>`; a bare key has stamp 0).
    pub fn of_marker(text: &str, me: Option<&OutputOwner>) -> Writer {
        let mut it = text.split_whitespace();
        Writer::of(it.next(), it.next(), me)
    }

    /// Whether `me` may replace or remove it: an earlier (or the same)
    /// attempt of its own job.
    pub fn replaceable_by(&self, me: &OutputOwner) -> bool {
        matches!(self, Writer::Same(s) if *s <= me.stamp)
    }

    /// Why `me` may not replace it, for an `OutputExists` error.
    pub fn refusal(&self) -> String {
        match self {
            Writer::Unknown => "it was not written by a spool job".into(),
            Writer::Other(k) => format!(
                "another spool job wrote it (owner {}…)",
                k.get(..8).unwrap_or(k)
            ),
            Writer::Same(_) => "a later attempt of this job wrote it".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_differ_by_queue_id_and_enqueue_and_order_by_attempt() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let later = t + Duration::from_secs(5);
        let a1 = OutputOwner::job("q", "job", t, t);
        let a2 = OutputOwner::job("q", "job", t, later);
        assert_eq!(a1.key(), a2.key());
        assert_ne!(a1.key(), OutputOwner::job("q2", "job", t, t).key());
        assert_ne!(a1.key(), OutputOwner::job("q", "job", later, t).key());
        assert_ne!(
            OutputOwner::job("qj", "ob", t, t).key(),
            OutputOwner::job("q", "jjob", t, t).key()
        );
        assert_eq!(a1.key().len(), 32);
        let w1 = Writer::of_marker(&a1.marker(), Some(&a2));
        assert!(w1.replaceable_by(&a2));
        let w2 = Writer::of_marker(&a2.marker(), Some(&a1));
        assert!(
            !w2.replaceable_by(&a1),
            "an earlier attempt never replaces a later one"
        );
        let other = Writer::of_marker(&OutputOwner::named("x").marker(), Some(&a1));
        assert!(matches!(other, Writer::Other(_)) && !other.replaceable_by(&a1));
        assert_eq!(Writer::of(None, None, Some(&a1)), Writer::Unknown);
        assert!(!other.refusal().contains(a1.key()));
    }
}
