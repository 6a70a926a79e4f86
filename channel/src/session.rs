//! An established channel: encrypts outgoing messages into frames and decrypts incoming
//! frames into messages. Pure: no I/O, no clock.
//!
//! - **Replay and reordering**: each direction uses Noise's implicit nonce counter, so
//!   a frame decrypts only at its exact position; a replayed, dropped-then-resent or
//!   reordered frame fails authentication and the session is closed.
//! - **Rekeying**: each side rekeys its sending key after every [`REKEY_INTERVAL`]
//!   frames and its receiving key after as many received. The schedule is fixed by the
//!   protocol, so no signalling is needed and neither side can skip it.
//! - **Messages larger than a frame** are split into chunks; the first plaintext byte
//!   says whether more follow. A message may not exceed [`MAX_MESSAGE`], and a receiver
//!   may lower its own limit ([`Session::set_max_message`]): the control lets a peer that
//!   is not a member send far less.
//! - **Plaintext does not linger**: the buffers that held a decrypted chunk or a chunk
//!   about to be encrypted are zeroized after use, and a message being reassembled is
//!   never left behind in a freed allocation when it grows.

use zeroize::{Zeroize, Zeroizing};

use crate::{ChannelError, PublicIdentity, frame};

/// The largest application message, after reassembly, in either direction: the
/// **member message cap**. Every request and answer of the protocol must fit; answers
/// that could grow without bound (lists) are paged to stay under it. Kept small because
/// a control buffers up to this much per channel while a message arrives.
pub const MAX_MESSAGE: usize = 1 << 20;
/// Frames sent (or received) per key before that direction rekeys.
pub const REKEY_INTERVAL: u64 = 1024;

const TAG_LEN: usize = 16;
const CHUNK_LEN: usize = frame::MAX_FRAME - TAG_LEN - 1;
const FINAL: u8 = 0;
const MORE: u8 = 1;

/// One end of an established channel.
pub struct Session {
    transport: snow::TransportState,
    peer: PublicIdentity,
    sent: u64,
    received: u64,
    partial: Vec<u8>,
    max_message: usize,
    broken: bool,
    scratch: Vec<u8>,
}

impl Session {
    pub(crate) fn new(transport: snow::TransportState, peer: PublicIdentity) -> Self {
        Self {
            transport,
            peer,
            sent: 0,
            received: 0,
            partial: Vec::new(),
            max_message: MAX_MESSAGE,
            broken: false,
            scratch: Vec::new(),
        }
    }

    /// The authenticated identity of the other end.
    pub fn peer(&self) -> PublicIdentity {
        self.peer
    }

    /// Lowers (or restores, up to [`MAX_MESSAGE`]) the largest message this end accepts.
    pub fn set_max_message(&mut self, max: usize) {
        self.max_message = max.min(MAX_MESSAGE);
    }

    /// Encrypts `message` and appends its frames (with length prefixes) to `out`.
    pub fn seal(&mut self, message: &[u8], out: &mut Vec<u8>) -> Result<(), ChannelError> {
        self.check()?;
        if message.len() > MAX_MESSAGE {
            return Err(ChannelError::MessageTooLarge { max: MAX_MESSAGE });
        }
        let mut chunks = message.chunks(CHUNK_LEN).peekable();
        // Holds a plaintext chunk: zeroized when dropped, whatever happens.
        let mut plain = Zeroizing::new(Vec::with_capacity(message.len().min(CHUNK_LEN) + 1));
        // An empty message is still one (final, empty) chunk.
        loop {
            let chunk = chunks.next().unwrap_or(&[]);
            let more = chunks.peek().is_some();
            plain.clear();
            plain.push(if more { MORE } else { FINAL });
            plain.extend_from_slice(chunk);
            fit(&mut self.scratch, plain.len() + TAG_LEN);
            let len = self
                .transport
                .write_message(&plain, &mut self.scratch)
                .map_err(|_| self.fail(ChannelError::Decrypt))?;
            frame::encode(&self.scratch[..len], out)?;
            self.sent += 1;
            if self.sent.is_multiple_of(REKEY_INTERVAL) {
                self.transport.rekey_outgoing();
            }
            if !more {
                return Ok(());
            }
        }
    }

