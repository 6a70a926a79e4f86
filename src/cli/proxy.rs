//! `leasehold proxy` (the sidecar) and `leasehold health` (a probe for container health
//! checks that needs no shell tools in the image).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use leasehold_channel::home::{Home, HomeError};
use leasehold_proxy::{Config, ControlLeaseSource};
use tokio_util::sync::CancellationToken;

use super::output::{self, Output};
use super::signal::Signals;
use super::{UsageError, duration_secs, enroll};

/// `proxy` flags.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Local identity whose leases the proxy uses.
    #[arg(long, env = "LEASEHOLD_IDENTITY", value_name = "NAME")]
    pub identity: String,
    /// Where the application sends plain InfluxDB requests.
    #[arg(
        long,
        env = "LEASEHOLD_LISTEN",
        default_value = "127.0.0.1:8086",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,
    /// Where /healthz, /readyz and /metrics are served.
    #[arg(
        long,
        env = "LEASEHOLD_ADMIN_LISTEN",
        default_value = "127.0.0.1:8087",
        value_name = "ADDR"
    )]
    pub admin_listen: SocketAddr,
    /// InfluxDB base URL [default: the add-on's endpoint URL, sent with the lease].
    #[arg(long, env = "LEASEHOLD_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,
    /// Extra PEM CA bundle to trust for a TLS upstream, besides the system roots.
    #[arg(long, env = "LEASEHOLD_CA_FILE", value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Enrollment ticket: on first start, create the identity if needed and enroll;
    /// a no-op once enrolled.
    #[arg(long, env = "LEASEHOLD_TICKET", value_name = "FILE")]
    pub ticket: Option<String>,
    /// Lease lifetime to request [default: the policy's].
    #[arg(long, env = "LEASEHOLD_LEASE_TTL", value_parser = super::ttl_secs, value_name = "DURATION")]
    pub ttl: Option<u64>,
    /// Most concurrent client connections.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_connections: usize,
    /// How long in-flight requests may finish after SIGTERM/SIGINT.
    #[arg(long, default_value = "10s", value_parser = duration_secs, value_name = "DURATION")]
    pub shutdown_grace: u64,
}

/// `health` flags.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// URL to probe; healthy when it answers 2xx within two seconds.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8087/healthz",
        value_name = "URL"
    )]
    pub url: String,
}

/// Enrolls from `ticket` unless `name` is enrolled already (idempotent for containers).
async fn enroll_once(home: &Home, name: &str, ticket: &str) -> anyhow::Result<()> {
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

pub async fn run(home: &Home, args: ProxyArgs) -> anyhow::Result<()> {
    let config = Config {
        listen: args.listen,
        admin_listen: args.admin_listen,
        upstream: args.upstream,
        ca_file: args.ca_file,
        max_connections: args.max_connections,
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        ..Config::default()
    }
    .validate()
    .map_err(|e| UsageError(e.to_string()))?;
    if let Some(ticket) = &args.ticket {
        enroll_once(home, &args.identity, ticket).await?;
    }
    match home.load_enrollment(&args.identity) {
        Err(HomeError::NotEnrolled(name)) => {
            return Err(anyhow::anyhow!(
                "identity {name:?} is not enrolled: start the proxy with --ticket FILE \
                 (or LEASEHOLD_TICKET) to enroll on first start, or run \
                 `leasehold enroll TICKET --identity {name}`"
            ));
        }
        Err(HomeError::NotFound(name)) => {
            return Err(super::connect::in_home(home, HomeError::NotFound(name)));
        }
        _ => {}
    }
    let mut source = ControlLeaseSource::from_home(home, &args.identity)?;
    if let Ok(enrollment) = home.load_enrollment(&args.identity) {
        let control = enrollment.addrs.join(", ");
        tracing::info!(identity = %args.identity, "waiting for the first lease from {control}");
    }
    if let Some(ttl) = args.ttl {
        source = source.with_ttl(Duration::from_secs(ttl));
    }
    let shutdown = CancellationToken::new();
    Signals::install()?.cancel_on_signal(shutdown.clone(), config.shutdown_grace());
    let listen = args.listen;
    leasehold_proxy::run(config, source, shutdown)
        .await
        .map_err(|e| match e {
            leasehold_proxy::ProxyError::Bind { addr, source } => {
                let flag = if addr == listen {
                    "--listen"
                } else {
                    "--admin-listen"
                };
                address_in_use(addr, &source, flag)
            }
            other => other.into(),
        })
}

/// A listener that cannot bind, said once (not "cause: cause"), with the flag that
/// moves it: on a host with its own InfluxDB, 8086 is taken.
pub(crate) fn address_in_use(
    addr: SocketAddr,
    source: &std::io::Error,
    flag: &str,
) -> anyhow::Error {
    if source.kind() == std::io::ErrorKind::AddrInUse {
        anyhow::anyhow!(
            "cannot listen on {addr}: the address is in use (by a local InfluxDB on 8086?): \
             stop that process or choose another address with {flag}"
        )
    } else {
        anyhow::anyhow!("cannot listen on {addr}: {source} (choose another address with {flag})")
    }
}

pub async fn health(out: Output, args: HealthArgs) -> anyhow::Result<()> {
    let answer = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?
        .get(&args.url)
        .send()
        .await;
    let status = answer.as_ref().ok().map(|r| r.status().as_u16());
    let healthy = status.is_some_and(|s| (200..300).contains(&s));
    if out == Output::Json {
        // Printed whether healthy or not, so a script reads one shape; the exit code
        // still says which.
        output::json(&serde_json::json!({
            "url": args.url,
            "healthy": healthy,
            "status": status,
            "error": answer.as_ref().err().map(|e| format!("{e:#}")),
        }));
    }
    let response = answer.with_context(|| format!("probing {}", args.url))?;
    anyhow::ensure!(healthy, "{} answered {}", args.url, response.status());
    if out == Output::Plain {
        say!("ok");
    }
    Ok(())
}
