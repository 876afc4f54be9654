//! The encoder against a hostile user and a hostile filesystem: outputs that
//! never touch what is not theirs, names FFmpeg cannot expand, limits that
//! hold while decoding, inputs that end early, and classification of errors
//! that no retry can fix. Media is generated with FFmpeg's lavfi sources.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};
use common::{encoder, roots, spec};
use spool_encoder::{CancellationToken, EncodeError, EncodeSpec, Encoder, Limits};

use spool_testkit::{ffmpeg, lavfi_video as clip};

/// A Matroska stream written to a pipe: no duration, no frame count, no
/// index in its header.
fn piped_mkv(path: &Path, w: u32, h: u32, secs: f64) -> Result<()> {
    let src = format!("testsrc2=size={w}x{h}:rate=25:duration={secs}");
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", &src])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-f", "matroska", "pipe:1"])
        .stdout(Stdio::piped())
        .output()?;
    ensure!(out.status.success(), "ffmpeg to a pipe failed");
    std::fs::write(path, out.stdout)?;
    Ok(())
}

fn small_spec(input: &str, output: &str, container: &str) -> Result<EncodeSpec> {
    spec(&format!(
        r#"{{"input":{input:?},"output":{output:?},"hardware":"cpu","audio":{{"mode":"none"}},
            "container":{container},
            "renditions":[{{"codec":"h264","height":120,"preset":"fastest"}}]}}"#
    ))
}

const MP4: &str = r#"{"format":"mp4"}"#;
const HLS: &str = r#"{"format":"hls","segment_s":1}"#;

fn run(
    enc: &Encoder,
    owner: Option<&str>,
    s: &EncodeSpec,
) -> Result<spool_encoder::EncodeResult, EncodeError> {
    let owner = owner.map(spool_encoder::OutputOwner::named);
    enc.encode_as_blocking(owner.as_ref(), s, &mut |_| {}, &CancellationToken::new())
}

/// Every entry under `dir`, relative, sorted: what a test compares before
/// and after.
fn tree(dir: &Path) -> Result<Vec<String>> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let p = e.path();
            let rel = p.strip_prefix(base)?.to_string_lossy().into_owned();
            let ft = e.file_type()?;
            if ft.is_dir() {
                out.push(format!("{rel}/"));
                walk(base, &p, out)?;
            } else {
                let len = if ft.is_file() { e.metadata()?.len() } else { 0 };
                out.push(format!("{rel} {len}"));
            }
        }
        Ok(())
    }
    let mut v = Vec::new();
    walk(dir, dir, &mut v)?;
    v.sort();
    Ok(v)
}

fn expect_err<T: std::fmt::Debug>(
    what: &str,
    r: Result<T, EncodeError>,
    kind: fn(&EncodeError) -> bool,
    words: &str,
) -> Result<EncodeError> {
    match r {
        Ok(v) => bail!("{what}: succeeded: {v:?}"),
        Err(e) => {
            ensure!(kind(&e), "{what}: wrong kind of error: {e:?}");
            ensure!(e.to_string().contains(words), "{what}: {e}");
            ensure!(!e.is_retryable(), "{what}: would be retried: {e}");
            Ok(e)
        }
    }
}

fn exists(e: &EncodeError) -> bool {
    matches!(e, EncodeError::OutputExists { .. })
}
fn path_refused(e: &EncodeError) -> bool {
    matches!(e, EncodeError::PathRefused { .. })
}
fn limit(e: &EncodeError) -> bool {
    matches!(e, EncodeError::LimitExceeded { .. })
}
fn bad_input(e: &EncodeError) -> bool {
    matches!(e, EncodeError::BadInput { .. })
}

