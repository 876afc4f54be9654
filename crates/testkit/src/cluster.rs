//! A three-master Redis Cluster from throwaway servers: slots assigned by hand
//! (ADDSLOTSRANGE + MEET) and waited on until the cluster agrees.

use crate::*;

/// A Redis Cluster of `n` masters (no replicas) on loopback ports.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` nodes, splits the slots evenly between them, joins
    /// them, and waits until every node reports `cluster_state:ok`.
    pub fn start(masters: usize) -> Result<Self> {
        let nodes = (0..masters.max(1))
            .map(|_| {
                RedisServer::start_with(ServerOptions {
                    cluster: true,
                    ..ServerOptions::default()
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let per = CLUSTER_SLOTS as usize / nodes.len();
        let redis_err = |e: redis::RedisError| err(format!("cluster setup failed: {e}"));
        for (i, node) in nodes.iter().enumerate() {
            let first = i * per;
            let last = if i + 1 == nodes.len() {
                CLUSTER_SLOTS as usize - 1
            } else {
                first + per - 1
            };
            let mut c = node.connection()?;
            let _: () = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(first)
                .arg(last)
                .query(&mut c)
                .map_err(redis_err)?;
        }
        let mut first = nodes[0].connection()?;
        for node in &nodes[1..] {
            let _: () = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(node.port())
                .query(&mut first)
                .map_err(redis_err)?;
        }
        let started = Instant::now();
        loop {
            let mut ok = true;
            for node in &nodes {
                let mut c = node.connection()?;
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut c)
                    .map_err(redis_err)?;
                let known = info
                    .lines()
                    .find_map(|l| l.strip_prefix("cluster_known_nodes:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                ok &= info.contains("cluster_state:ok") && known == nodes.len();
            }
            if ok {
                return Ok(RedisCluster { nodes });
            }
            if started.elapsed() > CLUSTER_TIMEOUT {
                return Err(err(
                    "the test cluster did not reach cluster_state:ok in time",
                ));
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// The seed URLs, comma-separated (the form `spool_queue::Client` takes).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The port of the master that serves `key`.
    pub fn port_for_key(&self, key: &str) -> Result<u16> {
        let mut c = self.nodes[0].connection()?;
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut c)
            .map_err(|e| err(format!("CLUSTER KEYSLOT failed: {e}")))?;
        let per = CLUSTER_SLOTS as usize / self.nodes.len();
        let i = (slot as usize / per).min(self.nodes.len() - 1);
        Ok(self.nodes[i].port())
    }
}
