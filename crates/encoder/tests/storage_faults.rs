//! Object storage under faults: a real SeaweedFS behind a fault-injecting
//! proxy ([`spool_testkit::FaultProxy`]) that fails, stalls, holds or
//! trickles chosen requests. Each test names the promise it holds: outputs
//! never partly one job's and partly another's, nothing reported that is
//! not there, nothing left that no job reports, and no storage call that
//! can hold a job forever.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::{Roots, roots};
use spool_encoder::storage::parse_buckets;
use spool_encoder::{
    CancellationToken, EncodeError, EncodeResult, Encoder, EncoderConfig, ObjectStorage,
    OutputOwner, Phase,
};
use spool_testkit::{Fault, FaultProxy, Rule, S3Server};

const MEDIA: &str = "media";
/// The I/O timeout the encoders here use: short, so a stall shows fast.
const IO: Duration = Duration::from_secs(2);

fn encoder_via(endpoint: &str, r: &Roots, part: Option<usize>) -> Result<Encoder> {
    encoder_waiting(endpoint, r, part, Duration::ZERO)
}

/// An encoder that waits out a storage outage for up to `outage`.
fn encoder_waiting(
    endpoint: &str,
    r: &Roots,
    part: Option<usize>,
    outage: Duration,
) -> Result<Encoder> {
    let scratch = r.dir.path().join("scratch");
    std::fs::create_dir_all(&scratch)?;
    let mut cfg = EncoderConfig::new(&r.input, &r.output);
    cfg.scratch_dir = scratch;
    cfg.storage = ObjectStorage::default()
        .with_buckets(parse_buckets(MEDIA).map_err(anyhow::Error::msg)?)
        .with_endpoint(Some(endpoint.to_owned()))
        .with_region(Some("us-east-1".into()))
        .with_io_timeout(Some(IO))
        .with_part_size(part)
        .with_outage_budget(Some(outage))
        .with_credentials(spool_testkit::S3_ACCESS_KEY, spool_testkit::S3_SECRET_KEY);
    Ok(Encoder::new(cfg)?)
}

fn clip(s3: &S3Server, r: &Roots, secs: u32) -> Result<()> {
    let local = r.dir.path().join("clip.mp4");
    spool_testkit::lavfi_clip(&local, 160, 120, 25, secs)?;
    s3.put(MEDIA, "src/clip.mp4", std::fs::read(&local)?)?;
    Ok(())
}

fn spec(json: &str) -> Result<spool_encoder::EncodeSpec> {
    spool_encoder::EncodeSpec::from_json(json.as_bytes(), &Default::default())
        .map_err(|e| anyhow::anyhow!("{}: {}", e.field, e.reason))
}

fn hls(out: &str) -> String {
    format!(
        r#"{{"input":"s3://media/src/clip.mp4","output":"s3://media/{out}","hardware":"cpu",
            "container":{{"format":"hls","segment_s":1}},
            "renditions":[{{"codec":"h264","height":120,"preset":"fastest","keyframe_interval_s":1}},
                          {{"codec":"h264","height":96,"preset":"fastest","keyframe_interval_s":1}}]}}"#
    )
}

fn mp4(out: &str) -> String {
    format!(
        r#"{{"input":"s3://media/src/clip.mp4","output":"s3://media/{out}","hardware":"cpu",
            "renditions":[{{"codec":"h264","height":120,"preset":"fastest"}}]}}"#
    )
}

fn run(
    enc: &Encoder,
    owner: &OutputOwner,
    json: &str,
    progress: &mut (dyn FnMut(spool_encoder::Progress) + Send),
    cancel: &CancellationToken,
) -> Result<EncodeResult, EncodeError> {
    let s = spec(json).map_err(|e| EncodeError::Failed(e.to_string()))?;
    enc.encode_as_blocking(Some(owner), &s, progress, cancel)
}

