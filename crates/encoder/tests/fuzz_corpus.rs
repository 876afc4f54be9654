//! Replays fuzz/corpus/encode_spec through the spec parser: every saved input,
//! including past findings, must parse or be refused without a panic.

use std::path::Path;

#[test]
fn fuzz_corpus_encode_spec_parses_without_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/encode_spec");
    let mut n = 0;
    let mut valid = 0;
    for entry in std::fs::read_dir(&dir)
        .expect("fuzz/corpus/encode_spec is missing")
        .flatten()
    {
        let Ok(data) = std::fs::read(entry.path()) else {
            continue;
        };
        n += 1;
        if spool_encoder::EncodeSpec::from_json(&data, &spool_encoder::Limits::default()).is_ok() {
            valid += 1;
        }
    }
    assert!(n >= 3, "the corpus has {n} inputs");
    assert!(valid >= 2, "the valid seeds must parse");
}

/// Replays fuzz/corpus/output_name: every saved name is refused or accepted
/// with the invariants the fuzz target checks.
#[test]
fn fuzz_corpus_output_names_keep_their_invariants() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/output_name");
    let (mut n, mut accepted) = (0, 0);
    for entry in std::fs::read_dir(&dir)
        .expect("fuzz/corpus/output_name is missing")
        .flatten()
    {
        let Ok(data) = std::fs::read(entry.path()) else {
            continue;
        };
        let Ok(name) = std::str::from_utf8(&data) else {
            continue;
        };
        n += 1;
        if let Err(v) = spool_encoder::paths::output_name_invariants(name) {
            panic!("{}: {v}", entry.path().display());
        }
        accepted += usize::from(spool_encoder::paths::check_output_name(name).is_ok());
    }
    assert!(n >= 8, "the corpus has {n} inputs");
    assert!(accepted >= 2, "the plain seeds must be accepted");
}
