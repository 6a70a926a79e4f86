//! Admin subcommands: `addon`, `policy`, `ticket`, `member`. Each acts as the identity
//! `admin` unless `--identity` names another admin.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::{Args, Subcommand};
use leasehold_channel::Secret;
use leasehold_channel::home::Home;
use leasehold_protocol::{
    AddonConfig, DeniedIdentity, Grant, MemberRecord, PolicyRecord, PolicySpec, Reply, Request,
    TicketInfo,
};

use super::common::AsIdentity;
use super::output::{self, Output};
use super::{UsageError, check, connect, duration_secs, key_value, ttl_secs};

/// `addon` subcommands.
#[derive(Debug, Subcommand)]
pub enum AddonCommand {
    /// Configure the add-on.
    #[command(subcommand)]
    Configure(AddonKind),
}

/// The add-on backends.
#[derive(Debug, Subcommand)]
pub enum AddonKind {
    /// InfluxDB 2.x / Cloud: leases are authorizations.
    Influxdb(V2Args),
    /// InfluxDB 1.x: leases are dynamic users.
    #[command(name = "influxdb-v1")]
    InfluxdbV1(V1Args),
}

/// Lifetimes and limits shared by the add-on and policies.
#[derive(Debug, Args)]
pub struct TtlArgs {
    /// Lease lifetime when none is requested (300, 5m, 1m30s) [default: 5m (at most the
    /// max) for the add-on; the add-on's for a policy].
    #[arg(long, value_parser = ttl_secs, value_name = "DURATION")]
    pub default_ttl: Option<u64>,
    /// Longest lease lifetime; longer requests are refused; at most 30d [default: 1h
    /// for the add-on; the add-on's for a policy].
    #[arg(long, value_parser = ttl_secs, value_name = "DURATION")]
    pub max_ttl: Option<u64>,
    /// Most live leases one member may hold at once [control default: 8].
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32)
            .range(1..=i64::from(leasehold_control::policy::MAX_LIVE_LEASES_LIMIT))
    )]
    pub max_live_leases: Option<u32>,
}

/// How the control checks and reaches InfluxDB (both add-ons).
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// PEM CA certificate(s) the control trusts for a TLS endpoint, besides the system
    /// roots; stored with the add-on, so every replica of the control uses them.
    #[arg(long, env = "INFLUXDB_CA_FILE", value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Install the settings without first checking them against InfluxDB (that it
    /// answers, speaks this add-on's API and accepts the admin credential).
    #[arg(long)]
    pub skip_verify: bool,
}

impl VerifyArgs {
    /// The CA file's certificates as PEM text; a file that cannot be read or holds no
    /// certificate is a usage error.
    fn ca_pem(&self) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.ca_file else {
            return Ok(None);
        };
        let pem = std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("cannot read --ca-file {}: {e}", path.display())))?;
        leasehold_control::backend::parse_ca_pem(&pem)
            .map_err(|e| UsageError(format!("--ca-file {}: {e}", path.display())))?;
        Ok(Some(pem))
    }
}

/// `addon configure influxdb` flags.
#[derive(Debug, Args)]
pub struct V2Args {
    /// InfluxDB base URL.
    #[arg(long, env = "INFLUXDB_ENDPOINT_URL", value_name = "URL")]
    pub endpoint_url: String,
    /// Admin (operator or all-access) token.
    #[arg(
        long,
        env = "INFLUXDB_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: String,
    /// Organization id leases are created in.
    #[arg(long, env = "INFLUXDB_ORG_ID", value_name = "ID")]
    pub org_id: String,
    /// Default permissions, a JSON array as in the v2 API.
    #[arg(long, env = "INFLUXDB_LEASE_PERMISSIONS", value_name = "JSON")]
    pub permissions: String,
    #[command(flatten)]
    pub ttl: TtlArgs,
    #[command(flatten)]
    pub verify: VerifyArgs,
    #[command(flatten)]
    pub who: AsIdentity,
}