#[test]
fn a_job_never_removes_or_replaces_what_it_did_not_publish() -> Result<()> {
    let r = roots()?;
    clip(&r.input.join("clip.mp4"), 320, 240, 1.0, &[])?;
    let enc = encoder(&r, Limits::default())?;
    // A foreign directory at an HLS target.
    std::fs::create_dir_all(r.output.join("tenantA/videos"))?;
    std::fs::write(r.output.join("tenantA/videos/film.mp4"), b"someone's film")?;
    std::fs::write(r.output.join("tenantA/notes.txt"), b"someone's notes")?;
    // A foreign file at an MP4 target.
    std::fs::write(r.output.join("film.mp4"), b"someone else's film")?;
    // A foreign directory where an MP4 would go.
    std::fs::create_dir_all(r.output.join("tenantA/archive.mp4/2019"))?;
    let before = tree(&r.output)?;

    let e = expect_err(
        "HLS onto a foreign directory",
        run(
            &enc,
            Some("job-1"),
            &small_spec("clip.mp4", "tenantA", HLS)?,
        ),
        exists,
        "tenantA",
    )?;
    ensure!(e.to_string().contains("not written by"), "{e}");
    expect_err(
        "MP4 onto a foreign file",
        run(&enc, Some("job-1"), &small_spec("clip.mp4", "film", MP4)?),
        exists,
        "film.mp4",
    )?;
    expect_err(
        "MP4 onto a foreign directory",
        run(
            &enc,
            Some("job-1"),
            &small_spec("clip.mp4", "tenantA/archive", MP4)?,
        ),
        exists,
        "it is a directory that this job did not write",
    )?;
    ensure!(tree(&r.output)? == before, "foreign outputs were touched");

    // A job's own earlier output is replaced; another job's is not.
    for (container, name) in [(HLS, "mine"), (MP4, "mine")] {
        let s = small_spec("clip.mp4", name, container)?;
        run(&enc, Some("job-7"), &s)?;
        let first = tree(&r.output)?;
        run(&enc, Some("job-7"), &s).context("a retry of the same job")?;
        ensure!(tree(&r.output)? == first, "a retry left a different tree");
        let e = expect_err(
            "another job onto job-7's output",
            run(&enc, Some("job-8"), &s),
            exists,
            "another spool job wrote it",
        )?;
        ensure!(e.to_string().contains("mine"), "{e}");
        expect_err(
            "an encode without a job onto job-7's output",
            run(&enc, None, &s),
            exists,
            "not written by this job",
        )?;
    }
    let left: Vec<_> = tree(&r.output)?
        .into_iter()
        .filter(|p| p.contains(".spool-partial"))
        .collect();
    ensure!(left.is_empty(), "staging left behind: {left:?}");
    Ok(())
}

