//! The control's side of a resumed channel on hostile input: message 1 (ticket length,
//! ticket, Noise message) as arbitrary bytes or as a tampered genuine one, and message 3
//! (the key confirmation) as arbitrary bytes.
//!
//! Nothing may panic; nothing but the genuine message 1 may be resumed, and no
//! confirmation but the client's may complete the channel. The first byte of the input
//! picks the mode, the rest is the hostile part. The ticket and the genuine message 1
//! are made once per process, the responder's ephemeral keys on every run, so modes 1
//! and 2 are not bit-for-bit reproducible.
//!
//! Shared by the libFuzzer target (`fuzz_targets/resume_responder.rs`) and the stable
//! test that replays the committed corpus (`channel/tests/fuzz_corpus.rs`).

use std::sync::LazyLock;

use leasehold_channel::Identity;
use leasehold_channel::frame::{Decoded, decode};
use leasehold_channel::handshake::{Initiator, respond_granting};
use leasehold_channel::resume::{Resuming, respond_resumed};
use leasehold_channel::resumption::{ResumptionTicket, TicketKey};
use leasehold_channel::time::Timestamp;

static CONTROL: LazyLock<Identity> = LazyLock::new(|| Identity::from_seed(&[0xC0; 32]));
static CLIENT: LazyLock<Identity> = LazyLock::new(|| Identity::from_seed(&[0x11; 32]));
static KEY: LazyLock<TicketKey> = LazyLock::new(|| TicketKey::new(&CONTROL));

/// A ticket granted by a genuine full handshake, once per process: a full handshake
/// per run would hold the target to a few hundred runs a second. It stays usable for
/// an hour, longer than a fuzzing session; the stable replay starts a process each time.
static TICKET: LazyLock<ResumptionTicket> = LazyLock::new(grant_ticket);

/// A genuine message 1 under that ticket, once per process: the responder keeps no
/// state between attempts, so the same message serves every run.
static HELLO: LazyLock<Vec<u8>> = LazyLock::new(|| Resuming::start(ticket()).expect("start").1);

fn ticket() -> &'static ResumptionTicket {
    &TICKET
}

fn grant_ticket() -> ResumptionTicket {
    let (initiator, msg1) =
        Initiator::start_asking_ticket(&CLIENT, &CONTROL.public()).expect("start");
    let (_, msg2) =
        respond_granting(&CONTROL, Some(&KEY), &msg1, Timestamp::now()).expect("respond");
    let (_, _, ticket) = initiator.finish_with_ticket(&msg2).expect("finish");
    ticket.expect("a ticket asked for is granted")
}

/// Panics if the resumption responder mishandles `data`.
pub fn check(data: &[u8]) {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => assert!(respond_resumed(&KEY, input, Timestamp::now()).is_err()),
        1 => tampered_hello(input),
        _ => garbage_confirmation(input),
    }
}

/// A genuine message 1, XORed with the input (and extended by it), is refused unless
/// the input changed nothing.
fn tampered_hello(input: &[u8]) {
    let genuine = &*HELLO;
    let mut msg1 = genuine.clone();
    for (i, byte) in input.iter().enumerate() {
        match msg1.get_mut(i) {
            Some(b) => *b ^= byte,
            None => msg1.push(*byte),
        }
    }
    let result = respond_resumed(&KEY, &msg1, Timestamp::now());
    if msg1 == *genuine {
        assert!(result.is_ok());
    } else {
        assert!(result.is_err(), "a tampered resumption was accepted");
    }
}

/// A genuine resumption up to message 2, then arbitrary bytes as the confirmation (a
/// frame body, or a whole frame when the input decodes as one).
fn garbage_confirmation(input: &[u8]) {
    let (_, msg1) = Resuming::start(ticket()).expect("start");
    let (pending, _) = respond_resumed(&KEY, &msg1, Timestamp::now()).expect("respond");
    let body = match decode(input) {
        Ok(Decoded::Frame { body, .. }) => body,
        _ => input,
    };
    assert!(pending.verify(body).is_err());
}
