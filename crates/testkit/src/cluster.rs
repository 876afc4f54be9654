//! A three-master Redis Cluster from throwaway servers: slots assigned by hand
//! (ADDSLOTSRANGE + MEET) and waited on until the cluster agrees.

use crate::*;

/// A Redis Cluster of `n` masters (and, when asked, replicas) on loopback
/// ports.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// The first `masters` nodes started as masters.
    masters: usize,
}

impl RedisCluster {
    /// Starts `masters` nodes, splits the slots evenly between them, joins
    /// them, and waits until every node reports `cluster_state:ok`.
    pub fn start(masters: usize) -> Result<Self> {
        Self::start_nodes(masters, Vec::new())
    }

    /// Starts `masters` masters with `replicas` replicas each, with a node
    /// timeout of 1 s so a replica takes over a SIGKILLed master within a
    /// few seconds.
    pub fn start_with_replicas(masters: usize, replicas: usize) -> Result<Self> {
        let fast = vec!["--cluster-node-timeout".to_owned(), "1000".to_owned()];
        let mut c = Self::start_nodes(masters, fast.clone())?;
        let redis_err = |e: redis::RedisError| err(format!("cluster setup failed: {e}"));
        let ids: Vec<String> = c.nodes[..c.masters]
            .iter()
            .map(|n| {
                let mut conn = n.connection()?;
                redis::cmd("CLUSTER")
                    .arg("MYID")
                    .query(&mut conn)
                    .map_err(redis_err)
            })
            .collect::<Result<_>>()?;
        for id in &ids {
            for _ in 0..replicas {
                let r = RedisServer::start_with(ServerOptions {
                    cluster: true,
                    extra_args: fast.clone(),
                    ..ServerOptions::default()
                })?;
                let mut conn = r.connection()?;
                let _: () = redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg("127.0.0.1")
                    .arg(c.nodes[0].port())
                    .query(&mut conn)
                    .map_err(redis_err)?;
                // REPLICATE needs the master known first.
                let started = Instant::now();
                loop {
                    let r: redis::RedisResult<()> = redis::cmd("CLUSTER")
                        .arg("REPLICATE")
                        .arg(id)
                        .query(&mut conn);
                    match r {
                        Ok(()) => break,
                        Err(_) if started.elapsed() < CLUSTER_TIMEOUT => {
                            sleep(Duration::from_millis(100))
                        }
                        Err(e) => return Err(redis_err(e)),
                    }
                }
                c.nodes.push(r);
            }
        }
        // Every master sees its replicas online.
        let started = Instant::now();
        loop {
            let mut ok = true;
            for n in &c.nodes[..c.masters] {
                let mut conn = n.connection()?;
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut conn)
                    .map_err(redis_err)?;
                ok &= info.contains(&format!("connected_slaves:{replicas}"))
                    && info.matches("state=online").count() == replicas;
            }
            if ok {
                return Ok(c);
            }
            if started.elapsed() > CLUSTER_TIMEOUT {
                return Err(err("the cluster's replicas did not come online in time"));
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// The port of the node that is master for `key`'s slot now.
    pub fn master_port_for(&self, key: &str) -> Result<u16> {
        for n in &self.nodes {
            let Ok(mut c) = n.connection() else { continue };
            let Ok(slot) = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query::<u16>(&mut c)
            else {
                continue;
            };
            let Ok(v) = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query::<Vec<Vec<redis::Value>>>(&mut c)
            else {
                continue;
            };
            // [start, end, [ip, port, id, …], replicas…]
            let int = |v: &redis::Value| redis::from_redis_value_ref::<i64>(v).ok();
            let slots: Vec<(u16, u16, (String, u16))> = v
                .iter()
                .filter_map(|r| {
                    let master = match r.get(2)? {
                        redis::Value::Array(m) => m,
                        _ => return None,
                    };
                    Some((
                        int(r.first()?)? as u16,
                        int(r.get(1)?)? as u16,
                        (String::new(), int(master.get(1)?)? as u16),
                    ))
                })
                .collect();
            if let Some((_, _, (_, port))) = slots
                .into_iter()
                .find(|(a, b, _)| (*a..=*b).contains(&slot))
            {
                return Ok(port);
            }
        }
        Err(err(format!("no node says who serves {key}")))
    }

    /// SIGKILLs the master serving `key` and waits until a replica serves
    /// its slots and the cluster is whole again; returns the killed port
    /// and how long the takeover took.
    pub fn kill_master_for(&mut self, key: &str) -> Result<(u16, Duration)> {
        let old = self.master_port_for(key)?;
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port() == old)
            .ok_or_else(|| err(format!("no node on port {old}")))?;
        node.kill();
        let killed = Instant::now();
        loop {
            let ok = self.master_port_for(key).is_ok_and(|p| p != old)
                && self.nodes.iter().filter(|n| n.port() != old).all(|n| {
                    n.connection().is_ok_and(|mut c| {
                        redis::cmd("CLUSTER")
                            .arg("INFO")
                            .query::<String>(&mut c)
                            .is_ok_and(|i| i.contains("cluster_state:ok"))
                    })
                });
            if ok {
                return Ok((old, killed.elapsed()));
            }
            if killed.elapsed() > Duration::from_secs(30) {
                return Err(err("no replica took over within 30 s"));
            }
            sleep(Duration::from_millis(50));
        }
    }

    fn start_nodes(masters: usize, extra_args: Vec<String>) -> Result<Self> {
        let nodes = (0..masters.max(1))
            .map(|_| {
                RedisServer::start_with(ServerOptions {
                    cluster: true,
                    extra_args: extra_args.clone(),
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
                let masters = nodes.len();
                return Ok(RedisCluster { nodes, masters });
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
        let per = CLUSTER_SLOTS as usize / self.masters;
        let i = (slot as usize / per).min(self.masters - 1);
        Ok(self.nodes[i].port())
    }
}