    /// Decrypts one frame body. Returns the message once its last chunk has arrived.
    /// Any error leaves the session unusable: the caller must drop the connection.
    pub fn open(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, ChannelError> {
        self.check()?;
        fit(&mut self.scratch, body.len());
        let len = match self.transport.read_message(body, &mut self.scratch) {
            Ok(len) => len,
            Err(_) => return Err(self.fail(ChannelError::Decrypt)),
        };
        self.received += 1;
        if self.received.is_multiple_of(REKEY_INTERVAL) {
            self.transport.rekey_incoming();
        }
        let result = self.take_chunk(len);
        self.scratch[..len].zeroize();
        result
    }

    /// Appends the decrypted chunk in `scratch[..len]` to the message being reassembled.
    fn take_chunk(&mut self, len: usize) -> Result<Option<Vec<u8>>, ChannelError> {
        let Some(&flag) = self.scratch[..len].first() else {
            return Err(self.fail(ChannelError::Malformed("empty chunk".into())));
        };
        if flag != FINAL && flag != MORE {
            return Err(self.fail(ChannelError::Malformed("bad chunk flag".into())));
        }
        if self.partial.len() + len - 1 > self.max_message {
            self.partial.zeroize();
            return Err(self.fail(ChannelError::MessageTooLarge {
                max: self.max_message,
            }));
        }
        append_zeroizing(&mut self.partial, &self.scratch[1..len], self.max_message);
        Ok((flag == FINAL).then(|| std::mem::take(&mut self.partial)))
    }

    fn check(&self) -> Result<(), ChannelError> {
        if self.broken {
            Err(ChannelError::Closed)
        } else {
            Ok(())
        }
    }

    fn fail(&mut self, error: ChannelError) -> ChannelError {
        self.broken = true;
        error
    }
}

impl Drop for Session {
    /// A connection dropped half-way through a message leaves no plaintext behind.
    fn drop(&mut self) {
        self.partial.zeroize();
        self.scratch.zeroize();
    }
}

/// Appends `data` to `buf`. When `buf` must grow, the old allocation is zeroized before
/// it is freed instead of being left to the allocator with plaintext in it.
fn append_zeroizing(buf: &mut Vec<u8>, data: &[u8], max: usize) {
    let needed = buf.len() + data.len();
    if needed > buf.capacity() {
        let mut grown = Vec::with_capacity(needed.max((buf.capacity() * 2).min(max)));
        grown.extend_from_slice(buf);
        buf.zeroize();
        *buf = grown;
    }
    buf.extend_from_slice(data);
}

/// Grows `buf` to at least `len` bytes. The buffer is sized by the largest message a
/// session has seen rather than Noise's 64 KiB maximum: a control holds one session per
/// connected sidecar, and their messages are a few hundred bytes.
fn fit(buf: &mut Vec<u8>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Decoded, decode};
    use crate::handshake::tests::pair;

