//! `s3://` inputs and outputs against a real S3-compatible server (SeaweedFS,
//! started by the test with credentials checked): encodes read back with
//! ffprobe and played over HTTP, refusals that name what is wrong, and a
//! bucket left holding exactly the final outputs after failures.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail, ensure};
use common::{Roots, roots};
use spool_encoder::storage::parse_buckets;
use spool_encoder::{
    CancellationToken, EncodeError, EncodeResult, Encoder, EncoderConfig, ObjectStorage,
    OutputOwner, Phase,
};
use spool_testkit::{PUBLIC_BUCKET, S3_ACCESS_KEY, S3_SECRET_KEY, S3Server};

const MEDIA: &str = "media";

/// An encoder whose jobs may use `buckets`, with the given credentials.
fn encoder_as(s3: &S3Server, r: &Roots, buckets: &str, key: &str, secret: &str) -> Result<Encoder> {
    let scratch = r.dir.path().join("scratch");
    std::fs::create_dir_all(&scratch)?;
    let mut cfg = EncoderConfig::new(&r.input, &r.output);
    cfg.scratch_dir = scratch;
    cfg.storage = ObjectStorage::default()
        .with_buckets(parse_buckets(buckets).map_err(anyhow::Error::msg)?)
        .with_endpoint(Some(s3.endpoint()))
        .with_region(Some("us-east-1".into()))
        .with_credentials(key, secret)
        // These tests see each failure at once; outages waited out are
        // storage_faults.rs's.
        .with_outage_budget(Some(std::time::Duration::ZERO));
    Ok(Encoder::new(cfg)?)
}

fn encoder(s3: &S3Server, r: &Roots) -> Result<Encoder> {
    encoder_as(
        s3,
        r,
        &format!("{MEDIA},{PUBLIC_BUCKET}"),
        S3_ACCESS_KEY,
        S3_SECRET_KEY,
    )
}

/// A generated clip, uploaded to `media/src/<name>`.
fn upload_clip(s3: &S3Server, r: &Roots, name: &str, w: u32, h: u32, secs: u32) -> Result<u64> {
    let local = r.dir.path().join(name);
    spool_testkit::lavfi_clip(&local, w, h, 25, secs)?;
    let bytes = std::fs::read(&local)?;
    let n = bytes.len() as u64;
    s3.put(MEDIA, &format!("src/{name}"), bytes)?;
    Ok(n)
}

fn encode(
    enc: &Encoder,
    owner: &str,
    json: &str,
    on_progress: &mut (dyn FnMut(spool_encoder::Progress) + Send),
    cancel: &CancellationToken,
) -> Result<EncodeResult, EncodeError> {
    let s = spool_encoder::EncodeSpec::from_json(json.as_bytes(), &Default::default()).map_err(
        |e| EncodeError::InvalidSpec {
            field: e.field,
            reason: e.reason,
        },
    )?;
    enc.encode_as_blocking(Some(&OutputOwner::named(owner)), &s, on_progress, cancel)
}

/// ffprobe's view of a local file: (frames, duration s, codec).
fn probe(path: &std::path::Path) -> Result<(u64, f64, String)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=nb_read_frames,codec_name:format=duration",
            "-of",
            "default=nw=1",
        ])
        .arg(path)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_owned)
            .with_context(|| format!("ffprobe gave no {k}: {text}"))
    };
    Ok((
        field("nb_read_frames")?.parse()?,
        field("duration")?.parse()?,
        field("codec_name")?,
    ))
}

/// The bucket holds exactly the result's objects under `prefix`: no orphan
/// segment, no leftover of an earlier attempt.
fn holds_exactly(s3: &S3Server, prefix: &str, res: &EncodeResult) -> Result<()> {
    let mut want: Vec<String> = res.objects.iter().map(|o| o.uri.clone()).collect();
    want.sort();
    let have: Vec<String> = s3
        .list(MEDIA, prefix)?
        .into_iter()
        .map(|(k, _)| format!("s3://{MEDIA}/{k}"))
        .collect();
    ensure!(want == have, "bucket {have:?} vs outputs {want:?}");
    Ok(())
}

fn no_secret(msg: &str) -> Result<()> {
    ensure!(
        !msg.contains(S3_SECRET_KEY) && !msg.contains(S3_ACCESS_KEY),
        "a credential leaked into: {msg}"
    );
    Ok(())
}

