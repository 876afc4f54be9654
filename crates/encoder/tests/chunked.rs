//! Chunked encodes through the encoder alone (no queue): a 150 s source (every
//! frame unlike the next) and a tone, planned into 15 s chunks, each chunk encoded
//! on its own, then joined; the result compared with a single-pass encode of
//! the same spec. The queue side (a flow, a worker killed mid-chunk) is in
//! tests/tests/chunked.rs.

mod common;

use anyhow::{Result, ensure};
use common::{encoder, roots, spec};
use spool_encoder::{CancellationToken, EncodeResult, EncodeSpec, Encoder, chunks};
use spool_testkit as tk;

/// 150 s: long enough for ten chunks of 15 s, short enough for CI.
const SECS: u32 = 150;

fn encode(enc: &Encoder, s: &EncodeSpec) -> Result<EncodeResult> {
    Ok(enc.encode_blocking(s, &mut |_| {}, &CancellationToken::new())?)
}

fn remove(enc: &Encoder, dir: &str) -> Result<()> {
    Ok(tokio::runtime::Runtime::new()?.block_on(enc.remove_chunks(dir))?)
}

/// Plans, encodes each chunk, joins; returns the join's result and the plan.
fn chunked(
    enc: &Encoder,
    s: &EncodeSpec,
    key: &str,
) -> Result<(EncodeResult, chunks::ChunkPlan, String)> {
    let rt = tokio::runtime::Runtime::new()?;
    let plan = rt.block_on(enc.plan_chunks(s, &CancellationToken::new()))?;
    let dir = chunks::chunk_dir(&s.output, key);
    let jobs = plan.jobs(s, &dir);
    for p in jobs.chunks.iter().chain(&jobs.audio) {
        encode(enc, p)?;
    }
    let joined = encode(enc, &jobs.join)?;
    Ok((joined, plan, dir))
}

/// The MP4 case the issue names: frame count, duration, timestamps, every
/// frame against the single pass, the audio bit for bit, a clean decode.
#[test]
fn a_chunked_mp4_matches_the_single_pass_encode() -> Result<()> {
    let r = roots()?;
    tk::chunk_source(&r.input.join("src.mp4"), SECS)?;
    let enc = encoder(&r, Default::default())?;
    let base = r#"{"input":"src.mp4","output":"OUT","hardware":"cpu",
        "renditions":[{"codec":"h264","height":240,"quality":23,"preset":"fast"}]"#;
    let single = encode(
        &enc,
        &spec(&format!("{}}}", base.replace("OUT", "single")))?,
    )?;
    let s = spec(&format!(
        r#"{},"chunking":{{"target_s":15}}}}"#,
        base.replace("OUT", "joined")
    ))?;
    let (joined, plan, dir) = chunked(&enc, &s, "job-1")?;

    // Ten chunks at 1 s keyframes: 0, 15, 30, ... 135 s.
    ensure!(plan.starts.len() == 10, "plan: {plan:?}");
    let a = r.output.join("single.mp4");
    let b = r.output.join("joined.mp4");
    let (sf, jf) = (single.outputs[0].frames, joined.outputs[0].frames);
    ensure!(
        sf == u64::from(SECS) * 25 && jf == sf,
        "frames: single {sf}, joined {jf}"
    );
    let (_, sd) = tk::stream_times(&a, "v:0")?;
    let (_, jd) = tk::stream_times(&b, "v:0")?;
    ensure!(
        (sd - jd).abs() <= 0.04,
        "video durations {sd} and {jd} differ by more than a frame"
    );

    // Presentation times: each frame one frame after the last, none missing
    // or twice; decode times strictly increasing across every seam.
    let pk = tk::packets(&b, "v:0")?;
    let mut pts: Vec<i64> = pk.iter().map(|p| p.0).collect();
    pts.sort_unstable();
    let step = pts[1] - pts[0];
    ensure!(
        step > 0 && pts.windows(2).all(|w| w[1] - w[0] == step),
        "presentation times are not one frame apart"
    );
    ensure!(
        pk.windows(2).all(|w| w[1].1 > w[0].1),
        "decode times do not strictly increase"
    );

    // Every frame against the single pass: the same frame of the same
    // source at the same settings, differing only in where the encoder
    // had to start a GOP. A frame shifted by one measures 27 dB at most
    // (tk::chunk_source); the worst frame must stay over 35.
    let psnr = tk::psnr_per_frame(&b, &a)?;
    ensure!(psnr.len() as u64 == sf, "psnr over {} frames", psnr.len());
    let worst = psnr.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = psnr.iter().sum::<f64>() / psnr.len() as f64;
    eprintln!(
        "per-frame PSNR of the join against the single pass: worst {worst:.1} dB, mean {mean:.1} dB"
    );
    ensure!(
        worst > 30.0,
        "a frame of the join is {worst:.1} dB from the single pass's"
    );

    // Audio encoded once from the source, as the single pass does: the
    // same packets bit for bit, so nothing can click or gap at a seam.
    let (sa, ja) = (tk::packet_md5s(&a, "a:0")?, tk::packet_md5s(&b, "a:0")?);
    ensure!(
        !sa.is_empty() && sa == ja,
        "audio differs: {} against {} packets",
        sa.len(),
        ja.len()
    );
    let (sstart, _) = tk::stream_times(&a, "a:0")?;
    let (jstart, _) = tk::stream_times(&b, "a:0")?;
    ensure!(
        (sstart - jstart).abs() < 1e-6,
        "audio starts at {jstart}, single pass at {sstart}"
    );
    let errors = tk::decode_errors(&b)?;
    ensure!(errors.is_empty(), "ffmpeg -v error: {errors}");

    // The chunks are the caller's to remove (the worker does after the join).
    ensure!(r.output.join(&dir).join("c00000.mp4").exists());
    remove(&enc, &dir)?;
    ensure!(!r.output.join(&dir).exists(), "{dir} was not removed");
    Ok(())
}

