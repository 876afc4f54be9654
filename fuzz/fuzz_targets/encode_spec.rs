//! The encode job spec parser and validator: any bytes, no panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = spool_encoder::EncodeSpec::from_json(data, &spool_encoder::Limits::default());
});