#[test]
fn s3_to_s3_mp4_and_hls_ladder_read_back_and_play_over_http() -> Result<()> {
    let s3 = S3Server::start()?;
    let r = roots()?;
    upload_clip(&s3, &r, "clip.mp4", 1920, 1080, 2)?;
    // The bucket exists (S3 answers NoSuchBucket, a permanent error, otherwise).
    s3.put(PUBLIC_BUCKET, "index.html", b"hello".to_vec())?;
    let enc = encoder(&s3, &r)?;
    let cancel = CancellationToken::new();

    // MP4.
    let mut phases = Vec::new();
    let res = encode(
        &enc,
        "job-mp4",
        r#"{"input":"s3://media/src/clip.mp4","output":"s3://media/out/clip.mp4","hardware":"cpu",
            "renditions":[{"codec":"h264","height":360,"preset":"fastest"}]}"#,
        &mut |p| {
            if phases.last() != Some(&p.phase) {
                phases.push(p.phase)
            }
        },
        &cancel,
    )?;
    ensure!(
        phases == [Phase::Download, Phase::Encode, Phase::Upload],
        "progress phases: {phases:?}"
    );
    ensure!(res.outputs[0].path == "s3://media/out/clip.mp4");
    ensure!(res.objects.len() == 1, "{:?}", res.objects);
    let obj = &res.objects[0];
    ensure!(
        obj.uri == "s3://media/out/clip.mp4" && obj.etag.is_some(),
        "{obj:?}"
    );
    let bytes = s3.get(MEDIA, "out/clip.mp4")?;
    ensure!(bytes.len() as u64 == obj.size_bytes);
    let local = r.dir.path().join("back.mp4");
    std::fs::write(&local, &bytes)?;
    let (frames, dur, codec) = probe(&local)?;
    ensure!(
        frames == 50 && (dur - 2.0).abs() < 0.2 && codec == "h264",
        "{frames} {dur} {codec}"
    );
    let (ct, owner) = s3.head(MEDIA, "out/clip.mp4")?;
    ensure!(
        ct.as_deref() == Some("video/mp4")
            && owner.as_deref() == Some(OutputOwner::named("job-mp4").key()),
        "{ct:?} {owner:?}"
    );

    // A three-rung HLS ladder into the publicly readable bucket.
    let res = encode(
        &enc,
        "job-hls",
        r#"{"input":"s3://media/src/clip.mp4","output":"s3://public-media/vod/clip","hardware":"cpu",
            "container":{"format":"hls","segment_s":1},
            "renditions":[{"codec":"h264","height":360,"preset":"fastest"},
                          {"codec":"h264","height":240,"preset":"fastest"},
                          {"codec":"h264","height":144,"preset":"fastest"}]}"#,
        &mut |_| {},
        &cancel,
    )?;
    let listed = s3.list(PUBLIC_BUCKET, "vod/clip")?;
    let mut uploaded: Vec<String> = res.objects.iter().map(|o| o.uri.clone()).collect();
    uploaded.sort();
    let listed_uris: Vec<String> = listed
        .iter()
        .map(|(k, _)| format!("s3://{PUBLIC_BUCKET}/{k}"))
        .collect();
    ensure!(
        uploaded == listed_uris,
        "result {uploaded:?} vs bucket {listed_uris:?}"
    );
    // The master playlist went last, after every segment and playlist.
    let order: Vec<&str> = res.objects.iter().map(|o| o.uri.as_str()).collect();
    ensure!(
        order.last().is_some_and(|u| u.ends_with("/master.m3u8")),
        "{order:?}"
    );
    let first_playlist = order.iter().position(|u| u.ends_with(".m3u8")).unwrap_or(0);
    ensure!(
        order[first_playlist..].iter().all(|u| u.ends_with(".m3u8")),
        "a playlist went up before a segment: {order:?}"
    );
    for o in &res.objects {
        let want = if o.uri.ends_with(".m3u8") {
            "application/vnd.apple.mpegurl"
        } else {
            "video/mp2t"
        };
        ensure!(o.content_type == want, "{o:?}");
    }
    let (ct, _) = s3.head(PUBLIC_BUCKET, "vod/clip/master.m3u8")?;
    ensure!(
        ct.as_deref() == Some("application/vnd.apple.mpegurl"),
        "{ct:?}"
    );
    // Played end to end over plain HTTP, the way a CDN-fronted player reads it.
    let url = format!("{}/{PUBLIC_BUCKET}/vod/clip/master.m3u8", s3.endpoint());
    for program in 0..3 {
        let out = Command::new("ffmpeg")
            .args(["-v", "error", "-i", &url, "-map"])
            .arg(format!("0:p:{program}:v"))
            .args(["-f", "null", "-"])
            .output()?;
        ensure!(
            out.status.success(),
            "ffmpeg could not play rung {program} over HTTP: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[test]
fn local_to_s3_and_s3_to_local_both_work() -> Result<()> {
    let s3 = S3Server::start()?;
    let r = roots()?;
    spool_testkit::lavfi_clip(&r.input.join("local.mp4"), 320, 240, 25, 1)?;
    upload_clip(&s3, &r, "remote.mp4", 320, 240, 1)?;
    let enc = encoder(&s3, &r)?;
    let cancel = CancellationToken::new();
    let up = encode(
        &enc,
        "j1",
        r#"{"input":"local.mp4","output":"s3://media/from-local","hardware":"cpu",
            "renditions":[{"codec":"h264","height":120,"preset":"fastest"}]}"#,
        &mut |_| {},
        &cancel,
    )?;
    ensure!(up.objects.len() == 1 && up.objects[0].uri == "s3://media/from-local.mp4");
    let down = encode(
        &enc,
        "j2",
        r#"{"input":"s3://media/src/remote.mp4","output":"from-remote","hardware":"cpu",
            "renditions":[{"codec":"h264","height":120,"preset":"fastest"}]}"#,
        &mut |_| {},
        &cancel,
    )?;
    ensure!(down.objects.is_empty());
    let (frames, _, _) = probe(&r.output.join("from-remote.mp4"))?;
    ensure!(frames == 25, "{frames}");
    // The download was scratch only: nothing left behind.
    let left: Vec<_> = std::fs::read_dir(r.dir.path().join("scratch"))?.collect();
    ensure!(left.is_empty(), "scratch files left: {left:?}");
    Ok(())
}

