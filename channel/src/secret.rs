//! A string that must never be printed: tokens, passwords, ticket secrets.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// A secret string. `Debug` and `Display` print `<redacted>`; the bytes are zeroized on
/// drop. Serde passes the value through unchanged, because secrets do need to cross the
/// (encrypted) channel; only [`Secret::expose`] reads it in code.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value. Every call site is a place where the secret leaves the type.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

/// `value` as JSON in a buffer that is zeroized when dropped: for messages that may
/// carry a secret (a token in an answer, a ticket in a request). The buffer is sized
/// exactly first, because a `Vec` that grows while being written frees copies of what
/// it held without clearing them.
pub fn to_json_zeroizing<T: Serialize>(value: &T) -> Result<Zeroizing<Vec<u8>>, serde_json::Error> {
    let mut counter = ByteCounter(0);
    serde_json::to_writer(&mut counter, value)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(counter.0));
    serde_json::to_writer(&mut *buf, value)?;
    Ok(buf)
}

/// A writer that only counts.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_for_secrets_is_written_into_an_exactly_sized_buffer() {
        let value = serde_json::json!({"token": Secret::new("t".repeat(1000)), "n": 1});
        let buf = to_json_zeroizing(&value).unwrap();
        assert_eq!(buf.len(), buf.capacity());
        assert_eq!(*buf, serde_json::to_vec(&value).unwrap());
    }

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"hunter2\"");
    }
}
