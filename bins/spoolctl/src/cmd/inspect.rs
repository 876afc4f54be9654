//! `spoolctl inspect`: everything stored about one job.

use crate::*;

pub(crate) async fn inspect(queue: &Queue, id: &str, json: bool) -> Result<(), Failure> {
    let info = queue.info(id).await?;
    if json {
        println!("{}", serde_json::to_string(&info).unwrap_or_default());
        return Ok(());
    }
    let show = |v: &Option<serde_json::Value>| {
        v.as_ref()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into())
    };
    println!("id           {}", info.id);
    println!("queue        {}", info.queue);
    println!("state        {}", info.state);
    println!("attempts     {} of {}", info.attempts, info.max_attempts);
    println!("priority     {}", info.priority);
    println!("progress     {}", show(&info.progress));
    println!("result       {}", show(&info.result));
    println!("last error   {}", info.last_error.as_deref().unwrap_or("-"));
    println!("payload      {}", info.payload);
    Ok(())
}