/// A 3-rung HLS ladder: seams on segment boundaries, the same segments'
/// frame count and duration as the single pass, a master playlist.
#[test]
fn a_chunked_hls_ladder_matches_the_single_pass_encode() -> Result<()> {
    let r = roots()?;
    tk::chunk_source(&r.input.join("src.mp4"), SECS)?;
    let enc = encoder(&r, Default::default())?;
    let base = r#"{"input":"src.mp4","output":"OUT","hardware":"cpu",
        "container":{"format":"hls","segment_s":4},
        "renditions":[{"codec":"h264","height":240,"quality":23,"preset":"fastest"},
                      {"codec":"h264","height":180,"quality":23,"preset":"fastest"},
                      {"codec":"h264","height":120,"quality":23,"preset":"fastest"}]"#;
    let single = encode(
        &enc,
        &spec(&format!("{}}}", base.replace("OUT", "single")))?,
    )?;
    let s = spec(&format!(
        r#"{},"chunking":{{"target_s":15}}}}"#,
        base.replace("OUT", "joined")
    ))?;
    let (joined, plan, dir) = chunked(&enc, &s, "job-2")?;
    ensure!(
        plan.starts
            .iter()
            .all(|t| t % (4 * plan.time_base[1] as i64 / plan.time_base[0] as i64) == 0),
        "seams off the 4 s segments: {plan:?}"
    );
    ensure!(joined.master_playlist.is_some(), "no master playlist");
    for (so, jo) in single.outputs.iter().zip(&joined.outputs) {
        ensure!(
            so.frames == jo.frames,
            "{}: frames {} against {}",
            so.rendition,
            jo.frames,
            so.frames
        );
        ensure!(
            (so.duration_s - jo.duration_s).abs() <= 0.04,
            "{}: {} s against {} s",
            so.rendition,
            jo.duration_s,
            so.duration_s
        );
        let playlist = std::path::Path::new(&jo.path);
        let errors = tk::decode_errors(playlist)?;
        ensure!(
            errors.is_empty(),
            "{}: ffmpeg -v error: {errors}",
            jo.rendition
        );
        let segs = |p: &str| {
            std::fs::read_to_string(p).map(|t| t.lines().filter(|l| l.ends_with(".ts")).count())
        };
        ensure!(
            segs(&jo.path)? == segs(&so.path)?,
            "{}: {} segments against {}",
            jo.rendition,
            segs(&jo.path)?,
            segs(&so.path)?
        );
    }
    remove(&enc, &dir)?;
    Ok(())
}

/// The planner and the spec refuse what cannot be split, each with a
/// message naming why.
#[test]
fn what_cannot_be_chunked_is_refused_clearly() -> Result<()> {
    let bad = |json: &str| match spool_encoder::EncodeSpec::from_json(
        json.as_bytes(),
        &Default::default(),
    ) {
        Err(e) => e.to_string(),
        Ok(_) => "accepted".into(),
    };
    let r = r#""renditions":[{"codec":"h264","height":240}]"#;
    let e = bad(&format!(
        r#"{{"input":"https://x/a.mp4","output":"o",{r},"chunking":{{"target_s":10}}}}"#
    ));
    ensure!(e.contains("chunking") && e.contains("seek"), "{e}");
    let e = bad(&format!(
        r#"{{"input":"a.mp4","output":"o",{r},"chunking":{{"target_s":0.5}}}}"#
    ));
    ensure!(e.contains("chunking.target_s"), "{e}");
    let e = bad(&format!(
        r#"{{"input":"a.mp4","output":"o",{r},"part":{{"kind":"chunk","index":3,"count":2,"start":0,"time_base":[1,25]}}}}"#
    ));
    ensure!(e.contains("part.index"), "{e}");
    // A source without video cannot be planned.
    let roots = roots()?;
    tk::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=duration=3",
        &roots.input.join("a.m4a").to_string_lossy(),
    ])?;
    let enc = encoder(&roots, Default::default())?;
    let s = spec(&format!(
        r#"{{"input":"a.m4a","output":"o",{r},"chunking":{{"target_s":10}}}}"#
    ))?;
    let rt = tokio::runtime::Runtime::new()?;
    match rt.block_on(enc.plan_chunks(&s, &CancellationToken::new())) {
        Err(e) => ensure!(e.to_string().contains("no video"), "{e}"),
        Ok(p) => anyhow::bail!("planned an audio file: {p:?}"),
    }
    // Only chunk directories are ever removed.
    ensure!(remove(&enc, "films").is_err());
    Ok(())
}

