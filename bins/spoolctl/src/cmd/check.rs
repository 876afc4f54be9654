//! `spoolctl check [--repair [--dry-run]]`: jobs out of place, and their repair.

use crate::*;

/// Due work later than this is reported as stranded: a live worker or the
/// promoter moves due jobs within a second or two (a worker's sweep interval
/// at most), so ten seconds means nothing promotes them.
const STRANDED_AFTER_MS: u64 = 10_000;

pub(crate) async fn check(queue: &Queue, repair: bool, json: bool) -> Result<ExitCode, Failure> {
    let report = queue.check(repair).await?;
    // Due jobs no worker or promoter moved: not out of place (their index is
    // right), but invisible to the autoscaler, so a fleet at zero never
    // starts for them. `--repair` promotes them as `spoolctl promote` would.
    let mut lateness_ms = queue.stats().await?.lateness_ms;
    let late_before = lateness_ms;
    let stranded = lateness_ms > STRANDED_AFTER_MS;
    let mut promoted = 0;
    if stranded && repair {
        let swept = queue.sweep(1000).await?;
        promoted = swept.promoted;
        lateness_ms = swept.lateness_ms;
    }
    let stranded_left = lateness_ms > STRANDED_AFTER_MS;
    if json {
        let mut v = serde_json::to_value(&report).unwrap_or_default();
        v["due_lateness_ms"] = serde_json::Value::from(lateness_ms);
        v["due_unpromoted"] = serde_json::Value::from(stranded_left);
        v["due_promoted"] = serde_json::Value::from(promoted);
        println!("{v}");
    } else {
        for f in &report.findings {
            println!("{f}");
        }
        if stranded {
            println!(
                "due jobs not promoted: the oldest is {:.1} s late; nothing moves them into the backlog (no worker runs and no promoter: run `spoolctl promote`, or deploy the promoter, docs/autoscaling.md){}",
                late_before as f64 / 1000.0,
                if repair {
                    format!("; {promoted} promoted now")
                } else {
                    String::new()
                }
            );
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
    let clean = (report.findings.is_empty() || report.repaired) && !stranded_left;
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
