//! The encoder worker's settings: flags and `SPOOL_*` variables (flags
//! win), each checked at start-up so a bad value names its setting.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use spool_encoder::{EncoderConfig, Hardware, Limits, ObjectStorage};
use spool_worker::{WorkerArgs, WorkerConfig};

/// Longest http(s) I/O timeout accepted: past an hour a stalled origin is
/// indistinguishable from a dead one.
const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(3600);

/// Every setting of `spool-encoder-worker`, as flags and variables.
#[derive(Parser, Debug)]
#[command(
    name = "spool-encoder-worker",
    version,
    about = "Run encode jobs from a spool queue"
)]
pub struct Args {
    /// Print what GPU discovery and the NVENC session probe find, as JSON,
    /// and exit (no Redis, no jobs): the first check on a new GPU node.
    #[arg(long)]
    pub gpu_report: bool,
    /// The runtime's settings (`--redis-url`, `--queue`, `--lease`, …).
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// Inputs are read only from under this directory.
    #[arg(long, env = "SPOOL_INPUT_ROOT", default_value = "/data/in")]
    pub input_root: PathBuf,
    /// Outputs are written only under this directory.
    #[arg(long, env = "SPOOL_OUTPUT_ROOT", default_value = "/data/out")]
    pub output_root: PathBuf,
    /// Hardware policy: `auto` (each job's choice), `cpu` (CPU only), `nvenc` (NVENC only).
    #[arg(long = "hw", env = "SPOOL_HW", default_value = "auto")]
    pub hw: String,
    /// Accept http(s) inputs.
    #[arg(long, env = "SPOOL_ALLOW_HTTP", default_value = "false")]
    pub allow_http: String,
    /// Address ranges http(s) inputs may reach although not public
    /// (comma-separated CIDRs); none by default.
    #[arg(long, env = "SPOOL_HTTP_ALLOW_NETS")]
    pub http_allow_nets: Option<String>,
    /// Timeout for connecting to and each read from an http(s) input (e.g. 30s).
    #[arg(long, env = "SPOOL_HTTP_TIMEOUT")]
    pub http_timeout: Option<String>,
    /// Largest input downloaded (http(s) or object storage), in bytes
    /// (default 50 GiB).
    #[arg(long, env = "SPOOL_MAX_INPUT_BYTES")]
    pub max_input_bytes: Option<String>,
    /// Buckets jobs may read and write, comma-separated `bucket` or
    /// `bucket/prefix`; empty turns object storage off.
    #[arg(long, env = "SPOOL_S3_BUCKETS", default_value = "")]
    pub s3_buckets: String,
    /// An S3-compatible endpoint (MinIO, Ceph, R2, GCS interoperability);
    /// unset for AWS. Path-style addressing.
    #[arg(long, env = "SPOOL_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// The region (default: `AWS_REGION`, else us-east-1).
    #[arg(long, env = "SPOOL_S3_REGION")]
    pub s3_region: Option<String>,
    /// Outputs larger than this go up as multipart uploads in parts of this
    /// many bytes (default 16 MiB; 5 MiB to 5 GiB).
    #[arg(long, env = "SPOOL_S3_PART_SIZE")]
    pub s3_part_size: Option<String>,
    /// Where downloaded inputs and outputs bound for object storage are
    /// kept while a job runs (default: the temp dir, `TMPDIR`).
    #[arg(long, env = "SPOOL_SCRATCH_DIR")]
    pub scratch_dir: Option<PathBuf>,
    /// Keep frames on the GPU (NVDEC decode, scale_cuda, NVENC from GPU
    /// memory): off (the default), auto (when a GPU was found) or on
    /// (always try); each stage falls back to the CPU on its own.
    #[arg(long, env = "SPOOL_GPU_DECODE")]
    pub gpu_decode: Option<String>,
    /// Threads the video decoder and each CPU encoder of an encode use
    /// (0: one per core, FFmpeg's choice; 1: single-threaded, for one
    /// worker process per core).
    #[arg(long, env = "SPOOL_ENCODER_THREADS", default_value_t = 0)]
    pub encoder_threads: usize,
    /// NVENC sessions per GPU this process opens at most.
    #[arg(long, env = "SPOOL_NVENC_SESSIONS", default_value_t = spool_encoder::DEFAULT_NVENC_SESSIONS)]
    pub nvenc_sessions: usize,
    /// Renditions one job may ask for.
    #[arg(long, env = "SPOOL_MAX_RENDITIONS")]
    pub max_renditions: Option<usize>,
    /// Largest frame, input or output, as WIDTHxHEIGHT.
    #[arg(long, env = "SPOOL_MAX_RESOLUTION")]
    pub max_resolution: Option<String>,
    /// Longest input (e.g. 6h).
    #[arg(long, env = "SPOOL_MAX_DURATION")]
    pub max_duration: Option<String>,
    /// Most streams an input may have.
    #[arg(long, env = "SPOOL_MAX_STREAMS")]
    pub max_streams: Option<usize>,
    /// Bytes FFmpeg may read to probe an input.
    #[arg(long, env = "SPOOL_PROBE_SIZE")]
    pub probe_size: Option<u64>,
    /// Most HLS segments per rendition.
    #[arg(long, env = "SPOOL_MAX_HLS_SEGMENTS")]
    pub max_hls_segments: Option<u64>,
    /// How far a rendition may be scaled up from its input, per side
    /// (default 2).
    #[arg(long, env = "SPOOL_MAX_UPSCALE")]
    pub max_upscale: Option<String>,
    /// Memory one job's CPU encoders may be estimated to need, in bytes
    /// (default 8 GiB).
    #[arg(long, env = "SPOOL_MAX_ENCODE_MEMORY")]
    pub max_encode_memory: Option<String>,
}