/// The keys of the output `out` (an MP4's key, or an HLS directory's
/// keys), sorted.
fn keys_of(s3: &S3Server, out: &str) -> Result<Vec<String>> {
    let out = out.trim_end_matches('/');
    Ok(s3
        .list(MEDIA, "")?
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k == out || k.starts_with(&format!("{out}/")))
        .collect())
}

/// Who wrote each object of the output `prefix` (its `spool-owner`
/// metadata).
fn owners(s3: &S3Server, prefix: &str) -> Result<BTreeMap<String, Option<String>>> {
    let mut out = BTreeMap::new();
    for k in keys_of(s3, prefix)? {
        let (_, owner) = s3.head(MEDIA, &k)?;
        out.insert(k, owner);
    }
    Ok(out)
}

/// No playlist under `prefix` names an object that is not there.
fn playlists_whole(s3: &S3Server, prefix: &str) -> Result<()> {
    let keys: BTreeSet<String> = keys_of(s3, prefix)?.into_iter().collect();
    for k in keys.iter().filter(|k| k.ends_with(".m3u8")) {
        let text = String::from_utf8(s3.get(MEDIA, k)?)?;
        let dir = k.rsplit_once('/').map_or("", |(d, _)| d);
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let named = format!("{dir}/{line}");
            ensure!(
                keys.contains(&named),
                "{k} names {named}, which is missing (have {keys:?})"
            );
        }
    }
    Ok(())
}

/// The result's objects are exactly what is under `prefix`, with the ETags
/// it reports.
fn holds_exactly(s3: &S3Server, prefix: &str, res: &EncodeResult) -> Result<()> {
    let want: BTreeSet<String> = res.objects.iter().map(|o| o.uri.clone()).collect();
    let have: BTreeSet<String> = keys_of(s3, prefix)?
        .into_iter()
        .map(|k| format!("s3://{MEDIA}/{k}"))
        .collect();
    ensure!(want == have, "bucket {have:?} vs reported {want:?}");
    Ok(())
}

/// Job B passed its ownership check and encoded; meanwhile job A ran to
/// the end. Whoever publishes first wins; the other's writes are
/// conditional, so it fails at its first object and its cleanup removes
/// nothing of the winner's (before: B replaced or deleted A's published
/// objects, which A still reported). For MP4, B uploads only once encoded,
/// so A always wins; for HLS, B uploads each segment as it is finished, and
/// on a busy machine its first may land before A's: then A is the one that
/// loses, and the same must hold the other way round.
#[test]
fn a_job_that_loses_the_race_after_its_check_never_touches_the_winner() -> Result<()> {
    let s3 = S3Server::start()?;
    let r = roots()?;
    clip(&s3, &r, 3)?;
    let enc_a = encoder_via(&s3.endpoint(), &r, None)?;
    let enc_b = encoder_via(&s3.endpoint(), &r, None)?;
    for (out, json) in [("race.mp4", mp4("race.mp4")), ("race-hls", hls("race-hls"))] {
        let (a, b) = (OutputOwner::named("job-a"), OutputOwner::named("job-b"));
        let mut a_result: Option<Result<EncodeResult, EncodeError>> = None;
        let b_result = run(
            &enc_b,
            &b,
            &json,
            &mut |p| {
                // B is encoding, past its check: A runs to the end now.
                // (On a thread of its own: progress is reported on B's
                // runtime, where a blocking encode cannot start.)
                if p.phase == Phase::Encode && a_result.is_none() {
                    a_result = Some(
                        std::thread::scope(|t| {
                            t.spawn(|| {
                                run(&enc_a, &a, &json, &mut |_| {}, &CancellationToken::new())
                            })
                            .join()
                        })
                        .expect("job A's thread"),
                    );
                }
            },
            &CancellationToken::new(),
        );
        let a_result = a_result.context("job A never ran")?;
        let (winner, res, lost) = match (a_result, b_result) {
            (Ok(res), Err(e)) => (&a, res, e),
            (Err(e), Ok(res)) if out == "race-hls" => (&b, res, e),
            (a_r, b_r) => anyhow::bail!(
                "{out}: exactly one job must publish (for MP4, A): A {:?}, B {:?}",
                a_r.map(|r| r.objects.len()),
                b_r.map(|r| r.objects.len())
            ),
        };
        ensure!(
            matches!(lost, EncodeError::OutputExists { .. }) && !lost.is_retryable(),
            "{out}: {lost}"
        );
        holds_exactly(&s3, out, &res)?;
        for (k, owner) in owners(&s3, out)? {
            ensure!(
                owner.as_deref() == Some(winner.key()),
                "{k} is not the winner's: {owner:?}"
            );
        }
        for o in &res.objects {
            let key = o.uri.trim_start_matches("s3://media/");
            let (_, owner) = s3.head(MEDIA, key)?;
            ensure!(owner.as_deref() == Some(winner.key()));
        }
        playlists_whole(&s3, out)?;
    }
    Ok(())
}