#[test]
fn bad_locations_and_credentials_each_fail_permanently_with_a_clear_error() -> Result<()> {
    let s3 = S3Server::start()?;
    let r = roots()?;
    upload_clip(&s3, &r, "clip.mp4", 160, 120, 1)?;
    s3.put("other", "secret.mp4", b"not yours".to_vec())?;
    let enc = encoder(&s3, &r)?;
    let cancel = CancellationToken::new();
    let job = |input: &str, output: &str| {
        format!(
            r#"{{"input":{input:?},"output":{output:?},"hardware":"cpu",
                "renditions":[{{"codec":"h264","height":120,"preset":"fastest"}}]}}"#
        )
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "missing key",
            job("s3://media/src/nope.mp4", "s3://media/o1"),
            "no such object",
        ),
        (
            "bucket not allowed (input)",
            job("s3://other/secret.mp4", "s3://media/o2"),
            "SPOOL_S3_BUCKETS",
        ),
        (
            "bucket not allowed (output)",
            job("s3://media/src/clip.mp4", "s3://other/o3"),
            "SPOOL_S3_BUCKETS",
        ),
        (
            "dot-dot key",
            job("s3://media/src/../../etc/passwd", "s3://media/o4"),
            "\"..\"",
        ),
        (
            "absolute-path key",
            job("s3://media//etc/passwd", "s3://media/o5"),
            "empty segment",
        ),
    ];
    for (what, json, needle) in &cases {
        match encode(&enc, "j", json, &mut |_| {}, &cancel) {
            Ok(_) => bail!("{what}: accepted"),
            Err(e) => {
                let msg = e.to_string();
                ensure!(msg.contains(needle), "{what}: {msg}");
                ensure!(!e.is_retryable(), "{what} must be permanent: {msg}");
                no_secret(&msg)?;
            }
        }
    }
    // Wrong credentials: access denied, permanent, no secret in the message.
    let wrong = encoder_as(&s3, &r, MEDIA, S3_ACCESS_KEY, "not-the-secret")?;
    match encode(
        &wrong,
        "j",
        &job("s3://media/src/clip.mp4", "s3://media/o6"),
        &mut |_| {},
        &cancel,
    ) {
        Err(e @ EncodeError::StorageRefused { .. }) => {
            let msg = e.to_string();
            ensure!(
                msg.contains("access denied") && msg.contains("s3://media/"),
                "{msg}"
            );
            no_secret(&msg)?;
        }
        other => bail!("wrong credentials must be refused: {other:?}"),
    }
    // Storage off: refused, naming the setting.
    let off = Encoder::new(EncoderConfig::new(&r.input, &r.output))?;
    let e = encode(
        &off,
        "j",
        &job("s3://media/src/clip.mp4", "o7"),
        &mut |_| {},
        &cancel,
    )
    .err()
    .context("storage off must refuse")?;
    ensure!(e.to_string().contains("SPOOL_S3_BUCKETS is empty"), "{e}");
    // Nothing was written by any of them.
    let written: Vec<_> = s3
        .list(MEDIA, "")?
        .into_iter()
        .filter(|(k, _)| !k.starts_with("src/"))
        .collect();
    ensure!(written.is_empty(), "refused jobs wrote {written:?}");
    Ok(())
}

