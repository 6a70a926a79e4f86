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
    /// How long a new connection may take to send its first byte.
    #[arg(long, default_value = "10s", value_parser = duration_secs, value_name = "DURATION")]
    pub first_byte_timeout: u64,
    /// How long a request head may take; for HTTP/1 it also runs while a kept-alive
    /// connection waits for its next request.
    #[arg(long, default_value = "30s", value_parser = duration_secs, value_name = "DURATION")]
    pub header_read_timeout: u64,
    /// Close a connection that has moved no byte for this long (after the request in
    /// flight, if any).
    #[arg(long, default_value = "60s", value_parser = duration_secs, value_name = "DURATION")]
    pub idle_timeout: u64,
    /// Longest wait for the next part of a request body.
    #[arg(long, default_value = "30s", value_parser = duration_secs, value_name = "DURATION")]
    pub body_read_timeout: u64,
    /// How often a quiet HTTP/2 client connection is pinged.
    #[arg(long, default_value = "20s", value_parser = duration_secs, value_name = "DURATION")]
    pub http2_keepalive_interval: u64,
    /// How long an HTTP/2 ping may go unanswered before the connection is closed.
    #[arg(long, default_value = "20s", value_parser = duration_secs, value_name = "DURATION")]
    pub http2_keepalive_timeout: u64,
    /// A web origin (scheme://host[:port]) whose pages may use the proxy; requests from
    /// any other page are refused with 403. Repeatable.
    #[arg(
        long,
        env = "LEASEHOLD_ALLOW_ORIGIN",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub allow_origin: Vec<String>,
    /// A host name or address clients may use in `Host` besides loopback and the listen
    /// address (e.g. a pod or service name). Repeatable.
    #[arg(
        long,
        env = "LEASEHOLD_ALLOW_HOST",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    pub allow_host: Vec<String>,
    /// Reach InfluxDB through the outlet at HOST:PORT (Noise channels, membership
    /// checked) instead of connecting to it directly. Needs --outlet-identity.
    #[arg(
        long,
        env = "LEASEHOLD_OUTLET",
        value_name = "HOST:PORT",
        requires = "outlet_identity"
    )]
    pub outlet: Option<String>,
    /// The outlet's identity (`leasehold identity show` on its host), pinned.
    #[arg(
        long,
        env = "LEASEHOLD_OUTLET_IDENTITY",
        value_name = "ID",
        requires = "outlet"
    )]
    pub outlet_identity: Option<String>,
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
pub(super) async fn enroll_once(home: &Home, name: &str, ticket: &str) -> anyhow::Result<()> {
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
        first_byte_timeout: Duration::from_secs(args.first_byte_timeout),
        header_read_timeout: Duration::from_secs(args.header_read_timeout),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        body_read_timeout: Duration::from_secs(args.body_read_timeout),
        http2_keepalive_interval: Duration::from_secs(args.http2_keepalive_interval),
        http2_keepalive_timeout: Duration::from_secs(args.http2_keepalive_timeout),
        allow_origins: args.allow_origin,
        allow_hosts: args.allow_host,
        ..Config::default()
    }
    .validate()
    .map_err(|e| UsageError(e.to_string()))?;
    super::open_files::raise_to_hard_limit();
    if let Some(ticket) = &args.ticket {
        enroll_once(home, &args.identity, ticket).await?;
    }
    let config = match (args.outlet, args.outlet_identity) {
        (Some(addr), Some(outlet)) => config.with_outlet(leasehold_proxy::outlet::OutletRoute {
            addr,
            outlet: outlet.parse().map_err(|_| {
                UsageError(format!(
                    "--outlet-identity {outlet:?} is not an identity (leasehold identity show NAME prints one)"
                ))
            })?,
            me: std::sync::Arc::new(home.load_identity(&args.identity)?),
        }),
        _ => config,
    };
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