/// The encoder worker's `SPOOL_JOB_TIMEOUT` when none is set: an encode
/// that runs longer than this is stuck or absurd (6 h of input at the
/// slowest preset finishes well within it on a node sized for it).
pub const DEFAULT_JOB_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// The encoder's limits: defaults, overridden by the settings given.
fn limits(a: &Args) -> Result<Limits, BadSetting> {
    let mut l = Limits::default();
    let positive = |setting: &'static str, v: u64| {
        if v == 0 {
            Err(bad(setting, "0", "must be at least 1"))
        } else {
            Ok(v)
        }
    };
    if let Some(n) = a.max_renditions {
        l.max_renditions = positive("SPOOL_MAX_RENDITIONS", n as u64)? as usize;
    }
    if let Some(r) = &a.max_resolution {
        let parsed = r
            .split_once(['x', 'X'])
            .and_then(|(w, h)| Some((w.trim().parse::<u32>().ok()?, h.trim().parse::<u32>().ok()?)))
            .filter(|(w, h)| *w >= 16 && *h >= 16);
        let (w, h) = parsed.ok_or_else(|| {
            bad(
                "SPOOL_MAX_RESOLUTION",
                r,
                "must be WIDTHxHEIGHT, e.g. 3840x2160",
            )
        })?;
        l.max_width = w;
        l.max_height = h;
    }
    if let Some(d) = &a.max_duration {
        l.max_duration_s = spool_worker::parse_duration("SPOOL_MAX_DURATION", d)?.as_secs_f64();
    }
    if let Some(n) = a.max_streams {
        l.max_streams = positive("SPOOL_MAX_STREAMS", n as u64)? as usize;
    }
    if let Some(n) = a.probe_size {
        // FFmpeg takes 32 bytes and up, but below a few tens of kilobytes
        // it cannot find the streams of an ordinary MP4 (32 failed every
        // job); refused at start instead.
        if n < MIN_PROBE_SIZE {
            return Err(bad(
                "SPOOL_PROBE_SIZE",
                &n.to_string(),
                "must be at least 65536 bytes (FFmpeg needs that much to find the streams of an ordinary file; the default is 5000000)",
            ));
        }
        l.probe_size = n;
    }
    if let Some(v) = &a.max_upscale {
        l.max_upscale = v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && (1.0..=16.0).contains(f))
            .ok_or_else(|| bad("SPOOL_MAX_UPSCALE", v, "must be a number from 1 to 16"))?;
    }
    if let Some(v) = &a.max_encode_memory {
        l.max_encode_memory = v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n >= 64 << 20)
            .ok_or_else(|| {
                bad(
                    "SPOOL_MAX_ENCODE_MEMORY",
                    v,
                    "must be a whole number of bytes, at least 67108864 (64 MiB)",
                )
            })?;
    }
    if let Some(n) = a.max_hls_segments {
        l.max_hls_segments = positive("SPOOL_MAX_HLS_SEGMENTS", n)?;
    }
    Ok(l)
}

