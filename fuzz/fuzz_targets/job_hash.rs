//! Job hash decoding (what `HGETALL` returns): any fields, no panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = spool_queue::fuzzing::job_hash(data);
});
