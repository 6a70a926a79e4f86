//! The record decoder's fuzz check, replayed on stable over every committed input in
//! `fuzz/seeds/record_decoder/` (and the local libFuzzer corpus in
//! `fuzz/corpus/record_decoder/` when one has been grown), so a decoder change that
//! crashes on a known input fails `cargo test`, not only a fuzzing session.

#[path = "../../fuzz/checks/record_decoder.rs"]
mod record_decoder;

#[path = "../../fuzz/checks/replay.rs"]
mod replay;
use replay::{inputs, replay};

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

#[path = "../../fuzz/checks/h1_head.rs"]
mod h1_head;

#[path = "../../fuzz/checks/chunked_decoder.rs"]
mod chunked_decoder;

#[test]
fn h1_head_corpus() {
    replay("h1_head", h1_head::check);
}

#[test]
fn chunked_decoder_corpus() {
    replay("chunked_decoder", chunked_decoder::check);
}
