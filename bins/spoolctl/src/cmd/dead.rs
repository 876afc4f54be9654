//! `spoolctl dead list|retry|purge`: the dead-letter set.

use crate::*;

#[derive(Subcommand)]
pub(crate) enum DeadAction {
    /// List dead jobs, newest first.
    List {
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
    },
    /// Put dead jobs back in the backlog with fresh attempts.
    Retry {
        /// These ids (default: the oldest --limit).
        ids: Vec<String>,
        /// How many when no ids are given.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Delete dead jobs.
    Purge {
        /// These ids (default: the oldest --limit).
        ids: Vec<String>,
        /// How many when no ids are given.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

pub(crate) async fn dead(queue: &Queue, action: DeadAction) -> Result<(), Failure> {
    match action {
        DeadAction::List { limit, json } => {
            let page = queue
                .jobs_page(spool_queue::JobState::Dead, 0, limit)
                .await?;
            for job in page.jobs {
                if json {
                    println!("{}", serde_json::to_string(&job).unwrap_or_default());
                } else {
                    println!(
                        "{}  attempts {}  {}",
                        safe(&job.id),
                        job.attempts,
                        safe(&job.last_error.unwrap_or_default())
                    );
                }
            }
            // Listed after the others, and the exit code says so: one
            // damaged job never hides the rest.
            for bad in &page.unreadable {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "id": bad.id, "error": bad.reason })
                    );
                } else {
                    println!("{}  UNREADABLE  {}", safe(&bad.id), safe(&bad.reason));
                }
            }
            if !page.unreadable.is_empty() {
                return Err(Failure {
                    code: 1,
                    message: format!(
                        "{} dead jobs could not be read (listed above); `spoolctl check` finds damaged jobs",
                        page.unreadable.len()
                    ),
                });
            }
        }
        DeadAction::Retry { ids, limit } => {
            println!("retried {}", queue.dead_retry(&job_ids(ids), limit).await?)
        }
        DeadAction::Purge { ids, limit } => {
            println!("purged {}", queue.dead_purge(&job_ids(ids), limit).await?)
        }
    }
    Ok(())
}

fn job_ids(ids: Vec<String>) -> Vec<spool_queue::JobId> {
    ids.into_iter().map(spool_queue::JobId::from).collect()
}
