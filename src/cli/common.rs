//! Helpers several commands share: the identity a command acts as, enrolling a
//! long-running service once, and the bind error that names the flag to change. Here
//! so that command modules import helpers, never each other.

use std::net::SocketAddr;

use clap::Args;
use leasehold_channel::home::{Home, HomeError};

use super::enroll;

/// Which identity to act as.
#[derive(Debug, Args)]
pub struct AsIdentity {
    /// Local identity to act as.
    #[arg(long, default_value = "admin", value_name = "NAME")]
    pub identity: String,
}

/// Enrolls from `ticket` unless `name` is enrolled already (idempotent for containers).
pub async fn enroll_once(home: &Home, name: &str, ticket: &str) -> anyhow::Result<()> {
    match home.load_enrollment(name) {
        Ok(_) => return Ok(()),
        Err(HomeError::NotEnrolled(_)) => {}
        Err(other) => return Err(other.into()),
    }
    if !home.has_identity(name)? {
        let identity = home.create_identity(name)?;
        tracing::info!(identity = %name, id = %identity.public(), "created identity");
    }
    let ticket = enroll::read_ticket(ticket)?;
    if enroll::enroll(home, name, &ticket).await? {
        tracing::info!(identity = %name, control = %ticket.control, "enrolled");
    } else {
        tracing::info!(identity = %name, control = %ticket.control, "already a member: the ticket was not used");
    }
    Ok(())
}

/// A listener that cannot bind, said once (not "cause: cause"), with the flag that
/// moves it: on a host with its own InfluxDB, 8086 is taken.
pub fn address_in_use(addr: SocketAddr, source: &std::io::Error, flag: &str) -> anyhow::Error {
    if source.kind() == std::io::ErrorKind::AddrInUse {
        // The usual culprit for the proxy's default port.
        let hint = if addr.port() == 8086 {
            " (by a local InfluxDB on 8086?)"
        } else {
            " (by another leasehold process?)"
        };
        anyhow::anyhow!(
            "cannot listen on {addr}: the address is in use{hint}: \
             stop that process or choose another address with {flag}"
        )
    } else {
        anyhow::anyhow!("cannot listen on {addr}: {source} (choose another address with {flag})")
    }
}
