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
//! - **In place, for bulk**: a message of at most [`MAX_SINGLE`] bytes can be sealed as
//!   one frame straight into the output buffer ([`Session::seal_single_with`]: the
//!   plaintext is written there and encrypted where it lies) and opened in the receive
//!   buffer ([`Session::open_in_place`]). The outlet tunnel moves InfluxDB batches this
//!   way, one copy fewer at each end than through a separate plaintext buffer.
//! - **Plaintext does not linger**: the buffers that held a decrypted chunk or a chunk
//!   about to be encrypted are zeroized after use, and a message being reassembled is
//!   never left behind in a freed allocation when it grows. After
//!   [`Session::open_in_place`] the caller owns that duty for the bytes it got.

use zeroize::Zeroize;

use crate::cipher::{CipherState, KEY_LEN, TAG_LEN};
use crate::{ChannelError, PublicIdentity, frame};

/// The largest application message, after reassembly, in either direction: the
/// **member message cap**. Every request and answer of the protocol must fit; answers
/// that could grow without bound (lists) are paged to stay under it. Kept small because
/// a control buffers up to this much per channel while a message arrives.
pub const MAX_MESSAGE: usize = 1 << 20;
/// Frames sent (or received) per key before that direction rekeys.
pub const REKEY_INTERVAL: u64 = 1024;
/// The largest message that travels as a single frame.
pub const MAX_SINGLE: usize = CHUNK_LEN;
/// What a single-frame message adds on the wire: length prefix, chunk flag, tag.
pub const FRAME_OVERHEAD: usize = frame::PREFIX_LEN + 1 + TAG_LEN;

const CHUNK_LEN: usize = frame::MAX_FRAME - TAG_LEN - 1;
const FINAL: u8 = 0;
const MORE: u8 = 1;

/// One end of an established channel.
pub struct Session {
    send: CipherState,
    recv: CipherState,
    peer: PublicIdentity,
    sent: u64,
    received: u64,
    partial: Vec<u8>,
    max_message: usize,
    broken: bool,
    scratch: Vec<u8>,
}

impl Session {
    /// A session from the two keys of the handshake's split (initiator to responder
    /// first), as seen by the initiator or the responder.
    pub(crate) fn new(
        keys: ([u8; KEY_LEN], [u8; KEY_LEN]),
        initiator: bool,
        peer: PublicIdentity,
    ) -> Self {
        let (to_responder, to_initiator) = (CipherState::new(keys.0), CipherState::new(keys.1));
        let (send, recv) = if initiator {
            (to_responder, to_initiator)
        } else {
            (to_initiator, to_responder)
        };
        Self {
            send,
            recv,
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
        // An empty message is still one (final, empty) chunk.
        loop {
            let chunk = chunks.next().unwrap_or(&[]);
            let more = chunks.peek().is_some();
            let flag = if more { MORE } else { FINAL };
            self.seal_frame(flag, chunk.len(), out, |out| out.extend_from_slice(chunk))?;
            if !more {
                return Ok(());
            }
        }
    }

    /// Appends one message of `len` bytes (at most [`MAX_SINGLE`]) to `out` as a single
    /// sealed frame: `write` appends the plaintext to `out`, exactly `len` bytes, and it
    /// is encrypted where it lies. Plaintext never stays in `out`: on any failure the
    /// frame is wiped and cut off again.
    pub fn seal_single_with(
        &mut self,
        len: usize,
        out: &mut Vec<u8>,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), ChannelError> {
        self.check()?;
        if len > MAX_SINGLE || len > MAX_MESSAGE {
            return Err(ChannelError::MessageTooLarge { max: MAX_SINGLE });
        }
        self.seal_frame(FINAL, len, out, write)
    }

    /// Appends one frame: prefix, then flag and plaintext encrypted in place, then tag.
    fn seal_frame(
        &mut self,
        flag: u8,
        len: usize,
        out: &mut Vec<u8>,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), ChannelError> {
        let start = out.len();
        let body_len = 1 + len + TAG_LEN;
        out.reserve(frame::PREFIX_LEN + body_len);
        // `body_len` is at most MAX_FRAME, which fits the 4-byte prefix.
        out.extend_from_slice(&(body_len as u32).to_be_bytes());
        out.push(flag);
        write(out);
        let plain_end = out.len();
        let sealed = if plain_end == start + frame::PREFIX_LEN + 1 + len {
            self.send
                .encrypt(&mut out[start + frame::PREFIX_LEN..plain_end])
                .map_err(|e| self.fail(e))
        } else {
            Err(ChannelError::Malformed(
                "plaintext of the wrong length".into(),
            ))
        };
        match sealed {
            Ok(tag) => {
                out.extend_from_slice(&tag);
                self.sent += 1;
                if self.sent.is_multiple_of(REKEY_INTERVAL) {
                    self.send.rekey();
                }
                Ok(())
            }
            Err(error) => {
                out[start..].zeroize();
                out.truncate(start);
                Err(error)
            }
        }
    }

    /// Decrypts one frame body. Returns the message once its last chunk has arrived.
    /// Any error leaves the session unusable: the caller must drop the connection.
    pub fn open(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, ChannelError> {
        self.check()?;
        fit(&mut self.scratch, body.len());
        self.scratch[..body.len()].copy_from_slice(body);
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = self
            .decrypt(&mut scratch[..body.len()])
            .and_then(|len| self.take_chunk(&scratch[..len]));
        scratch[..body.len()].zeroize();
        self.scratch = scratch;
        result
    }

    /// Decrypts one frame body where it lies and returns the message in it. The tunnel's
    /// messages are single frames: a chunked one is refused here. Any error leaves the
    /// session unusable. The returned bytes are plaintext: the caller zeroizes them
    /// once used.
    pub fn open_in_place<'a>(&mut self, body: &'a mut [u8]) -> Result<&'a mut [u8], ChannelError> {
        self.check()?;
        let len = self.decrypt(body)?;
        let plain = &mut body[..len];
        let Some((&mut flag, message)) = plain.split_first_mut() else {
            return Err(self.fail(ChannelError::Malformed("empty chunk".into())));
        };
        if flag != FINAL || !self.partial.is_empty() {
            message.zeroize();
            return Err(self.fail(ChannelError::Malformed(
                "a chunked message where single frames are expected".into(),
            )));
        }
        if message.len() > self.max_message {
            message.zeroize();
            return Err(self.fail(ChannelError::MessageTooLarge {
                max: self.max_message,
            }));
        }
        Ok(message)
    }

