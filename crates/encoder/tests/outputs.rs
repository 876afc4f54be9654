//! Local outputs published as one unit, by exactly one job: two jobs racing
//! for a name, a ladder whose second name is taken mid-encode, and a volume
//! that is full for a moment mid-encode. Media is generated with FFmpeg's
//! lavfi sources.

mod common;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::{encoder, roots, spec};
use spool_encoder::{CancellationToken, EncodeError, Limits, OutputOwner, Phase};
use spool_testkit::lavfi_video as clip;

fn mp4_spec(output: &str, heights: &[u32]) -> Result<spool_encoder::EncodeSpec> {
    let renditions: Vec<String> = heights
        .iter()
        .map(|h| format!(r#"{{"codec":"h264","height":{h},"preset":"fastest"}}"#))
        .collect();
    spec(&format!(
        r#"{{"input":"clip.mp4","output":{output:?},"hardware":"cpu","audio":{{"mode":"none"}},
            "renditions":[{}]}}"#,
        renditions.join(",")
    ))
}

fn marker_key(dir: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(format!(".{name}.spool-owner"))).ok()?;
    text.split_whitespace().next().map(str::to_owned)
}

/// Two jobs publish the same MP4 name at the same moment, many times over:
/// exactly one wins each time, the marker always names the winner, and the
/// loser's retry never replaces the winner's file (before: the marker was
/// moved into place with a plain rename, so it could name the loser).
#[test]
fn of_two_jobs_racing_for_a_name_the_marker_always_names_the_winner() -> Result<()> {
    let r = roots()?;
    clip(&r.input.join("clip.mp4"), 64, 48, 0.2, &[])?;
    let enc = encoder(&r, Limits::default())?;
    let rounds = 30;
    for round in 0..rounds {
        let name = format!("race{round}");
        let s = mp4_spec(&name, &[48])?;
        let owners = [
            OutputOwner::named(&format!("a{round}")),
            OutputOwner::named(&format!("b{round}")),
        ];
        let barrier = std::sync::Barrier::new(2);
        let results: Vec<Result<_, EncodeError>> = std::thread::scope(|scope| {
            let hs: Vec<_> = owners
                .iter()
                .map(|o| {
                    let (enc, s, barrier) = (&enc, &s, &barrier);
                    scope.spawn(move || {
                        let mut waited = false;
                        enc.encode_as_blocking(
                            Some(o),
                            s,
                            &mut |p| {
                                // Both start encoding together, so their
                                // publishes land close together.
                                if p.phase == Phase::Encode && !waited {
                                    waited = true;
                                    barrier.wait();
                                }
                            },
                            &CancellationToken::new(),
                        )
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(EncodeError::Failed("panicked".into())))
                })
                .collect()
        });
        let won: Vec<usize> = (0..2).filter(|i| results[*i].is_ok()).collect();
        let [winner] = won.as_slice() else {
            bail!("round {round}: {} winners: {results:?}", won.len());
        };
        let loser = 1 - winner;
        ensure!(
            matches!(results[loser], Err(EncodeError::OutputExists { .. })),
            "round {round}: the loser failed otherwise: {:?}",
            results[loser]
        );
        let file = format!("{name}.mp4");
        ensure!(
            marker_key(&r.output, &file).as_deref() == Some(owners[*winner].key()),
            "round {round}: the marker names the loser"
        );
        let before = std::fs::read(r.output.join(&file))?;
        // The loser retried from the dead letters: refused, nothing replaced.
        let again = OutputOwner::named(&format!("{}{round}", ["a", "b"][loser]));
        let e = enc
            .encode_as_blocking(Some(&again), &s, &mut |_| {}, &CancellationToken::new())
            .err()
            .context("the loser's retry must not publish")?;
        ensure!(matches!(e, EncodeError::OutputExists { .. }), "{e}");
        ensure!(
            std::fs::read(r.output.join(&file))? == before,
            "round {round}: replaced"
        );
    }
    Ok(())
}

/// A two-rendition ladder whose second name is taken while it encodes:
/// the job fails and publishes neither rendition (before: the first was
/// left published). A ladder that replaces its own earlier output and then
/// fails puts the earlier files back.
#[test]
fn a_ladder_publishes_all_of_its_renditions_or_none() -> Result<()> {
    let r = roots()?;
    clip(&r.input.join("clip.mp4"), 160, 120, 1.0, &[])?;
    let enc = encoder(&r, Limits::default())?;
    let s = mp4_spec("film", &[120, 96])?;
    let owner = OutputOwner::named("ladder");
    let mut taken = false;
    let e = enc
        .encode_as_blocking(
            Some(&owner),
            &s,
            &mut |p| {
                if p.phase == Phase::Encode && !taken {
                    taken = true;
                    std::fs::write(r.output.join("film_96p.mp4"), b"someone's").expect("write");
                }
            },
            &CancellationToken::new(),
        )
        .err()
        .context("the taken name must fail the ladder")?;
    ensure!(matches!(e, EncodeError::OutputExists { .. }), "{e}");
    let mut left: Vec<String> = std::fs::read_dir(&r.output)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    left.sort();
    ensure!(left == ["film_96p.mp4"], "left behind: {left:?}");
    ensure!(std::fs::read(r.output.join("film_96p.mp4"))? == b"someone's");

    // The job's own earlier ladder, then a retry that fails at the second
    // name: the first file is the earlier attempt's again.
    std::fs::remove_file(r.output.join("film_96p.mp4"))?;
    enc.encode_as_blocking(Some(&owner), &s, &mut |_| {}, &CancellationToken::new())?;
    let first = std::fs::read(r.output.join("film_120p.mp4"))?;
    let retry = owner.clone().with_stamp(owner.stamp() + 1000);
    // A different first rendition, so a replaced file shows.
    let mut retry_spec = mp4_spec("film", &[120, 96])?;
    retry_spec.renditions[0].preset = spool_encoder::Preset::Fast;
    let other = OutputOwner::named("other");
    let mut swapped = false;
    let e = enc
        .encode_as_blocking(
            Some(&retry),
            &retry_spec,
            &mut |p| {
                if p.phase == Phase::Encode && !swapped {
                    swapped = true;
                    // Another job's marker appears on the second name.
                    std::fs::write(
                        r.output.join(".film_96p.mp4.spool-owner"),
                        format!("{} 1", other.key()),
                    )
                    .expect("write");
                }
            },
            &CancellationToken::new(),
        )
        .err()
        .context("a foreign marker must fail the retry")?;
    ensure!(matches!(e, EncodeError::OutputExists { .. }), "{e}");
    ensure!(
        std::fs::read(r.output.join("film_120p.mp4"))? == first,
        "the earlier attempt's first rendition was not put back"
    );
    ensure!(marker_key(&r.output, "film_120p.mp4").as_deref() == Some(owner.key()));
    Ok(())
}

/// The output volume is full for 3 s in the middle of an HLS encode: FFmpeg
/// drops the segment write errors, so the check before publishing must
/// catch the empty or cut segments and fail the job retryably, publishing
/// nothing (before: the job completed with 0-byte segments in its
/// playlists).
#[test]
fn a_volume_full_for_a_moment_fails_the_job_instead_of_publishing_holes() -> Result<()> {
    let r = roots()?;
    clip(&r.input.join("clip.mp4"), 640, 360, 40.0, &[])?;
    let Some(_tmpfs) = spool_testkit::Tmpfs::mount(&r.output, "64m") else {
        return Ok(spool_testkit::skipped(
            "cannot mount a tmpfs here (not root): the full-volume test did not run",
        )?);
    };
    let enc = encoder(&r, Limits::default())?;
    let s = spec(
        r#"{"input":"clip.mp4","output":"vod","hardware":"cpu","audio":{"mode":"none"},
            "container":{"format":"hls","segment_s":1},
            "renditions":[{"codec":"h264","height":360,"preset":"medium","keyframe_interval_s":1}]}"#,
    )?;
    let filler = r.output.join("filler");
    let mut filled = None;
    let started = std::time::Instant::now();
    let res = enc.encode_as_blocking(
        Some(&OutputOwner::named("full")),
        &s,
        &mut |p| {
            if p.phase == Phase::Encode && p.frames >= 40 && filled.is_none() {
                // Fill the volume, and free it again 3 s later.
                let _ = std::fs::write(&filler, vec![0u8; 64 << 20]);
                let f = filler.clone();
                filled = Some(std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_secs(3));
                    let _ = std::fs::remove_file(f);
                }));
            }
        },
        &CancellationToken::new(),
    );
    if let Some(t) = filled {
        let _ = t.join();
    }
    let finished = started.elapsed();
    let e = res
        .err()
        .context("an encode with lost segment writes must not complete")?;
    eprintln!("the job failed after {finished:?} with: {e}");
    ensure!(e.is_retryable(), "a full disk is a moment: {e}");
    let left: Vec<_> = std::fs::read_dir(&r.output)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    ensure!(left.is_empty(), "published or left: {left:?}");
    Ok(())
}