#[test]
fn inputs_over_the_size_limit_are_refused_before_the_download() -> Result<()> {
    let s3 = S3Server::start()?;
    let r = roots()?;
    let size = upload_clip(&s3, &r, "clip.mp4", 320, 240, 1)?;
    let scratch = r.dir.path().join("scratch");
    std::fs::create_dir_all(&scratch)?;
    let mut cfg = EncoderConfig::new(&r.input, &r.output);
    cfg.scratch_dir = scratch.clone();
    cfg.max_input_bytes = size - 1;
    cfg.storage = ObjectStorage::default()
        .with_buckets(parse_buckets(MEDIA).map_err(anyhow::Error::msg)?)
        .with_endpoint(Some(s3.endpoint()))
        .with_credentials(S3_ACCESS_KEY, S3_SECRET_KEY);
    let enc = Encoder::new(cfg)?;
    let mut downloaded = 0;
    let e = encode(
        &enc,
        "j",
        r#"{"input":"s3://media/src/clip.mp4","output":"o","hardware":"cpu",
            "renditions":[{"codec":"h264","height":120,"preset":"fastest"}]}"#,
        &mut |p| downloaded = downloaded.max(p.bytes),
        &CancellationToken::new(),
    )
    .err()
    .context("an input over the limit must be refused")?;
    ensure!(matches!(e, EncodeError::LimitExceeded { .. }), "{e}");
    ensure!(e.to_string().contains("SPOOL_MAX_INPUT_BYTES"), "{e}");
    ensure!(downloaded == 0, "{downloaded} bytes were downloaded first");
    ensure!(
        std::fs::read_dir(&scratch)?.next().is_none(),
        "scratch not empty"
    );
    Ok(())
}

#[test]
fn another_jobs_objects_are_never_replaced_and_a_retry_replaces_its_own() -> Result<()> {
    let s3 = S3Server::start()?;
    let r = roots()?;
    upload_clip(&s3, &r, "clip.mp4", 160, 120, 1)?;
    s3.put(MEDIA, "taken.mp4", b"someone else's".to_vec())?;
    let enc = encoder(&s3, &r)?;
    let cancel = CancellationToken::new();
    let job = |out: &str| {
        format!(
            r#"{{"input":"s3://media/src/clip.mp4","output":{out:?},"hardware":"cpu",
                "renditions":[{{"codec":"h264","height":120,"preset":"fastest"}}]}}"#
        )
    };
    match encode(
        &enc,
        "j1",
        &job("s3://media/taken.mp4"),
        &mut |_| {},
        &cancel,
    ) {
        Err(e @ EncodeError::OutputExists { .. }) => ensure!(!e.is_retryable(), "{e}"),
        other => bail!("an object no job wrote must not be replaced: {other:?}"),
    }
    ensure!(s3.get(MEDIA, "taken.mp4")? == b"someone else's");
    encode(
        &enc,
        "j1",
        &job("s3://media/mine.mp4"),
        &mut |_| {},
        &cancel,
    )?;
    // The same job again (a retry): replaces its own.
    encode(
        &enc,
        "j1",
        &job("s3://media/mine.mp4"),
        &mut |_| {},
        &cancel,
    )?;
    // Another job: refused, naming the owner.
    match encode(
        &enc,
        "j2",
        &job("s3://media/mine.mp4"),
        &mut |_| {},
        &cancel,
    ) {
        Err(e @ EncodeError::OutputExists { .. }) => {
            ensure!(e.to_string().contains("another spool job"), "{e}")
        }
        other => bail!("another job's output must not be replaced: {other:?}"),
    }
    Ok(())
}

