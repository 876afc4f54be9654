//! spool's encoder: a JSON job spec in, finished MP4 files or an HLS ladder
//! out, through FFmpeg's libraries in-process (`ffmpeg-next`).
//!
//! The crate knows nothing of Redis. [`Encoder::encode`] takes a validated
//! [`EncodeSpec`], reports [`Progress`] through a callback at most four times a
//! second, obeys a `CancellationToken` (checked for every packet), and returns
//! an [`EncodeResult`] read back from the outputs.
//!
//! Hardware: `auto` uses NVENC when NVML finds a GPU with encoder capacity and
//! a session slot is free, and falls back to the CPU encoders (libx264,
//! libx265, libsvtav1) otherwise, or when the NVENC session is refused; the
//! choice and the reason are in the result. `nvenc` fails instead of falling
//! back. Inputs are confined to the input root (see [`paths`]), opened with a
//! protocol whitelist (`file` unless http(s) inputs are enabled) and a demuxer
//! whitelist without playlists, and checked against [`Limits`].

pub mod backend;
mod error;
pub mod fetch;
pub mod gpu;
pub mod metrics;
pub mod paths;
mod pipeline;
pub mod spec;

use std::path::PathBuf;

pub use backend::Backend;
pub use error::EncodeError;
pub use fetch::HttpPolicy;
pub use pipeline::{EncodeResult, OutputInfo, Progress};
pub use spec::{Audio, Codec, Container, EncodeSpec, Hardware, Limits, Preset, Rendition};
pub use tokio_util::sync::CancellationToken;

/// NVENC sessions per GPU when the operator sets none: what current consumer
/// cards allow at once (datacenter cards allow more; raise it there).
pub const DEFAULT_NVENC_SESSIONS: usize = 8;

/// Settings of an [`Encoder`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EncoderConfig {
    /// Inputs are read only from under here.
    pub input_root: PathBuf,
    /// Outputs are written only under here.
    pub output_root: PathBuf,
    /// Accept `http://` and `https://` inputs (off by default: a crafted job
    /// could otherwise reach internal hosts).
    pub allow_http: bool,
    /// Where http(s) inputs may come from, timeouts and size (see [`fetch`]).
    pub http: HttpPolicy,
    /// Where http(s) inputs are downloaded before encoding (the system's
    /// temporary directory, `TMPDIR`, by default).
    pub download_dir: PathBuf,
    /// Bounds on jobs and inputs.
    pub limits: Limits,
    /// NVENC sessions this process opens per GPU at most.
    pub nvenc_sessions_per_gpu: usize,
}

impl EncoderConfig {
    /// Roots with default limits.
    pub fn new(input_root: impl Into<PathBuf>, output_root: impl Into<PathBuf>) -> Self {
        EncoderConfig {
            input_root: input_root.into(),
            output_root: output_root.into(),
            allow_http: false,
            http: HttpPolicy::default(),
            download_dir: std::env::temp_dir(),
            limits: Limits::default(),
            nvenc_sessions_per_gpu: DEFAULT_NVENC_SESSIONS,
        }
    }
}

/// Runs encodes. Cheap to share: probe once, encode many.
#[derive(Debug)]
pub struct Encoder {
    config: EncoderConfig,
    gpus: gpu::GpuProbe,
    sessions: gpu::SessionCap,
}

impl Encoder {
    /// Initialises FFmpeg and probes the GPUs (once).
    pub fn new(config: EncoderConfig) -> Result<Self, EncodeError> {
        ffmpeg_next::init()
            .map_err(|e| EncodeError::Failed(format!("FFmpeg did not initialise: {e}")))?;
        // FFmpeg is only ever given /proc/self/fd paths (see `paths`).
        if !std::path::Path::new("/proc/self/fd").is_dir() {
            return Err(EncodeError::Failed(
                "/proc is not mounted; the encoder opens its files through /proc/self/fd".into(),
            ));
        }
        ffmpeg_next::log::set_level(ffmpeg_next::log::Level::Error);
        let gpus = gpu::probe();
        match &gpus.reason {
            Some(r) => tracing::info!(reason = %r, "no NVENC: encoding on the CPU"),
            None => tracing::info!(gpus = ?gpus.gpus, "NVENC available"),
        }
        let sessions = gpu::SessionCap::new(gpus.gpus.len(), config.nvenc_sessions_per_gpu);
        Ok(Encoder {
            config,
            gpus,
            sessions,
        })
    }

    /// What GPU discovery found.
    pub fn gpus(&self) -> &gpu::GpuProbe {
        &self.gpus
    }