#[test]
fn output_names_are_literal_and_never_pass_through_symlinks() -> Result<()> {
    let r = roots()?;
    clip(&r.input.join("clip.mp4"), 320, 240, 1.0, &[])?;
    let outside = r.dir.path().join("outside");
    std::fs::create_dir(&outside)?;
    std::os::unix::fs::symlink(&outside, r.output.join("esc0"))?;
    std::os::unix::fs::symlink(&outside, r.output.join("esc"))?;
    let enc = encoder(&r, Limits::default())?;
    let before = tree(&r.output)?;
    for (output, container, words) in [
        ("esc%v/x", HLS, "'%' is not allowed"),
        ("evil%v", HLS, "'%' is not allowed"),
        ("evil%d", MP4, "'%' is not allowed"),
        ("a#b", MP4, "'#' is not allowed"),
        ("a?b", MP4, "'?' is not allowed"),
        ("file:x", MP4, "':' is not allowed"),
        ("line\nbreak", MP4, "'\\n' is not allowed"),
        (".hidden", MP4, "reserved"),
        ("esc0", HLS, "esc0"),
        ("esc0/x", HLS, "symlink"),
        ("esc0/x", MP4, "symlink"),
        ("esc/newdir/deeper/o4", MP4, "symlink"),
        ("esc/newdir/deeper/o4", HLS, "symlink"),
    ] {
        let r = run(
            &enc,
            Some("job"),
            &small_spec("clip.mp4", output, container)?,
        );
        let e = r
            .err()
            .with_context(|| format!("{output:?} was accepted"))?;
        ensure!(
            path_refused(&e) || exists(&e),
            "{output:?}: wrong kind of error: {e:?}"
        );
        ensure!(e.to_string().contains(words), "{output:?}: {e}");
        ensure!(!e.is_retryable(), "{output:?}: would be retried");
    }
    ensure!(
        std::fs::read_dir(&outside)?.next().is_none(),
        "something was created outside the output root: {:?}",
        tree(&outside)?
    );
    ensure!(tree(&r.output)? == before, "the output root changed");
    // A name too long for the filesystem is refused before any work.
    let long = "n".repeat(300);
    expect_err(
        "a 300-byte output name",
        run(&enc, Some("job"), &small_spec("clip.mp4", &long, MP4)?),
        path_refused,
        "255",
    )?;
    // 252 bytes is fine for the name, but `<name>.mp4` is not.
    let near = "n".repeat(252);
    expect_err(
        "an output file name over NAME_MAX",
        run(&enc, Some("job"), &small_spec("clip.mp4", &near, MP4)?),
        path_refused,
        "at most 242",
    )?;
    // Names of 239-242 bytes fit with the marker beside them (13 bytes
    // longer), and publish; 243 bytes is refused before any work, not
    // after the encode.
    let fits = "f".repeat(238);
    run(&enc, Some("job"), &small_spec("clip.mp4", &fits, MP4)?)
        .context("a 242-byte output file name")?;
    ensure!(r.output.join(format!("{fits}.mp4")).is_file());
    let over = "o".repeat(239);
    let before = tree(&r.output)?;
    expect_err(
        "a 243-byte output file name",
        run(&enc, Some("job"), &small_spec("clip.mp4", &over, MP4)?),
        path_refused,
        "marker",
    )?;
    ensure!(tree(&r.output)? == before, "a refused name left something");
    Ok(())
}

