//! `leasehold lease create|list|show|revoke`.

use std::io::IsTerminal;

use anyhow::bail;
use clap::Subcommand;
use leasehold_channel::home::Home;
use leasehold_channel::protocol::{LeaseRecord, Reply, Request, Timestamp};

use super::admin::AsIdentity;
use super::output::{self, Output};
use super::{connect, duration_secs};

/// Lease subcommands.
#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Issue a lease and print its token.
    Create {
        /// Lifetime (300, 5m, 1h); the policy default when absent.
        #[arg(long, value_parser = duration_secs, value_name = "DURATION")]
        ttl: Option<u64>,
        #[command(flatten)]
        who: AsIdentity,
    },
    /// List leases (your own; all for an admin).
    List(AsIdentity),
    /// Show one lease.
    Show {
        /// Lease id.
        id: String,
        #[command(flatten)]
        who: AsIdentity,
    },
    /// Revoke a lease now.
    Revoke {
        /// Lease id.
        id: String,
        #[command(flatten)]
        who: AsIdentity,
    },
}

fn lines(lease: &LeaseRecord) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        ("id", lease.id.clone()),
        ("issued for", lease.issued_for.to_string()),
        ("created at", lease.created_at.to_string()),
        ("expires at", lease.expires_at.to_string()),
        ("status", format!("{:?}", lease.status).to_lowercase()),
        ("endpoint", lease.endpoint_url.clone()),
    ];
    if let Some(token) = &lease.token {
        // Printing the token is what `lease create` is for (manual debugging).
        rows.push(("token", token.expose().to_owned()));
    }
    rows
}

pub async fn run(home: &Home, out: Output, cmd: LeaseCommand) -> anyhow::Result<()> {
    let (who, req) = match cmd {
        LeaseCommand::Create { ttl, who } => (who, Request::LeaseCreate { ttl_secs: ttl }),
        LeaseCommand::List(who) => (who, Request::LeaseList),
        LeaseCommand::Show { id, who } => (who, Request::LeaseShow { id }),
        LeaseCommand::Revoke { id, who } => (who, Request::LeaseRevoke { id }),
    };
    let creating = matches!(req, Request::LeaseCreate { .. });
    let reply = connect::as_identity(home, &who.identity)
        .await?
        .call(req)
        .await?;
    match (reply, out) {
        (Reply::Lease(lease), Output::Json) => output::json(&lease),
        (Reply::Lease(lease), Output::Plain) if creating && !std::io::stdout().is_terminal() => {
            // Piped: only the token, so `TOKEN=$(leasehold lease create)` works.
            let Some(token) = &lease.token else {
                bail!("the control returned no token");
            };
            say!("{}", token.expose());
        }
        (Reply::Lease(lease), Output::Plain) => {
            output::fields(&lines(&lease));
            if creating {
                let secs = lease.expires_at.0.saturating_sub(Timestamp::now().0);
                say!("\nvalid for {secs}s; revoked automatically at expiry");
            }
        }
        (Reply::Leases { leases }, Output::Json) => output::json(&leases),
        (Reply::Leases { leases }, Output::Plain) => {
            for l in leases {
                say!(
                    "{}  {:<8} {}  expires {}",
                    l.id,
                    format!("{:?}", l.status).to_lowercase(),
                    l.issued_for,
                    l.expires_at
                );
            }
        }
        _ => bail!("unexpected answer from the control"),
    }
    Ok(())
}
