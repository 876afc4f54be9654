//! Object storage: what `s3://` costs a job, against a real S3-compatible
//! server (SeaweedFS on loopback), each figure a ratio to a reference in the
//! same run.
//!
//! 1. **Job wall time**: a 1080p clip encoded s3 → s3 against the same encode
//!    local → local (target ≥ 0.9: local time / s3 time), to one MP4 and to
//!    a 3-rung HLS ladder (whose segments go up during the encode).
//! 2. **Transfer throughput**: spool's download and upload of one object
//!    against `curl` (SigV4-signed) moving the same object to and from the
//!    same server (target ≥ 0.9: curl time / spool time).
//!
//! `cargo bench -p spool-benches --bench storage`. Settings:
//! `SPOOL_BENCH_SECONDS` (clip length, default 30), `SPOOL_BENCH_ROUNDS`
//! (best of, default 3), `SPOOL_BENCH_OBJECT_MB` (transfer object, 256).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use spool_benches::setting;
use spool_encoder::storage::parse_buckets;
use spool_encoder::{
    CancellationToken, EncodeSpec, Encoder, EncoderConfig, Limits, ObjectStorage, S3Uri, Storage,
};
use spool_testkit::{S3_ACCESS_KEY, S3_SECRET_KEY, S3Server};

fn curl(s3: &S3Server, args: &[&str]) -> Result<()> {
    let out = Command::new("curl")
        .args(["-sS", "-f", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user"])
        .arg(format!("{S3_ACCESS_KEY}:{S3_SECRET_KEY}"))
        .args(args)
        .output()
        .context("curl missing")?;
    ensure!(
        out.status.success(),
        "curl against {}: {}",
        s3.endpoint(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn best(rounds: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// Best seconds of `local` and of `remote`, interleaved over `rounds` (the
/// same owner each round: a retry replaces its own output).
fn best_pair(
    encoder: &Encoder,
    local: &EncodeSpec,
    remote: &EncodeSpec,
    rounds: usize,
    cancel: &CancellationToken,
) -> Result<(f64, f64)> {
    let (mut local_best, mut s3_best) = (f64::MAX, f64::MAX);
    let owner = spool_encoder::OutputOwner::named("bench");
    for _ in 0..rounds {
        let t = Instant::now();
        encoder.encode_as_blocking(Some(&owner), local, &mut |_| {}, cancel)?;
        local_best = local_best.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        encoder.encode_as_blocking(Some(&owner), remote, &mut |_| {}, cancel)?;
        s3_best = s3_best.min(t.elapsed().as_secs_f64());
    }
    Ok((local_best, s3_best))
}

fn main() -> Result<()> {
    let secs: u32 = setting("SPOOL_BENCH_SECONDS", 30);
    let rounds: usize = setting("SPOOL_BENCH_ROUNDS", 3);
    let object_mb: usize = setting("SPOOL_BENCH_OBJECT_MB", 256);
    let s3 = S3Server::start()?;
    let dir = tempfile::tempdir()?;
    let (input, output, scratch) = (
        dir.path().join("in"),
        dir.path().join("out"),
        dir.path().join("scratch"),
    );
    for d in [&input, &output, &scratch] {
        std::fs::create_dir_all(d)?;
    }
    let storage = ObjectStorage::default()
        .with_buckets(parse_buckets("media").map_err(anyhow::Error::msg)?)
        .with_endpoint(Some(s3.endpoint()))
        .with_region(Some("us-east-1".into()))
        .with_credentials(S3_ACCESS_KEY, S3_SECRET_KEY);
    let cancel = CancellationToken::new();

    // 1. Job wall time.
    let src = input.join("src.mp4");
    spool_testkit::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size=1920x1080:rate=30:duration={secs}"),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-crf",
        "18",
        "-pix_fmt",
        "yuv420p",
        src.to_str().context("path")?,
    ])?;
    let src_bytes = std::fs::read(&src)?;
    println!(
        "clip: 1920x1080, {secs} s, {:.1} MB; encode: h264 720p, preset fastest",
        src_bytes.len() as f64 / 1e6
    );
    s3.put("media", "src/src.mp4", src_bytes)?;
    let mut cfg = EncoderConfig::new(&input, &output);
    cfg.scratch_dir = scratch.clone();
    cfg.storage = storage.clone();
    let encoder = Encoder::new(cfg)?;
    let job = |i: &str, o: &str| {
        EncodeSpec::from_json(
            format!(
                r#"{{"input":"{i}","output":"{o}","hardware":"cpu","audio":{{"mode":"none"}},
                   "renditions":[{{"codec":"h264","height":720,"preset":"fastest"}}]}}"#
            )
            .as_bytes(),
            &Limits::default(),
        )
    };
    let local = job("src.mp4", "local.mp4")?;
    let remote = job("s3://media/src/src.mp4", "s3://media/out/remote.mp4")?;
    let (local_best, s3_best) = best_pair(&encoder, &local, &remote, rounds, &cancel)?;
    println!("job: local -> local {local_best:.2} s, s3 -> s3 {s3_best:.2} s (best of {rounds})");
    println!(
        "spool storage_job local_s={local_best:.3} s3_s={s3_best:.3} ratio={:.3}",
        local_best / s3_best
    );

    // 1b. The same for a 3-rung HLS ladder, whose segments go up while the
    // encode runs.
    let ladder = |i: &str, o: &str| {
        EncodeSpec::from_json(
            format!(
                r#"{{"input":"{i}","output":"{o}","hardware":"cpu","audio":{{"mode":"none"}},
                   "container":{{"format":"hls","segment_s":2}},
                   "renditions":[{{"codec":"h264","height":720,"preset":"fastest"}},
                                 {{"codec":"h264","height":480,"preset":"fastest"}},
                                 {{"codec":"h264","height":360,"preset":"fastest"}}]}}"#
            )
            .as_bytes(),
            &Limits::default(),
        )
    };
    let local = ladder("src.mp4", "ladder")?;
    let remote = ladder("s3://media/src/src.mp4", "s3://media/out/ladder")?;
    let (local_best, s3_best) = best_pair(&encoder, &local, &remote, rounds, &cancel)?;
    println!(
        "hls ladder (720p/480p/360p): local -> local {local_best:.2} s, s3 -> s3 {s3_best:.2} s (best of {rounds})"
    );
    println!(
        "spool storage_hls_job local_s={local_best:.3} s3_s={s3_best:.3} ratio={:.3}",
        local_best / s3_best
    );

    // 2. Transfer throughput against curl.
    let blob = scratch.join("blob.bin");
    let mut bytes = vec![0u8; object_mb << 20];
    // Incompressible, cheaply: a xorshift stream.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let up_dir = dir.path().join("up");
    std::fs::create_dir_all(&up_dir)?;
    std::fs::write(up_dir.join("blob.bin"), &bytes)?;
    std::fs::write(&blob, &bytes)?;
    drop(bytes);
    let client = Storage::new(&storage)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let base = S3Uri::parse("s3://media/blob/blob.bin").map_err(anyhow::Error::msg)?;
    let url = format!("{}/media/blob/curl.bin", s3.endpoint());
    let up_spool = best(rounds, || {
        rt.block_on(client.upload_dir(
            &up_dir,
            &base,
            Some(&spool_encoder::OutputOwner::named("bench")),
            &mut |_, _| {},
            &cancel,
        ))?;
        Ok(())
    })?;
    let up_curl = best(rounds, || {
        curl(&s3, &["-T", blob.to_str().context("path")?, &url])
    })?;
    let down_spool = best(rounds, || {
        let f = rt.block_on(client.download(&base, &scratch, u64::MAX, &mut |_, _| {}, &cancel))?;
        ensure!(std::fs::metadata(f.path())?.len() == (object_mb as u64) << 20);
        Ok(())
    })?;
    let fetched = scratch.join("fetched.bin");
    let down_curl = best(rounds, || {
        curl(&s3, &["-o", fetched.to_str().context("path")?, &url])
    })?;
    let mb = object_mb as f64 * 1.048_576;
    println!(
        "upload {object_mb} MiB: spool {:.0} MB/s, curl {:.0} MB/s; download: spool {:.0} MB/s, curl {:.0} MB/s (best of {rounds})",
        mb / up_spool,
        mb / up_curl,
        mb / down_spool,
        mb / down_curl
    );
    println!(
        "spool storage_upload ratio={:.3} storage_download ratio={:.3}",
        up_curl / up_spool,
        down_curl / down_spool
    );
    let _ = Path::new(&fetched);
    Ok(())
}