/// Input, chunks and outputs in object storage: the chunks live under a
/// `spool-chunks-` prefix beside the output, the join downloads them, and
/// removing them leaves only the output.
#[test]
fn a_chunked_encode_runs_from_and_to_object_storage() -> Result<()> {
    use spool_encoder::storage::parse_buckets;
    use spool_encoder::{EncoderConfig, ObjectStorage};
    let s3 = tk::S3Server::start()?;
    let r = roots()?;
    let local = r.dir.path().join("src.mp4");
    tk::chunk_source(&local, 40)?;
    s3.put("media", "src/film.mp4", std::fs::read(&local)?)?;
    let scratch = r.dir.path().join("scratch");
    std::fs::create_dir_all(&scratch)?;
    let mut cfg = EncoderConfig::new(&r.input, &r.output);
    cfg.scratch_dir = scratch;
    cfg.storage = ObjectStorage::default()
        .with_buckets(parse_buckets("media").map_err(anyhow::Error::msg)?)
        .with_endpoint(Some(s3.endpoint()))
        .with_region(Some("us-east-1".into()))
        .with_credentials(tk::S3_ACCESS_KEY, tk::S3_SECRET_KEY);
    let enc = Encoder::new(cfg)?;
    let s = spec(
        r#"{"input":"s3://media/src/film.mp4","output":"s3://media/vod/film","hardware":"cpu",
            "renditions":[{"codec":"h264","height":240,"quality":23,"preset":"fastest"}],
            "chunking":{"target_s":10}}"#,
    )?;
    let (joined, plan, dir) = chunked(&enc, &s, "job-3")?;
    ensure!(plan.starts.len() == 4, "{plan:?}");
    ensure!(dir.starts_with("s3://media/vod/spool-chunks-"), "{dir}");
    let out = &joined.outputs[0];
    ensure!(
        out.path == "s3://media/vod/film.mp4" && out.frames == 40 * 25,
        "{out:?}"
    );
    let chunk_prefix = dir.trim_start_matches("s3://media/");
    ensure!(
        s3.list("media", chunk_prefix)?.len() >= 4,
        "no chunks under {chunk_prefix}"
    );
    remove(&enc, &dir)?;
    ensure!(
        s3.list("media", chunk_prefix)?.is_empty(),
        "chunks left under {chunk_prefix}"
    );
    let back = r.dir.path().join("back.mp4");
    std::fs::write(&back, s3.get("media", "vod/film.mp4")?)?;
    ensure!(tk::decoded_frames(&back)? == 40 * 25);
    ensure!(tk::decode_errors(&back)?.is_empty());
    Ok(())
}

/// Chunks encoded with other codec parameters (as NVENC and x264 workers
/// would give under `hardware: auto`) are refused by the join, naming the
/// chunk and the fix, instead of an output that decodes wrongly.
#[test]
fn chunks_from_different_encoders_are_not_joined() -> Result<()> {
    let r = roots()?;
    tk::chunk_source(&r.input.join("src.mp4"), 20)?;
    let enc = encoder(&r, Default::default())?;
    let s = spec(
        r#"{"input":"src.mp4","output":"mixed","hardware":"cpu",
            "renditions":[{"codec":"h264","height":240,"preset":"medium"}],
            "chunking":{"target_s":5}}"#,
    )?;
    let rt = tokio::runtime::Runtime::new()?;
    let plan = rt.block_on(enc.plan_chunks(&s, &CancellationToken::new()))?;
    let dir = chunks::chunk_dir(&s.output, "job-4");
    let jobs = plan.jobs(&s, &dir);
    let (mut parts, join) = (jobs.chunks, jobs.join);
    ensure!(parts.len() == 4 && jobs.audio.is_some(), "{plan:?}");
    // Chunk 1 from "another encoder": x264 ultrafast writes other
    // parameter sets (no CABAC, baseline-like) than medium.
    parts[1].renditions[0].preset = spool_encoder::Preset::Fastest;
    for p in parts.iter().chain(&jobs.audio) {
        encode(&enc, p)?;
    }
    match enc.encode_blocking(&join, &mut |_| {}, &CancellationToken::new()) {
        Err(e) => {
            let m = e.to_string();
            ensure!(m.contains("chunk 1") && m.contains("\"cpu\""), "{m}");
            ensure!(!e.is_retryable(), "a mismatch is permanent: {m}");
        }
        Ok(r) => anyhow::bail!("joined mismatched chunks: {:?}", r.outputs),
    }
    ensure!(
        !r.output.join("mixed.mp4").exists(),
        "a partial output was published"
    );
    remove(&enc, &dir)
}
