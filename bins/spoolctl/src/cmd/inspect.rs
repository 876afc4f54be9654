//! `spoolctl inspect`: everything stored about one job.

use crate::*;

pub(crate) async fn inspect(
    queue: &Queue,
    id: &str,
    json: bool,
    with_log: bool,
) -> Result<(), Failure> {
    let info = queue.info(id).await?;
    let log = if with_log {
        Some(queue.job_log(id).await?)
    } else {
        None
    };
    // A flow's parent: its children, with what each left.
    let children = match info.child_count {
        Some(_) => queue.children(id).await?,
        None => Vec::new(),
    };
    if json {
        let mut v = serde_json::to_value(&info).unwrap_or_default();
        if let Some(obj) = v.as_object_mut() {
            if let Some(log) = &log {
                obj.insert("log".into(), serde_json::to_value(log).unwrap_or_default());
            }
            if info.child_count.is_some() {
                obj.insert(
                    "children".into(),
                    serde_json::to_value(&children).unwrap_or_default(),
                );
            }
        }
        println!("{v}");
        return Ok(());
    }
    let show = |v: &Option<serde_json::Value>| {
        v.as_ref()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into())
    };
    // Everything below may come from producers, handlers or FFmpeg's
    // messages about untrusted media: escaped for the terminal (terminal.rs).
    println!("id           {}", safe(&info.id));
    println!("queue        {}", safe(&info.queue));
    println!("state        {}", info.state);
    println!("attempts     {} of {}", info.attempts, info.max_attempts);
    println!("priority     {}", info.priority);
    println!("progress     {}", safe(&show(&info.progress)));
    println!("result       {}", safe(&show(&info.result)));
    println!(
        "last error   {}",
        safe(info.last_error.as_deref().unwrap_or("-"))
    );
    println!("payload      {}", safe(&info.payload));
    if let Some(parent) = &info.parent {
        match &info.parent_queue {
            Some(q) => println!("parent       {} (queue {})", safe(parent), safe(q)),
            None => println!("parent       {}", safe(parent)),
        }
    }
    if info.child_count.is_some() {
        let policy = info.on_child_failure.unwrap_or_default().as_str();
        println!(
            "children     {} (on child failure: {policy})",
            children.len()
        );
        if let Some(by) = &info.failed_by {
            println!("failed by    {}", safe(by));
        }
        for c in &children {
            let state = c.state.map_or("gone", |s| s.as_str());
            let left = match (&c.result, &c.error) {
                (Some(r), _) => format!("result {r}"),
                (None, Some(e)) => format!("error {e}"),
                (None, None) => "-".into(),
            };
            let name = match &c.queue {
                Some(q) => format!("{q} {}", c.id),
                None => c.id.to_string(),
            };
            println!("  {:<24} {state:<10} {}", safe(&name), safe(&left));
        }
    }
    if let Some(log) = log {
        println!("log          {} lines", log.len());
        for l in log {
            let level = match l.level {
                spool_queue::LogLevel::Info => "info",
                spool_queue::LogLevel::Warning => "warn",
                spool_queue::LogLevel::Error => "ERROR",
            };
            println!("  {} {level:<5} {}", format_ms(l.at_ms), safe(&l.message));
        }
    }
    Ok(())
}

/// `HH:MM:SS.mmm` UTC of a Unix time in ms (the date is in `--json`).
fn format_ms(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
}
