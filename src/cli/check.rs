//! Checks the command line makes itself before it asks the control anything, so that the
//! exit code follows one rule: **2** for input the CLI can tell is wrong on its own (a
//! malformed id, URL, permission or privilege, a TTL above the 30-day limit), **1** for
//! whatever the control or the system refuses at run time (a TTL above a policy's
//! maximum, an unknown lease, a full live-lease cap, an unreachable InfluxDB). The checks
//! are the control's own functions, so the two never disagree on what is well formed;
//! the control still checks everything, for clients other than this one.

use leasehold_channel::Secret;
use leasehold_channel::identity::PublicIdentity;
use leasehold_control::grant::{Privilege, normalize_permissions};

use super::UsageError;

/// A member id: an identity identifier, as `member list` prints it.
pub(crate) fn member_id(text: &str) -> Result<String, String> {
    text.parse::<PublicIdentity>()
        .map(|_| text.to_owned())
        .map_err(|_| {
            format!("{text:?} is not a member id (an identity identifier, as member list shows)")
        })
}

/// A ticket id: 16 lowercase hex digits, as `ticket list` prints it.
pub(crate) fn ticket_id(text: &str) -> Result<String, String> {
    if text.len() == 16 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{:?} is not a ticket id (16 hex digits, as ticket list shows)",
            text.escape_debug().take(40).collect::<String>()
        ))
    }
}

/// An InfluxDB base URL: `http(s)://host[:port]`.
pub(crate) fn endpoint_url(text: &str) -> Result<String, String> {
    match reqwest::Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(text.to_owned())
        }
        _ => Err(format!("{text:?}: expected http(s)://host[:port]")),
    }
}

/// An InfluxDB 2 organization id: 16 hex digits.
pub(crate) fn org_id(text: &str) -> Result<String, String> {
    if text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?}: expected 16 hex digits (influx org list)"
        ))
    }
}

/// An InfluxQL privilege, e.g. `WRITE ON "telemetry"`.
pub(crate) fn privilege(text: &str) -> Result<String, String> {
    Privilege::parse(text)
        .map(|_| text.to_owned())
        .map_err(|e| e.to_string())
}

/// v2 permissions: valid JSON that the control would accept. `org_id` fills in
/// resources that name none; a policy checks with a placeholder, since only the field
/// names and values matter here.
pub(crate) fn permissions(text: &str, org_id: &str) -> anyhow::Result<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| UsageError(format!("--permissions is not valid JSON: {e}")))?;
    normalize_permissions(&value, org_id).map_err(|e| UsageError(format!("--permissions: {e}")))?;
    Ok(value)
}

/// The admin token must be sendable as a header value.
pub(crate) fn admin_token(token: &Secret) -> anyhow::Result<()> {
    if token.is_empty() {
        return Err(UsageError("the admin token is empty".into()).into());
    }
    if !leasehold_control::backend::is_valid_token(token) {
        return Err(UsageError(leasehold_control::backend::INVALID_TOKEN_MESSAGE.into()).into());
    }
    Ok(())
}

/// A default TTL above the maximum can never be honoured.
pub(crate) fn ttls(default: Option<u64>, max: Option<u64>) -> anyhow::Result<()> {
    if let (Some(default), Some(max)) = (default, max)
        && default > max
    {
        return Err(
            UsageError(format!("--default-ttl {default}s exceeds --max-ttl {max}s")).into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_urls_and_grants_are_checked_locally() {
        assert!(ticket_id("0123456789abcdef").is_ok());
        assert!(ticket_id("not-an-id").is_err());
        assert!(member_id("nonsense").is_err());
        assert!(endpoint_url("https://influx.example:8086").is_ok());
        assert!(endpoint_url("influx.example:8086").is_err());
        assert!(org_id("0123456789abcdef").is_ok());
        assert!(org_id("my-org").is_err());
        assert!(privilege(r#"WRITE ON "telemetry""#).is_ok());
        assert!(privilege("DROP EVERYTHING").is_err());
        assert!(permissions("[{]", "0123456789abcdef").is_err());
        assert!(ttls(Some(600), Some(300)).is_err());
        assert!(ttls(Some(300), Some(600)).is_ok());
    }
}