    /// The settings.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// How many encodes this process should run at once: NVENC sessions on
    /// every GPU when there are GPUs, else one (a CPU encode uses every core).
    pub fn default_concurrency(&self) -> usize {
        let gpus = self.gpus.nvenc_gpus().count();
        if gpus > 0 {
            gpus * self.config.nvenc_sessions_per_gpu
        } else {
            1
        }
    }

    /// Encodes `spec` for no particular job: it never replaces an existing
    /// output. Blocking: run it on a blocking thread.
    pub fn encode(
        &self,
        spec: &EncodeSpec,
        progress: &mut dyn FnMut(Progress),
        cancel: &CancellationToken,
    ) -> Result<EncodeResult, EncodeError> {
        self.encode_as(None, spec, progress, cancel)
    }

    /// Encodes `spec` for the job `owner` (its queue id): outputs that an
    /// earlier attempt of the same job published are replaced; anything else
    /// already at an output name fails the job with
    /// [`EncodeError::OutputExists`] before any work. Blocking.
    pub fn encode_as(
        &self,
        owner: Option<&str>,
        spec: &EncodeSpec,
        progress: &mut dyn FnMut(Progress),
        cancel: &CancellationToken,
    ) -> Result<EncodeResult, EncodeError> {
        spec.validate(&self.config.limits)?;
        let target = paths::open_output(&self.config.output_root, &spec.output)?;
        for (name, dir) in pipeline::output_names(spec, &target) {
            if name.len() > paths::MAX_COMPONENT_BYTES {
                return Err(EncodeError::PathRefused {
                    path: spec.output.clone(),
                    reason: format!(
                        "the output file {name:?} would be longer than {} bytes",
                        paths::MAX_COMPONENT_BYTES
                    ),
                });
            }
            target.existing(&name, dir, owner)?;
        }
        let (input, _download) = self.open_source(&spec.input, cancel)?;
        let limits = &self.config.limits;
        let job = pipeline::Job {
            spec,
            input: &input,
            display: &spec.input,
            target: &target,
            owner,
            limits,
        };
        let run = |backend: Backend, reason: String, progress: &mut dyn FnMut(Progress)| {
            pipeline::run(&job, backend, reason, progress, cancel)
        };
        match spec.hardware {
            Hardware::Cpu => run(Backend::Cpu, "hardware=cpu was requested".into(), progress),
            Hardware::Nvenc => {
                if let Some(reason) = &self.gpus.reason {
                    return Err(EncodeError::NvencUnavailable(format!(
                        "hardware=nvenc was requested but {reason}; use hardware=auto to fall back to the CPU"
                    )));
                }
                let (gpu, _slot) = self.sessions.acquire().ok_or_else(|| {
                    EncodeError::NvencUnavailable(
                        "every NVENC session slot on this node is busy".into(),
                    )
                })?;
                run(
                    Backend::Nvenc { gpu },
                    "hardware=nvenc was requested".into(),
                    progress,
                )
            }
            Hardware::Auto => {
                let why_not = match (&self.gpus.reason, self.sessions.acquire()) {
                    (Some(r), _) => r.clone(),
                    (None, None) => "every NVENC session slot on this node is busy".into(),
                    (None, Some((gpu, _slot))) => {
                        match run(
                            Backend::Nvenc { gpu },
                            format!("NVENC on GPU {gpu}"),
                            progress,
                        ) {
                            Err(EncodeError::NvencUnavailable(r)) => r,
                            other => return other,
                        }
                    }
                };
                tracing::info!(reason = %why_not, "encoding on the CPU");
                ::metrics::counter!(crate::metrics::NVENC_FALLBACKS).increment(1);
                run(Backend::Cpu, format!("CPU fallback: {why_not}"), progress)
            }
        }
    }

    /// Opens the input: a confined local file, or an http(s) URL downloaded
    /// first (the temporary file is removed when the returned guard drops).
    fn open_source(
        &self,
        input: &str,
        cancel: &CancellationToken,
    ) -> Result<(paths::InputFile, Option<tempfile::NamedTempFile>), EncodeError> {
        let lower = input.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            if !self.config.allow_http {
                return Err(EncodeError::PathRefused {
                    path: input.to_owned(),
                    reason: "http(s) inputs are disabled on this worker".into(),
                });
            }
            let file =
                fetch::download(input, &self.config.http, &self.config.download_dir, cancel)?;
            let opened = paths::open_input(
                file.path().parent().unwrap_or(&self.config.download_dir),
                &file.path().to_string_lossy(),
            )?;
            return Ok((opened, Some(file)));
        }
        if input.contains("://") || lower.starts_with("file:") {
            return Err(EncodeError::PathRefused {
                path: input.to_owned(),
                reason:
                    "only paths under the input root (and, when enabled, http(s) URLs) are accepted"
                        .into(),
            });
        }
        Ok((paths::open_input(&self.config.input_root, input)?, None))
    }
}
