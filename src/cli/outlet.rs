//! `leasehold outlet`: runs beside a private InfluxDB and admits current members'
//! sidecars through Noise channels (see `proxy/src/outlet/`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use leasehold_channel::home::Home;
use leasehold_proxy::outlet::{self, OutletConfig};
use tokio_util::sync::CancellationToken;

use super::signal::Signals;
use super::{UsageError, duration_secs, key_value};

/// `outlet` flags.
#[derive(Debug, Args)]
pub struct OutletArgs {
    /// Local identity of the outlet (enrolled like any member, e.g. `role=outlet`).
    #[arg(long, env = "LEASEHOLD_IDENTITY", value_name = "NAME")]
    pub identity: String,
    /// Where sidecars connect: the only port the database host needs to expose.
    #[arg(long, env = "LEASEHOLD_LISTEN", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The InfluxDB to relay to, e.g. http://127.0.0.1:8086.
    #[arg(long, env = "LEASEHOLD_UPSTREAM", value_name = "URL")]
    pub upstream: String,
    /// Where /healthz, /readyz and /metrics are served.
    #[arg(
        long,
        env = "LEASEHOLD_ADMIN_LISTEN",
        default_value = "127.0.0.1:8088",
        value_name = "ADDR"
    )]
    pub admin_listen: SocketAddr,
    /// Admit only members with this attribute (all given must match). Repeatable.
    #[arg(long, value_parser = key_value, value_name = "KEY=VALUE")]
    pub allow: Vec<(String, String)>,
    /// Enrollment ticket: on first start, create the identity if needed and enroll;
    /// a no-op once enrolled.
    #[arg(long, env = "LEASEHOLD_TICKET", value_name = "FILE")]
    pub ticket: Option<String>,
    /// Most concurrent channels.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_connections: usize,
    /// How long a sidecar has for the handshake and its credential.
    #[arg(long, default_value = "5s", value_parser = duration_secs, value_name = "DURATION")]
    pub handshake_timeout: u64,
    /// How long open channels may go on after SIGTERM/SIGINT.
    #[arg(long, default_value = "10s", value_parser = duration_secs, value_name = "DURATION")]
    pub shutdown_grace: u64,
    /// Once listening, write `listen=ADDR` and `admin=ADDR` to this file.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
}

pub async fn run(home: &Home, args: OutletArgs) -> anyhow::Result<()> {
    if let Some(ticket) = &args.ticket {
        super::common::enroll_once(home, &args.identity, ticket).await?;
    }
    let enrollment = home.load_enrollment(&args.identity)?;
    let me = home.load_identity(&args.identity)?;
    let config = OutletConfig {
        upstream: args.upstream,
        allow: args.allow,
        max_connections: args.max_connections,
        handshake_timeout: Duration::from_secs(args.handshake_timeout),
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        ..OutletConfig::default()
    };
    let grace = config.shutdown_grace;
    let shutdown = CancellationToken::new();
    Signals::install()?.cancel_on_signal(shutdown.clone(), grace);
    let listener = bind(args.listen).await?;
    let admin = bind(args.admin_listen).await?;
    tracing::info!(identity = %me.public(), control = %enrollment.control, "outlet starting");
    let running = outlet::start(config, me, enrollment.control, listener, admin, shutdown)
        .map_err(|e| UsageError(e.to_string()))?;
    if let Some(path) = &args.ready_file {
        let addrs = [
            ("listen", running.listen_addr()),
            ("admin", running.admin_addr()),
        ];
        super::ready::write(path, &addrs)?;
    }
    running.wait().await;
    Ok(())
}

async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}