#[test]
fn an_input_directory_swapped_for_a_symlink_never_leaks_outside_reads() -> Result<()> {
    let r = roots()?;
    let inside = r.input.join("d");
    std::fs::create_dir(&inside)?;
    clip(&inside.join("v.mp4"), 64, 48, 0.2, &[])?;
    let outside = r.dir.path().join("secret");
    std::fs::create_dir(&outside)?;
    clip(&outside.join("v.mp4"), 96, 64, 0.2, &[])?;
    let parked = r.input.join("parked");
    let enc = encoder(&r, Limits::default())?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (stop, inside, parked, outside) = (
            stop.clone(),
            inside.clone(),
            parked.clone(),
            outside.clone(),
        );
        std::thread::spawn(move || -> Result<u64> {
            let mut flips = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::fs::rename(&inside, &parked)?;
                std::os::unix::fs::symlink(&outside, &inside)?;
                std::thread::sleep(std::time::Duration::from_micros(100));
                std::fs::remove_file(&inside)?;
                std::fs::rename(&parked, &inside)?;
                std::thread::sleep(std::time::Duration::from_micros(3000));
                flips += 1;
            }
            Ok(flips)
        })
    };
    let s = spec(
        r#"{"input":"d/v.mp4","output":"o","hardware":"cpu","audio":{"mode":"none"},
            "renditions":[{"codec":"h264","preset":"fastest"}]}"#,
    )?;
    let (mut ok, mut refused) = (0, 0);
    for i in 0..40 {
        let mut s = s.clone();
        s.output = format!("o{i}");
        match run(&enc, None, &s) {
            Ok(res) => {
                let o = &res.outputs[0];
                ensure!(
                    (o.width, o.height) == (64, 48),
                    "job {i} read the file outside the root ({}x{})",
                    o.width,
                    o.height
                );
                ok += 1;
            }
            Err(e) => {
                ensure!(path_refused(&e), "job {i}: {e:?}");
                if refused < 3 {
                    eprintln!("refused: {e}");
                }
                refused += 1;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flips = flipper
        .join()
        .map_err(|_| anyhow::anyhow!("flipper panicked"))??;
    eprintln!("{ok} read the inside file, {refused} refused, {flips} swaps; none read outside");
    ensure!(flips > 0, "the directory was never swapped");
    Ok(())
}

#[test]
fn limits_hold_while_decoding_whatever_the_header_says() -> Result<()> {
    let r = roots()?;
    piped_mkv(&r.input.join("long.mkv"), 160, 120, 4.0)?;
    clip(&r.input.join("long.ts"), 160, 120, 4.0, &[])?;
    clip(&r.input.join("long.h264"), 160, 120, 4.0, &["-f", "h264"])?;
    // A raw stream that grows mid-way: 320x240, then 1280x720.
    clip(&r.dir.path().join("a.h264"), 320, 240, 1.0, &["-f", "h264"])?;
    clip(
        &r.dir.path().join("b.h264"),
        1280,
        720,
        1.0,
        &["-f", "h264"],
    )?;
    let mut grows = std::fs::read(r.dir.path().join("a.h264"))?;
    grows.extend(std::fs::read(r.dir.path().join("b.h264"))?);
    std::fs::write(r.input.join("grows.h264"), grows)?;
    clip(&r.input.join("wide.mp4"), 1280, 128, 1.0, &[])?;
    piped_mkv(&r.input.join("six.mkv"), 160, 120, 6.0)?;

    let enc = encoder(
        &r,
        Limits::default()
            .with_max_duration_s(2.0)
            .with_max_width(1920)
            .with_max_height(1080)
            .with_max_hls_segments(3),
    )?;
    for input in ["long.mkv", "long.ts", "long.h264"] {
        expect_err(
            input,
            run(&enc, Some("j"), &small_spec(input, "o", MP4)?),
            limit,
            "SPOOL_MAX_DURATION",
        )?;
    }
    let small = encoder(
        &r,
        Limits::default().with_max_width(640).with_max_height(480),
    )?;
    expect_err(
        "a stream that grows past the resolution limit",
        run(&small, Some("j"), &small_spec("grows.h264", "o", MP4)?),
        limit,
        "SPOOL_MAX_RESOLUTION",
    )?;
    // 1280x128 is allowed; scaled to 480 lines keeping the aspect it is 4800 wide.
    let wide = spec(
        r#"{"input":"wide.mp4","output":"o","hardware":"cpu","audio":{"mode":"none"},
            "renditions":[{"codec":"h264","height":480,"preset":"fastest"}]}"#,
    )?;
    expect_err(
        "a computed output size over the limit",
        run(&enc, Some("j"), &wide),
        limit,
        "4800x480",
    )?;
    let unlimited = encoder(&r, Limits::default().with_max_hls_segments(2))?;
    // Six seconds in 2 s GOPs make three segments.
    expect_err(
        "segments written past the limit",
        run(&unlimited, Some("j"), &small_spec("six.mkv", "hls", HLS)?),
        limit,
        "SPOOL_MAX_HLS_SEGMENTS",
    )?;
    ensure!(
        tree(&r.output)?.is_empty(),
        "left behind: {:?}",
        tree(&r.output)?
    );
    Ok(())
}

/// Offset and size of the first top-level MP4 box of type `kind`.
fn mp4_box(data: &[u8], kind: &[u8; 4]) -> Option<(usize, usize)> {
    let mut at = 0usize;
    while at + 8 <= data.len() {
        let size = u32::from_be_bytes(data[at..at + 4].try_into().ok()?) as usize;
        if &data[at + 4..at + 8] == kind {
            return Some((at, size));
        }
        if size < 8 {
            return None;
        }
        at += size;
    }
    None
}

#[test]
fn inputs_that_end_early_or_cannot_be_decoded_fail_permanently() -> Result<()> {
    let r = roots()?;
    let good = r.input.join("fast.mp4");
    clip(&good, 320, 240, 4.0, &["-movflags", "+faststart"])?;
    let data = std::fs::read(&good)?;
    std::fs::write(r.input.join("cut.mp4"), &data[..data.len() * 6 / 10])?;
    // The same file with its media data replaced by noise.
    let (at, size) = mp4_box(&data, b"mdat").context("no mdat")?;
    let mut noisy = data.clone();
    for (i, b) in noisy[at + 8..at + size].iter_mut().enumerate() {
        *b = ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8;
    }
    std::fs::write(r.input.join("noise-mdat.mp4"), noisy)?;
    // PCM audio, which MP4 cannot hold as it is.
    let mkv = r.input.join("pcm.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=25:duration=1",
        "-f",
        "lavfi",
        "-i",
        "sine=duration=1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "pcm_s16le",
        &mkv.to_string_lossy(),
    ])?;
    let enc = encoder(&r, Limits::default())?;

    expect_err(
        "a faststart MP4 cut at 60 %",
        run(&enc, Some("j"), &small_spec("cut.mp4", "cut", MP4)?),
        bad_input,
        "allow_truncated",
    )?;
    ensure!(tree(&r.output)?.is_empty(), "{:?}", tree(&r.output)?);
    let mut keep = small_spec("cut.mp4", "cut", MP4)?;
    keep.allow_truncated = true;
    let res = run(&enc, Some("j"), &keep)?;
    ensure!(res.truncated, "not reported as truncated: {res:?}");
    let declared = res.declared_frames.context("no declared frame count")?;
    ensure!(
        res.decoded_frames < declared && declared == 100,
        "decoded {} of {declared}",
        res.decoded_frames
    );

    expect_err(
        "an MP4 whose media data is noise",
        run(
            &enc,
            Some("j"),
            &small_spec("noise-mdat.mp4", "noise", MP4)?,
        ),
        bad_input,
        "noise-mdat.mp4",
    )?;
    let copy = spec(
        r#"{"input":"pcm.mkv","output":"pcm","hardware":"cpu","audio":{"mode":"copy"},
            "renditions":[{"codec":"h264","height":120,"preset":"fastest"}]}"#,
    )?;
    let e = run(&enc, Some("j"), &copy)
        .err()
        .context("PCM copied into MP4")?;
    ensure!(
        matches!(&e, EncodeError::InvalidSpec { field, .. } if field == "audio.mode"),
        "{e:?}"
    );
    ensure!(e.to_string().contains("pcm_s16le"), "{e}");
    ensure!(!e.is_retryable(), "{e}");
    let left: Vec<_> = tree(&r.output)?
        .into_iter()
        .filter(|p| !p.starts_with("cut.mp4") && !p.starts_with(".cut.mp4"))
        .collect();
    ensure!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}

