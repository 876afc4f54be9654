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

pub mod avlog;
mod backend;
pub mod chunks;
mod error;
pub mod fetch;
mod ffi;
pub mod gpu;
mod hw;
pub mod metrics;
mod naming;
pub mod paths;
mod pipeline;

use std::path::PathBuf;
use std::sync::Arc;

pub use backend::Backend;
pub use chunks::ChunkPlan;
pub use error::EncodeError;
pub use fetch::HttpPolicy;
pub use hw::{Device, Stage, Stages};
pub use naming::SettingNames;
pub use pipeline::{EncodeResult, OutputInfo, Phase, Progress};
pub use spool_encode_spec::S3Uri;
pub use spool_encode_spec::{
    Audio, Chunking, Codec, Container, EncodeSpec, Hardware, Limits, Part, Preset, Rendition,
    SpecError,
};
/// Object storage, re-exported: the encoder's `s3://` inputs and outputs
/// go through it.
pub use spool_storage as storage;
pub use spool_storage::{BucketScope, ObjectStorage, OutputOwner, Storage, StoredObject};
use spool_storage::{SegmentUploads, scratch};
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
    /// Where http(s) and `s3://` inputs are downloaded, and `s3://` outputs
    /// encoded before their upload (the system's temporary directory,
    /// `TMPDIR`, by default).
    pub scratch_dir: PathBuf,
    /// Largest input downloaded (http(s) or object storage), in bytes.
    pub max_input_bytes: u64,
    /// Object storage: the buckets jobs may use (none by default), endpoint
    /// and region.
    pub storage: ObjectStorage,
    /// Bounds on jobs and inputs.
    pub limits: Limits,
    /// NVENC sessions this process opens per GPU at most.
    pub nvenc_sessions_per_gpu: usize,
    /// Whether frames are kept on the GPU: decoded on NVDEC, scaled with
    /// `scale_cuda`, encoded by NVENC from GPU memory (`SPOOL_GPU_DECODE`).
    pub gpu_decode: GpuDecode,
    /// Threads the video decoder and each CPU encoder of an encode use
    /// (`SPOOL_ENCODER_THREADS`); 0, the default, lets FFmpeg use one per
    /// core. 1 makes an encode single-threaded: for running one worker
    /// process per core, as the chunked-encode benchmark does.
    pub threads: usize,
    /// What errors and results call the settings they point at: the
    /// worker's `SPOOL_*` variables by default, or the Rust fields for a
    /// program that sets these itself ([`SettingNames`]).
    pub setting_names: SettingNames,
}

/// `SPOOL_GPU_DECODE`: whether the video is decoded on the GPU (NVDEC), and
/// so scaled there (`scale_cuda`) and handed to NVENC in GPU memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GpuDecode {
    /// Always on the CPU (the default until this path has been verified on
    /// hardware; docs/gpu.md).
    #[default]
    Off,
    /// On NVDEC when GPU discovery found an NVIDIA GPU (the encode's GPU
    /// for NVENC, else GPU 0), falling back to the CPU at each step.
    Auto,
    /// Always try (no discovery needed, e.g. where NVML is not visible),
    /// falling back to the CPU at each step.
    On,
}

impl GpuDecode {
    /// Parses `off`, `auto` or `on`.
    pub fn parse(v: &str) -> Option<Self> {
        match v.trim() {
            "off" => Some(GpuDecode::Off),
            "auto" => Some(GpuDecode::Auto),
            "on" => Some(GpuDecode::On),
            _ => None,
        }
    }
}

impl EncoderConfig {
    /// Roots with default limits.
    pub fn new(input_root: impl Into<PathBuf>, output_root: impl Into<PathBuf>) -> Self {
        EncoderConfig {
            input_root: input_root.into(),
            output_root: output_root.into(),
            allow_http: false,
            http: HttpPolicy::default(),
            scratch_dir: std::env::temp_dir(),
            max_input_bytes: fetch::DEFAULT_MAX_BYTES,
            storage: ObjectStorage::default(),
            limits: Limits::default(),
            nvenc_sessions_per_gpu: DEFAULT_NVENC_SESSIONS,
            gpu_decode: GpuDecode::Off,
            threads: 0,
            setting_names: SettingNames::Env,
        }
    }
}

