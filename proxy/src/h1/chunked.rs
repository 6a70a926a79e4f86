//! The `Transfer-Encoding: chunked` decoder of the HTTP/1 fast path (pure).
//!
//! A byte-at-a-time state machine over the framing, with the same grammar and limits as
//! hyper's decoder (`proto/h1/decode.rs`), so a body the fast path accepts is one hyper
//! would accept, and the message ends at the same byte: the size is hex digits (at
//! least one, overflow refused), then optional spaces or tabs, then an optional
//! extension (at most 16 KiB, no bare LF), then CRLF; the data, then CRLF; a zero size
//! ends the data, then trailer lines (at most 16 KiB and 100 lines, each CRLF-ended)
//! and a final CRLF. Bare LF is refused everywhere: where a message ends must not be
//! open to interpretation (request smuggling).
//!
//! Data is not copied: [`ChunkedDecoder::decode`] says how many bytes of the input are
//! framing and which following run is data; the caller forwards that run and calls
//! again. Extensions and trailers are read and dropped (the proxy re-frames the body;
//! hyper drops them too, since `Trailer` is a hop-by-hop header the proxy strips).

/// Most extension bytes in one chunk-size line (hyper's limit).
const EXTENSIONS_LIMIT: u64 = 16 * 1024;
/// Most trailer bytes after the last chunk (hyper's limit).
const TRAILER_LIMIT: usize = 16 * 1024;
/// Most trailer lines (hyper's default header count).
const TRAILER_LINES: usize = 100;

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// The size line is malformed (no digit, a stray byte, bare LF).
    #[error("invalid chunk size line")]
    Size,
    /// The size does not fit in 64 bits.
    #[error("invalid chunk size: overflow")]
    Overflow,
    /// The extension is too long or holds a bare LF.
    #[error("invalid chunk extension")]
    Extension,
    /// The data is not followed by CRLF.
    #[error("invalid chunk end")]
    DataEnd,
    /// The trailer section is malformed or too large.
    #[error("invalid chunked trailer")]
    Trailer,
}

/// What [`ChunkedDecoder::decode`] found after the framing bytes it consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// The next `len` bytes of the input, right after the consumed framing, are data;
    /// the caller consumes them too before calling again.
    Data(usize),
    /// All of the input was framing; more is needed.
    NeedMore,
    /// The body ended: the consumed bytes include the final CRLF. Bytes after that
    /// belong to the next message.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting the first hex digit of a size.
    Start,
    /// In the size's digits.
    Size,
    /// Spaces or tabs after the size.
    SizeLws,
    /// In an extension (`;...`).
    Extension,
    /// Expecting the LF of the size line.
    SizeLf,
    /// In the data; `remaining` bytes left.
    Data,
    /// Expecting the CR after the data.
    DataCr,
    /// Expecting the LF after the data.
    DataLf,
    /// After the last chunk's size line: a trailer line or the final CRLF.
    EndCr,
    /// In a trailer line.
    Trailer,
    /// Expecting the LF of a trailer line.
    TrailerLf,
    /// Expecting the final LF.
    EndLf,
    /// The body ended.
    Done,
}

/// The decoding state of one chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// The size being read, then the data bytes left in the current chunk.
    remaining: u64,
    extension_bytes: u64,
    trailer_bytes: usize,
    trailer_lines: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        Self {
            state: State::Start,
            remaining: 0,
            extension_bytes: 0,
            trailer_bytes: 0,
            trailer_lines: 0,
        }
    }

    /// Whether the body has ended.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads framing from the start of `input`: returns how many bytes were framing and
    /// what follows them. After [`Decoded::End`] it consumes nothing and says `End`.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Decoded), ChunkError> {
        let mut at = 0;
        loop {
            if self.state == State::Done {
                return Ok((at, Decoded::End));
            }
            if self.state == State::Data {
                let available = input.len() - at;
                if available == 0 {
                    return Ok((at, Decoded::NeedMore));
                }
                let len = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(available);
                self.remaining -= len as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                return Ok((at, Decoded::Data(len)));
            }
            let Some(&byte) = input.get(at) else {
                return Ok((at, Decoded::NeedMore));
            };
            at += 1;
            self.state = self.step(byte)?;
        }
    }

    /// One framing byte.
    fn step(&mut self, byte: u8) -> Result<State, ChunkError> {
        Ok(match self.state {
            State::Start => {
                self.remaining = 0;
                self.extension_bytes = 0;
                self.add_digit(byte).ok_or(ChunkError::Size)??;
                State::Size
            }
            State::Size => match self.add_digit(byte) {
                Some(result) => {
                    result?;
                    State::Size
                }
                None => match byte {
                    b'\t' | b' ' => State::SizeLws,
                    b';' => State::Extension,
                    b'\r' => State::SizeLf,
                    _ => return Err(ChunkError::Size),
                },
            },
            State::SizeLws => match byte {
                b'\t' | b' ' => State::SizeLws,
                b';' => State::Extension,
                b'\r' => State::SizeLf,
                _ => return Err(ChunkError::Size),
            },
            State::Extension => match byte {
                b'\r' => State::SizeLf,
                b'\n' => return Err(ChunkError::Extension),
                _ => {
                    self.extension_bytes += 1;
                    if self.extension_bytes >= EXTENSIONS_LIMIT {
                        return Err(ChunkError::Extension);
                    }
                    State::Extension
                }
            },
            State::SizeLf => match byte {
                b'\n' if self.remaining == 0 => State::EndCr,
                b'\n' => State::Data,
                _ => return Err(ChunkError::Size),
            },
            State::DataCr => match byte {
                b'\r' => State::DataLf,
                _ => return Err(ChunkError::DataEnd),
            },
            State::DataLf => match byte {
                b'\n' => State::Start,
                _ => return Err(ChunkError::DataEnd),
            },
            State::EndCr => match byte {
                b'\r' => State::EndLf,
                _ => {
                    self.trailer_byte()?;
                    State::Trailer
                }
            },
            State::Trailer => {
                self.trailer_byte()?;
                if byte == b'\r' {
                    State::TrailerLf
                } else {
                    State::Trailer
                }
            }
            State::TrailerLf => match byte {
                b'\n' => {
                    self.trailer_lines += 1;
                    if self.trailer_lines > TRAILER_LINES {
                        return Err(ChunkError::Trailer);
                    }
                    self.trailer_byte()?;
                    State::EndCr
                }
                _ => return Err(ChunkError::Trailer),
            },
            State::EndLf => match byte {
                b'\n' => State::Done,
                _ => return Err(ChunkError::Trailer),
            },
            // Handled by `decode` before a byte is taken.
            State::Data | State::Done => unreachable!("no framing byte is read in {self:?}"),
        })
    }

    /// Adds a hex digit to the size; `None` if `byte` is not one.
    fn add_digit(&mut self, byte: u8) -> Option<Result<(), ChunkError>> {
        let digit = match byte {
            b'0'..=b'9' => byte - b'0',
            b'a'..=b'f' => byte - b'a' + 10,
            b'A'..=b'F' => byte - b'A' + 10,
            _ => return None,
        };
        Some(
            self.remaining
                .checked_mul(16)
                .and_then(|size| size.checked_add(u64::from(digit)))
                .map(|size| self.remaining = size)
                .ok_or(ChunkError::Overflow),
        )
    }

    fn trailer_byte(&mut self) -> Result<(), ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > TRAILER_LIMIT {
            return Err(ChunkError::Trailer);
        }
        Ok(())
    }
}

