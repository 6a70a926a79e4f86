//! Identifiers, tokens and timestamps in the shapes InfluxDB 2.x uses: 16-hex-digit ids,
//! 88-character base64url tokens (64 random bytes, like `rand.NewTokenGenerator(64)` in
//! influxd) and RFC 3339 UTC times.

use std::time::{SystemTime, UNIX_EPOCH};

use super::wire::ApiError;

/// A fresh non-zero 64-bit id as 16 lowercase hex digits.
pub(crate) fn random_id() -> String {
    loop {
        let mut bytes = [0u8; 8];
        fill(&mut bytes);
        // The all-zero id is invalid in InfluxDB (`platform.ID` zero value).
        if bytes != [0; 8] {
            return data_encoding::HEXLOWER.encode(&bytes);
        }
    }
}

/// A fresh token: 64 random bytes, base64url with padding (88 characters, ends `==`).
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 64];
    fill(&mut bytes);
    data_encoding::BASE64URL.encode(&bytes)
}

fn fill(buf: &mut [u8]) {
    // An OS without a random source cannot run these tests at all.
    getrandom::fill(buf).expect("the OS random source failed");
}

/// Whether `s` is a valid InfluxDB id: 16 hex digits, not all zero.
pub(crate) fn is_valid_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
}

/// Checks a path or query id the way `platform.IDFromString` does, with its messages.
pub(crate) fn check_id(s: &str) -> Result<(), ApiError> {
    if s.len() != 16 {
        Err(ApiError::invalid("id must have a length of 16 bytes"))
    } else if !is_valid_id(s) {
        Err(ApiError::invalid("invalid ID"))
    } else {
        Ok(())
    }
}

/// `t` as RFC 3339 UTC with the fraction trimmed, as Go's `time.Time` marshals it.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    let nanos = since.subsec_nanos();
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ids_and_tokens_have_influxdb_shapes() {
        let id = random_id();
        assert!(is_valid_id(&id), "{id}");
        assert_eq!(id, id.to_lowercase());
        let token = random_token();
        assert_eq!(token.len(), 88);
        assert!(token.ends_with("=="));
        assert_ne!(random_token(), token);
    }

    #[test]
    fn id_checks_follow_influxd_messages() {
        assert!(check_id("0123456789abcdef").is_ok());
        assert_eq!(
            check_id("abc").unwrap_err().message,
            "id must have a length of 16 bytes"
        );
        assert_eq!(
            check_id("0123456789abcdeg").unwrap_err().message,
            "invalid ID"
        );
        assert!(check_id("0000000000000000").is_err());
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + Duration::new(951_782_400, 500_000_000);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.5Z");
        let late = UNIX_EPOCH + Duration::from_secs(1_710_979_199);
        assert_eq!(rfc3339(late), "2024-03-20T23:59:59Z");
    }
}
