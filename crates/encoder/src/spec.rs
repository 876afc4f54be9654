//! The encode job spec lives in `spool-encode-spec` (no FFmpeg there, so
//! `spoolctl` and producers use it too); re-exported here for the encoder.

pub use spool_encode_spec::{
    Audio, Codec, Container, EncodeSpec, Hardware, Limits, MAX_RENDITION_NAME, Preset, Rendition,
    SpecError,
};

impl From<SpecError> for crate::EncodeError {
    fn from(e: SpecError) -> Self {
        crate::EncodeError::InvalidSpec {
            field: e.field,
            reason: e.reason,
        }
    }
}
