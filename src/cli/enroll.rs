//! `leasehold enroll TICKET_FILE|- --identity NAME`.

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use clap::Args;
use leasehold_channel::home::{Enrollment, Home};
use leasehold_channel::ticket::{Ticket, encode_secret};
use leasehold_protocol::client::{Client, ClientError};
use leasehold_protocol::{ErrorCode, Reply, Request};

use super::UsageError;
use super::output::{self, Output};

/// `enroll` flags.
#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// File holding the ticket line, or `-` for stdin.
    pub ticket: String,
    /// Local identity to enroll.
    #[arg(long, value_name = "NAME")]
    pub identity: String,
}

/// Reads a ticket from a file or stdin.
pub fn read_ticket(source: &str) -> anyhow::Result<Ticket> {
    let mut text = String::new();
    if source == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the ticket from stdin")?;
    } else {
        text = std::fs::read_to_string(Path::new(source))
            .with_context(|| format!("reading the ticket file {source}"))?;
    }
    text.parse::<Ticket>()
        .map_err(|e| UsageError(format!("{source}: {e}")).into())
}

/// Redeems `ticket` for identity `name` and records the enrollment. An identity the
/// control already knows is recorded as enrolled without spending the ticket: returns
/// whether the ticket was used.
pub async fn enroll(home: &Home, name: &str, ticket: &Ticket) -> anyhow::Result<bool> {
    let identity = home
        .load_identity(name)
        .map_err(|e| super::connect::in_home(home, e))?;
    let mut client = Client::connect_to(&ticket.addrs, &ticket.control, &identity)
        .await
        .context("connecting to the control named in the ticket")?;
    let req = Request::Enroll {
        secret: encode_secret(&ticket.secret),
        name: name.to_owned(),
    };
    let used = match client.call(req).await {
        Ok(Reply::Member(_)) => true,
        Err(ClientError::Remote(e)) if e.code == ErrorCode::Conflict => false,
        Ok(_) => anyhow::bail!("unexpected answer from the control"),
        Err(e) => return Err(e.into()),
    };
    home.save_enrollment(
        name,
        &Enrollment {
            addrs: ticket.addrs.clone(),
            control: ticket.control,
        },
    )?;
    Ok(used)
}

pub async fn run(home: &Home, out: Output, args: EnrollArgs) -> anyhow::Result<()> {
    let ticket = read_ticket(&args.ticket)?;
    let used = enroll(home, &args.identity, &ticket).await?;
    match out {
        Output::Json => output::json(&serde_json::json!({
            "identity": args.identity,
            "control": ticket.control.to_string(),
            "addrs": ticket.addrs,
            "ticket_used": used,
        })),
        Output::Plain if used => {
            say!("enrolled {} with control {}", args.identity, ticket.control)
        }
        // Not "enrolled": the ticket's attributes were not applied, and the operator
        // who expected them should know (delete the member first to re-enroll).
        Output::Plain => say!(
            "{} is already a member of control {}: the ticket was not used and the \
             member's attributes are unchanged (to apply new ones, an admin deletes the \
             member, allows it, and issues a new ticket)",
            args.identity,
            ticket.control
        ),
    }
    Ok(())
}
