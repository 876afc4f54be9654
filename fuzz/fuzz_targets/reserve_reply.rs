//! The reserve script's reply (the job envelope), as RESP: no panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = spool_queue::fuzzing::reserve_reply(data);
});
