//! Output-name validation: any string, no panic, and every accepted name is a
//! plain relative path of literal components (nothing FFmpeg or a shell could
//! expand, no `..`, no hidden staging names).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Err(violation) = spool_encoder::paths::output_name_invariants(s)
    {
        panic!("{violation}");
    }
});