/// `addon configure influxdb-v1` flags.
#[derive(Debug, Args)]
pub struct V1Args {
    /// InfluxDB base URL.
    #[arg(long, env = "INFLUXDB_ENDPOINT_URL", value_name = "URL")]
    pub endpoint_url: String,
    /// Admin user name.
    #[arg(long, env = "INFLUXDB_ADMIN_USER", value_name = "USER")]
    pub username: String,
    /// Admin password.
    #[arg(
        long,
        env = "INFLUXDB_ADMIN_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub password: String,
    /// Privilege granted to lease users, e.g. 'WRITE ON "telemetry"' (repeatable).
    #[arg(long = "privileges", required = true, value_parser = check::privilege, value_name = "PRIVILEGE")]
    pub privileges: Vec<String>,
    #[command(flatten)]
    pub ttl: TtlArgs,
    #[command(flatten)]
    pub verify: VerifyArgs,
    #[command(flatten)]
    pub who: AsIdentity,
}

/// `policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Create or replace the policy for a set of attributes; needs --permissions (v2) or
    /// --privileges (v1).
    Set(PolicySetArgs),
    /// List policies.
    List(AsIdentity),
    /// Delete a policy by id (its match set, e.g. service=iot-sensor).
    Delete {
        /// Policy id.
        id: String,
        #[command(flatten)]
        who: AsIdentity,
    },
}

/// `policy set` flags: a grant is needed, `--permissions` (influxdb add-on) or
/// `--privileges` (influxdb-v1 add-on).
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("grant").required(true).args(["permissions", "privileges"])))]
pub struct PolicySetArgs {
    /// Attribute a member must have (repeatable; all must match).
    #[arg(long = "match", required = true, value_parser = key_value, value_name = "KEY=VALUE")]
    pub matches: Vec<(String, String)>,
    /// v2 permissions JSON, for the influxdb add-on (this or --privileges is required).
    #[arg(long, conflicts_with = "privileges", value_name = "JSON")]
    pub permissions: Option<String>,
    /// v1 privilege, for the influxdb-v1 add-on (repeatable; this or --permissions is
    /// required).
    #[arg(long, value_parser = check::privilege, value_name = "PRIVILEGE")]
    pub privileges: Vec<String>,
    #[command(flatten)]
    pub ttl: TtlArgs,
    #[command(flatten)]
    pub who: AsIdentity,
}

/// `ticket` subcommands.
#[derive(Debug, Subcommand)]
pub enum TicketCommand {
    /// Create an enrollment ticket; prints it as one line (or writes it to --output-file).
    Create(TicketCreateArgs),
    /// List tickets that can still be redeemed (never their secrets).
    List(AsIdentity),
    /// Revoke a ticket by the id `ticket list` shows.
    Revoke {
        /// Ticket id (16 hex digits).
        #[arg(value_parser = check::ticket_id)]
        id: String,
        #[command(flatten)]
        who: AsIdentity,
    },
}

/// `ticket create` flags.
#[derive(Debug, Args)]
pub struct TicketCreateArgs {
    /// Attribute the enrolled member carries (repeatable).
    #[arg(long = "attribute", value_parser = key_value, value_name = "K=V")]
    pub attributes: Vec<(String, String)>,
    /// How long the ticket can be redeemed.
    #[arg(long, default_value = "10m", value_parser = duration_secs, value_name = "DURATION")]
    pub expires_in: u64,
    /// How many identities can redeem it.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub usage_count: u32,
    /// Write the ticket to FILE (created 0600; an existing file is never overwritten)
    /// instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub output_file: Option<PathBuf>,
    #[command(flatten)]
    pub who: AsIdentity,
}

/// `member` subcommands.
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List members, then identities denied re-enrollment.
    List(AsIdentity),
    /// Show a member.
    Show {
        /// Member id (identity identifier).
        #[arg(value_parser = check::member_id)]
        id: String,
        #[command(flatten)]
        who: AsIdentity,
    },
    /// Delete a member, revoke its live leases and deny its identity re-enrollment.
    Delete {
        /// Member id (identity identifier).
        #[arg(value_parser = check::member_id)]
        id: String,
        #[command(flatten)]
        who: AsIdentity,
    },
    /// Let a deleted member's identity enroll again (it still needs a valid ticket).
    Allow {
        /// Member id (identity identifier).
        #[arg(value_parser = check::member_id)]
        id: String,
        #[command(flatten)]
        who: AsIdentity,
    },
}

