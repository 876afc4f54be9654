//! Fixtures shared by the encoder's test files: an input and an output root in
//! a temporary directory, and an encoder over them.

#![allow(dead_code)]

use std::path::PathBuf;

use anyhow::Result;
use spool_encoder::{EncodeSpec, Encoder, EncoderConfig, Limits};

/// An input root and an output root, removed with `dir`.
pub(crate) struct Roots {
    /// The temporary directory holding both.
    pub(crate) dir: tempfile::TempDir,
    /// `dir/in`.
    pub(crate) input: PathBuf,
    /// `dir/out`.
    pub(crate) output: PathBuf,
}

/// Fresh, empty roots.
pub(crate) fn roots() -> Result<Roots> {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("in");
    let output = dir.path().join("out");
    std::fs::create_dir_all(&input)?;
    std::fs::create_dir_all(&output)?;
    Ok(Roots { dir, input, output })
}

/// An encoder over `r` with `limits`.
pub(crate) fn encoder(r: &Roots, limits: Limits) -> Result<Encoder> {
    let mut cfg = EncoderConfig::new(&r.input, &r.output);
    cfg.limits = limits;
    Ok(Encoder::new(cfg)?)
}

/// Parses a spec with the default limits.
pub(crate) fn spec(json: &str) -> Result<EncodeSpec> {
    Ok(EncodeSpec::from_json(json.as_bytes(), &Limits::default())?)
}
