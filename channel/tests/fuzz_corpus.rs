//! The fuzz targets' checks, replayed on stable over every committed input in
//! `fuzz/seeds/<target>/` (and over the local libFuzzer corpus in `fuzz/corpus/<target>/`
//! when one has been grown): a decoder change that crashes on a known input fails
//! `cargo test`, not only a fuzzing session.
//!
//! A crash found by fuzzing belongs in `fuzz/seeds/<target>/` once fixed, so it stays
//! fixed.

#[path = "../../fuzz/checks/frame_decoder.rs"]
mod frame_decoder;
#[path = "../../fuzz/checks/handshake_responder.rs"]
mod handshake_responder;
#[path = "../../fuzz/checks/resume_responder.rs"]
mod resume_responder;

#[path = "../../fuzz/checks/replay.rs"]
mod replay;
use replay::replay;

#[test]
fn frame_decoder_corpus() {
    replay("frame_decoder", frame_decoder::check);
}

#[test]
fn handshake_responder_corpus() {
    replay("handshake_responder", handshake_responder::check);
}

#[test]
fn resume_responder_corpus() {
    replay("resume_responder", resume_responder::check);
}

#[test]
fn a_check_that_is_violated_fails_the_replay() {
    // The replay is only worth something if a failing check fails it.
    let failed = std::panic::catch_unwind(|| replay("frame_decoder", |_| panic!("boom")));
    assert!(failed.is_err());
}