/// AV1 in an HLS output is refused before any work: spool's segments are
/// MPEG-TS, which players do not play AV1 from.
#[test]
fn av1_in_hls_is_refused_at_validation() -> Result<()> {
    let e = spec(
        r#"{"input":"clip.mp4","output":"vod","container":{"format":"hls"},
            "renditions":[{"codec":"av1","height":240}]}"#,
    )
    .err()
    .context("av1 in HLS must be refused")?;
    ensure!(e.to_string().contains("codec"), "{e}");
    Ok(())
}

/// An output volume remounted read-only (a disk error, a storage failover)
/// fails the job retryably, naming the cause: another worker, or this one
/// once the volume is back, can write (before: dead at once).
#[test]
fn a_read_only_output_volume_is_retryable() -> Result<()> {
    let r = roots()?;
    clip(&r.input.join("clip.mp4"), 64, 48, 0.2, &[])?;
    let Some(_tmpfs) = spool_testkit::Tmpfs::mount(&r.output, "16m") else {
        return Ok(spool_testkit::skipped(
            "cannot mount a tmpfs here (not root): the read-only volume test did not run",
        )?);
    };
    let remount = |mode: &str| -> Result<()> {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&r.output)
            .status()?
            .success();
        ensure!(ok, "remount {mode} failed");
        Ok(())
    };
    remount("ro")?;
    let enc = encoder(&r, Limits::default())?;
    let s = mp4_spec("ro", &[48])?;
    let e = enc
        .encode_as_blocking(
            Some(&OutputOwner::named("j")),
            &s,
            &mut |_| {},
            &CancellationToken::new(),
        )
        .err()
        .context("a read-only volume cannot take an output")?;
    ensure!(
        e.is_retryable() && e.to_string().contains("read-only"),
        "{e}"
    );
    remount("rw")?;
    enc.encode_as_blocking(
        Some(&OutputOwner::named("j")),
        &s,
        &mut |_| {},
        &CancellationToken::new(),
    )
    .context("the retry once the volume is writable")?;
    Ok(())
}
