//! `spoolctl check [--repair [--dry-run]]`: jobs out of place, and their repair.

use crate::*;

pub(crate) async fn check(queue: &Queue, repair: bool, json: bool) -> Result<ExitCode, Failure> {
    let report = queue.check(repair).await?;
    if json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        for f in &report.findings {
            println!("{f}");
        }
        let verb = if report.repaired { "repaired" } else { "found" };
        println!(
            "{}: {} jobs examined{}, {} {verb}",
            report.queue,
            report.examined,
            if report.keys_scanned {
                ""
            } else {
                " (indexes only: a cluster's job keys are not scanned)"
            },
            report.findings.len()
        );
    }
    Ok(if report.findings.is_empty() || report.repaired {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
