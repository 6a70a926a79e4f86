//! The record decoder's fuzz check, replayed on stable over every committed input in
//! `fuzz/seeds/record_decoder/` (and the local libFuzzer corpus in
//! `fuzz/corpus/record_decoder/` when one has been grown), so a decoder change that
//! crashes on a known input fails `cargo test`, not only a fuzzing session.

use std::path::{Path, PathBuf};

#[path = "../../fuzz/checks/record_decoder.rs"]
mod record_decoder;

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let seeds = fuzz.join("seeds").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&seeds)
        .unwrap_or_else(|e| panic!("{}: {e}", seeds.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    assert!(!files.is_empty(), "no seeds in {}", seeds.display());
    if let Ok(corpus) = std::fs::read_dir(fuzz.join("corpus").join(target)) {
        files.extend(corpus.map(|entry| entry.unwrap().path()));
    }
    files.sort();
    files
}

fn replay(target: &str, check: fn(&[u8])) {
    for path in inputs(target) {
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("{target} fails on {}", path.display());
        }
    }
}

#[test]
fn record_decoder_corpus() {
    replay("record_decoder", record_decoder::check);
}

#[test]
fn the_seeds_include_records_the_decoder_accepts() {
    // A corpus of rejects alone would never exercise the re-encoding check.
    let accepted = inputs("record_decoder")
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).unwrap();
            leasehold_proxy::buffer::record::decode(&data).is_ok()
        })
        .count();
    assert!(accepted >= 2, "{accepted} accepted seeds");
}
