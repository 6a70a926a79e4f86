//! The on-disk record: one buffered write, framed so that a torn or corrupted tail is
//! recognised and never replayed as data.
//!
//! ```text
//! record  := len:u32le crc:u32le payload[len]          crc = CRC-32 of payload
//! payload := version:u8 arrival_ns:u64le target_len:u16le target body
//! ```
//!
//! `target` is the request's path and filtered query (`/write?db=x&precision=s`), never
//! a credential (see [`stored_target`]); `body` is uncompressed line protocol ending in
//! a newline, so consecutive bodies for one target can be sent as one request.

use std::borrow::Cow;

/// Bytes before the payload: length and checksum.
pub const HEADER_LEN: usize = 8;
/// The payload's version byte.
const VERSION: u8 = 1;
/// Bytes of the payload before the target.
const PAYLOAD_FIXED: usize = 1 + 8 + 2;
/// The largest payload a record may have: a bound the decoder checks before it
/// allocates, so a corrupted length cannot make it reserve gigabytes.
pub const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

/// Query parameters a buffered write keeps: where the points go and how to read them.
/// Everything else — `u`, `p`, a stray `token` — is left out, so no credential is ever
/// written to disk.
const KEPT_PARAMS: [&str; 7] = [
    "db",
    "rp",
    "precision",
    "consistency",
    "org",
    "orgID",
    "bucket",
];

/// A decoded record, borrowing from the bytes it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// When the write arrived, in nanoseconds since the Unix epoch.
    pub arrival_ns: u64,
    /// Path and filtered query.
    pub target: &'a str,
    /// Line protocol, newline-terminated.
    pub body: &'a [u8],
}

/// Why bytes are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the record needs: a torn tail, or a read that stopped early.
    #[error("incomplete record")]
    Incomplete,
    /// The length field is beyond any record this program writes.
    #[error("record length {0} is out of range")]
    TooLarge(u32),
    /// The payload does not match its checksum.
    #[error("record checksum mismatch")]
    Checksum,
    /// The checksum matched but the payload is not a record of this version.
    #[error("malformed record payload")]
    Malformed,
}

/// Appends the record for a write to `out`.
pub fn encode(out: &mut Vec<u8>, arrival_ns: u64, target: &str, body: &[u8]) {
    let target = &target.as_bytes()[..target.len().min(usize::from(u16::MAX))];
    let newline = !body.ends_with(b"\n");
    let len = PAYLOAD_FIXED + target.len() + body.len() + usize::from(newline);
    out.reserve(HEADER_LEN + len);
    let start = out.len();
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(VERSION);
    out.extend_from_slice(&arrival_ns.to_le_bytes());
    out.extend_from_slice(&u16::try_from(target.len()).unwrap_or(0).to_le_bytes());
    out.extend_from_slice(target);
    out.extend_from_slice(body);
    if newline {
        out.push(b'\n');
    }
    let crc = crc32fast::hash(&out[start + HEADER_LEN..]);
    out[start + 4..start + HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
}

/// The payload length announced by a record header, checked against [`MAX_PAYLOAD`].
pub fn payload_len(header: &[u8; HEADER_LEN]) -> Result<usize, DecodeError> {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let as_usize = usize::try_from(len).map_err(|_| DecodeError::TooLarge(len))?;
    if !(PAYLOAD_FIXED..=MAX_PAYLOAD).contains(&as_usize) {
        return Err(DecodeError::TooLarge(len));
    }
    Ok(as_usize)
}

/// Decodes the record at the start of `bytes`; returns it and its total length.
pub fn decode(bytes: &[u8]) -> Result<(Record<'_>, usize), DecodeError> {
    let header: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(DecodeError::Incomplete)?;
    let len = payload_len(header)?;
    let payload = bytes
        .get(HEADER_LEN..HEADER_LEN + len)
        .ok_or(DecodeError::Incomplete)?;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if crc32fast::hash(payload) != crc {
        return Err(DecodeError::Checksum);
    }
    Ok((decode_payload(payload)?, HEADER_LEN + len))
}

fn decode_payload(payload: &[u8]) -> Result<Record<'_>, DecodeError> {
    if payload.first() != Some(&VERSION) {
        return Err(DecodeError::Malformed);
    }
    let arrival: [u8; 8] = payload[1..9]
        .try_into()
        .map_err(|_| DecodeError::Malformed)?;
    let target_len = usize::from(u16::from_le_bytes([payload[9], payload[10]]));
    let rest = &payload[PAYLOAD_FIXED..];
    if rest.len() < target_len {
        return Err(DecodeError::Malformed);
    }
    let (target, body) = rest.split_at(target_len);
    let target = std::str::from_utf8(target).map_err(|_| DecodeError::Malformed)?;
    if !is_write_path(target.split('?').next().unwrap_or("")) {
        return Err(DecodeError::Malformed);
    }
    Ok(Record {
        arrival_ns: u64::from_le_bytes(arrival),
        target,
        body,
    })
}

