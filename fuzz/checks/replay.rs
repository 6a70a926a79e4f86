//! Replays a fuzz target's check on stable over every committed input in
//! `fuzz/seeds/<target>/` (and over the local libFuzzer corpus in `fuzz/corpus/<target>/`
//! when one has been grown). Included with `#[path]` by each crate's `fuzz_corpus` test,
//! so the crates that own the decoders share one replay.

use std::path::{Path, PathBuf};

/// Every file under `fuzz/{seeds,corpus}/<target>/`; the committed seeds must exist.
pub fn inputs(target: &str) -> Vec<PathBuf> {
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
pub fn replay(target: &str, check: fn(&[u8])) {
    for path in inputs(target) {
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("{target} fails on {}", path.display());
        }
    }
}
