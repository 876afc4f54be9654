//! `spoolctl workers`: the live worker registry, for one queue or every known
//! queue.

use crate::*;

pub(crate) async fn workers(
    client: &Client,
    only: Option<&str>,
    json: bool,
) -> Result<(), Failure> {
    let names = match only {
        Some(q) => vec![q.to_owned()],
        None => client.queues().await?,
    };
    let mut all = Vec::new();
    for name in names {
        all.extend(client.queue(&name)?.workers().await?);
    }
    if json {
        for w in &all {
            println!("{}", serde_json::to_string(w).unwrap_or_default());
        }
        return Ok(());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    println!(
        "{:<36} {:<16} {:>7} {:>8} {:<9} {:>9}  JOBS",
        "WORKER", "QUEUE", "RUNNING", "CAPACITY", "STATE", "SEEN"
    );
    for w in &all {
        println!(
            "{:<36} {:<16} {:>7} {:>8} {:<9} {:>8}s  {}",
            // Registry records are anyone's writes: escaped (terminal.rs).
            safe(&w.id),
            safe(&w.queue),
            w.active.len(),
            w.concurrency,
            if w.draining { "draining" } else { "working" },
            now.saturating_sub(w.last_seen_ms) / 1000,
            safe(&w.active.join(","))
        );
    }
    if all.is_empty() {
        println!("(no live workers)");
    }
    Ok(())
}
