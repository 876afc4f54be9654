//! `spoolctl keys`: the queue's Redis keys, for manifests, ACLs and redis-cli.

pub(crate) fn print_keys(k: &spool_queue::Keys, queue: &str, json: bool) {
    if json {
        let v = serde_json::json!({
            "queue": queue,
            "backlog": k.ready,
            "outstanding": k.outstanding,
            "scheduled": k.scheduled,
            "active": k.active,
            "dead": k.dead,
            "completed": k.completed,
            "cancelled": k.cancelled,
            "job": k.job("<id>"),
        });
        println!("{v}");
        return;
    }
    println!("backlog (ZSET, KEDA ZCARD)            {}", k.ready);
    println!("outstanding work (SET, KEDA SCARD)    {}", k.outstanding);
    println!("scheduled (ZSET)                      {}", k.scheduled);
    println!("active leases (ZSET)                  {}", k.active);
    println!("dead letters (ZSET)                   {}", k.dead);
    println!("completed, retained (ZSET)            {}", k.completed);
    println!("cancelled, retained (ZSET)            {}", k.cancelled);
    println!("job hashes                            {}", k.job("<id>"));
}