#[test]
fn a_fifo_or_device_in_the_input_root_is_refused_without_blocking() -> Result<()> {
    let r = roots()?;
    let fifo = r.input.join("pipe.mp4");
    let st = Command::new("mkfifo").arg(&fifo).status()?;
    ensure!(st.success(), "mkfifo failed");
    std::os::unix::fs::symlink("/dev/zero", r.input.join("zero.mp4"))?;
    let enc = encoder(&r, Limits::default())?;
    for input in ["pipe.mp4", "zero.mp4"] {
        // Opening a FIFO for reading would block until a writer came.
        let started = std::time::Instant::now();
        let e = run(&enc, Some("j"), &small_spec(input, "o", MP4)?)
            .err()
            .with_context(|| format!("{input} was accepted"))?;
        ensure!(path_refused(&e) && !e.is_retryable(), "{input}: {e:?}");
        ensure!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{input}: blocked"
        );
    }
    Ok(())
}

/// One second of video with twenty minutes of audio, written to a pipe (no
/// duration in the header), under a 60 s limit: refused while decoding,
/// permanently (before: the job completed with a 1,200 s output).
#[test]
fn audio_counts_against_the_duration_limit() -> Result<()> {
    let r = roots()?;
    let out = Command::new("ffmpeg")
        .args(["-v", "error"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=25:duration=1",
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=8000:duration=1200",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-c:a", "pcm_s16le", "-f", "matroska", "pipe:1"])
        .stdout(Stdio::piped())
        .output()?;
    ensure!(out.status.success(), "ffmpeg to a pipe failed");
    std::fs::write(r.input.join("long-audio.mkv"), out.stdout)?;
    let enc = encoder(&r, Limits::default().with_max_duration_s(60.0))?;
    let e = expect_err(
        "20 minutes of audio under a 60 s limit",
        run(
            &enc,
            Some("j"),
            &spec(
                r#"{"input":"long-audio.mkv","output":"o","hardware":"cpu",
                    "renditions":[{"codec":"h264","height":120,"preset":"fastest"}]}"#,
            )?,
        ),
        limit,
        "SPOOL_MAX_DURATION",
    )?;
    ensure!(!e.is_retryable() && e.to_string().contains("audio"), "{e}");
    ensure!(
        std::fs::read_dir(&r.output)?.next().is_none(),
        "something was published"
    );
    Ok(())
}