/// Appends the chunk-size line for `len` data bytes (`{len:x}\r\n`) to `out`.
pub fn write_chunk_header(len: usize, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut n = len;
    loop {
        at -= 1;
        digits[at] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked body without trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Outcome {
        /// The body ended after this many input bytes.
        Ended(usize),
        Failed(ChunkError),
        /// The input ran out first.
        Incomplete,
    }

    /// Decodes `input` fed in pieces of `step` bytes: the data, and how it ended.
    fn decode_in_steps(input: &[u8], step: usize) -> (Vec<u8>, Outcome) {
        let mut decoder = ChunkedDecoder::new();
        let mut data = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut consumed = 0;
        loop {
            match decoder.decode(&pending) {
                Err(error) => return (data, Outcome::Failed(error)),
                Ok((framing, Decoded::Data(len))) => {
                    data.extend_from_slice(&pending[framing..framing + len]);
                    pending.drain(..framing + len);
                    consumed += framing + len;
                }
                Ok((framing, Decoded::End)) => return (data, Outcome::Ended(consumed + framing)),
                Ok((framing, Decoded::NeedMore)) => {
                    pending.drain(..framing);
                    consumed += framing;
                    if fed == input.len() {
                        return (data, Outcome::Incomplete);
                    }
                    let end = (fed + step).min(input.len());
                    pending.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers_whatever_the_split() {
        let body =
            b"5\r\nhello\r\n6;ext=1\r\n world\r\nA \t\r\n0123456789\r\n0\r\nx-t: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 1000] {
            let (data, end) = decode_in_steps(body, step);
            assert_eq!(data, b"hello world0123456789", "step {step}");
            assert_eq!(end, Outcome::Ended(body.len() - 4), "step {step}");
        }
    }

    #[test]
    fn refuses_what_hyper_refuses() {
        for bad in [
            &b"\r\n"[..],
            b"x\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"5 5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"0\r\n\r\r",
            b"0\r\nx-t: 1\rx\r\n\r\n",
        ] {
            for step in [1, 1000] {
                let (_, end) = decode_in_steps(bad, step);
                assert!(
                    matches!(end, Outcome::Failed(_)),
                    "{:?}: {end:?}",
                    String::from_utf8_lossy(bad)
                );
            }
        }
        assert_eq!(
            decode_in_steps(b"ffffffffffffffff0\r\n", 100).1,
            Outcome::Failed(ChunkError::Overflow)
        );
        assert_eq!(decode_in_steps(b"5\r\nhel", 100).1, Outcome::Incomplete);
    }

    #[test]
    fn long_extensions_and_trailers_are_refused() {
        let mut ext = b"1;".to_vec();
        ext.extend(std::iter::repeat_n(b'a', 17 * 1024));
        assert_eq!(
            decode_in_steps(&ext, 4096).1,
            Outcome::Failed(ChunkError::Extension)
        );
        let mut trailer = b"0\r\n".to_vec();
        for _ in 0..101 {
            trailer.extend_from_slice(b"a: b\r\n");
        }
        trailer.extend_from_slice(b"\r\n");
        assert_eq!(
            decode_in_steps(&trailer, 4096).1,
            Outcome::Failed(ChunkError::Trailer)
        );
    }

    #[test]
    fn chunk_headers_are_lowercase_hex() {
        for (len, text) in [(0, "0"), (5, "5"), (255, "ff"), (65536, "10000")] {
            let mut out = Vec::new();
            write_chunk_header(len, &mut out);
            assert_eq!(out, format!("{text}\r\n").as_bytes());
        }
    }
}