async fn call(home: &Home, who: &AsIdentity, req: Request) -> anyhow::Result<Reply> {
    connect::call(home, &who.identity, req).await
}

pub async fn addon(home: &Home, out: Output, cmd: AddonCommand) -> anyhow::Result<()> {
    let AddonCommand::Configure(kind) = cmd;
    // Checked here rather than by clap, so that deployment files holding `$VARIABLES`
    // still parse in the tests that check them.
    let (url, org, ttl) = match &kind {
        AddonKind::Influxdb(a) => (&a.endpoint_url, Some(&a.org_id), &a.ttl),
        AddonKind::InfluxdbV1(a) => (&a.endpoint_url, None, &a.ttl),
    };
    check::endpoint_url(url).map_err(|e| UsageError(format!("--endpoint-url {e}")))?;
    if let Some(org) = org {
        check::org_id(org).map_err(|e| UsageError(format!("--org-id {e}")))?;
    }
    check::ttls(ttl.default_ttl, ttl.max_ttl)?;
    let (addon, who, skip_verify) = match kind {
        AddonKind::Influxdb(a) => {
            let token = Secret::new(a.token);
            check::admin_token(&token)?;
            let addon = AddonConfig::Influxdb {
                endpoint_url: a.endpoint_url,
                token,
                permissions: check::permissions(&a.permissions, &a.org_id)?,
                org_id: a.org_id,
                default_ttl_secs: a.ttl.default_ttl,
                max_ttl_secs: a.ttl.max_ttl,
                max_live_leases: a.ttl.max_live_leases,
                ca_pem: a.verify.ca_pem()?,
            };
            (addon, a.who, a.verify.skip_verify)
        }
        AddonKind::InfluxdbV1(a) => (
            AddonConfig::InfluxdbV1 {
                endpoint_url: a.endpoint_url,
                username: a.username,
                password: Secret::new(a.password),
                privileges: a.privileges,
                default_ttl_secs: a.ttl.default_ttl,
                max_ttl_secs: a.ttl.max_ttl,
                max_live_leases: a.ttl.max_live_leases,
                ca_pem: a.verify.ca_pem()?,
            },
            a.who,
            a.verify.skip_verify,
        ),
    };
    let request = Request::AddonConfigure { addon, skip_verify };
    let Reply::Addon(summary) = call(home, &who, request).await? else {
        bail!("unexpected answer from the control");
    };
    match out {
        Output::Json => output::json(&summary),
        Output::Plain => output::fields(&[
            ("backend", summary.backend),
            ("endpoint", summary.endpoint_url),
            ("default ttl", format!("{}s", summary.default_ttl_secs)),
            ("max ttl", format!("{}s", summary.max_ttl_secs)),
            ("max live leases", summary.max_live_leases.to_string()),
            (
                "verified",
                summary.verified_version.map_or_else(
                    || "no (--skip-verify)".to_owned(),
                    |version| format!("yes, InfluxDB {version}"),
                ),
            ),
            (
                "private CA",
                if summary.private_ca { "yes" } else { "no" }.to_owned(),
            ),
        ]),
    }
    Ok(())
}

fn print_policy(policy: &PolicyRecord) {
    let grant = match &policy.spec.grant {
        Grant::Permissions(p) => p.to_string(),
        Grant::Privileges(p) => p.join("; "),
    };
    let ttl = |t: Option<u64>| t.map_or_else(|| "add-on default".to_owned(), |t| format!("{t}s"));
    output::fields(&[
        ("policy", policy.id.clone()),
        ("grant", grant),
        ("default ttl", ttl(policy.spec.default_ttl_secs)),
        ("max ttl", ttl(policy.spec.max_ttl_secs)),
        (
            "max live leases",
            policy
                .spec
                .max_live_leases
                .map_or_else(|| "add-on default".to_owned(), |n| n.to_string()),
        ),
    ]);
}