/// What a retry cannot fix is fixed or refused, never retried: audio at
/// rates AAC does not take is resampled (192 kHz is an ordinary studio
/// rate), timestamps that repeat are repaired, and av1 settings its
/// encoder cannot take are refused at validation.
#[test]
fn what_no_retry_can_fix_is_repaired_or_refused_at_once() -> Result<()> {
    let r = roots()?;
    let enc = encoder(&r, Limits::default())?;
    // Audio at 192 kHz, 384 kHz and 44,056 Hz.
    for (rate, want) in [(192_000, 48_000), (384_000, 48_000), (44_056, 44_100)] {
        let name = format!("a{rate}.mkv");
        let input = r.input.join(&name);
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=25:duration=1",
            "-f",
            "lavfi",
            "-i",
            &format!("sine=sample_rate={rate}:duration=1"),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "pcm_s16le",
            &input.to_string_lossy(),
        ])?;
        let s = spec(&format!(
            r#"{{"input":{name:?},"output":"a{rate}","hardware":"cpu",
                "renditions":[{{"codec":"h264","height":120,"preset":"fastest"}}]}}"#
        ))?;
        run(&enc, Some("j"), &s).with_context(|| format!("audio at {rate} Hz"))?;
        let probe = Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "a:0"])
            .args(["-show_entries", "stream=sample_rate", "-of", "csv=p=0"])
            .arg(r.output.join(format!("a{rate}.mp4")))
            .output()?;
        let got = String::from_utf8_lossy(&probe.stdout).trim().to_owned();
        ensure!(got == want.to_string(), "{rate} Hz became {got} Hz");
    }
    // The same timestamp four times in a row (frames 9 to 12).
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=25:duration=2",
        "-c:v",
        "libx264",
        "-bf",
        "0",
        "-preset",
        "ultrafast",
        "-bsf:v",
        "setts=ts='if(between(N,10,12),STARTPTS+10*DURATION,PTS)'",
        &r.input.join("repeats.mkv").to_string_lossy(),
    ])?;
    let s = spec(
        r#"{"input":"repeats.mkv","output":"repeats","hardware":"cpu","audio":{"mode":"none"},
            "renditions":[{"codec":"h264","height":120,"preset":"fastest"}]}"#,
    )?;
    let res = run(&enc, Some("j"), &s).context("repeated timestamps")?;
    ensure!(res.outputs[0].frames == 50, "{:?}", res.outputs[0]);
    // av1 settings its encoder cannot take: refused by the spec.
    for (field, rendition) in [
        ("height", r#"{"codec":"av1","height":48}"#),
        ("width", r#"{"codec":"av1","width":32,"height":64}"#),
        (
            "bitrate_kbps",
            r#"{"codec":"av1","height":240,"bitrate_kbps":200000}"#,
        ),
    ] {
        let e = spec(&format!(
            r#"{{"input":"clip.mp4","output":"o","renditions":[{rendition}]}}"#
        ))
        .err()
        .with_context(|| format!("{rendition} must be refused"))?;
        ensure!(e.to_string().contains(field), "{rendition}: {e}");
    }
    Ok(())
}

/// What a spec may cost is the operator's call: a rendition scaled up past
/// `SPOOL_MAX_UPSCALE`, or CPU encodes estimated over
/// `SPOOL_MAX_ENCODE_MEMORY`, are refused before any encoder opens (before:
/// one 8K `slowest` rendition of a 48 KB clip took 6.4 GB).
#[test]
fn upscaling_and_encode_memory_are_bounded_before_encoding() -> Result<()> {
    let r = roots()?;
    clip(&r.input.join("small.mp4"), 160, 120, 0.5, &[])?;
    let enc = encoder(&r, Limits::default())?;
    let e = expect_err(
        "160x120 asked for at 4320p",
        run(
            &enc,
            Some("j"),
            &spec(
                r#"{"input":"small.mp4","output":"big","hardware":"cpu",
                    "renditions":[{"codec":"h264","height":4320,"preset":"slowest"}]}"#,
            )?,
        ),
        limit,
        "SPOOL_MAX_UPSCALE",
    )?;
    ensure!(!e.is_retryable(), "{e}");
    // Within the upscale limit, but over a small memory budget.
    clip(&r.input.join("hd.mp4"), 1280, 720, 0.5, &[])?;
    let tight = encoder(&r, Limits::default().with_max_encode_memory(48 << 20))?;
    expect_err(
        "720p medium within 48 MiB",
        run(
            &tight,
            Some("j"),
            &spec(
                r#"{"input":"hd.mp4","output":"hd","hardware":"cpu",
                    "renditions":[{"codec":"h264","height":720,"preset":"medium"}]}"#,
            )?,
        ),
        limit,
        "SPOOL_MAX_ENCODE_MEMORY",
    )?;
    // The same at the fastest preset fits, and encodes.
    run(
        &tight,
        Some("j"),
        &spec(
            r#"{"input":"hd.mp4","output":"hd2","hardware":"cpu",
                "renditions":[{"codec":"h264","height":720,"preset":"fastest"}]}"#,
        )?,
    )?;
    ensure!(std::fs::read_dir(&r.output)?.count() >= 1);
    Ok(())
}

