//! The Redis key layout of one queue (documented in `docs/protocol.md`).
//!
//! Every key of a queue carries the hash tag `{<queue>}`, so a queue's keys live
//! in one Redis Cluster slot and its scripts stay atomic there, while different
//! queues spread over the cluster.

use crate::error::{Error, Result};

/// The global set of queue names (not hash-tagged: it is an index for `stats`,
/// written outside the scripts, and never needed for correctness).
pub(crate) const QUEUES_KEY: &str = "spool:queues";

/// Longest accepted queue name; keys stay short and readable.
const MAX_QUEUE_NAME: usize = 100;

/// The names of one queue's keys.
#[derive(Debug, Clone)]
pub struct Keys {
    /// `spool:{<queue>}:`, the prefix of every key of the queue.
    pub prefix: String,
    /// ZSET of ready job ids (the backlog). KEDA: `ZCARD`.
    pub ready: String,
    /// ZSET of delayed jobs and jobs waiting for a retry, by run-at time.
    pub scheduled: String,
    /// ZSET of leased jobs, by lease deadline.
    pub active: String,
    /// SET of ready and active job ids (outstanding work). KEDA: `SCARD`.
    pub outstanding: String,
    /// ZSET of dead jobs, by time of death.
    pub dead: String,
    /// ZSET of completed jobs still retained, by retention expiry.
    pub completed: String,
    /// ZSET of cancelled jobs still retained, by retention expiry.
    pub cancelled: String,
    /// Counter giving FIFO order within a priority.
    pub seq: String,
    /// LIST of wake-up tokens that blocked consumers wait on.
    pub wake: String,
    /// STRING present while the queue is paused (the pause time in ms).
    pub paused: String,
    /// ZSET of the backlog held while paused, scored as in `ready`.
    pub parked: String,
    /// ZSET of flow parents waiting for their children, by enqueue time.
    pub waiting: String,
}

impl Keys {
    /// The keys of queue `name`, after checking that the name is usable.
    pub fn new(name: &str) -> Result<Self> {
        validate_queue_name(name)?;
        let prefix = format!("spool:{{{name}}}:");
        let k = |s: &str| format!("{prefix}{s}");
        Ok(Keys {
            ready: k("ready"),
            scheduled: k("scheduled"),
            active: k("active"),
            outstanding: k("outstanding"),
            dead: k("dead"),
            completed: k("completed"),
            cancelled: k("cancelled"),
            seq: k("seq"),
            wake: k("wake"),
            paused: k("paused"),
            parked: k("parked"),
            waiting: k("waiting"),
            prefix,
        })
    }

    /// The hash of job `id`.
    pub fn job(&self, id: &str) -> String {
        format!("{}job:{id}", self.prefix)
    }

    /// The LIST of parent `id`'s children, in document order.
    pub fn children(&self, id: &str) -> String {
        format!("{}children:{id}", self.prefix)
    }

    /// The HASH child id -> result of parent `id`'s completed children.
    pub fn results(&self, id: &str) -> String {
        format!("{}results:{id}", self.prefix)
    }

    /// The HASH child id -> error of parent `id`'s children that died or
    /// were cancelled.
    pub fn failures(&self, id: &str) -> String {
        format!("{}failures:{id}", self.prefix)
    }

    /// The nine keys every script takes, in the order `lib.lua` expects (for
    /// anything that calls the scripts directly, as producers in other
    /// languages do; docs/protocol.md).
    pub fn script_keys(&self) -> [&str; 9] {
        [
            &self.ready,
            &self.scheduled,
            &self.active,
            &self.outstanding,
            &self.dead,
            &self.completed,
            &self.cancelled,
            &self.seq,
            &self.wake,
        ]
    }
}

fn validate_queue_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_QUEUE_NAME {
        Some("it is longer than 100 bytes")
    } else if name.contains(['{', '}']) {
        Some("braces would break the Redis Cluster hash tag")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        Some("use only ASCII letters, digits and - _ . :")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidQueueName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_hash_tag() -> Result<()> {
        let k = Keys::new("encode")?;
        assert_eq!(k.ready, "spool:{encode}:ready");
        assert_eq!(k.outstanding, "spool:{encode}:outstanding");
        assert_eq!(k.job("abc"), "spool:{encode}:job:abc");
        assert!(
            k.script_keys()
                .iter()
                .all(|key| key.starts_with("spool:{encode}:"))
        );
        Ok(())
    }

    #[test]
    fn unusable_names_are_refused() {
        for bad in ["", "a{b}", "has space", &"x".repeat(101)] {
            assert!(
                matches!(Keys::new(bad), Err(Error::InvalidQueueName { .. })),
                "{bad}"
            );
        }
    }
}