/// A start-up setting that cannot be used: the runtime's error type, which
/// names the setting, the value and what is accepted.
pub type BadSetting = spool_worker::ConfigError;

fn bad(setting: &'static str, value: &str, reason: &str) -> BadSetting {
    spool_worker::ConfigError {
        setting,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn check_root(setting: &'static str, p: &std::path::Path, write: bool) -> Result<(), BadSetting> {
    let shown = p.display().to_string();
    let meta =
        std::fs::metadata(p).map_err(|e| bad(setting, &shown, &format!("cannot use it: {e}")))?;
    if !meta.is_dir() {
        return Err(bad(setting, &shown, "is not a directory"));
    }
    std::fs::read_dir(p).map_err(|e| bad(setting, &shown, &format!("cannot list it: {e}")))?;
    if write {
        let probe = p.join(format!(".spool-write-check-{}", std::process::id()));
        std::fs::write(&probe, b"")
            .map_err(|e| bad(setting, &shown, &format!("cannot write in it: {e}")))?;
        let _ = std::fs::remove_file(probe);
    }
    Ok(())
}

/// Builds the runtime and encoder settings, checking each; the hardware
/// policy is `SPOOL_HW` when it overrides the jobs' own choice.
pub fn settings(a: &Args) -> Result<(WorkerConfig, EncoderConfig, Option<Hardware>), BadSetting> {
    // WorkerConfig::validate checks the Redis URL too, naming the setting.
    let mut worker = a.worker.config()?;
    // An encode always has a time limit: the operator's, the job's own
    // (`timeout_s`, or the producer's `timeout` option), or this one.
    if worker.job_timeout.is_none() {
        worker.job_timeout = Some(
            worker
                .max_job_timeout
                .map_or(DEFAULT_JOB_TIMEOUT, |m| m.min(DEFAULT_JOB_TIMEOUT)),
        );
    }
    let policy = match a.hw.trim().to_ascii_lowercase().as_str() {
        "auto" => None,
        "cpu" => Some(Hardware::Cpu),
        "nvenc" => Some(Hardware::Nvenc),
        _ => return Err(bad("SPOOL_HW", &a.hw, "must be auto, cpu or nvenc")),
    };
    let allow_http = match a.allow_http.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => true,
        "false" | "0" | "no" | "" => false,
        _ => {
            return Err(bad(
                "SPOOL_ALLOW_HTTP",
                &a.allow_http,
                "must be true or false",
            ));
        }
    };
    if a.nvenc_sessions == 0 {
        return Err(bad("SPOOL_NVENC_SESSIONS", "0", "must be at least 1"));
    }
    check_root("SPOOL_INPUT_ROOT", &a.input_root, false)?;
    check_root("SPOOL_OUTPUT_ROOT", &a.output_root, true)?;
    let mut enc = EncoderConfig::new(&a.input_root, &a.output_root);
    enc.allow_http = allow_http;
    if let Some(nets) = &a.http_allow_nets {
        enc.http.allow_nets = spool_encoder::fetch::parse_allow_nets(nets)
            .map_err(|e| bad("SPOOL_HTTP_ALLOW_NETS", nets, &e))?;
    }
    if let Some(t) = &a.http_timeout {
        let d = spool_worker::parse_duration("SPOOL_HTTP_TIMEOUT", t)?;
        if d.is_zero() || d > MAX_HTTP_TIMEOUT {
            return Err(bad(
                "SPOOL_HTTP_TIMEOUT",
                t,
                "must be more than 0 and at most 1h",
            ));
        }
        enc.http.io_timeout = d;
    }
    if let Some(v) = &a.max_input_bytes {
        let n = v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                bad(
                    "SPOOL_MAX_INPUT_BYTES",
                    v,
                    "must be a whole number of bytes, at least 1",
                )
            })?;
        enc.max_input_bytes = n;
    }
    if let Some(dir) = &a.scratch_dir {
        check_root("SPOOL_SCRATCH_DIR", dir, true)?;
        enc.scratch_dir = dir.clone();
    }
    enc.storage = storage(a)?;
    enc.nvenc_sessions_per_gpu = a.nvenc_sessions;
    if a.encoder_threads > 256 {
        return Err(bad(
            "SPOOL_ENCODER_THREADS",
            &a.encoder_threads.to_string(),
            "must be within 0..=256 (0: one per core)",
        ));
    }
    enc.threads = a.encoder_threads;
    if let Some(v) = &a.gpu_decode {
        enc.gpu_decode = spool_encoder::GpuDecode::parse(v)
            .ok_or_else(|| bad("SPOOL_GPU_DECODE", v, "must be off, auto or on"))?;
    }
    enc.limits = limits(a)?;
    Ok((worker, enc, policy))
}