/// A source whose timestamps start at 10 h (a broadcast capture) gives an
/// output that starts at 0 and declares its real length (before: a 1 s clip
/// made an MP4 declaring 36,002 s).
#[test]
fn a_source_starting_at_ten_hours_gives_an_output_of_its_real_length() -> Result<()> {
    let r = roots()?;
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=25:duration=1",
        "-f",
        "lavfi",
        "-i",
        "sine=duration=1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
        "-output_ts_offset",
        "36000",
        "-f",
        "mpegts",
        &r.input.join("late.ts").to_string_lossy(),
    ])?;
    let enc = encoder(&r, Limits::default())?;
    for (audio, name) in [
        (r#"{"mode":"aac"}"#, "late-aac"),
        (r#"{"mode":"copy"}"#, "late-copy"),
    ] {
        let s = spec(&format!(
            r#"{{"input":"late.ts","output":{name:?},"hardware":"cpu","audio":{audio},
                "renditions":[{{"codec":"h264","height":120,"preset":"fastest"}}]}}"#
        ))?;
        run(&enc, Some("j"), &s).with_context(|| name.to_owned())?;
        let probe = Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "format=duration,start_time"])
            .args(["-of", "default=nw=1"])
            .arg(r.output.join(format!("{name}.mp4")))
            .output()?;
        let text = String::from_utf8_lossy(&probe.stdout).into_owned();
        let field = |k: &str| -> Result<f64> {
            Ok(text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .with_context(|| format!("no {k} in {text}"))?
                .parse()?)
        };
        let (start, duration) = (field("start_time")?, field("duration")?);
        ensure!(
            start.abs() < 0.5 && (duration - 1.0).abs() < 0.3,
            "{name}: starts at {start} s, declares {duration} s"
        );
    }
    Ok(())
}
