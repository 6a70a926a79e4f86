//! Length-prefixed frames: a 4-byte big-endian length, then that many bytes.
//!
//! Every Noise message travels in one frame. Noise caps a message at 65,535 bytes, so
//! that is the largest frame; the prefix is 4 bytes wide so that an oversized or
//! garbage prefix is *detected* (and refused before any allocation) rather than
//! silently wrapping into a plausible length.

use crate::ChannelError;

/// Bytes in the length prefix.
pub const PREFIX_LEN: usize = 4;
/// The largest frame body: Noise's message limit.
pub const MAX_FRAME: usize = 65_535;

/// The result of looking at the start of a receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// Not enough bytes yet; `needed` more would complete the next step.
    Incomplete {
        /// How many more bytes are needed at least.
        needed: usize,
    },
    /// A whole frame: its body, and how many buffer bytes it used.
    Frame {
        /// The frame body.
        body: &'a [u8],
        /// Prefix plus body length, to consume from the buffer.
        consumed: usize,
    },
}

/// Decodes the frame at the start of `buf`, if complete. Errors on a zero or oversized
/// length before waiting for the body, so a hostile prefix costs nothing.
pub fn decode(buf: &[u8]) -> Result<Decoded<'_>, ChannelError> {
    let Some(prefix) = buf.first_chunk::<PREFIX_LEN>() else {
        return Ok(Decoded::Incomplete {
            needed: PREFIX_LEN - buf.len(),
        });
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len == 0 {
        return Err(ChannelError::EmptyFrame);
    }
    if len > MAX_FRAME {
        return Err(ChannelError::FrameTooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    let end = PREFIX_LEN + len;
    match buf.get(PREFIX_LEN..end) {
        Some(body) => Ok(Decoded::Frame {
            body,
            consumed: end,
        }),
        None => Ok(Decoded::Incomplete {
            needed: end - buf.len(),
        }),
    }
}

/// Appends `body` as one frame to `out`.
pub fn encode(body: &[u8], out: &mut Vec<u8>) -> Result<(), ChannelError> {
    if body.is_empty() {
        return Err(ChannelError::EmptyFrame);
    }
    if body.len() > MAX_FRAME {
        return Err(ChannelError::FrameTooLarge {
            len: body.len(),
            max: MAX_FRAME,
        });
    }
    out.reserve(PREFIX_LEN + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn oversized_prefix_is_refused_before_the_body_arrives() {
        let buf = u32::MAX.to_be_bytes();
        assert!(matches!(
            decode(&buf),
            Err(ChannelError::FrameTooLarge { len, .. }) if len == u32::MAX as usize
        ));
        let just_over = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(decode(&just_over).is_err());
    }

    #[test]
    fn empty_frames_are_refused() {
        assert!(matches!(
            decode(&[0, 0, 0, 0]),
            Err(ChannelError::EmptyFrame)
        ));
        assert!(encode(&[], &mut Vec::new()).is_err());
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(body in proptest::collection::vec(any::<u8>(), 1..2048)) {
            let mut buf = Vec::new();
            encode(&body, &mut buf).unwrap();
            prop_assert_eq!(decode(&buf).unwrap(), Decoded::Frame { body: &body, consumed: buf.len() });
        }

        #[test]
        fn every_strict_prefix_is_incomplete(body in proptest::collection::vec(any::<u8>(), 1..512), cut in 0usize..516) {
            let mut buf = Vec::new();
            encode(&body, &mut buf).unwrap();
            let cut = cut.min(buf.len() - 1);
            let incomplete = matches!(decode(&buf[..cut]).unwrap(), Decoded::Incomplete { needed } if needed > 0 && cut + needed <= buf.len());
            prop_assert!(incomplete);
        }

        #[test]
        fn back_to_back_frames_split_exactly(a in proptest::collection::vec(any::<u8>(), 1..300), b in proptest::collection::vec(any::<u8>(), 1..300)) {
            let mut buf = Vec::new();
            encode(&a, &mut buf).unwrap();
            encode(&b, &mut buf).unwrap();
            let Decoded::Frame { body, consumed } = decode(&buf).unwrap() else { panic!("incomplete") };
            prop_assert_eq!(body, &a[..]);
            let Decoded::Frame { body, consumed: rest } = decode(&buf[consumed..]).unwrap() else { panic!("incomplete") };
            prop_assert_eq!(body, &b[..]);
            prop_assert_eq!(consumed + rest, buf.len());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }
}
