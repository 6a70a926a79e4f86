//! Wall-clock times as the control and its clients exchange them: whole seconds since
//! the Unix epoch, written as RFC 3339 UTC. Here (not in the protocol crate) because the
//! membership credential, signed in this crate, carries one.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch, shown as RFC 3339 UTC.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current time, truncated to seconds.
    pub fn now() -> Self {
        Self::from_system(SystemTime::now())
    }

    /// A system time, truncated to seconds.
    pub fn from_system(time: SystemTime) -> Self {
        Self(time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
    }

    /// This time as a `SystemTime`; times past the year 9999 (which nothing valid
    /// reaches) read as its last second rather than overflowing.
    pub fn to_system(self) -> SystemTime {
        const LAST_SECOND_OF_9999: u64 = 253_402_300_799;
        UNIX_EPOCH + Duration::from_secs(self.0.min(LAST_SECOND_OF_9999))
    }

    /// This time plus `secs` seconds, saturating.
    pub fn plus_secs(self, secs: u64) -> Self {
        Self(self.0.saturating_add(secs))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_seconds(self.to_system()))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_rfc3339(&text)
            .map(Self::from_system)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_timestamp_neither_panics_nor_overflows() {
        let far = Timestamp(u64::MAX);
        assert_eq!(far.to_string(), "9999-12-31T23:59:59Z");
        assert_eq!(Timestamp(1).plus_secs(u64::MAX), far);
        assert!(serde_json::to_string(&far).is_ok());
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = Timestamp(1_800_000_000);
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2027-01-15T08:00:00Z\""
        );
        assert_eq!(
            serde_json::from_str::<Timestamp>("\"2027-01-15T08:00:00Z\"").unwrap(),
            t
        );
    }
}