/// Attempt 1 published everything and died before its ack; attempt 2
/// failed partway through its upload (every rendition playlist PUT fails).
/// Before: attempt 2's cleanup deleted the segments it had replaced and
/// left attempt 1's master playlist naming them. Now: a playlist never
/// names a missing object, and nothing of the failed job is left.
#[test]
fn a_failed_retry_never_leaves_a_playlist_naming_a_missing_object() -> Result<()> {
    let s3 = S3Server::start()?;
    let proxy = FaultProxy::start(&s3.endpoint())?;
    let r = roots()?;
    clip(&s3, &r, 3)?;
    let enc = encoder_via(&proxy.endpoint(), &r, None)?;
    let job = OutputOwner::named("job");
    let first = run(
        &enc,
        &job,
        &hls("vod"),
        &mut |_| {},
        &CancellationToken::new(),
    )?;
    holds_exactly(&s3, "vod/", &first)?;
    proxy.add(Rule::new(
        Some("PUT"),
        "/index.m3u8",
        Fault::Fail(503, "ServiceUnavailable"),
    ));
    let retry = job.clone().with_stamp(job.stamp() + 1000);
    let e = run(
        &enc,
        &retry,
        &hls("vod"),
        &mut |_| {},
        &CancellationToken::new(),
    )
    .err()
    .context("the retry's playlists cannot be written")?;
    ensure!(e.is_retryable(), "{e}");
    playlists_whole(&s3, "vod/")?;
    let left = keys_of(&s3, "vod")?;
    ensure!(left.is_empty(), "the failed job left {left:?}");
    // The next attempt publishes the whole output again.
    proxy.clear();
    let third = job.clone().with_stamp(job.stamp() + 2000);
    let res = run(
        &enc,
        &third,
        &hls("vod"),
        &mut |_| {},
        &CancellationToken::new(),
    )?;
    holds_exactly(&s3, "vod/", &res)?;
    playlists_whole(&s3, "vod/")?;
    Ok(())
}

/// An attempt that lost its lease but still runs never replaces nor
/// removes what the later attempt of its job published.
#[test]
fn an_earlier_attempt_never_replaces_a_later_ones_output() -> Result<()> {
    let s3 = S3Server::start()?;
    let r = roots()?;
    clip(&s3, &r, 2)?;
    let enc = encoder_via(&s3.endpoint(), &r, None)?;
    let late = OutputOwner::named("job");
    let early = late.clone().with_stamp(late.stamp() - 60_000);
    let res = run(
        &enc,
        &late,
        &hls("lease"),
        &mut |_| {},
        &CancellationToken::new(),
    )?;
    let e = run(
        &enc,
        &early,
        &hls("lease"),
        &mut |_| {},
        &CancellationToken::new(),
    )
    .err()
    .context("the stale attempt must not publish")?;
    ensure!(e.to_string().contains("later attempt"), "{e}");
    holds_exactly(&s3, "lease/", &res)?;
    Ok(())
}

