//! Durations as users type them: `300`, `300s`, `5m`, `1h`, `2d`.

use std::time::Duration;

/// Parses a duration. A bare number is seconds. Zero is refused: no lease, ticket or
/// interval in leasehold means anything at zero length.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 300, 300s, 5m, 1h"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "invalid duration unit {unit:?} in {text:?}: use s, m, h or d"
            ));
        }
    };
    let secs = value
        .checked_mul(scale)
        .ok_or_else(|| format!("duration {text:?} is too large"))?;
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