    /// Decrypts a frame body in place; the plaintext is then its first `len` bytes.
    fn decrypt(&mut self, body: &mut [u8]) -> Result<usize, ChannelError> {
        let Some(len) = body.len().checked_sub(TAG_LEN) else {
            return Err(self.fail(ChannelError::Decrypt));
        };
        let (text, tag) = body.split_at_mut(len);
        if let Err(error) = self.recv.decrypt(text, tag) {
            return Err(self.fail(error));
        }
        self.received += 1;
        if self.received.is_multiple_of(REKEY_INTERVAL) {
            self.recv.rekey();
        }
        Ok(len)
    }

    /// Appends a decrypted chunk (flag byte first) to the message being reassembled.
    fn take_chunk(&mut self, chunk: &[u8]) -> Result<Option<Vec<u8>>, ChannelError> {
        let Some((&flag, data)) = chunk.split_first() else {
            return Err(self.fail(ChannelError::Malformed("empty chunk".into())));
        };
        if flag != FINAL && flag != MORE {
            return Err(self.fail(ChannelError::Malformed("bad chunk flag".into())));
        }
        if self.partial.len() + data.len() > self.max_message {
            self.partial.zeroize();
            return Err(self.fail(ChannelError::MessageTooLarge {
                max: self.max_message,
            }));
        }
        append_zeroizing(&mut self.partial, data, self.max_message);
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

    /// A snow transport pair (initiator, responder) and, for the initiator's side, the
    /// raw keys snow split: what [`Session::new`] is built from.
    fn snow_pair() -> (
        ([u8; KEY_LEN], [u8; KEY_LEN]),
        snow::TransportState,
        snow::TransportState,
    ) {
        let params: snow::params::NoiseParams = crate::handshake::NOISE_PARAMS.parse().unwrap();
        let responder_keys = snow::Builder::new(params.clone())
            .generate_keypair()
            .unwrap();
        let initiator_keys = snow::Builder::new(params.clone())
            .generate_keypair()
            .unwrap();
        let mut initiator = snow::Builder::new(params.clone())
            .local_private_key(&initiator_keys.private)
            .and_then(|b| b.remote_public_key(&responder_keys.public))
            .and_then(|b| b.build_initiator())
            .unwrap();
        let mut responder = snow::Builder::new(params)
            .local_private_key(&responder_keys.private)
            .and_then(|b| b.build_responder())
            .unwrap();
        let (mut msg, mut payload) = (vec![0u8; 1024], vec![0u8; 1024]);
        let len = initiator.write_message(b"", &mut msg).unwrap();
        responder.read_message(&msg[..len], &mut payload).unwrap();
        let len = responder.write_message(b"", &mut msg).unwrap();
        initiator.read_message(&msg[..len], &mut payload).unwrap();
        let keys = initiator.dangerously_get_raw_split();
        (
            keys,
            initiator.into_transport_mode().unwrap(),
            responder.into_transport_mode().unwrap(),
        )
    }

    #[test]
    fn the_in_place_cipher_is_snows_transport_across_rekeys() {
        let (keys, mut snow_initiator, mut snow_responder) = snow_pair();
        let peer = crate::Identity::generate().public();
        let mut ours = Session::new(keys, true, peer);
        let mut buf = vec![0u8; frame::MAX_FRAME];
        for i in 0..(2 * REKEY_INTERVAL + 5) {
            let message = format!("message {i}").into_bytes();
            // Ours → snow (as the initiator), both message shapes.
            let mut wire = Vec::new();
            if i % 2 == 0 {
                ours.seal(&message, &mut wire).unwrap();
            } else {
                ours.seal_single_with(message.len(), &mut wire, |out| {
                    out.extend_from_slice(&message)
                })
                .unwrap();
            }
            let body = &bodies(&wire)[0];
            let len = snow_responder.read_message(body, &mut buf).unwrap();
            assert_eq!(buf[0], FINAL);
            assert_eq!(&buf[1..len], &message[..]);
            // Snow → ours (as the initiator's receiver).
            let mut plain = vec![FINAL];
            plain.extend_from_slice(&message);
            let len = snow_responder.write_message(&plain, &mut buf).unwrap();
            let mut body = buf[..len].to_vec();
            if i % 2 == 0 {
                assert_eq!(ours.open(&body).unwrap().unwrap(), message);
            } else {
                assert_eq!(ours.open_in_place(&mut body).unwrap(), &message[..]);
            }
            // Snow rekeys only when told, on the same schedule.
            if (i + 1) % REKEY_INTERVAL == 0 {
                snow_responder.rekey_incoming();
                snow_responder.rekey_outgoing();
            }
        }
        let _ = &mut snow_initiator;
    }

    #[test]
    fn single_frames_are_sealed_and_opened_in_place() {
        let (mut client, mut server) = pair();
        let data: Vec<u8> = (0..MAX_SINGLE).map(|i| i as u8).collect();
        let mut wire = Vec::new();
        client
            .seal_single_with(data.len(), &mut wire, |out| {
                out.extend_from_slice(&data[..10]);
                out.extend_from_slice(&data[10..]);
            })
            .unwrap();
        assert_eq!(wire.len(), data.len() + FRAME_OVERHEAD);
        assert_eq!(wire.len(), frame::PREFIX_LEN + frame::MAX_FRAME);
        assert!(
            !wire.windows(64).any(|w| data.windows(64).next() == Some(w)),
            "no plaintext on the wire"
        );
        let mut body = wire[frame::PREFIX_LEN..].to_vec();
        assert_eq!(server.open_in_place(&mut body).unwrap(), &data[..]);
        // One byte more does not fit a frame.
        assert!(matches!(
            client.seal_single_with(MAX_SINGLE + 1, &mut wire, |_| {}),
            Err(ChannelError::MessageTooLarge { .. })
        ));
        // A writer that lies about the length leaves nothing behind.
        let before = wire.len();
        assert!(
            client
                .seal_single_with(4, &mut wire, |out| out.extend_from_slice(b"abc"))
                .is_err()
        );
        assert_eq!(wire.len(), before);
    }

    #[test]
    fn in_place_opening_refuses_chunks_tampering_and_replay() {
        let (mut client, mut server) = pair();
        let mut wire = Vec::new();
        client.seal(&vec![3; MAX_SINGLE + 1], &mut wire).unwrap();
        let mut first = bodies(&wire).remove(0);
        assert!(matches!(
            server.open_in_place(&mut first),
            Err(ChannelError::Malformed(_))
        ));
        let (mut client, mut server) = pair();
        let mut wire = Vec::new();
        client
            .seal_single_with(5, &mut wire, |out| out.extend_from_slice(b"hello"))
            .unwrap();
        let body = bodies(&wire).remove(0);
        let mut tampered = body.clone();
        tampered[2] ^= 1;
        assert!(matches!(
            server.open_in_place(&mut tampered),
            Err(ChannelError::Decrypt)
        ));
        assert!(server.open_in_place(&mut body.clone()).is_err(), "closed");
        let (mut client, mut server) = pair();
        let mut wire = Vec::new();
        client
            .seal_single_with(5, &mut wire, |out| out.extend_from_slice(b"hello"))
            .unwrap();
        let body = bodies(&wire).remove(0);
        assert_eq!(server.open_in_place(&mut body.clone()).unwrap(), b"hello");
        assert!(matches!(
            server.open_in_place(&mut body.clone()),
            Err(ChannelError::Decrypt)
        ));
        // A lowered limit holds for single frames too.
        let (mut client, mut server) = pair();
        server.set_max_message(4);
        let mut wire = Vec::new();
        client
            .seal_single_with(5, &mut wire, |out| out.extend_from_slice(b"hello"))
            .unwrap();
        assert!(matches!(
            server.open_in_place(&mut bodies(&wire).remove(0)),
            Err(ChannelError::MessageTooLarge { max: 4 })
        ));
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
