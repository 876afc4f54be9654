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
    CancellationToken, EncodeError, EncodeResult, Encoder, EncoderConfig, ObjectStorage, Phase,
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
        .with_credentials(key, secret);
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
    on_progress: &mut dyn FnMut(spool_encoder::Progress),
    cancel: &CancellationToken,
) -> Result<EncodeResult, EncodeError> {
    let s = spool_encoder::EncodeSpec::from_json(json.as_bytes(), &Default::default()).map_err(
        |e| EncodeError::InvalidSpec {
            field: e.field,
            reason: e.reason,
        },
    )?;
    enc.encode_as(Some(owner), &s, on_progress, cancel)
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
    ensure!(res.outputs[0].path.to_string_lossy() == "s3://media/out/clip.mp4");
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
    ensure!(ct.as_deref() == Some("video/mp4") && owner.as_deref() == Some("job-mp4"));

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
        Err(e @ EncodeError::OutputExists { .. }) => ensure!(e.to_string().contains("j1"), "{e}"),
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
    let mut want: Vec<String> = res.objects.iter().map(|o| o.uri.clone()).collect();
    want.sort();
    let have: Vec<String> = s3
        .list(MEDIA, "hls/")?
        .into_iter()
        .map(|(k, _)| format!("s3://{MEDIA}/{k}"))
        .collect();
    ensure!(want == have, "bucket {have:?} vs outputs {want:?}");
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
