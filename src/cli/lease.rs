//! `leasehold lease create|list|show|revoke`.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use leasehold_channel::home::Home;
use leasehold_protocol::client::{Client, ClientError};
use leasehold_protocol::{
    ErrorCode, LEASE_PAGE_MAX, LeaseRecord, LeaseStatus, Reply, Request, Timestamp,
};

use super::common::AsIdentity;
use super::output::{self, Output};
use super::{connect, ttl_secs};

/// Lease subcommands.
#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Issue a lease and print its token.
    Create {
        /// Lifetime (300, 5m, 1m30s, 1h; at most 30d) [default: the policy's].
        #[arg(long, value_parser = ttl_secs, value_name = "DURATION")]
        ttl: Option<u64>,
        #[command(flatten)]
        who: AsIdentity,
    },
    /// List leases (your own; all for an admin), oldest first.
    List(ListArgs),
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

/// `lease list` flags.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only leases in this state.
    #[arg(long, value_enum, value_name = "STATUS")]
    status: Option<StatusArg>,
    /// Only this member's leases (an identity identifier; admin for anyone but you).
    #[arg(long, value_name = "ID", value_parser = super::check::member_id)]
    member: Option<String>,
    /// At most this many leases.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    #[command(flatten)]
    who: AsIdentity,
}

/// A lease state to filter on.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum StatusArg {
    Active,
    Expired,
    Revoked,
}

impl From<StatusArg> for LeaseStatus {
    fn from(status: StatusArg) -> Self {
        match status {
            StatusArg::Active => LeaseStatus::Active,
            StatusArg::Expired => LeaseStatus::Expired,
            StatusArg::Revoked => LeaseStatus::Revoked,
        }
    }
}

/// Lists leases page by page (the control answers at most [`LEASE_PAGE_MAX`] at a
/// time, so no answer outgrows a message), handing each page to `each`.
async fn list_pages(
    client: &mut Client,
    args: &ListArgs,
    mut each: impl FnMut(Vec<LeaseRecord>),
) -> anyhow::Result<()> {
    let mut left = args.limit.unwrap_or(u64::MAX);
    let mut after = None;
    while left > 0 {
        let limit = u32::try_from(left.min(u64::from(LEASE_PAGE_MAX))).unwrap_or(LEASE_PAGE_MAX);
        let request = Request::LeasePage {
            status: args.status.map(Into::into),
            member: args.member.clone(),
            after: after.take(),
            limit,
        };
        let Reply::LeasePage { leases, next } = client.call(request).await? else {
            bail!("unexpected answer from the control");
        };
        left = left.saturating_sub(leases.len() as u64);
        each(leases);
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(())
}

/// The header of `lease list`'s table.
fn list_header() {
    say!(
        "{:<16}  {:<8} {:<20} {:<52}  EXPIRES",
        "ID",
        "STATUS",
        "MEMBER",
        "MEMBER ID"
    );
}

/// One row: the member's name (when the caller may list members) beside its id.
fn list_line(l: &LeaseRecord, names: &BTreeMap<String, String>) {
    let id = l.issued_for.to_string();
    let name = names.get(&id).map_or("-", String::as_str);
    say!(
        "{:<16}  {:<8} {:<20} {:<52}  {}",
        l.id,
        format!("{:?}", l.status).to_lowercase(),
        name,
        id,
        l.expires_at
    );
}

/// Member names by id: every member's for an admin; a member sees only itself.
async fn member_names(client: &mut Client, home: &Home, who: &str) -> BTreeMap<String, String> {
    match client.call(Request::MemberList).await {
        Ok(Reply::Members { members, .. }) => members
            .into_iter()
            .map(|m| (m.id.to_string(), m.name.escape_debug().to_string()))
            .collect(),
        _ => BTreeMap::from([(connect::client_identity(home, who), who.to_owned())]),
    }
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
        LeaseCommand::List(args) => {
            let mut client = connect::as_identity(home, &args.who.identity).await?;
            match out {
                Output::Json => {
                    let mut all = Vec::new();
                    list_pages(&mut client, &args, |page| all.extend(page)).await?;
                    output::json(&all);
                }
                Output::Plain => {
                    let names = member_names(&mut client, home, &args.who.identity).await;
                    let mut count = 0usize;
                    list_pages(&mut client, &args, |page| {
                        if count == 0 && !page.is_empty() {
                            list_header();
                        }
                        count += page.len();
                        page.iter().for_each(|l| list_line(l, &names));
                    })
                    .await?;
                    if count == 0 {
                        say!("no leases");
                    }
                }
            }
            return Ok(());
        }
        LeaseCommand::Show { id, who } => (who, Request::LeaseShow { id }),
        LeaseCommand::Revoke { id, who } => (who, Request::LeaseRevoke { id }),
    };
    let creating = matches!(req, Request::LeaseCreate { .. });
    let lease_id = match &req {
        Request::LeaseShow { id } | Request::LeaseRevoke { id } => Some(id.clone()),
        _ => None,
    };
    let reply = match req {
        // Worth repeating on another replica if the first cannot issue right now.
        Request::LeaseCreate { ttl_secs } => {
            connect::call_any_replica(home, &who.identity, || Request::LeaseCreate { ttl_secs })
                .await
        }
        req => connect::call(home, &who.identity, req).await,
    };
    let reply = reply.map_err(|e| {
        match (lease_id, e.downcast_ref::<ClientError>()) {
            // Echo the id: with several leases at hand, which one was not found matters.
            (Some(id), Some(ClientError::Remote(w))) if w.code == ErrorCode::NotFound => {
                e.context(format!(
                    "lease {id} (as {:?}; lease list shows the leases you can see)",
                    who.identity
                ))
            }
            _ => e,
        }
    })?;
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
        _ => bail!("unexpected answer from the control"),
    }
    Ok(())
}