/// What an encode takes beyond its spec.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct EncodeOptions {
    /// Whose outputs these are (see [`Encoder::encode_as`]); `None` never
    /// replaces an existing output.
    pub owner: Option<OutputOwner>,
    /// Where FFmpeg's warnings and errors about this encode go (see
    /// [`avlog`]); `None` sends them through `tracing`.
    pub ffmpeg_log: Option<avlog::Sink>,
}

impl EncodeOptions {
    /// This value with `owner` set.
    pub fn with_owner(mut self, owner: OutputOwner) -> Self {
        self.owner = Some(owner);
        self
    }

    /// This value with `ffmpeg_log` set.
    pub fn with_ffmpeg_log(mut self, sink: avlog::Sink) -> Self {
        self.ffmpeg_log = Some(sink);
        self
    }
}

impl std::fmt::Debug for EncodeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodeOptions")
            .field("owner", &self.owner)
            .field("ffmpeg_log", &self.ffmpeg_log.is_some())
            .finish()
    }
}

/// Runs encodes. Cheap to clone and share: probe once, encode many.
#[derive(Debug, Clone)]
pub struct Encoder {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: EncoderConfig,
    gpus: gpu::GpuProbe,
    sessions: gpu::SessionCap,
    /// Clients for the allowed buckets, when object storage is on.
    stores: Option<Storage>,
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
        // FFmpeg's warnings and errors go through `tracing`, or to the job
        // whose encode logged them (`avlog::scope`), never to bare stderr.
        avlog::install();
        let mut gpus = gpu::probe();
        // Sessions found, not assumed: each NVENC GPU is probed up to the
        // configured cap.
        let mut limits = vec![0; gpus.gpus.len()];
        for g in gpus.nvenc_gpus() {
            let (n, why) = gpu::probe_sessions(g.index, config.nvenc_sessions_per_gpu);
            tracing::info!(
                gpu = g.index,
                name = %g.name,
                sessions = n,
                cap = config.nvenc_sessions_per_gpu,
                stopped_by = why.as_deref().unwrap_or("the cap"),
                "NVENC sessions probed"
            );
            if let Some(l) = limits.get_mut(g.index as usize) {
                *l = n;
            }
        }
        if gpus.reason.is_none() && limits.iter().all(|&l| l == 0) {
            gpus.reason = Some("NVENC GPUs found, but no NVENC session opened on any".into());
        }
        match &gpus.reason {
            Some(r) => tracing::info!(reason = %r, "no NVENC: encoding on the CPU"),
            None => tracing::info!(gpus = ?gpus.gpus, "NVENC available"),
        }
        let sessions = gpu::SessionCap::with_limits(limits);
        // What a killed worker left in the scratch directory.
        scratch::sweep(&config.scratch_dir);
        let stores = if config.storage.enabled() {
            Some(Storage::new(&config.storage)?)
        } else {
            None
        };
        Ok(Encoder {
            inner: Arc::new(Inner {
                config,
                gpus,
                sessions,
                stores,
            }),
        })
    }

    /// What GPU discovery found.
    pub fn gpus(&self) -> &gpu::GpuProbe {
        &self.inner.gpus
    }

    /// The settings.
    pub fn config(&self) -> &EncoderConfig {
        &self.inner.config
    }

    /// How many encodes this process should run at once: the NVENC sessions
    /// found on every GPU (each probed at start, up to
    /// `nvenc_sessions_per_gpu`) when there are GPUs, else one (a CPU encode
    /// uses every core).
    pub fn default_concurrency(&self) -> usize {
        if self.inner.gpus.reason.is_none() {
            self.inner.sessions.total().max(1)
        } else {
            1
        }
    }

    /// Encodes `spec` for no particular job: it never replaces an existing
    /// output. Runs on the caller's tokio runtime: downloads and uploads
    /// are async, the FFmpeg work runs on its blocking threads
    /// (`spawn_blocking`). `progress` is called on the caller's task.
    pub async fn encode(
        &self,
        spec: &EncodeSpec,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &CancellationToken,
    ) -> Result<EncodeResult, EncodeError> {
        self.encode_as(None, spec, progress, cancel).await
    }

    /// Encodes `spec` for the attempt `owner` of a job: outputs that an
    /// earlier attempt of the same job published are replaced; anything else
    /// already at an output name fails the job with
    /// [`EncodeError::OutputExists`] before any work, and is never replaced
    /// or removed later either (see [`OutputOwner`]). See
    /// [`Encoder::encode`] for where it runs.
    pub async fn encode_as(
        &self,
        owner: Option<&OutputOwner>,
        spec: &EncodeSpec,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &CancellationToken,
    ) -> Result<EncodeResult, EncodeError> {
        let opts = EncodeOptions {
            owner: owner.cloned(),
            ffmpeg_log: None,
        };
        self.encode_with(spec, &opts, progress, cancel).await
    }

    /// [`Encoder::encode_as`] with every per-encode option: the owner and
    /// where FFmpeg's messages about this encode go.
    pub async fn encode_with(
        &self,
        spec: &EncodeSpec,
        opts: &EncodeOptions,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &CancellationToken,
    ) -> Result<EncodeResult, EncodeError> {
        let names = self.inner.config.setting_names;
        self.encode_named(spec, opts, progress, cancel)
            .await
            .map(|r| names.result(r))
            .map_err(|e| names.error(e))
    }

    async fn encode_named(
        &self,
        spec: &EncodeSpec,
        opts: &EncodeOptions,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &CancellationToken,
    ) -> Result<EncodeResult, EncodeError> {
        let owner = opts.owner.as_ref();
        let config = &self.inner.config;
        spec.validate(&config.limits)?;
        if !S3Uri::is_s3(&spec.output) {
            let target = paths::open_output(&config.output_root, &spec.output)?;
            self.check_names(spec, &target, None, |name, dir| {
                target.existing(name, dir, owner).map(drop)
            })?;
            return self.encode_into(opts, spec, target, progress, cancel).await;
        }
        // Object storage: encode into a scratch directory, then upload.
        let uri = S3Uri::parse(&spec.output).map_err(|r| EncodeError::spec("output", r))?;
        let stores = self.stores_for(&uri)?;
        let scratch = tempfile::Builder::new()
            .prefix(&scratch::prefix(scratch::OUTPUT))
            .tempdir_in(&config.scratch_dir)
            .map_err(|e| {
                EncodeError::Failed(format!(
                    "cannot create an output directory in the scratch directory {}: {e}",
                    config.scratch_dir.display()
                ))
            })?;
        let target = paths::open_output(scratch.path(), uri.file_name())?;
        let names = self.check_names(spec, &target, Some(&uri), |_, _| Ok(()))?;
        let known = stores.check_owner(&uri, &names, owner, cancel).await?;
        let hls_dirs: Vec<String> = names
            .iter()
            .filter(|(_, dir)| *dir)
            .map(|(n, _)| n.clone())
            .collect();
        let session = stores.session(&uri, owner, &names, known)?;
        // HLS segments go up as FFmpeg finishes them; a failed upload stops
        // the encode through its own cancel.
        let encode_cancel = cancel.child_token();
        let (encoded, session) = match hls_dirs.first() {
            Some(dir) => {
                let early = SegmentUploads::start(
                    session,
                    scratch.path(),
                    dir,
                    encode_cancel.clone(),
                    cancel,
                );
                let encoded = self
                    .encode_into(opts, spec, target, progress, &encode_cancel)
                    .await;
                let (session, uploaded) = early.finish().await?;
                (uploaded.map_err(EncodeError::from).and(encoded), session)
            }
            None => (
                self.encode_into(opts, spec, target, progress, &encode_cancel)
                    .await,
                session,
            ),
        };
        let mut result = match encoded {
            Ok(r) => r,
            Err(e) => {
                session.remove_written().await;
                return Err(e);
            }
        };
        let mut report = |done: u64, total: u64| {
            progress(Progress {
                phase: Phase::Upload,
                bytes: done,
                frames: 0,
                percent: percent(done, total),
                fps: 0.0,
                out_time_s: 0.0,
            })
        };
        let up = session.upload(scratch.path(), &mut report, cancel).await?;
        // Report where the outputs are now, not where they were encoded.
        let remote = |p: &str| -> String {
            match std::path::Path::new(p).strip_prefix(scratch.path()) {
                Ok(rel) => format!(
                    "s3://{}/{}{}",
                    uri.bucket,
                    uri.parent_prefix(),
                    rel.to_string_lossy()
                ),
                Err(_) => p.to_owned(),
            }
        };
        for o in &mut result.outputs {
            o.path = remote(&o.path);
        }
        result.master_playlist = result.master_playlist.as_deref().map(remote);
        result.objects = up.objects;
        Ok(result)
    }

    /// [`Encoder::encode`] for a program without a tokio runtime (tools,
    /// tests): runs the encode on a runtime of its own and waits for it.
    /// Panics when called from async code; await [`Encoder::encode`] there.
    pub fn encode_blocking(
        &self,
        spec: &EncodeSpec,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &CancellationToken,
    ) -> Result<EncodeResult, EncodeError> {
        self.encode_as_blocking(None, spec, progress, cancel)
    }

    /// [`Encoder::encode_as`] for a program without a tokio runtime; see
    /// [`Encoder::encode_blocking`].
    pub fn encode_as_blocking(
        &self,
        owner: Option<&OutputOwner>,
        spec: &EncodeSpec,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &CancellationToken,
    ) -> Result<EncodeResult, EncodeError> {
        // Two threads, as a worker has at least: signing and hashing the
        // parts of an upload is CPU work that one thread would serialise.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| EncodeError::Failed(format!("cannot start a runtime: {e}")))?;
        let r = rt.block_on(self.encode_as(owner, spec, progress, cancel));
        // An abandoned blocking task (FFmpeg between two cancel checks) is
        // not waited for.
        rt.shutdown_background();
        r
    }

    /// The output files (or HLS directories) `spec` will write at `target`,
    /// each passed to `existing`. Every name the encode derives from them
    /// is checked first (the MP4's ownership marker, the HLS playlists and
    /// the last possible segment; the whole key too when `s3` is the
    /// output), so a name that cannot be written fails before any work.
    fn check_names(
        &self,
        spec: &EncodeSpec,
        target: &paths::OutputTarget,
        s3: Option<&S3Uri>,
        mut existing: impl FnMut(&str, bool) -> Result<(), EncodeError>,
    ) -> Result<Vec<(String, bool)>, EncodeError> {
        let names = pipeline::output_names(spec, target);
        let last_segment = format!(
            "seg_{:05}.ts",
            self.inner.config.limits.max_hls_segments.max(1) - 1
        );
        for (name, dir) in &names {
            let mut derived: Vec<(String, usize)> = Vec::new();
            if *dir {
                derived.push((name.clone(), paths::MAX_COMPONENT_BYTES));
                derived.push((format!("{name}/master.m3u8"), usize::MAX));
                for r in &spec.renditions {
                    let label = r.label();
                    derived.push((label.clone(), paths::MAX_COMPONENT_BYTES));
                    derived.push((format!("{name}/{label}/{last_segment}"), usize::MAX));
                }
            } else {
                derived.push((
                    name.clone(),
                    paths::MAX_COMPONENT_BYTES - paths::MARKER_OVERHEAD,
                ));
            }
            for (d, max_component) in derived {
                if !d.contains('/') && d.len() > max_component {
                    return Err(EncodeError::PathRefused {
                        path: spec.output.clone(),
                        reason: format!(
                            "the output name {d:?} is {} bytes; at most {max_component} (a file name is at most {} bytes, and spool adds its marker beside an MP4)",
                            d.len(),
                            paths::MAX_COMPONENT_BYTES
                        ),
                    });
                }
                if let Some(base) = s3 {
                    let key = format!("s3://{}/{}{d}", base.bucket, base.parent_prefix());
                    if d.contains('/') || d == *name {
                        S3Uri::parse(&key).map_err(|r| {
                            EncodeError::spec("output", format!("the derived object {d:?} {r}"))
                        })?;
                    }
                }
            }
            existing(name, *dir)?;
        }
        Ok(names)
    }

    /// The storage clients, when `uri`'s bucket is allowed.
    fn stores_for(&self, uri: &S3Uri) -> Result<&Storage, EncodeError> {
        let stores = self
            .inner
            .stores
            .as_ref()
            .ok_or_else(|| EncodeError::StorageRefused {
                uri: uri.to_string(),
                reason: "object storage is off on this worker (SPOOL_S3_BUCKETS is empty)".into(),
            })?;
        stores.check_allowed(uri)?;
        Ok(stores)
    }

    /// Fetches the input when it is remote, then runs the encode into
    /// `target` on a blocking thread, passing its progress to `progress`
    /// here.
    async fn encode_into(
        &self,
        opts: &EncodeOptions,
        spec: &EncodeSpec,
        target: paths::OutputTarget,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &CancellationToken,
    ) -> Result<EncodeResult, EncodeError> {
        // A join reads its input only to copy the audio from it: otherwise
        // an s3:// source would be downloaded whole for nothing.
        let reads_input = !matches!(spec.part, Some(spool_encode_spec::Part::Join { .. }))
            || spec.audio == Audio::Copy;
        let downloaded = match reads_input {
            true => self.fetch_source(&spec.input, progress, cancel).await?,
            false => None,
        };
        let chunks = self.fetch_chunks(spec, progress, cancel).await?;
        // The FFmpeg work stops at its next packet when this future is
        // dropped unfinished (an aborted task), not only on `cancel`.
        let work_cancel = cancel.child_token();
        let dropped = work_cancel.clone().drop_guard();
        let (this, spec, opts, cancel) = (self.clone(), spec.clone(), opts.clone(), work_cancel);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut work = tokio::task::spawn_blocking(move || {
            let _ffmpeg_log = opts.ffmpeg_log.clone().map(avlog::scope);
            let owner = opts.owner;
            let input = match (&downloaded, &chunks) {
                (Some(file), _) => this.open_downloaded(file)?,
                // A join that does not read its input: its first chunk file
                // stands in (the join opens `input` only for `audio: copy`).
                (None, Some(files)) if !reads_input => {
                    match files.chunks.first().and_then(|r| r.first()) {
                        Some(f) => this.open_chunk(f)?,
                        None => return Err(EncodeError::Failed("a join without chunks".into())),
                    }
                }
                (None, _) => paths::open_input(&this.inner.config.input_root, &spec.input)?,
            };
            let mut send = |p: Progress| {
                let _ = tx.send(p);
            };
            let chunk_inputs = match &chunks {
                None => None,
                Some(files) => Some(this.open_chunks(files)?),
            };
            let chunk_inputs = chunk_inputs
                .as_ref()
                .map(|(c, a)| (c.as_slice(), a.as_ref()));
            // The downloaded files are removed once the encode is over.
            let r = this.run_backends(
                owner.as_ref(),
                &spec,
                &input,
                chunk_inputs,
                &target,
                &mut send,
                &cancel,
            );
            drop(downloaded);
            drop(chunks);
            r
        });
        loop {
            tokio::select! {
                Some(p) = rx.recv() => progress(p),
                r = &mut work => {
                    dropped.disarm();
                    while let Ok(p) = rx.try_recv() {
                        progress(p);
                    }
                    return r.unwrap_or_else(|e| {
                        Err(EncodeError::Failed(format!("the encode thread ended abnormally: {e}")))
                    });
                }
            }
        }
    }

    /// Runs the encode of `input` into `target`, choosing the backend by
    /// the spec's hardware policy. Blocking.
    #[allow(clippy::too_many_arguments)]
    fn run_backends(
        &self,
        owner: Option<&OutputOwner>,
        spec: &EncodeSpec,
        input: &paths::InputFile,
        chunks: Option<(&[Vec<paths::InputFile>], Option<&paths::InputFile>)>,
        target: &paths::OutputTarget,
        progress: &mut dyn FnMut(Progress),
        cancel: &CancellationToken,
    ) -> Result<EncodeResult, EncodeError> {
        let inner = &*self.inner;
        let job = pipeline::Job {
            spec,
            input,
            display: &spec.input,
            target,
            owner,
            limits: &inner.config.limits,
            gpu_decode: inner.config.gpu_decode,
            gpu_found: inner.gpus.gpus.first().map(|g| g.index),
            threads: inner.config.threads,
        };
        // A join copies and an audio part encodes AAC: no video encoder.
        match (chunks, &spec.part) {
            (Some((chunks, audio)), _) => {
                return pipeline::join(&job, chunks, audio, progress, cancel);
            }
            (None, Some(spool_encode_spec::Part::Audio)) => {
                return pipeline::audio_only(&job, progress, cancel);
            }
            _ => {}
        }
        let run = |backend: Backend, reason: String, progress: &mut dyn FnMut(Progress)| {
            pipeline::run(&job, backend, reason, progress, cancel)
        };
        match spec.hardware {
            Hardware::Cpu => run(Backend::Cpu, "hardware=cpu was requested".into(), progress),
            Hardware::Nvenc => {
                if let Some(reason) = &inner.gpus.reason {
                    return Err(EncodeError::NvencUnavailable(format!(
                        "hardware=nvenc was requested but {reason}; use hardware=auto to fall back to the CPU"
                    )));
                }
                let (gpu, _slot) = inner.sessions.acquire().ok_or_else(|| {
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
                let why_not = match (&inner.gpus.reason, inner.sessions.acquire()) {
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

    /// The names of a join's chunk files under `dir`: per chunk, one per
    /// rendition in the spec's order.
    fn chunk_names(spec: &EncodeSpec, dir: &str, count: u32) -> Vec<Vec<String>> {
        let ladder = spec.renditions.len() > 1;
        (0..count)
            .map(|c| {
                let name = chunks::chunk_name(dir, c);
                spec.renditions
                    .iter()
                    .map(|r| {
                        if ladder {
                            format!("{name}_{}.mp4", r.label())
                        } else {
                            format!("{name}.mp4")
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// A join's chunk files (and the audio part's file, when there is
    /// one), where the encode can open them: under the output root, or
    /// downloaded to the scratch directory from object storage. `None` for
    /// any other encode.
    async fn fetch_chunks(
        &self,
        spec: &EncodeSpec,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &CancellationToken,
    ) -> Result<Option<JoinFiles>, EncodeError> {
        let Some(spool_encode_spec::Part::Join {
            dir, starts, audio, ..
        }) = &spec.part
        else {
            return Ok(None);
        };
        let mut chunks = Vec::new();
        for names in Self::chunk_names(spec, dir, starts.len() as u32) {
            let mut files = Vec::new();
            for name in names {
                files.push(self.fetch_chunk(name, progress, cancel).await?);
            }
            chunks.push(files);
        }
        let audio = match audio {
            true => {
                let name = format!("{}/audio.mp4", dir.trim_end_matches('/'));
                Some(self.fetch_chunk(name, progress, cancel).await?)
            }
            false => None,
        };
        Ok(Some(JoinFiles { chunks, audio }))
    }

    /// One file of a join: its name under the output root, or downloaded.
    async fn fetch_chunk(
        &self,
        name: String,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &CancellationToken,
    ) -> Result<ChunkFile, EncodeError> {
        if !S3Uri::is_s3(&name) {
            return Ok(ChunkFile::Local(name));
        }
        let uri = S3Uri::parse(&name).map_err(|r| EncodeError::spec("part.dir", r))?;
        let stores = self.stores_for(&uri)?;
        let config = &self.inner.config;
        let file = stores
            .download(
                &uri,
                &config.scratch_dir,
                config.max_input_bytes,
                &mut |done, total| {
                    progress(Progress {
                        phase: Phase::Download,
                        bytes: done,
                        frames: 0,
                        percent: percent(done, total),
                        fps: 0.0,
                        out_time_s: 0.0,
                    })
                },
                cancel,
            )
            .await
            .map_err(|e| {
                EncodeError::Failed(format!(
                    "{name} of the join cannot be read ({e}); its job must complete first"
                ))
            })?;
        Ok(ChunkFile::Downloaded(file))
    }

    /// Opens a join's files (blocking).
    fn open_chunks(&self, files: &JoinFiles) -> Result<OpenedJoin, EncodeError> {
        let open = |f: &ChunkFile| self.open_chunk(f);
        let chunks = files
            .chunks
            .iter()
            .map(|row| row.iter().map(open).collect::<Result<Vec<_>, _>>())
            .collect::<Result<Vec<_>, _>>()?;
        let audio = files.audio.as_ref().map(open).transpose()?;
        Ok((chunks, audio))
    }

    /// Opens one of a join's files (blocking).
    fn open_chunk(&self, f: &ChunkFile) -> Result<paths::InputFile, EncodeError> {
        match f {
            ChunkFile::Local(name) => paths::open_input(&self.inner.config.output_root, name)
                .map_err(|e| {
                    EncodeError::Failed(format!(
                        "a file of the join is missing ({name}: {e}); its job must complete first"
                    ))
                }),
            ChunkFile::Downloaded(file) => self.open_downloaded(file),
        }
    }

    /// Opens a file downloaded to the scratch directory as an input.
    fn open_downloaded(
        &self,
        file: &tempfile::NamedTempFile,
    ) -> Result<paths::InputFile, EncodeError> {
        paths::open_input(
            file.path()
                .parent()
                .unwrap_or(&self.inner.config.scratch_dir),
            &file.path().to_string_lossy(),
        )
    }

    /// Reads the keyframe index of `spec`'s input (a path under the input
    /// root) and plans its chunks ([`chunks::pick_starts`]). Reads every
    /// packet's header, decodes nothing.
    pub async fn plan_chunks(
        &self,
        spec: &EncodeSpec,
        cancel: &CancellationToken,
    ) -> Result<ChunkPlan, EncodeError> {
        let config = &self.inner.config;
        spec.validate(&config.limits)?;
        let Some(chunking) = spec.chunking else {
            return Err(EncodeError::spec("chunking", "is not set"));
        };
        let segment_s = match spec.container {
            Container::Hls { segment_s } => Some(segment_s),
            Container::Mp4 => None,
        };
        let downloaded = self.fetch_source(&spec.input, &mut |_| {}, cancel).await?;
        let (this, spec, cancel) = (self.clone(), spec.clone(), cancel.clone());
        tokio::task::spawn_blocking(move || {
            let config = &this.inner.config;
            let input = match &downloaded {
                Some(file) => this.open_downloaded(file)?,
                None => paths::open_input(&config.input_root, &spec.input)?,
            };
            let index = pipeline::keyframes(
                &input,
                &spec.input,
                &config.limits,
                spec.audio != Audio::None,
                &cancel,
            )?;
            let tb = f64::from(index.time_base[0]) / f64::from(index.time_base[1]);
            let starts = chunks::pick_starts(
                &index.keyframes,
                tb,
                index.end,
                chunking.target_s,
                segment_s,
            );
            Ok(ChunkPlan {
                time_base: index.time_base,
                starts,
                end: index.end,
                keyframes: index.keyframes.len(),
                video_offset: index.video_offset,
                has_audio: index.has_audio,
            })
        })
        .await
        .unwrap_or_else(|e| {
            Err(EncodeError::Failed(format!(
                "the planning thread ended abnormally: {e}"
            )))
        })
    }

    /// Removes a chunked encode's chunk directory `dir` (an output name
    /// made by [`chunks::chunk_dir`]) and everything in it; nothing when it
    /// is gone already. Refuses any other name, and a path through a
    /// symbolic link.
    pub async fn remove_chunks(&self, dir: &str) -> Result<(), EncodeError> {
        if S3Uri::is_s3(dir) {
            let uri = S3Uri::parse(dir).map_err(|r| EncodeError::spec("part.dir", r))?;
            if !uri
                .key
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .is_some_and(|p| p.starts_with("spool-chunks-"))
            {
                return Err(EncodeError::PathRefused {
                    path: dir.to_owned(),
                    reason: "not a chunk prefix (spool-chunks-…)".into(),
                });
            }
            self.stores_for(&uri)?.remove_prefix(&uri).await?;
            return Ok(());
        }
        let parts = paths::check_output_name(dir)?;
        if !parts.last().is_some_and(|p| p.starts_with("spool-chunks-")) {
            return Err(EncodeError::PathRefused {
                path: dir.to_owned(),
                reason: "not a chunk directory (spool-chunks-…)".into(),
            });
        }
        // Opened as outputs are (no component may be a symlink), removed
        // through its directory's descriptor, as a failed encode's staging
        // directory is.
        let target = paths::open_output(&self.inner.config.output_root, dir)?;
        target.remove_tree().map_err(|e| {
            EncodeError::Failed(format!(
                "cannot remove the chunks at {}: {e}",
                target.display().display()
            ))
        })
    }

    /// Downloads the input to the scratch directory when it is an `s3://`
    /// object or an http(s) URL (the file is removed when the returned
    /// value drops); `None` for a local path, refusing any other scheme.
    async fn fetch_source(
        &self,
        input: &str,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &CancellationToken,
    ) -> Result<Option<tempfile::NamedTempFile>, EncodeError> {
        let config = &self.inner.config;
        let scratch = &config.scratch_dir;
        let lower = input.to_ascii_lowercase();
        let mut report = |done: u64, total: Option<u64>| {
            progress(Progress {
                phase: Phase::Download,
                bytes: done,
                frames: 0,
                percent: total.map_or(0.0, |t| percent(done, t)),
                fps: 0.0,
                out_time_s: 0.0,
            })
        };
        if S3Uri::is_s3(input) {
            let uri = S3Uri::parse(input).map_err(|r| EncodeError::spec("input", r))?;
            let stores = self.stores_for(&uri)?;
            let file = stores
                .download(
                    &uri,
                    scratch,
                    config.max_input_bytes,
                    &mut |done, total| report(done, Some(total)),
                    cancel,
                )
                .await?;
            Ok(Some(file))
        } else if lower.starts_with("http://") || lower.starts_with("https://") {
            if !config.allow_http {
                return Err(EncodeError::PathRefused {
                    path: input.to_owned(),
                    reason: "http(s) inputs are disabled on this worker".into(),
                });
            }
            let file = fetch::download(
                input,
                &config.http,
                config.max_input_bytes,
                scratch,
                &mut report,
                cancel,
            )
            .await?;
            Ok(Some(file))
        } else if input.contains("://") || lower.starts_with("file:") {
            Err(EncodeError::PathRefused {
                path: input.to_owned(),
                reason: "only paths under the input root, s3:// objects in an allowed bucket and (when enabled) http(s) URLs are accepted"
                    .into(),
            })
        } else {
            Ok(None)
        }
    }
}

/// A join's chunk file: a name under the output root, or downloaded.
enum ChunkFile {
    Local(String),
    Downloaded(tempfile::NamedTempFile),
}

/// A join's files: per chunk, one per rendition; and the audio part's.
struct JoinFiles {
    chunks: Vec<Vec<ChunkFile>>,
    audio: Option<ChunkFile>,
}

/// [`JoinFiles`] opened.
type OpenedJoin = (Vec<Vec<paths::InputFile>>, Option<paths::InputFile>);

/// `done` of `total` as a percentage (0 when the total is unknown).
fn percent(done: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (100.0 * done as f64 / total as f64).clamp(0.0, 100.0)
    }
}