/// An S3 endpoint: `http(s)://host[:port][/path]`, without credentials, a
/// query or a fragment, returned in its normal form (lower-case scheme and
/// host). The value is never echoed in full: it may hold a password.
fn check_endpoint(var: &'static str, e: &str) -> Result<String, BadSetting> {
    let shown = spool_encoder::fetch::shown_url(e);
    let url =
        url::Url::parse(e).map_err(|err| bad(var, &shown, &format!("is not a URL: {err}")))?;
    let usable = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none();
    if !usable {
        return Err(bad(
            var,
            &shown,
            "must be http(s)://host[:port] without credentials, a query or a fragment",
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Object storage settings, each checked.
fn storage(a: &Args) -> Result<ObjectStorage, BadSetting> {
    let buckets = spool_encoder::storage::parse_buckets(&a.s3_buckets)
        .map_err(|e| bad("SPOOL_S3_BUCKETS", &a.s3_buckets, &e))?;
    // The AWS variables object_store reads on its own are held to the same
    // rules as spool's setting.
    for var in ["AWS_ENDPOINT_URL", "AWS_ENDPOINT"] {
        if let Ok(v) = std::env::var(var)
            && !v.trim().is_empty()
        {
            check_endpoint(var, v.trim())?;
        }
    }
    let endpoint = match a.s3_endpoint.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(e) => Some(check_endpoint("SPOOL_S3_ENDPOINT", e)?),
    };
    let region = match a.s3_region.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(r) => {
            let ok = (2..=32).contains(&r.len())
                && r.bytes().next().is_some_and(|c| c.is_ascii_lowercase())
                && r.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && !r.ends_with('-')
                && !r.contains("--");
            if !ok {
                return Err(bad(
                    "SPOOL_S3_REGION",
                    r,
                    "must look like us-east-1 (lower-case letters, digits and single '-')",
                ));
            }
            Some(r.to_owned())
        }
    };
    let part_size = match a.s3_part_size.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(v) => {
            let (lo, hi) = (
                spool_encoder::storage::MIN_PART_SIZE,
                spool_encoder::storage::MAX_PART_SIZE,
            );
            let n = v.parse::<usize>().ok().filter(|n| (lo..=hi).contains(n));
            Some(n.ok_or_else(|| {
                bad(
                    "SPOOL_S3_PART_SIZE",
                    v,
                    &format!("must be a whole number of bytes from {lo} (5 MiB) to {hi} (5 GiB)"),
                )
            })?)
        }
    };
    if buckets.is_empty() && (endpoint.is_some() || region.is_some()) {
        tracing::warn!(
            "SPOOL_S3_ENDPOINT or SPOOL_S3_REGION set but SPOOL_S3_BUCKETS is empty: object storage is off"
        );
    }
    Ok(ObjectStorage::default()
        .with_buckets(buckets)
        .with_endpoint(endpoint)
        .with_region(region)
        .with_part_size(part_size))
}

/// The smallest `SPOOL_PROBE_SIZE` accepted: 64 KiB holds the headers of
/// every ordinary container the tests encode, with room to spare.
pub const MIN_PROBE_SIZE: u64 = 65_536;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn a_probe_size_too_small_for_any_file_is_refused_at_start() {
        let dir = std::env::temp_dir();
        let root = dir.to_string_lossy();
        for (v, ok) in [
            ("32", false),
            ("65535", false),
            ("65536", true),
            ("5000000", true),
        ] {
            let argv = [
                "spool-encoder-worker",
                "--input-root",
                &root,
                "--output-root",
                &root,
                "--probe-size",
                v,
            ];
            let args = Args::try_parse_from(argv).map_err(|e| e.to_string());
            let parsed = args.map(|a| settings(&a).is_ok());
            assert_eq!(parsed, Ok(ok), "--probe-size {v}");
        }
    }

    proptest::proptest! {
        /// Every encoder-worker flag, given any string: settings or an error
        /// naming the setting, never a panic.
        #[test]
        fn every_flag_survives_any_value(
            which in 0usize..20,
            v in "[ -~]{0,40}",
        ) {
            const FLAGS: [&str; 20] = [
                "--concurrency", "--lease", "--heartbeat", "--sweep-interval",
                "--drain-timeout", "--metrics-addr", "--hw", "--allow-http",
                "--max-resolution", "--max-duration", "--http-allow-nets",
                "--http-timeout", "--queue", "--redis-url", "--log-format",
                "--s3-buckets", "--s3-endpoint", "--s3-region", "--scratch-dir",
                "--max-input-bytes",
            ];
            let dir = std::env::temp_dir();
            let root = dir.to_string_lossy();
            let argv = [
                "spool-encoder-worker", "--input-root", &root, "--output-root", &root,
                FLAGS[which], &v,
            ];
            if let Ok(args) = Args::try_parse_from(argv)
                && let Err(e) = settings(&args)
            {
                proptest::prop_assert!(e.setting.starts_with("SPOOL_"), "{}", e);
            }
        }
    }

    /// Every setting the binary takes has a row in the README's encoder
    /// table or in docs/operations.md (the runtime's), with its flag.
    #[test]
    fn every_setting_is_documented() -> Result<(), String> {
        use clap::CommandFactory;
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../");
        let mut docs = String::new();
        for f in ["README.md", "docs/operations.md"] {
            docs +=
                &std::fs::read_to_string(format!("{root}{f}")).map_err(|e| format!("{f}: {e}"))?;
        }
        let cmd = Args::command();
        for arg in cmd.get_arguments() {
            let Some(var) = arg.get_env().and_then(|v| v.to_str()) else {
                continue;
            };
            if !docs.contains(&format!("| `{var}` |")) {
                return Err(format!(
                    "{var} (--{}) has no row in README.md or docs/operations.md",
                    arg.get_long().unwrap_or("?")
                ));
            }
        }
        Ok(())
    }
}
