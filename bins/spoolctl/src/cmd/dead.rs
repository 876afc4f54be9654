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
            for job in queue.dead_list(0, limit).await? {
                if json {
                    println!("{}", serde_json::to_string(&job).unwrap_or_default());
                } else {
                    println!(
                        "{}  attempts {}  {}",
                        job.id,
                        job.attempts,
                        job.last_error.unwrap_or_default()
                    );
                }
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