pub async fn policy(home: &Home, out: Output, cmd: PolicyCommand) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Set(a) => {
            check::ttls(a.ttl.default_ttl, a.ttl.max_ttl)?;
            let grant = match a.permissions {
                // Checked with a placeholder org: only the fields matter here; the
                // control fills in its own org.
                Some(p) => Grant::Permissions(check::permissions(&p, "0000000000000000")?),
                None => Grant::Privileges(a.privileges),
            };
            let policy = PolicySpec {
                matches: a.matches.into_iter().collect(),
                grant,
                default_ttl_secs: a.ttl.default_ttl,
                max_ttl_secs: a.ttl.max_ttl,
                max_live_leases: a.ttl.max_live_leases,
            };
            let Reply::Policy(policy) = call(home, &a.who, Request::PolicySet { policy }).await?
            else {
                bail!("unexpected answer from the control");
            };
            match out {
                Output::Json => output::json(&policy),
                Output::Plain => print_policy(&policy),
            }
        }
        PolicyCommand::List(who) => {
            let Reply::Policies { policies } = call(home, &who, Request::PolicyList).await? else {
                bail!("unexpected answer from the control");
            };
            match out {
                Output::Json => output::json(&policies),
                Output::Plain if policies.is_empty() => say!("no policies"),
                Output::Plain => {
                    for (i, policy) in policies.iter().enumerate() {
                        if i > 0 {
                            say!();
                        }
                        print_policy(policy);
                    }
                }
            }
        }
        PolicyCommand::Delete { id, who } => {
            call(home, &who, Request::PolicyDelete { id: id.clone() }).await?;
            match out {
                Output::Json => output::json(&serde_json::json!({ "deleted": id })),
                Output::Plain => say!("deleted policy {id}"),
            }
        }
    }
    Ok(())
}

pub async fn ticket(home: &Home, out: Output, cmd: TicketCommand) -> anyhow::Result<()> {
    match cmd {
        TicketCommand::Create(a) => create_ticket(home, out, a).await,
        TicketCommand::List(who) => {
            let Reply::Tickets { tickets } = call(home, &who, Request::TicketList).await? else {
                bail!("unexpected answer from the control");
            };
            match out {
                Output::Json => output::json(&tickets),
                Output::Plain if tickets.is_empty() => say!("no tickets"),
                Output::Plain => {
                    say!(
                        "{:<16}  {:<20}  {:<9}  ATTRIBUTES",
                        "ID",
                        "EXPIRES",
                        "USES LEFT"
                    );
                    tickets.iter().for_each(print_ticket_line);
                }
            }
            Ok(())
        }
        TicketCommand::Revoke { id, who } => {
            call(home, &who, Request::TicketRevoke { id: id.clone() }).await?;
            match out {
                Output::Json => output::json(&serde_json::json!({ "revoked": id })),
                Output::Plain => say!("revoked ticket {id}"),
            }
            Ok(())
        }
    }
}

fn print_ticket_line(t: &TicketInfo) {
    let row = format!(
        "{:<16}  {:<20}  {:<9}  {}",
        t.id,
        t.expires_at,
        t.uses_left,
        attributes_text(&t.attributes)
    );
    say!("{}", row.trim_end());
}

/// Creates `path` for a ticket: mode 0600 from the start (a shell redirect would leave
/// it readable by others), and never over an existing file.
fn create_ticket_file(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => UsageError(format!(
                "{} exists: refusing to overwrite it (remove it or choose another --output-file)",
                path.display()
            ))
            .into(),
            _ => anyhow::Error::new(e).context(format!("creating {}", path.display())),
        })
}

