//! Replays the fuzz corpora (fuzz/corpus/job_hash, reserve_reply) through the
//! decoders: every saved input, including past findings, must decode or be
//! refused without a panic.

use std::path::Path;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

#[test]
fn fuzz_corpus_job_hash_decodes_without_panic() {
    let inputs = corpus("job_hash");
    assert!(!inputs.is_empty(), "the job_hash corpus is missing");
    let ok = inputs
        .iter()
        .filter(|i| spool_queue::fuzzing::job_hash(i).is_ok())
        .count();
    assert!(ok >= 1, "the seed of a valid hash must decode");
}

#[test]
fn fuzz_corpus_reserve_reply_decodes_without_panic() {
    let inputs = corpus("reserve_reply");
    assert!(!inputs.is_empty(), "the reserve_reply corpus is missing");
    let decoded: Vec<_> = inputs
        .iter()
        .filter_map(|i| spool_queue::fuzzing::reserve_reply(i))
        .collect();
    assert!(
        decoded
            .iter()
            .any(|jobs| jobs.len() == 1 && jobs[0].id == "abc"),
        "the seed reply must decode"
    );
}