fn hls_job() -> &'static str {
    r#"{"input":"s3://media/src/clip.mp4","output":"s3://media/hls/clip","hardware":"cpu",
        "container":{"format":"hls","segment_s":1},
        "renditions":[{"codec":"h264","height":120,"preset":"fastest"},
                      {"codec":"h264","height":96,"preset":"fastest"}]}"#
}

#[test]
fn a_cancel_during_the_upload_leaves_no_object_of_the_attempt() -> Result<()> {
    let s3 = S3Server::start()?;
    let r = roots()?;
    upload_clip(&s3, &r, "clip.mp4", 160, 120, 4)?;
    let enc = encoder(&s3, &r)?;
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let mut uploads_seen = 0;
    let e = encode(
        &enc,
        "j",
        hls_job(),
        &mut |p| {
            if p.phase == Phase::Upload {
                uploads_seen += 1;
                trigger.cancel();
            }
        },
        &cancel,
    )
    .err()
    .context("a cancelled upload must fail")?;
    ensure!(matches!(e, EncodeError::Cancelled), "{e}");
    ensure!(
        uploads_seen >= 1,
        "the cancel never fired in the upload phase"
    );
    let left = s3.list(MEDIA, "hls/")?;
    ensure!(left.is_empty(), "the cancelled attempt left {left:?}");
    Ok(())
}

#[test]
fn s3_killed_mid_upload_fails_retryably_and_the_retry_leaves_exactly_the_outputs() -> Result<()> {
    let mut s3 = S3Server::start()?;
    let r = roots()?;
    upload_clip(&s3, &r, "clip.mp4", 160, 120, 4)?;
    let enc = encoder(&s3, &r)?;
    let cancel = CancellationToken::new();
    let killed = AtomicBool::new(false);
    let server = std::sync::Mutex::new(&mut s3);
    let e = encode(
        &enc,
        "j",
        hls_job(),
        &mut |p| {
            if p.phase == Phase::Upload
                && !killed.swap(true, Ordering::SeqCst)
                && let Ok(mut s) = server.lock()
            {
                s.kill();
            }
        },
        &cancel,
    )
    .err()
    .context("an upload to a dead server must fail")?;
    ensure!(killed.load(Ordering::SeqCst), "the server was never killed");
    ensure!(e.is_retryable(), "a dead server may come back: retry ({e})");
    no_secret(&e.to_string())?;
    s3.restart()?;
    // The queue retries the job: same owner, same spec.
    let res = encode(&enc, "j", hls_job(), &mut |_| {}, &cancel)?;
    holds_exactly(&s3, "hls/", &res)?;
    Ok(())
}

/// A scratch directory on a 1 MiB tmpfs: the download is refused before it
/// starts, retryably (another node, or this one later, may have room), and
/// nothing is left. Needs root to mount; elsewhere the test says so.
#[test]
fn a_full_scratch_dir_fails_retryably_and_leaves_nothing() -> Result<()> {
    let s3 = S3Server::start()?;
    let r = roots()?;
    upload_clip(&s3, &r, "clip.mp4", 320, 240, 1)?;
    let enc = encoder(&s3, &r)?;
    let scratch = r.dir.path().join("scratch");
    let Some(_tmpfs) = spool_testkit::Tmpfs::mount(&scratch, "1m") else {
        return Ok(spool_testkit::skipped(
            "cannot mount a tmpfs here (not root): the full-scratch test did not run",
        )?);
    };
    let e = encode(
        &enc,
        "j",
        r#"{"input":"s3://media/src/clip.mp4","output":"s3://media/o","hardware":"cpu",
            "renditions":[{"codec":"h264","height":120,"preset":"fastest"}]}"#,
        &mut |_| {},
        &CancellationToken::new(),
    )
    .err()
    .context("a full scratch dir must fail the job")?;
    ensure!(e.is_retryable(), "{e}");
    ensure!(e.to_string().contains("SPOOL_SCRATCH_DIR"), "{e}");
    ensure!(
        std::fs::read_dir(&scratch)?.next().is_none(),
        "scratch not empty"
    );
    ensure!(s3.list(MEDIA, "o")?.is_empty());
    Ok(())
}