    /// Splits a buffer of frames into their bodies.
    fn bodies(mut buf: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let Decoded::Frame { body, consumed } = decode(buf).unwrap() else {
                panic!("incomplete frame")
            };
            out.push(body.to_vec());
            buf = &buf[consumed..];
        }
        out
    }

    fn deliver(from: &mut Session, to: &mut Session, message: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        from.seal(message, &mut wire).unwrap();
        let mut got = None;
        for body in bodies(&wire) {
            got = to.open(&body).unwrap();
        }
        got.expect("message complete")
    }

    #[test]
    fn messages_flow_both_ways_across_rekeys() {
        let (mut client, mut server) = pair();
        for i in 0..(3 * REKEY_INTERVAL + 7) {
            let msg = i.to_le_bytes();
            assert_eq!(deliver(&mut client, &mut server, &msg), msg);
            assert_eq!(deliver(&mut server, &mut client, &msg), msg);
        }
    }

    #[test]
    fn a_peer_that_skips_the_rekey_cannot_read_on() {
        // Proves the keys change: were rekeying removed (on either side), the frame
        // after the interval would still open with the old key.
        let (mut client, mut server) = pair();
        // (The handshake's identity proof already counts as a frame.)
        while client.sent < REKEY_INTERVAL - 1 {
            deliver(&mut client, &mut server, b"before");
        }
        assert_eq!(server.received, client.sent, "in step so far");
        // The server forgets how many frames it has read, so it will not rekey when the
        // client does (after the next frame)...
        server.received = 0;
        assert_eq!(deliver(&mut client, &mut server, b"last"), b"last");
        // ...and the first frame under the client's new key fails authentication.
        let mut wire = Vec::new();
        client.seal(b"first after rekey", &mut wire).unwrap();
        assert!(matches!(
            server.open(&bodies(&wire)[0]),
            Err(ChannelError::Decrypt)
        ));
    }

    #[test]
    fn large_messages_are_chunked_and_reassembled() {
        let (mut client, mut server) = pair();
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        assert_eq!(deliver(&mut client, &mut server, &big), big);
        assert_eq!(deliver(&mut client, &mut server, b""), b"");
        let mut sink = Vec::new();
        assert!(matches!(
            client.seal(&vec![0; MAX_MESSAGE + 1], &mut sink),
            Err(ChannelError::MessageTooLarge { .. })
        ));
    }

    #[test]
    fn a_lowered_limit_refuses_a_larger_message_and_closes_the_session() {
        let (mut client, mut server) = pair();
        server.set_max_message(64 << 10);
        assert_eq!(
            deliver(&mut client, &mut server, &[1; 64 << 10]),
            vec![1; 64 << 10]
        );
        let mut wire = Vec::new();
        client.seal(&vec![2; (64 << 10) + 1], &mut wire).unwrap();
        let results: Vec<_> = bodies(&wire).iter().map(|b| server.open(b)).collect();
        assert!(matches!(
            results[1],
            Err(ChannelError::MessageTooLarge { max }) if max == 64 << 10
        ));
        assert!(server.open(&bodies(&wire)[0]).is_err());
        // A limit is never raised past the protocol's.
        server.set_max_message(usize::MAX);
        assert_eq!(server.max_message, MAX_MESSAGE);
    }

    #[test]
    fn no_plaintext_is_left_in_the_scratch_buffer() {
        let (mut client, mut server) = pair();
        let secret = b"token-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert_eq!(deliver(&mut client, &mut server, secret), secret);
        assert!(server.scratch.iter().all(|&b| b == 0));
        let big: Vec<u8> = vec![0x5a; 3 * CHUNK_LEN];
        assert_eq!(deliver(&mut client, &mut server, &big), big);
        assert!(server.scratch.iter().all(|&b| b == 0));
        assert!(server.partial.is_empty());
    }

    #[test]
    fn tampered_frame_is_rejected() {
        let (mut client, mut server) = pair();
        let mut wire = Vec::new();
        client.seal(b"lease please", &mut wire).unwrap();
        let mut body = bodies(&wire).remove(0);
        body[3] ^= 0x40;
        assert!(matches!(server.open(&body), Err(ChannelError::Decrypt)));
        // The session is now closed for good: a correct frame does not revive it.
        assert!(server.open(&bodies(&wire)[0]).is_err());
    }

    #[test]
    fn replayed_frame_is_rejected() {
        let (mut client, mut server) = pair();
        let mut wire = Vec::new();
        client.seal(b"create lease", &mut wire).unwrap();
        let body = bodies(&wire).remove(0);
        assert_eq!(server.open(&body).unwrap().unwrap(), b"create lease");
        assert!(matches!(server.open(&body), Err(ChannelError::Decrypt)));
    }

    #[test]
    fn reordered_frames_are_rejected() {
        let (mut client, mut server) = pair();
        let (mut first, mut second) = (Vec::new(), Vec::new());
        client.seal(b"one", &mut first).unwrap();
        client.seal(b"two", &mut second).unwrap();
        assert!(matches!(
            server.open(&bodies(&second)[0]),
            Err(ChannelError::Decrypt)
        ));
    }

    #[test]
    fn frames_cannot_be_reflected_back_to_their_sender() {
        let (mut client, _server) = pair();
        let mut wire = Vec::new();
        client.seal(b"echo", &mut wire).unwrap();
        assert!(client.open(&bodies(&wire)[0]).is_err());
    }
}
