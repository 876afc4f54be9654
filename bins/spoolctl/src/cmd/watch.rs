//! `spoolctl watch`: a progress bar until the job ends, riding out Redis outages.

use crate::*;

pub(crate) fn percent_of(info: &JobInfo) -> Option<f64> {
    info.progress.as_ref()?.get("percent")?.as_f64()
}

pub(crate) async fn watch(queue: &Queue, id: &str) -> Result<ExitCode, Failure> {
    let bar = indicatif::ProgressBar::new(100);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{bar:40}] {pos:>3}% {msg} (eta {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut seen = false;
    let mut down_since: Option<std::time::Instant> = None;
    loop {
        let info = match queue.info(id).await {
            Ok(info) => {
                seen = true;
                down_since = None;
                info
            }
            // Completed or cancelled with retention 0: the hash is gone the
            // moment the job ends (dead jobs are always kept).
            Err(QueueError::NotFound { .. }) if seen => {
                bar.finish();
                println!(
                    "{id} finished and was not retained (retention 0): it completed or was cancelled; its result was not kept"
                );
                return Ok(ExitCode::SUCCESS);
            }
            // A dropped connection is not the job's failure: keep watching.
            Err(e) if e.is_transient() => {
                let since = *down_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > WATCH_OUTAGE {
                    return Err(e.into());
                }
                bar.set_message(format!("Redis unreachable, retrying: {e}"));
                tokio::time::sleep(WATCH_POLL).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(p) = percent_of(&info) {
            bar.set_position(p.clamp(0.0, 100.0) as u64);
        }
        let fps = info
            .progress
            .as_ref()
            .and_then(|p| p.get("fps"))
            .and_then(|f| f.as_f64())
            .map(|f| format!(" {f:.1} fps"))
            .unwrap_or_default();
        bar.set_message(format!("{} attempt {}{fps}", info.state, info.attempts));
        if info.state.is_terminal() {
            bar.finish();
            return Ok(match info.state {
                JobState::Completed => {
                    println!(
                        "{} completed: {}",
                        safe(id),
                        safe(&info.result.map(|r| r.to_string()).unwrap_or_default())
                    );
                    ExitCode::SUCCESS
                }
                other => {
                    eprintln!(
                        "spoolctl: job {} ended {other}: {}",
                        safe(id),
                        safe(&info.last_error.unwrap_or_default())
                    );
                    ExitCode::from(1)
                }
            });
        }
        tokio::time::sleep(WATCH_POLL).await;
    }
}
