//! Durations as users type them: `300`, `300s`, `5m`, `1h`, `2d`, and compounds of
//! those units such as `1m30s` or `1h30m` (largest unit first, each unit once).

use std::time::Duration;

/// Parses a duration. A bare number is seconds. Zero is refused: no lease, ticket or
/// interval in leasehold means anything at zero length.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let invalid = || format!("invalid duration {text:?}: expected e.g. 300, 300s, 5m, 1m30s, 1h");
    if text.is_empty() {
        return Err(invalid());
    }
    let mut rest = text;
    let mut secs: u64 = 0;
    // The scale of the previous unit: each next unit must be smaller.
    let mut previous = u64::MAX;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (digits, tail) = rest.split_at(split);
        let value: u64 = digits.parse().map_err(|_| invalid())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, after) = tail.split_at(unit_len);
        let scale = match unit {
            // A bare number is seconds, and only on its own.
            "" if digits.len() == text.len() => 1,
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "" => return Err(invalid()),
            _ => {
                return Err(format!(
                    "invalid duration unit {unit:?} in {text:?}: use s, m, h or d (e.g. 1m30s)"
                ));
            }
        };
        if scale >= previous {
            return Err(format!(
                "invalid duration {text:?}: give units largest first, each once (e.g. 1h30m)"
            ));
        }
        previous = scale;
        secs = value
            .checked_mul(scale)
            .and_then(|part| secs.checked_add(part))
            .ok_or_else(|| format!("duration {text:?} is too large"))?;
        rest = after;
    }
    if secs == 0 {
        return Err(format!("duration {text:?} must be greater than zero"));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(parse("300").unwrap().as_secs(), 300);
        assert_eq!(parse("300s").unwrap().as_secs(), 300);
        assert_eq!(parse("5m").unwrap().as_secs(), 300);
        assert_eq!(parse("1h").unwrap().as_secs(), 3600);
        assert_eq!(parse("2d").unwrap().as_secs(), 172_800);
    }

    #[test]
    fn accepts_compounds_largest_unit_first() {
        assert_eq!(parse("1m30s").unwrap().as_secs(), 90);
        assert_eq!(parse("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse("1d2h3m4s").unwrap().as_secs(), 93_784);
        assert_eq!(parse("0m30s").unwrap().as_secs(), 30);
        for bad in ["30s1m", "1m1m", "1m30", "30 s", "1m 30s", "0m0s"] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn refuses_nonsense() {
        for bad in [
            "",
            "m",
            "5 m",
            "5x",
            "-5",
            "0",
            "0s",
            "1.5h",
            "99999999999999999999",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
