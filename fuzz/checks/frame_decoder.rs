//! What must hold when `frame::decode` meets arbitrary bytes: never a panic, and
//! whatever it accepts is exactly what `frame::encode` would have produced.
//!
//! Shared by the libFuzzer target (`fuzz_targets/frame_decoder.rs`) and the stable
//! test that replays the committed corpus (`channel/tests/fuzz_corpus.rs`).

use leasehold_channel::ChannelError;
use leasehold_channel::frame::{self, Decoded, MAX_FRAME, PREFIX_LEN};

/// Panics if `frame::decode` mishandles `data`.
pub fn check(data: &[u8]) {
    let announced = data
        .first_chunk::<PREFIX_LEN>()
        .map(|prefix| u32::from_be_bytes(*prefix) as usize);
    match frame::decode(data) {
        Ok(Decoded::Frame { body, consumed }) => {
            assert_eq!(consumed, PREFIX_LEN + body.len());
            assert_eq!(announced, Some(body.len()));
            assert!(!body.is_empty() && body.len() <= MAX_FRAME);
            // The body is the bytes right after the prefix, not a copy of something else.
            assert_eq!(body, &data[PREFIX_LEN..consumed]);
            let mut reencoded = Vec::new();
            frame::encode(body, &mut reencoded).expect("a decoded body re-encodes");
            assert_eq!(reencoded, &data[..consumed]);
        }
        Ok(Decoded::Incomplete { needed }) => {
            assert!(needed > 0);
            match announced {
                // A plausible length whose body has not fully arrived.
                Some(len) => {
                    assert!((1..=MAX_FRAME).contains(&len));
                    assert_eq!(data.len() + needed, PREFIX_LEN + len);
                }
                None => assert_eq!(data.len() + needed, PREFIX_LEN),
            }
        }
        // Refused only for the two documented reasons, and from the prefix alone.
        Err(ChannelError::EmptyFrame) => assert_eq!(announced, Some(0)),
        Err(ChannelError::FrameTooLarge { len, max }) => {
            assert_eq!(announced, Some(len));
            assert_eq!(max, MAX_FRAME);
            assert!(len > MAX_FRAME);
        }
        Err(other) => panic!("unexpected decode error: {other:?}"),
    }
}