/// The two line-protocol write endpoints: InfluxDB 1.x and 2.x.
pub fn is_write_path(path: &str) -> bool {
    path == "/write" || path == "/api/v2/write"
}

/// The target stored for a write to `path` with `query`: the path and only the
/// parameters in [`KEPT_PARAMS`], in their original order and spelling.
pub fn stored_target<'a>(path: &'a str, query: Option<&str>) -> Cow<'a, str> {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return Cow::Borrowed(path);
    };
    let mut out = String::with_capacity(path.len() + 1 + query.len());
    out.push_str(path);
    let mut first = true;
    for pair in query.split(['&', ';']) {
        let key = pair.split('=').next().unwrap_or("");
        if KEPT_PARAMS.contains(&key) {
            out.push(if first { '?' } else { '&' });
            out.push_str(pair);
            first = false;
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn round_trip_adds_the_final_newline() {
        let mut out = Vec::new();
        encode(&mut out, 42, "/write?db=x", b"cpu v=1 1");
        let (record, used) = decode(&out).unwrap();
        assert_eq!(used, out.len());
        assert_eq!(record.arrival_ns, 42);
        assert_eq!(record.target, "/write?db=x");
        assert_eq!(record.body, b"cpu v=1 1\n");
    }

    #[test]
    fn every_truncation_is_incomplete_and_every_bit_flip_is_caught() {
        let mut out = Vec::new();
        encode(&mut out, 7, "/api/v2/write?bucket=b", b"m f=1i\n");
        for cut in 0..out.len() {
            assert_eq!(decode(&out[..cut]).unwrap_err(), DecodeError::Incomplete);
        }
        for byte in HEADER_LEN..out.len() {
            for bit in 0..8 {
                let mut bad = out.clone();
                bad[byte] ^= 1 << bit;
                assert!(decode(&bad).is_err(), "flip at {byte}:{bit} accepted");
            }
        }
    }

    #[test]
    fn absurd_lengths_are_refused_before_allocating() {
        let mut bytes = vec![0xff; 16];
        bytes[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&bytes).unwrap_err(), DecodeError::TooLarge(u32::MAX));
    }

    #[test]
    fn credentials_never_reach_the_stored_target() {
        assert_eq!(
            stored_target("/write", Some("u=me&db=x&p=secret&precision=s")),
            "/write?db=x&precision=s"
        );
        assert_eq!(
            stored_target("/api/v2/write", Some("org=o;bucket=b&token=t")),
            "/api/v2/write?org=o&bucket=b"
        );
        assert_eq!(stored_target("/write", None), "/write");
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn round_trips(arrival in any::<u64>(), db in "[a-z]{1,8}", body in "[a-z =0-9]{0,40}\n") {
            let target = format!("/write?db={db}");
            let mut out = Vec::new();
            encode(&mut out, arrival, &target, body.as_bytes());
            let (record, used) = decode(&out).unwrap();
            prop_assert_eq!(used, out.len());
            prop_assert_eq!(record.arrival_ns, arrival);
            prop_assert_eq!(record.target, target.as_str());
            prop_assert_eq!(record.body, body.as_bytes());
        }
    }
}
