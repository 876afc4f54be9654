//! `spoolctl stats`: depth by state for one queue or every known queue.

use crate::*;

/// The line under the stats table about Redis's memory.
pub(crate) fn memory_line(m: &spool_queue::ServerMemory) -> String {
    let mb = |b: u64| b as f64 / 1e6;
    let limit = if m.maxmemory == 0 {
        "no maxmemory".to_owned()
    } else {
        format!(
            "{:.1} MB of maxmemory {:.1} MB ({:.0}%)",
            mb(m.used),
            mb(m.maxmemory),
            100.0 * m.used as f64 / m.maxmemory as f64
        )
    };
    let verdict = if m.evicts() {
        "UNSAFE: Redis may evict jobs; set noeviction"
    } else {
        "ok"
    };
    format!("redis: maxmemory-policy {} ({verdict}); {limit}", m.policy)
}

/// What `spoolctl pause` and `resume` print.
pub(crate) fn print_pause(queue: &Queue, s: spool_queue::PauseState, json: bool) {
    if json {
        println!("{}", serde_json::to_string(&s).unwrap_or_default());
    } else if s.paused {
        println!(
            "{} paused: {} jobs held, {} running (they finish; the KEDA keys read 0 once they end)",
            queue.name(),
            s.parked,
            s.active
        );
    } else {
        println!(
            "{} resumed: {} jobs ready, {} running",
            queue.name(),
            s.ready,
            s.active
        );
    }
}

pub(crate) async fn stats(client: &Client, only: Option<&str>, json: bool) -> Result<(), Failure> {
    let names = match only {
        Some(q) => vec![q.to_owned()],
        None => {
            let mut n = client.queues().await?;
            if n.is_empty() {
                n.push(DEFAULT_QUEUE.to_owned());
            }
            n
        }
    };
    if !json {
        println!(
            "{:<24} {:>9} {:>9} {:>9} {:>11} {:>9} {:>10} {:>9} {:>8} {:>8}  STATE",
            "QUEUE",
            "READY",
            "SCHEDULED",
            "ACTIVE",
            "OUTSTANDING",
            "DEAD",
            "COMPLETED",
            "CANCELLED",
            "WAITING",
            "LATE_S"
        );
    }
    // One queue that cannot be read (a bad name registered by hand, a
    // damaged key) is reported, and the others are still shown.
    let mut failed = Vec::new();
    for name in names {
        let s = match client.queue(&name) {
            Ok(q) => q.stats().await,
            Err(e) => Err(e),
        };
        let s = match s {
            Ok(s) => s,
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "queue": name, "error": e.to_string() })
                    );
                } else {
                    println!("{:<24} error: {}", safe(&name), safe(&e.to_string()));
                }
                failed.push(name);
                continue;
            }
        };
        if json {
            println!("{}", serde_json::to_string(&s).unwrap_or_default());
        } else {
            println!(
                "{:<24} {:>9} {:>9} {:>9} {:>11} {:>9} {:>10} {:>9} {:>8} {:>8.1}  {}",
                s.queue,
                s.ready,
                s.scheduled,
                s.active,
                s.outstanding,
                s.dead,
                s.completed,
                s.cancelled,
                s.waiting,
                s.lateness_ms as f64 / 1000.0,
                if s.paused {
                    format!("PAUSED, {} held", s.parked)
                } else {
                    "running".to_owned()
                }
            );
        }
    }
    if !failed.is_empty() {
        return Err(Failure {
            code: 1,
            message: format!(
                "could not read {}: {}",
                if failed.len() == 1 {
                    "this queue"
                } else {
                    "these queues"
                },
                failed.join(", ")
            ),
        });
    }
    Ok(())
}
