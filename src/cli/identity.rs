//! `leasehold identity create|list|show`.

use clap::Subcommand;
use leasehold_channel::home::Home;

use super::output::{self, Output};

/// Identity subcommands.
#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Create a new Ed25519 identity (fails if NAME exists).
    Create {
        /// Local name of the identity.
        name: String,
    },
    /// List local identities.
    List,
    /// Show one identity.
    Show {
        /// Local name of the identity.
        name: String,
    },
}

#[derive(serde::Serialize)]
struct IdentityView {
    name: String,
    id: String,
    enrolled_with: Option<String>,
}

fn view(home: &Home, name: &str, id: String) -> IdentityView {
    IdentityView {
        name: name.to_owned(),
        id,
        enrolled_with: home
            .load_enrollment(name)
            .ok()
            .map(|e| e.control.to_string()),
    }
}

pub fn run(home: &Home, out: Output, cmd: IdentityCommand) -> anyhow::Result<()> {
    match cmd {
        IdentityCommand::Create { name } => {
            let identity = home.create_identity(&name)?;
            let v = view(home, &name, identity.public().to_string());
            match out {
                Output::Json => output::json(&v),
                Output::Plain => say!("{}", v.id),
            }
        }
        IdentityCommand::List => {
            let list: Vec<_> = home
                .list_identities()?
                .into_iter()
                .map(|(name, id)| view(home, &name, id.to_string()))
                .collect();
            match out {
                Output::Json => output::json(&list),
                Output::Plain if list.is_empty() => say!("no identities"),
                Output::Plain => {
                    say!("{:<20} ID", "NAME");
                    for v in list {
                        say!("{:<20} {}", v.name, v.id);
                    }
                }
            }
        }
        IdentityCommand::Show { name } => {
            let identity = home
                .load_identity(&name)
                .map_err(|e| super::connect::in_home(home, e))?;
            let v = view(home, &name, identity.public().to_string());
            match out {
                Output::Json => output::json(&v),
                Output::Plain => output::fields(&[
                    ("name", v.name),
                    ("id", v.id),
                    (
                        "enrolled with",
                        v.enrolled_with.unwrap_or_else(|| "(not enrolled)".into()),
                    ),
                ]),
            }
        }
    }
    Ok(())
}
