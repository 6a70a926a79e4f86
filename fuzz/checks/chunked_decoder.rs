//! What must hold when the HTTP/1 fast path's chunked decoder (`h1::chunked`) meets
//! arbitrary bytes:
//!
//! - never a panic, and every data run lies inside the input;
//! - the outcome (the data, where the body ended, or that it was refused or is
//!   incomplete) does not depend on how the bytes arrive: the whole input at once and
//!   the input in pieces (sizes picked by the first byte) agree;
//! - a body that ended re-encodes (`write_chunk_header`, `LAST_CHUNK`) to bytes that
//!   decode to the same data.
//!
//! Shared by the libFuzzer target (`fuzz_targets/chunked_decoder.rs`) and the stable
//! test that replays the committed corpus (`proxy/tests/fuzz_corpus.rs`).

use leasehold_proxy::h1::chunked::{ChunkedDecoder, Decoded, LAST_CHUNK, write_chunk_header};

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The body ended after this many input bytes.
    Ended(usize),
    Refused,
    Incomplete,
}

/// Decodes `input` fed in pieces of `step` bytes (0: all at once).
fn decode(input: &[u8], step: usize) -> (Vec<u8>, Outcome) {
    let mut decoder = ChunkedDecoder::new();
    let mut data = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let (mut fed, mut consumed) = (0, 0);
    loop {
        match decoder.decode(&pending) {
            Err(_) => return (data, Outcome::Refused),
            Ok((framing, Decoded::Data(len))) => {
                assert!(len > 0);
                assert!(framing + len <= pending.len());
                data.extend_from_slice(&pending[framing..framing + len]);
                pending.drain(..framing + len);
                consumed += framing + len;
            }
            Ok((framing, Decoded::End)) => {
                assert!(framing <= pending.len());
                assert!(decoder.is_done());
                return (data, Outcome::Ended(consumed + framing));
            }
            Ok((framing, Decoded::NeedMore)) => {
                assert_eq!(framing, pending.len(), "NeedMore leaves no byte unread");
                pending.clear();
                consumed += framing;
                if fed == input.len() {
                    return (data, Outcome::Incomplete);
                }
                let end = if step == 0 {
                    input.len()
                } else {
                    (fed + step).min(input.len())
                };
                pending.extend_from_slice(&input[fed..end]);
                fed = end;
            }
        }
    }
}

/// Panics if the chunked decoder mishandles `data`.
pub fn check(data: &[u8]) {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let (whole, outcome) = decode(input, 0);
    let step = usize::from(first % 16) + 1;
    let (pieces, piecewise) = decode(input, step);
    // Data may have been handed out before a refusal; where the outcomes agree, so must
    // the data.
    assert_eq!(outcome, piecewise, "step {step}");
    if outcome != Outcome::Refused {
        assert_eq!(whole, pieces, "step {step}");
    }
    if let Outcome::Ended(end) = outcome {
        assert!(end <= input.len());
        // Re-encoded in chunks of at most 7 bytes, it decodes to the same data.
        let mut encoded = Vec::new();
        for chunk in whole.chunks(7) {
            write_chunk_header(chunk.len(), &mut encoded);
            encoded.extend_from_slice(chunk);
            encoded.extend_from_slice(b"\r\n");
        }
        encoded.extend_from_slice(LAST_CHUNK);
        let (again, end) = decode(&encoded, 0);
        assert_eq!(again, whole);
        assert_eq!(end, Outcome::Ended(encoded.len()));
    }
}
