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
    /// Once listening, write `listen=ADDR` and `admin=ADDR` (the bound addresses, useful
    /// with port 0) to this file.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
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
    super::open_files::raise_to_hard_limit();
    if let Some(ticket) = &args.ticket {
        enroll_once(home, &args.identity, ticket).await?;
    }
    let mut source = ControlLeaseSource::from_home(home, &args.identity)?;
    if let Some(ttl) = args.ttl {
        source = source.with_ttl(Duration::from_secs(ttl));
    }
    let shutdown = CancellationToken::new();
    Signals::install()?.cancel_on_signal(shutdown.clone(), config.shutdown_grace());
    let listener = bind(config.listen()).await?;
    let admin = bind(config.admin_listen()).await?;
    let running = leasehold_proxy::start(config, source, listener, admin, shutdown)?;
    if let Some(path) = &args.ready_file {
        let addrs = [
            ("listen", running.proxy_addr()),
            ("admin", running.admin_addr()),
        ];
        super::ready::write(path, &addrs)?;
    }
    running.wait().await?;
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, leasehold_proxy::ProxyError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| leasehold_proxy::ProxyError::Bind { addr, source })
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