/// A store that stops answering: first only its listings (so every write
/// succeeds and the listing after the upload hangs), then everything with a
/// cancel. The job fails retryably within its bound instead of hanging
/// (before: the listing after the upload, and the deletes, had no deadline
/// and hung the job and the process's shutdown).
#[test]
fn a_frozen_store_cannot_hold_a_job_and_a_cancel_ends_it() -> Result<()> {
    let s3 = S3Server::start()?;
    let proxy = FaultProxy::start(&s3.endpoint())?;
    let r = roots()?;
    clip(&s3, &r, 2)?;
    let enc = encoder_via(&proxy.endpoint(), &r, None)?;
    // Two cases: frozen from the upload on; frozen and then cancelled.
    for cancel_too in [false, true] {
        proxy.clear();
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        let started = Instant::now();
        let mut frozen_at = None;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|scope| -> Result<()> {
            let (enc, proxy) = (&enc, &proxy);
            scope.spawn(move || {
                let out = format!("frozen-{cancel_too}");
                let r = run(
                    enc,
                    &OutputOwner::named("frozen"),
                    &hls(&out),
                    &mut |p| {
                        if p.phase == Phase::Upload && frozen_at.is_none() {
                            frozen_at = Some(Instant::now());
                            if cancel_too {
                                proxy.freeze(true);
                                trigger.cancel();
                            } else {
                                // Every write goes through; the listing
                                // after them never answers.
                                proxy.add(Rule::new(Some("GET"), "list-type=2", Fault::Stall));
                            }
                        }
                    },
                    &cancel,
                );
                let _ = tx.send(r.map(drop));
            });
            // Generous: the bound is a few I/O timeouts (2 s each).
            let r = rx
                .recv_timeout(Duration::from_secs(120))
                .context("the job hung on a frozen store")?;
            let e = r.err().context("a frozen store cannot complete a job")?;
            ensure!(e.is_retryable(), "{e}");
            if cancel_too {
                ensure!(matches!(e, EncodeError::Cancelled), "{e}");
            }
            proxy.clear();
            // What the attempt wrote is gone; listing works again now.
            let left = keys_of(&s3, &format!("frozen-{cancel_too}"))?;
            ensure!(
                cancel_too || left.is_empty(),
                "the failed attempt left {left:?}"
            );
            playlists_whole(&s3, &format!("frozen-{cancel_too}"))?;
            Ok(())
        })?;
        eprintln!(
            "frozen store (cancel: {cancel_too}): the job ended {:.1} s after it started",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The last part of a multipart upload fails every time: the upload is
/// aborted, so no incomplete upload is left (before: `finish` returned early
/// and the upload stayed, billed).
#[test]
fn a_failed_last_part_aborts_the_multipart_upload() -> Result<()> {
    let s3 = S3Server::start()?;
    let proxy = FaultProxy::start(&s3.endpoint())?;
    let r = roots()?;
    s3.put(MEDIA, "seed", b"x".to_vec())?;
    let storage = ObjectStorage::default()
        .with_buckets(parse_buckets(MEDIA).map_err(anyhow::Error::msg)?)
        .with_endpoint(Some(proxy.endpoint()))
        .with_region(Some("us-east-1".into()))
        .with_io_timeout(Some(IO))
        .with_part_size(Some(5 << 20))
        .with_outage_budget(Some(Duration::ZERO))
        .with_credentials(spool_testkit::S3_ACCESS_KEY, spool_testkit::S3_SECRET_KEY);
    let client = spool_encoder::Storage::new(&storage)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = r.dir.path().join("up");
    std::fs::create_dir_all(&dir)?;
    // 12 MiB: parts of 5, 5 and 2 MiB; the third fails.
    let bytes: Vec<u8> = (0..12u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.join("big.bin"), &bytes)?;
    proxy.add(Rule::new(
        Some("PUT"),
        "partNumber=3",
        Fault::Fail(500, "InternalError"),
    ));
    let base = spool_encoder::S3Uri::parse("s3://media/big/x").map_err(anyhow::Error::msg)?;
    let e = rt
        .block_on(client.upload_dir(
            &dir,
            &base,
            Some(&OutputOwner::named("j")),
            &mut |_, _| {},
            &CancellationToken::new(),
        ))
        .err()
        .context("a part that always fails must fail the upload")?;
    ensure!(e.is_retryable(), "{e}");
    let pending = s3.pending_multipart_uploads(MEDIA)?;
    ensure!(pending.is_empty(), "incomplete uploads left: {pending:?}");
    ensure!(keys_of(&s3, "big")?.is_empty());
    Ok(())
}

/// A request the store calls malformed (400) fails the job permanently:
/// retrying re-runs the whole encode to the same answer.
#[test]
fn a_request_the_store_calls_malformed_fails_permanently() -> Result<()> {
    let s3 = S3Server::start()?;
    let proxy = FaultProxy::start(&s3.endpoint())?;
    let r = roots()?;
    clip(&s3, &r, 1)?;
    let enc = encoder_via(&proxy.endpoint(), &r, None)?;
    for code in ["KeyTooLongError", "InvalidArgument"] {
        proxy.clear();
        proxy.add(Rule::new(Some("PUT"), "/bad", Fault::Fail(400, code)));
        let e = run(
            &enc,
            &OutputOwner::named("j"),
            &mp4("bad.mp4"),
            &mut |_| {},
            &CancellationToken::new(),
        )
        .err()
        .context("a 400 must fail the job")?;
        ensure!(!e.is_retryable(), "{code}: {e}");
        ensure!(e.to_string().contains(code), "{e}");
    }
    Ok(())
}

/// A download that never stalls but trickles (200 B/s) is bounded as a
/// whole (before: the timeout was per read, so it ran for hours).
#[test]
fn a_trickling_download_is_bounded() -> Result<()> {
    let s3 = S3Server::start()?;
    let proxy = FaultProxy::start(&s3.endpoint())?;
    let r = roots()?;
    clip(&s3, &r, 2)?;
    let size = s3.get(MEDIA, "src/clip.mp4")?.len();
    ensure!(size > 4_000, "the clip is too small to trickle: {size}");
    proxy.add(Rule::new(Some("GET"), "/src/clip.mp4", Fault::Trickle(200)));
    let enc = encoder_via(&proxy.endpoint(), &r, None)?;
    let started = Instant::now();
    let e = run(
        &enc,
        &OutputOwner::named("j"),
        &mp4("t.mp4"),
        &mut |_| {},
        &CancellationToken::new(),
    )
    .err()
    .context("a trickle must not complete")?;
    ensure!(e.is_retryable(), "{e}");
    ensure!(e.to_string().contains("slower than"), "{e}");
    // Generous: the budget is 2 s here, the trickle would take > 20 s.
    ensure!(
        started.elapsed() < Duration::from_secs(size as u64 / 200),
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}

/// Twenty jobs race for five outputs, with injected storage failures and
/// cancels at random points: every output left belongs entirely to one
/// completed job and is exactly what it reported, and an output no job
/// completed is empty.
#[test]
fn jobs_racing_for_outputs_never_mix_and_never_leave_orphans() -> Result<()> {
    let s3 = S3Server::start()?;
    let proxy = FaultProxy::start(&s3.endpoint())?;
    let r = roots()?;
    clip(&s3, &r, 2)?;
    // Failures sprinkled over segment and playlist writes.
    for (target, n) in [("seg_00001.ts", 3), ("/index.m3u8", 2), ("master.m3u8", 1)] {
        proxy.add(Rule::new(Some("PUT"), target, Fault::Fail(503, "SlowDown")).times(n));
    }
    let enc = encoder_via(&proxy.endpoint(), &r, None)?;
    let mut seed: u64 = 0x5eed_1234;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let plan: Vec<(usize, String, Option<u64>)> = (0..20)
        .map(|i| {
            let out = format!("race/out{}", next() % 5);
            let cancel_after = (next() % 3 == 0).then(|| next() % 1500);
            (i, out, cancel_after)
        })
        .collect();
    let results = std::sync::Mutex::new(Vec::new());
    // Four at a time: the machine has two cores.
    for wave in plan.chunks(4) {
        std::thread::scope(|scope| {
            for (i, out, cancel_after) in wave {
                let (enc, results) = (&enc, &results);
                scope.spawn(move || {
                    let owner = OutputOwner::named(&format!("job-{i}"));
                    let cancel = CancellationToken::new();
                    if let Some(ms) = *cancel_after {
                        let c = cancel.clone();
                        std::thread::spawn(move || {
                            std::thread::sleep(Duration::from_millis(ms));
                            c.cancel();
                        });
                    }
                    let r = run(enc, &owner, &hls(out), &mut |_| {}, &cancel);
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((out.clone(), owner, r));
                });
            }
        });
    }
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut completed = 0;
    for n in 0..5 {
        let out = format!("race/out{n}");
        let done: Vec<_> = results
            .iter()
            .filter(|(o, _, r)| *o == out && r.is_ok())
            .collect();
        let left = owners(&s3, &format!("{out}/"))?;
        match done.as_slice() {
            [] => ensure!(left.is_empty(), "{out}: no job completed, yet {left:?}"),
            [(_, owner, Ok(res))] => {
                completed += 1;
                holds_exactly(&s3, &format!("{out}/"), res)?;
                for (k, o) in &left {
                    ensure!(o.as_deref() == Some(owner.key()), "{k} is another job's");
                }
                playlists_whole(&s3, &format!("{out}/"))?;
            }
            many => bail!("{out}: {} jobs completed on one output", many.len()),
        }
    }
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(o, _, r)| r.as_ref().err().map(|e| format!("{o}: {e}")))
        .collect();
    eprintln!(
        "{completed} outputs published by one job each; {} jobs failed: {failed:#?}",
        failed.len()
    );
    ensure!(completed >= 1, "no job completed at all");
    Ok(())
}

/// Object storage restarts (down about 6 s) while a job uploads: the job
/// waits the outage out within its budget and completes with exactly its
/// outputs, instead of failing an attempt (before: a 24 s restart used up
/// all five attempts of the jobs it hit in 18 s).
#[test]
fn a_storage_restart_during_the_upload_is_waited_out() -> Result<()> {
    let s3 = S3Server::start()?;
    let r = roots()?;
    clip(&s3, &r, 3)?;
    let enc = encoder_waiting(&s3.endpoint(), &r, None, Duration::from_secs(60))?;
    let server = std::sync::Mutex::new(s3);
    let res = std::thread::scope(|scope| {
        let mut killed = false;
        let server = &server;
        run(
            &enc,
            &OutputOwner::named("j"),
            &hls("restart"),
            &mut |p| {
                if p.phase == Phase::Upload && !killed {
                    killed = true;
                    if let Ok(mut s) = server.lock() {
                        s.kill();
                    }
                    // Back after 6 s, from another thread: this one goes
                    // on to the upload and finds the store down.
                    scope.spawn(move || {
                        std::thread::sleep(Duration::from_secs(6));
                        if let Ok(mut s) = server.lock() {
                            s.restart().expect("the store restarts");
                        }
                    });
                }
            },
            &CancellationToken::new(),
        )
    });
    let s3 = server.into_inner().unwrap_or_else(|p| p.into_inner());
    let res = res.context("the job must wait the restart out")?;
    holds_exactly(&s3, "restart", &res)?;
    playlists_whole(&s3, "restart")?;
    Ok(())
}
