//! The fuzz targets' checks, replayed on stable over every committed input in
//! `fuzz/seeds/<target>/` (and over the local libFuzzer corpus in `fuzz/corpus/<target>/`
//! when one has been grown): a decoder change that crashes on a known input fails
//! `cargo test`, not only a fuzzing session.
//!
//! A crash found by fuzzing belongs in `fuzz/seeds/<target>/` once fixed, so it stays
//! fixed.

use std::path::{Path, PathBuf};

#[path = "../../fuzz/checks/frame_decoder.rs"]
mod frame_decoder;
#[path = "../../fuzz/checks/handshake_responder.rs"]
mod handshake_responder;

/// Every file under `fuzz/{seeds,corpus}/<target>/`; the committed seeds must exist.
fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let seeds = fuzz.join("seeds").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&seeds)
        .unwrap_or_else(|e| panic!("{}: {e}", seeds.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    assert!(!files.is_empty(), "no seeds in {}", seeds.display());
    // Grown by `cargo fuzz run` and ignored by git: replayed when present.
    if let Ok(corpus) = std::fs::read_dir(fuzz.join("corpus").join(target)) {
        files.extend(corpus.map(|entry| entry.unwrap().path()));
    }
    files.sort();
    files
}

/// Runs `check` on every input of `target`, naming the input that fails.
fn replay(target: &str, check: fn(&[u8])) {
    for path in inputs(target) {
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("{target} fails on {}", path.display());
        }
    }
}

#[test]
fn frame_decoder_corpus() {
    replay("frame_decoder", frame_decoder::check);
}

#[test]
fn handshake_responder_corpus() {
    replay("handshake_responder", handshake_responder::check);
}

#[test]
fn a_check_that_is_violated_fails_the_replay() {
    // The replay is only worth something if a failing check fails it.
    let failed = std::panic::catch_unwind(|| replay("frame_decoder", |_| panic!("boom")));
    assert!(failed.is_err());
}