async fn create_ticket(home: &Home, out: Output, a: TicketCreateArgs) -> anyhow::Result<()> {
    // The file first: a refused path spends no ticket.
    let file = match &a.output_file {
        Some(path) => Some((path, create_ticket_file(path)?)),
        None => None,
    };
    let req = Request::TicketCreate {
        attributes: a.attributes.into_iter().collect::<BTreeMap<_, _>>(),
        expires_in_secs: a.expires_in,
        usage_count: a.usage_count,
    };
    let answer = match call(home, &a.who, req).await {
        Ok(Reply::Ticket(ticket)) => Ok(ticket),
        Ok(_) => Err(anyhow::anyhow!("unexpected answer from the control")),
        Err(e) => Err(e),
    };
    let ticket = match answer {
        Ok(ticket) => ticket,
        Err(e) => {
            if let Some((path, _)) = &file {
                let _ = std::fs::remove_file(path);
            }
            return Err(e);
        }
    };
    if let Some((path, mut file)) = file {
        // Written straight from the secret: no unzeroized copy of the line is made.
        let written = file
            .write_all(ticket.ticket.expose().as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all());
        if let Err(error) = written {
            let _ = std::fs::remove_file(path);
            return Err(anyhow::Error::new(error)
                .context(format!("writing the ticket to {}", path.display())));
        }
        match out {
            Output::Json => output::json(&serde_json::json!({
                "id": ticket.id,
                "output_file": path,
                "attributes": ticket.attributes,
                "expires_at": ticket.expires_at,
                "usage_count": ticket.usage_count,
            })),
            Output::Plain => say!(
                "wrote ticket {} to {} (expires {}, {} use(s))",
                ticket.id,
                path.display(),
                ticket.expires_at,
                ticket.usage_count
            ),
        }
        return Ok(());
    }
    match out {
        // The ticket's purpose is to be handed over: printing it is the point.
        Output::Json => output::json(&serde_json::json!({
            "ticket": ticket.ticket.expose(),
            "id": ticket.id,
            "attributes": ticket.attributes,
            "expires_at": ticket.expires_at,
            "usage_count": ticket.usage_count,
        })),
        Output::Plain => say!("{}", ticket.ticket.expose()),
    }
    Ok(())
}

/// `k=v,k=v`.
fn attributes_text(attributes: &BTreeMap<String, String>) -> String {
    attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn print_member(m: &MemberRecord) {
    let attributes = m
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    output::fields(&[
        ("id", m.id.to_string()),
        ("name", m.name.escape_debug().to_string()),
        ("attributes", attributes),
        ("enrolled at", m.enrolled_at.to_string()),
    ]);
}

pub async fn member(home: &Home, out: Output, cmd: MemberCommand) -> anyhow::Result<()> {
    let (reply, deleted) = match cmd {
        MemberCommand::List(who) => (call(home, &who, Request::MemberList).await?, false),
        MemberCommand::Allow { id, who } => {
            call(home, &who, Request::MemberAllow { id: id.clone() }).await?;
            match out {
                Output::Json => output::json(&serde_json::json!({ "allowed": id })),
                Output::Plain => say!("identity {id} may enroll again (with a ticket)"),
            }
            return Ok(());
        }
        MemberCommand::Show { id, who } => {
            (call(home, &who, Request::MemberShow { id }).await?, false)
        }
        MemberCommand::Delete { id, who } => {
            (call(home, &who, Request::MemberDelete { id }).await?, true)
        }
    };
    match (reply, out) {
        (Reply::Members { members, denied }, Output::Json) => {
            output::json(&member_list_json(&members, &denied))
        }
        (Reply::Members { members, denied }, Output::Plain) => {
            say!("{:<52}  {:<16} ATTRIBUTES", "ID", "NAME");
            for m in members {
                let attributes = attributes_text(&m.attributes);
                say!("{}  {:<16} {}", m.id, m.name.escape_debug(), attributes);
            }
            for d in denied {
                say!(
                    "{}  {:<16} {}  DENIED since {} (member allow lifts it)",
                    d.id,
                    d.name.escape_debug(),
                    attributes_text(&d.attributes),
                    d.denied_at
                );
            }
        }
        (Reply::Member(m), Output::Json) => output::json(&m),
        (Reply::Member(m), Output::Plain) => {
            if deleted {
                say!(
                    "deleted member {} ({}); its leases are revoked",
                    m.id,
                    m.name
                );
            } else {
                print_member(&m);
            }
        }
        _ => bail!("unexpected answer from the control"),
    }
    Ok(())
}

/// `member list --output json`: members then denied identities, each with a `status`.
fn member_list_json(members: &[MemberRecord], denied: &[DeniedIdentity]) -> serde_json::Value {
    let tagged = |value: serde_json::Value, status: &str| {
        let mut value = value;
        if let Some(object) = value.as_object_mut() {
            object.insert("status".into(), status.into());
        }
        value
    };
    serde_json::Value::Array(
        members
            .iter()
            .map(|m| tagged(serde_json::json!(m), "enrolled"))
            .chain(
                denied
                    .iter()
                    .map(|d| tagged(serde_json::json!(d), "denied")),
            )
            .collect(),
    )
}
