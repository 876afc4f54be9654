//! What the Redis server itself says about memory: its `maxmemory-policy`
//! decides whether queue data may be evicted (which is data loss).

use redis::Value;

use super::Client;
use crate::error::Result;

/// The only `maxmemory-policy` under which Redis never drops queue data:
/// at `maxmemory` it refuses writes instead.
pub const SAFE_EVICTION_POLICY: &str = "noeviction";

/// Redis's memory settings and use, from `INFO memory` (on a cluster, the
/// worst of its nodes: any evicting policy, the fullest node).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerMemory {
    /// `maxmemory-policy`; anything but [`SAFE_EVICTION_POLICY`] may evict
    /// jobs.
    pub policy: String,
    /// `maxmemory` in bytes; 0 means no limit.
    pub maxmemory: u64,
    /// `used_memory` in bytes.
    pub used: u64,
}

impl ServerMemory {
    /// Whether Redis may evict keys (and so lose jobs) under memory pressure.
    pub fn evicts(&self) -> bool {
        self.policy != SAFE_EVICTION_POLICY
    }

    /// Parses one node's `INFO memory` text.
    fn parse(text: &str) -> Option<ServerMemory> {
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.trim_end().strip_prefix(k)?.strip_prefix(':'))
                .map(str::to_owned)
        };
        Some(ServerMemory {
            policy: field("maxmemory_policy")?,
            maxmemory: field("maxmemory")?.parse().ok()?,
            used: field("used_memory")?.parse().ok()?,
        })
    }

    /// The worse of two nodes: an evicting policy wins, then the fuller.
    fn worst(self, other: ServerMemory) -> ServerMemory {
        let fill = |m: &ServerMemory| {
            if m.maxmemory == 0 {
                0.0
            } else {
                m.used as f64 / m.maxmemory as f64
            }
        };
        match (self.evicts(), other.evicts()) {
            (false, true) => other,
            (true, false) => self,
            _ if fill(&other) > fill(&self) => other,
            _ => self,
        }
    }
}

/// Every `INFO` text in a reply: one string from a single server, a map of
/// node to string from a cluster.
fn texts(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::BulkString(b) => out.push(String::from_utf8_lossy(b).into_owned()),
        Value::VerbatimString { text, .. } | Value::SimpleString(text) => out.push(text.clone()),
        Value::Map(m) => m.iter().for_each(|(_, v)| texts(v, out)),
        Value::Array(a) => a.iter().for_each(|v| texts(v, out)),
        _ => {}
    }
}

impl Client {
    /// Reads `maxmemory-policy`, `maxmemory` and used memory (`INFO memory`,
    /// which managed services allow where `CONFIG GET` is disabled).
    pub async fn server_memory(&self) -> Result<ServerMemory> {
        let v: Value = self.query(redis::cmd("INFO").arg("memory")).await?;
        let mut all = Vec::new();
        texts(&v, &mut all);
        all.iter()
            .filter_map(|t| ServerMemory::parse(t))
            .reduce(ServerMemory::worst)
            .ok_or_else(|| crate::Error::Corrupt {
                key: "INFO memory".into(),
                reason: "the reply has no maxmemory_policy, maxmemory and used_memory".into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_memory_parses_and_the_worst_node_wins() {
        let a = ServerMemory::parse(
            "# Memory\r\nused_memory:1000\r\nused_memory_human:1K\r\nmaxmemory:4000\r\nmaxmemory_human:4K\r\nmaxmemory_policy:noeviction\r\n",
        );
        let a = a.expect("parses");
        assert_eq!(a.policy, "noeviction");
        assert_eq!((a.used, a.maxmemory), (1000, 4000));
        assert!(!a.evicts());
        let b = ServerMemory {
            policy: "allkeys-lru".into(),
            maxmemory: 0,
            used: 1,
        };
        assert_eq!(a.clone().worst(b.clone()), b);
        let full = ServerMemory {
            used: 3900,
            ..a.clone()
        };
        assert_eq!(a.worst(full.clone()), full);
        assert!(ServerMemory::parse("# Memory\r\nused_memory:1\r\n").is_none());
    }
}
