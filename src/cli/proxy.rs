//! `leasehold proxy` (the sidecar) and `leasehold health` (a probe for container health
//! checks that needs no shell tools in the image).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use leasehold_channel::home::{Home, HomeError};
use leasehold_proxy::{Config, ControlLeaseSource, ListenAddr};
use tokio_util::sync::CancellationToken;

use super::signal::Signals;
use super::{UsageError, duration_secs, enroll};

/// `proxy` flags.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Local identity whose leases the proxy uses.
    #[arg(long, env = "LEASEHOLD_IDENTITY", value_name = "NAME")]
    pub identity: String,
    /// Where the application sends plain InfluxDB requests (repeatable; comma-separated
    /// in the env var) [default: 127.0.0.1:8086 and [::1]:8086, the latter skipped with
    /// a warning on a host without IPv6].
    #[arg(
        long,
        env = "LEASEHOLD_LISTEN",
        value_delimiter = ',',
        value_name = "ADDR"
    )]
    pub listen: Vec<SocketAddr>,
    /// Where /healthz, /readyz and /metrics are served (repeatable) [default:
    /// 127.0.0.1:8087 and [::1]:8087, as for --listen].
    #[arg(
        long,
        env = "LEASEHOLD_ADMIN_LISTEN",
        value_delimiter = ',',
        value_name = "ADDR"
    )]
    pub admin_listen: Vec<SocketAddr>,
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
    enroll::enroll(home, name, &ticket).await?;
    tracing::info!(identity = %name, control = %ticket.control, "enrolled");
    Ok(())
}

/// The addresses to listen on: those given, else both loopbacks at `port` — many
/// systems resolve `localhost` to ::1 first, and some clients do not fall back to
/// 127.0.0.1 — with the IPv6 one optional, for hosts without IPv6.
fn listen_addrs(given: &[SocketAddr], port: u16) -> (SocketAddr, Vec<ListenAddr>) {
    match given.split_first() {
        Some((first, rest)) => (
            *first,
            rest.iter()
                .map(|&addr| ListenAddr {
                    addr,
                    optional: false,
                })
                .collect(),
        ),
        None => (
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            vec![ListenAddr {
                addr: SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
                optional: true,
            }],
        ),
    }
}

pub async fn run(home: &Home, args: ProxyArgs) -> anyhow::Result<()> {
    let (listen, extra_listen) = listen_addrs(&args.listen, 8086);
    let (admin_listen, extra_admin_listen) = listen_addrs(&args.admin_listen, 8087);
    let config = Config {
        listen,
        extra_listen,
        admin_listen,
        extra_admin_listen,
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
    let mut source = ControlLeaseSource::from_home(home, &args.identity)?;
    if let Some(ttl) = args.ttl {
        source = source.with_ttl(Duration::from_secs(ttl));
    }
    let shutdown = CancellationToken::new();
    Signals::install()?.cancel_on_signal(shutdown.clone(), config.shutdown_grace());
    leasehold_proxy::run(config, source, shutdown).await?;
    Ok(())
}

pub async fn health(args: HealthArgs) -> anyhow::Result<()> {
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?
        .get(&args.url)
        .send()
        .await
        .with_context(|| format!("probing {}", args.url))?;
    anyhow::ensure!(
        response.status().is_success(),
        "{} answered {}",
        args.url,
        response.status()
    );
    say!("ok");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_default_both_loopbacks_are_used_and_the_ipv6_one_may_be_missing() {
        let (first, extra) = listen_addrs(&[], 8086);
        assert_eq!(first.to_string(), "127.0.0.1:8086");
        assert_eq!(extra.len(), 1);
        assert_eq!(extra[0].addr.to_string(), "[::1]:8086");
        assert!(extra[0].optional);
    }

    #[test]
    fn given_addresses_are_used_as_given_and_all_required() {
        let given: Vec<SocketAddr> = vec![
            "0.0.0.0:9000".parse().unwrap(),
            "[::1]:9001".parse().unwrap(),
        ];
        let (first, extra) = listen_addrs(&given, 8086);
        assert_eq!(first, given[0]);
        assert_eq!(
            extra,
            vec![ListenAddr {
                addr: given[1],
                optional: false
            }]
        );
    }
}