/// An HLS ladder of a 640x360 12 s clip with x264 `medium` and 1 s
/// keyframes: long and slow enough for progress reports (every 250 ms) to
/// come mid-encode, with several segments finished.
const SLOW_HLS_JOB: &str = r#"{"input":"s3://media/src/clip.mp4","output":"s3://media/hls/clip","hardware":"cpu",
    "container":{"format":"hls","segment_s":1},
    "renditions":[{"codec":"h264","height":360,"preset":"medium","keyframe_interval_s":1},
                  {"codec":"h264","height":240,"preset":"medium","keyframe_interval_s":1}]}"#;

/// HLS segments go up while the encode runs, and no playlist does: the
/// progress callback (which runs on the encoding thread) holds the encode
/// at its last quarter until a finished segment of this attempt is in the
/// bucket, and checks that no playlist is there yet.
#[test]
fn hls_segments_are_uploaded_while_the_encode_runs() -> Result<()> {
    let s3 = S3Server::start()?;
    let r = roots()?;
    upload_clip(&s3, &r, "clip.mp4", 640, 360, 12)?;
    let enc = encoder(&s3, &r)?;
    let cancel = CancellationToken::new();
    let mut seen: Option<Vec<(String, u64)>> = None;
    let mut list_err = None;
    let res = encode(
        &enc,
        "j",
        SLOW_HLS_JOB,
        &mut |p| {
            // x264 holds about 2 s of frames (lookahead, threads), so at 7 s
            // in several 1 s segments are muxed.
            if p.phase != Phase::Encode
                || p.out_time_s < 7.0
                || p.out_time_s > 11.0
                || seen.is_some()
            {
                return;
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                match s3.list(MEDIA, "hls/") {
                    Ok(l) if !l.is_empty() || std::time::Instant::now() > deadline => {
                        seen = Some(l);
                        return;
                    }
                    Ok(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
                    Err(e) => {
                        list_err = Some(e.to_string());
                        seen = Some(Vec::new());
                        return;
                    }
                }
            }
        },
        &cancel,
    )?;
    ensure!(list_err.is_none(), "listing the bucket: {list_err:?}");
    let seen = seen.context("the encode never reported between 7 and 11 s of output")?;
    ensure!(
        !seen.is_empty(),
        "no segment was uploaded while the encode ran"
    );
    ensure!(
        seen.iter().all(|(k, _)| k.ends_with(".ts")),
        "only finished segments go up during the encode: {seen:?}"
    );
    // Every early object is one of the final outputs, byte for byte.
    for (key, size) in &seen {
        let uri = format!("s3://{MEDIA}/{key}");
        let o = res
            .objects
            .iter()
            .find(|o| o.uri == uri)
            .with_context(|| format!("{uri} is not among the outputs"))?;
        ensure!(o.size_bytes == *size, "{uri}: {} vs {size}", o.size_bytes);
        let local = r.dir.path().join("seg.ts");
        std::fs::write(&local, s3.get(MEDIA, key)?)?;
        let (frames, _, codec) = probe(&local)?;
        ensure!(frames > 0 && codec == "h264", "{key}: {frames} {codec}");
    }
    holds_exactly(&s3, "hls/", &res)?;
    Ok(())
}

/// The server dies while segments go up during the encode: the encode stops
/// there (it does not run on to the end), the job fails retryably, and the
/// retry leaves exactly its outputs in the bucket.
#[test]
fn s3_killed_during_the_encode_stops_it_retryably() -> Result<()> {
    let mut s3 = S3Server::start()?;
    let r = roots()?;
    upload_clip(&s3, &r, "clip.mp4", 640, 360, 12)?;
    let enc = encoder(&s3, &r)?;
    let cancel = CancellationToken::new();
    let server = std::sync::Mutex::new(&mut s3);
    let mut killed_at = None;
    let mut last_encode = 0.0f64;
    let e = encode(
        &enc,
        "j",
        SLOW_HLS_JOB,
        &mut |p| {
            if p.phase != Phase::Encode {
                return;
            }
            last_encode = p.out_time_s;
            if killed_at.is_none()
                && p.out_time_s >= 3.0
                && let Ok(mut s) = server.lock()
            {
                s.kill();
                killed_at = Some(p.out_time_s);
            }
        },
        &cancel,
    )
    .err()
    .context("segments uploaded to a dead server must fail the job")?;
    let killed_at = killed_at.context("the server was never killed")?;
    ensure!(e.is_retryable(), "a dead server may come back: retry ({e})");
    ensure!(
        matches!(e, EncodeError::StorageUnavailable { .. }),
        "the storage error, not the cancel it caused: {e}"
    );
    no_secret(&e.to_string())?;
    eprintln!("killed at {killed_at:.2} s of output; last progress at {last_encode:.2} s");
    ensure!(
        last_encode < 11.0,
        "the encode ran on to {last_encode:.2} s of 12 after the server died"
    );
    s3.restart()?;
    let res = encode(&enc, "j", SLOW_HLS_JOB, &mut |_| {}, &cancel)?;
    holds_exactly(&s3, "hls/", &res)?;
    Ok(())
}

/// A cancel while a multipart upload is under way aborts it: no object and
/// no pending upload (its parts) is left in the bucket.
#[test]
fn a_cancel_during_a_multipart_upload_aborts_it() -> Result<()> {
    let s3 = S3Server::start()?;
    let r = roots()?;
    s3.put(MEDIA, "probe", b"x".to_vec())?;
    let storage = ObjectStorage::default()
        .with_buckets(parse_buckets(MEDIA).map_err(anyhow::Error::msg)?)
        .with_endpoint(Some(s3.endpoint()))
        .with_region(Some("us-east-1".into()))
        .with_credentials(S3_ACCESS_KEY, S3_SECRET_KEY)
        .with_part_size(Some(spool_encoder::storage::MIN_PART_SIZE));
    let client = spool_encoder::Storage::new(&storage)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = r.dir.path().join("up");
    std::fs::create_dir_all(&dir)?;
    // Incompressible, 4 parts.
    let mut bytes = vec![0u8; 4 * spool_encoder::storage::MIN_PART_SIZE - 1];
    let mut x = 0x9e37_79b9_u32;
    for b in &mut bytes {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    std::fs::write(dir.join("big.mp4"), &bytes)?;
    let base = spool_encoder::S3Uri::parse("s3://media/mp/big.mp4").map_err(anyhow::Error::msg)?;

    // Completed, for contrast: one object, and the pending list is empty,
    // so an empty list below means "aborted", not "never listed".
    let cancel = CancellationToken::new();
    let done = rt.block_on(client.upload_dir(
        &dir,
        &base,
        Some(&OutputOwner::named("j")),
        &mut |_, _| {},
        &cancel,
    ))?;
    ensure!(done.len() == 1 && done[0].size_bytes == bytes.len() as u64);
    ensure!(s3.pending_multipart_uploads(MEDIA)?.is_empty());
    s3.delete(MEDIA, "mp/big.mp4")?;

    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    let mut mid_upload = false;
    let mut pending_mid = Vec::new();
    let e = rt
        .block_on(client.upload_dir(
            &dir,
            &base,
            Some(&OutputOwner::named("j")),
            &mut |sent, total| {
                if sent > 0 && sent < total && !mid_upload {
                    mid_upload = true;
                    pending_mid = s3.pending_multipart_uploads(MEDIA).unwrap_or_default();
                    c2.cancel();
                }
            },
            &cancel,
        ))
        .err()
        .context("a cancelled upload must fail")?;
    ensure!(
        matches!(e, spool_encoder::storage::StorageError::Cancelled),
        "{e}"
    );
    ensure!(mid_upload, "the cancel never fired mid upload");
    ensure!(
        !pending_mid.is_empty(),
        "the upload was not pending on the server when cancelled"
    );
    let left = s3.pending_multipart_uploads(MEDIA)?;
    ensure!(left.is_empty(), "multipart uploads left behind: {left:?}");
    let objects = s3.list(MEDIA, "mp/")?;
    ensure!(objects.is_empty(), "objects left behind: {objects:?}");
    Ok(())
}
