//! What errors and results call the settings they point at. By default
//! they name the `SPOOL_*` variables of `spool-encoder-worker` ("at most
//! 7680x4320 (SPOOL_MAX_RESOLUTION)"), which is what an operator of that
//! binary sets. A program that embeds the encoder and never reads those
//! variables sets [`SettingNames::Rust`] in
//! [`EncoderConfig::setting_names`](crate::EncoderConfig::setting_names):
//! the same messages then name the fields it does set
//! (`Limits::max_width/max_height`).

/// How errors and results name settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SettingNames {
    /// `spool-encoder-worker`'s variables (`SPOOL_MAX_RESOLUTION`).
    #[default]
    Env,
    /// The Rust fields an embedding program sets (`Limits::max_width/max_height`).
    Rust,
}

/// Each variable a message may name, with the field it stands for; longer
/// names first, so no name is replaced inside a longer one.
const FIELDS: [(&str, &str); 16] = [
    ("SPOOL_MAX_ENCODE_MEMORY", "Limits::max_encode_memory"),
    ("SPOOL_MAX_HLS_SEGMENTS", "Limits::max_hls_segments"),
    ("SPOOL_HTTP_ALLOW_NETS", "HttpPolicy::allow_nets"),
    ("SPOOL_MAX_INPUT_BYTES", "EncoderConfig::max_input_bytes"),
    ("SPOOL_MAX_RESOLUTION", "Limits::max_width/max_height"),
    ("SPOOL_MAX_RENDITIONS", "Limits::max_renditions"),
    (
        "SPOOL_NVENC_SESSIONS",
        "EncoderConfig::nvenc_sessions_per_gpu",
    ),
    ("SPOOL_MAX_DURATION", "Limits::max_duration_s"),
    ("SPOOL_HTTP_TIMEOUT", "HttpPolicy::io_timeout"),
    ("SPOOL_MAX_UPSCALE", "Limits::max_upscale"),
    ("SPOOL_MAX_STREAMS", "Limits::max_streams"),
    ("SPOOL_SCRATCH_DIR", "EncoderConfig::scratch_dir"),
    ("SPOOL_GPU_DECODE", "EncoderConfig::gpu_decode"),
    ("SPOOL_PROBE_SIZE", "Limits::probe_size"),
    ("SPOOL_ALLOW_HTTP", "EncoderConfig::allow_http"),
    ("SPOOL_S3_BUCKETS", "ObjectStorage::buckets"),
];

impl SettingNames {
    /// `text` with each setting named this way.
    pub fn apply(self, text: &str) -> String {
        match self {
            SettingNames::Env => text.to_owned(),
            SettingNames::Rust => FIELDS
                .iter()
                .fold(text.to_owned(), |t, (env, field)| t.replace(env, field)),
        }
    }

    /// Renames the settings in every text of `e`.
    pub(crate) fn error(self, e: crate::EncodeError) -> crate::EncodeError {
        use crate::EncodeError as E;
        if self == SettingNames::Env {
            return e;
        }
        let n = |s: String| self.apply(&s);
        match e {
            E::InvalidSpec { field, reason } => E::InvalidSpec {
                field,
                reason: n(reason),
            },
            E::PathRefused { path, reason } => E::PathRefused {
                path,
                reason: n(reason),
            },
            E::BadInput { path, reason } => E::BadInput {
                path,
                reason: n(reason),
            },
            E::LimitExceeded { path, reason } => E::LimitExceeded {
                path,
                reason: n(reason),
            },
            E::OutputExists { path, reason } => E::OutputExists {
                path,
                reason: n(reason),
            },
            E::StorageRefused { uri, reason } => E::StorageRefused {
                uri,
                reason: n(reason),
            },
            E::StorageUnavailable { uri, reason } => E::StorageUnavailable {
                uri,
                reason: n(reason),
            },
            E::NvencUnavailable(m) => E::NvencUnavailable(n(m)),
            E::Failed(m) => E::Failed(n(m)),
            E::Ffmpeg { context, source } => E::Ffmpeg {
                context: n(context),
                source,
            },
            other => other,
        }
    }

    /// Renames the settings in the reasons a result gives.
    pub(crate) fn result(self, mut r: crate::EncodeResult) -> crate::EncodeResult {
        if self == SettingNames::Rust {
            r.backend_reason = self.apply(&r.backend_reason);
            for s in [
                &mut r.stages.decode,
                &mut r.stages.scale,
                &mut r.stages.encode,
            ] {
                s.why = self.apply(&s.why);
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_the_encoder_names_has_a_field() -> Result<(), String> {
        // Every SPOOL_* name in the crate's (and storage's) sources is in
        // the table, so a new message cannot leak a variable to an embedder.
        let roots = [
            concat!(env!("CARGO_MANIFEST_DIR"), "/src"),
            concat!(env!("CARGO_MANIFEST_DIR"), "/../storage/src"),
            concat!(env!("CARGO_MANIFEST_DIR"), "/../encode-spec/src"),
        ];
        let mut stack: Vec<std::path::PathBuf> = roots.iter().map(Into::into).collect();
        while let Some(p) = stack.pop() {
            let entries = std::fs::read_dir(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            for e in entries.flatten() {
                let path = e.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.extension().is_none_or(|x| x != "rs") || path.ends_with("naming.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
                for line in text.lines().filter(|l| {
                    let t = l.trim_start();
                    !t.starts_with("//") && !t.contains("env::var")
                }) {
                    let mut rest = line;
                    while let Some(i) = rest.find("SPOOL_") {
                        let name: String = rest[i..]
                            .chars()
                            .take_while(|c| {
                                c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_'
                            })
                            .collect();
                        rest = &rest[i + name.len()..];
                        if name == "SPOOL_UPDATE_SCHEMA" {
                            continue;
                        }
                        if !FIELDS.iter().any(|(env, _)| *env == name) {
                            return Err(format!(
                                "{} names {name}, which naming.rs does not map",
                                path.display()
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn rust_names_replace_every_variable() {
        let m = SettingNames::Rust
            .apply("at most 7680x4320 (SPOOL_MAX_RESOLUTION); SPOOL_GPU_DECODE=off");
        assert_eq!(
            m,
            "at most 7680x4320 (Limits::max_width/max_height); EncoderConfig::gpu_decode=off"
        );
        assert_eq!(
            SettingNames::Env.apply("(SPOOL_MAX_STREAMS)"),
            "(SPOOL_MAX_STREAMS)"
        );
    }
}
