//! Keeping a buffered point's time: a line without a timestamp gets its write's arrival
//! time, at the request's precision, before it is stored — otherwise InfluxDB would
//! give it the replay time, minutes or hours later.
//!
//! The scanner follows line protocol's own rules: in the measurement and tag section a
//! backslash escapes the next byte; in the field section a double-quoted string value
//! may hold escaped quotes, spaces and even newlines. A line's timestamp is whatever
//! follows the field section's first unquoted, unescaped space. Comment lines (`#`) and
//! blank lines are kept as they are.

use std::borrow::Cow;

/// The unit of a write's timestamps (`precision=`), as a divisor of nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Precision(u64);

impl Precision {
    /// Nanoseconds: InfluxDB's default.
    pub const NANOS: Self = Self(1);

    /// The precision named by a write's query (`None`: the default, nanoseconds), or
    /// `None` for a value InfluxDB would refuse anyway (the write is then stored as is
    /// and InfluxDB's answer on replay is what counts).
    pub fn from_query(query: Option<&str>) -> Option<Self> {
        let value = query
            .into_iter()
            .flat_map(|q| q.split(['&', ';']))
            .filter_map(|pair| pair.strip_prefix("precision="))
            .next_back();
        let Some(value) = value else {
            return Some(Self::NANOS);
        };
        let divisor = match value {
            "" | "n" | "ns" => 1,
            "u" | "us" | "%C2%B5" | "µ" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        Some(Self(divisor))
    }

    /// `ns` nanoseconds since the epoch in this unit.
    pub fn of(self, ns: u64) -> u64 {
        ns / self.0
    }
}

/// `body` with `timestamp` added to every point line that has none; borrowed when every
/// line has one already.
pub fn stamp(body: &[u8], timestamp: u64) -> Cow<'_, [u8]> {
    let mut lines = Lines { body, pos: 0 };
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let text = timestamp.to_string();
    while let Some(line) = lines.next_line() {
        if !line.needs_stamp {
            continue;
        }
        let out = out.get_or_insert_with(|| Vec::with_capacity(body.len() + 64));
        out.extend_from_slice(&body[copied..line.insert_at]);
        if !body[..line.insert_at].ends_with(b" ") {
            out.push(b' ');
        }
        out.extend_from_slice(text.as_bytes());
        copied = line.insert_at;
    }
    match out {
        None => Cow::Borrowed(body),
        Some(mut out) => {
            out.extend_from_slice(&body[copied..]);
            Cow::Owned(out)
        }
    }
}

struct Line {
    /// Where a timestamp would go: before the line's end (and any `\r`).
    insert_at: usize,
    needs_stamp: bool,
}

struct Lines<'a> {
    body: &'a [u8],
    pos: usize,
}

impl Lines<'_> {
    /// Scans the line starting at `pos`; offsets are into the whole body.
    fn next_line(&mut self) -> Option<Line> {
        let bytes = self.body;
        let start = self.pos;
        if start >= bytes.len() {
            return None;
        }
        // Sections: 0 measurement and tags, 1 fields, 2 timestamp.
        let mut section = 0;
        let mut quoted = false;
        let mut content = false;
        let mut timestamp = false;
        let comment_or_blank = match bytes[start..].iter().find(|b| !matches!(b, b' ' | b'\t')) {
            None => true,
            Some(b) => matches!(b, b'#' | b'\n' | b'\r'),
        };
        let mut i = start;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'\\' && i + 1 < bytes.len() && bytes[i + 1] != b'\n' {
                i += 2;
                content |= section == 0;
                timestamp |= section == 2;
                continue;
            }
            if quoted {
                quoted = b != b'"';
                i += 1;
                continue;
            }
            match b {
                b'\n' => break,
                b'"' if section == 1 => quoted = true,
                b' ' if section < 2 => section += 1,
                b'\r' | b' ' | b'\t' => {}
                _ if section == 2 => timestamp = true,
                _ => content = true,
            }
            i += 1;
        }
        let mut insert_at = i;
        if insert_at > start && bytes[insert_at - 1] == b'\r' {
            insert_at -= 1;
        }
        self.pos = i + 1;
        Some(Line {
            insert_at,
            needs_stamp: !comment_or_blank && content && section >= 1 && !timestamp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped(body: &str) -> String {
        String::from_utf8(stamp(body.as_bytes(), 99).into_owned()).unwrap()
    }

    #[test]
    fn lines_without_a_timestamp_get_one() {
        assert_eq!(stamped("cpu v=1\n"), "cpu v=1 99\n");
        assert_eq!(stamped("cpu v=1"), "cpu v=1 99");
        assert_eq!(stamped("cpu v=1 5\ncpu v=2\n"), "cpu v=1 5\ncpu v=2 99\n");
        assert_eq!(stamped("cpu v=1\r\n"), "cpu v=1 99\r\n");
    }

    #[test]
    fn lines_with_a_timestamp_are_borrowed() {
        assert!(matches!(stamp(b"cpu v=1 5\n", 9), Cow::Borrowed(_)));
        assert!(matches!(stamp(b"# comment\n\n", 9), Cow::Borrowed(_)));
    }

    #[test]
    fn escapes_and_quoted_strings_are_not_separators() {
        assert_eq!(
            stamped("my\\ cpu,host=a\\ b v=1\n"),
            "my\\ cpu,host=a\\ b v=1 99\n"
        );
        assert_eq!(
            stamped("log msg=\"two words\\\" 12\"\n"),
            "log msg=\"two words\\\" 12\" 99\n"
        );
        assert_eq!(
            stamped("log msg=\"line\none\" 7\nlog msg=\"x\"\n"),
            "log msg=\"line\none\" 7\nlog msg=\"x\" 99\n"
        );
    }

    #[test]
    fn precision_follows_the_query() {
        assert_eq!(Precision::from_query(None), Some(Precision::NANOS));
        let s = Precision::from_query(Some("db=x&precision=s")).unwrap();
        assert_eq!(s.of(1_600_000_000_123_456_789), 1_600_000_000);
        let ms = Precision::from_query(Some("precision=ms")).unwrap();
        assert_eq!(ms.of(1_600_000_000_123_456_789), 1_600_000_000_123);
        assert_eq!(Precision::from_query(Some("precision=weeks")), None);
    }
}
