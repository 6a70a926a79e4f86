//! The control's side of the handshake on hostile input: message 1 as arbitrary bytes
//! or as a tampered genuine message, and message 3 (the client's identity proof) as
//! arbitrary ciphertext or as arbitrary plaintext sealed under a genuine session.
//!
//! Nothing may panic, and nothing but the genuine messages may authenticate. The
//! initiator draws fresh ephemeral keys on every run (the channel crate does not expose
//! a seeded RNG), so modes 1 to 3 are not bit-for-bit reproducible; the first byte of
//! the input picks the mode, the rest is the hostile part.
//!
//! Shared by the libFuzzer target (`fuzz_targets/handshake_responder.rs`) and the
//! stable test that replays the committed corpus (`channel/tests/fuzz_corpus.rs`).

use std::sync::LazyLock;

use leasehold_channel::Identity;
use leasehold_channel::frame::{self, Decoded};
use leasehold_channel::handshake::{self, Initiator};

/// The control whose key the clients pin: fixed, so every run answers as the same peer.
static CONTROL: LazyLock<Identity> = LazyLock::new(|| Identity::from_seed(&[0xC0; 32]));
static CLIENT: LazyLock<Identity> = LazyLock::new(|| Identity::from_seed(&[0x11; 32]));

/// Panics if the responder mishandles `data` (first byte: the mode; the rest: input).
pub fn check(data: &[u8]) {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => garbage_hello(input),
        1 => tampered_hello(input),
        2 => garbage_proof(input),
        _ => forged_proof(input),
    }
}

/// Arbitrary bytes as message 1 are refused.
fn garbage_hello(input: &[u8]) {
    assert!(handshake::respond(&CONTROL, input).is_err());
}

/// A genuine message 1, XORed with the input (and extended by it past its end), is
/// refused unless the input changed nothing.
fn tampered_hello(input: &[u8]) {
    let (_, genuine) = Initiator::start(&CLIENT, &CONTROL.public()).expect("start");
    let mut msg1 = genuine.clone();
    for (i, byte) in input.iter().enumerate() {
        match msg1.get_mut(i) {
            Some(b) => *b ^= byte,
            None => msg1.push(*byte),
        }
    }
    let result = handshake::respond(&CONTROL, &msg1);
    if msg1 == genuine {
        assert!(result.is_ok());
    } else {
        assert!(result.is_err(), "a tampered message 1 was accepted");
    }
}

/// A genuine handshake up to message 2, then arbitrary bytes as the proof frame body.
fn garbage_proof(input: &[u8]) {
    let (_, msg1) = Initiator::start(&CLIENT, &CONTROL.public()).expect("start");
    let (pending, _) = handshake::respond(&CONTROL, &msg1).expect("respond");
    assert!(pending.verify(input).is_err());
}

/// A genuine handshake whose client seals the input as its proof: the encryption is
/// right, so the proof parser and signature check see arbitrary plaintext.
fn forged_proof(input: &[u8]) {
    let (initiator, msg1) = Initiator::start(&CLIENT, &CONTROL.public()).expect("start");
    let (pending, msg2) = handshake::respond(&CONTROL, &msg1).expect("respond");
    let (mut session, _genuine_proof) = initiator.finish(&msg2).expect("finish");
    let mut frames = Vec::new();
    if session.seal(input, &mut frames).is_err() {
        return;
    }
    let Ok(Decoded::Frame { body, .. }) = frame::decode(&frames) else {
        panic!("seal produced an undecodable frame");
    };
    assert!(
        pending.verify(body).is_err(),
        "an arbitrary proof authenticated the client"
    );
}
