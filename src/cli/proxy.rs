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

use super::common::{address_in_use, enroll_once};
use super::output::{self, Output};
use super::signal::Signals;
use super::{UsageError, duration_secs};

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
    /// Store and forward: keep writes InfluxDB cannot take now (no lease, unreachable,
    /// 5xx/429) in this directory and replay them later. Off when not given.
    #[arg(long, env = "LEASEHOLD_BUFFER_DIR", value_name = "DIR")]
    pub buffer_dir: Option<PathBuf>,
    /// Most disk the write buffer may use (B, KiB, MiB, GiB); writes past it get 503.
    #[arg(long, env = "LEASEHOLD_BUFFER_MAX_BYTES", default_value = "1GiB", value_parser = byte_size, value_name = "SIZE")]
    pub buffer_max_bytes: u64,
    /// Replay rate limit, in bytes of line protocol per second.
    #[arg(long, default_value = "16MiB", value_parser = byte_size, value_name = "SIZE")]
    pub buffer_replay_rate: u64,
    /// How long a buffered-mode write waits for InfluxDB before it is stored instead.
    #[arg(long, default_value = "10s", value_parser = duration_secs, value_name = "DURATION")]
    pub buffer_upstream_timeout: u64,
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

/// Parses `1GiB`, `512MiB`, `64KiB`, `100B` or a plain number of bytes.
fn byte_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 1GiB, 512MiB)"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "TiB" | "T" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?}: use B, KiB, MiB, GiB or TiB"
            ));
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))
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

/// One data-path thread per CPU the process may run on (its affinity mask, and a
/// cgroup's CPU quota): on one CPU, one thread and one runtime for everything, so that
/// nothing in the process competes with itself for that CPU (see `proxy/src/shard.rs`).
fn data_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
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
        threads: data_threads(),
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        first_byte_timeout: Duration::from_secs(args.first_byte_timeout),
        header_read_timeout: Duration::from_secs(args.header_read_timeout),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        body_read_timeout: Duration::from_secs(args.body_read_timeout),
        http2_keepalive_interval: Duration::from_secs(args.http2_keepalive_interval),
        http2_keepalive_timeout: Duration::from_secs(args.http2_keepalive_timeout),
        allow_origins: args.allow_origin,
        allow_hosts: args.allow_host,
        buffer: args
            .buffer_dir
            .map(|dir| leasehold_proxy::buffer::BufferConfig {
                dir,
                max_bytes: args.buffer_max_bytes,
                replay_rate: args.buffer_replay_rate,
                upstream_timeout: Duration::from_secs(args.buffer_upstream_timeout),
            }),
        ..Config::default()
    }
    .validate()
    .map_err(|e| UsageError(e.to_string()))?;
    super::open_files::raise_to_hard_limit();
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
    if let Ok(enrollment) = home.load_enrollment(&args.identity) {
        let control = enrollment.addrs.join(", ");
        tracing::info!(identity = %args.identity, "waiting for the first lease from {control}");
    }
    if let Some(ttl) = args.ttl {
        source = source.with_ttl(Duration::from_secs(ttl));
    }
    let shutdown = CancellationToken::new();
    Signals::install()?.cancel_on_signal(shutdown.clone(), config.shutdown_grace());
    let proxy_flag = |addr: SocketAddr| {
        if addr == config.listen() || config.config().extra_listen.iter().any(|l| l.addr == addr) {
            "--listen"
        } else {
            "--admin-listen"
        }
    };
    let bound = async {
        let listeners = leasehold_proxy::proxy::bind_all(
            config.listen(),
            &config.config().extra_listen,
            config.config().threads > 1,
        )
        .await?;
        let admins = leasehold_proxy::proxy::bind_all(
            config.admin_listen(),
            &config.config().extra_admin_listen,
            false,
        )
        .await?;
        Ok::<_, leasehold_proxy::ProxyError>((listeners, admins))
    };
    let (listeners, admins) = bound.await.map_err(|e| match e {
        leasehold_proxy::ProxyError::Bind { addr, source } => {
            address_in_use(addr, &source, proxy_flag(addr))
        }
        other => other.into(),
    })?;
    let running = leasehold_proxy::proxy::start_on(config, source, listeners, admins, shutdown)?;
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

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(byte_size("1GiB"), Ok(1 << 30));
        assert_eq!(byte_size("512MiB"), Ok(512 << 20));
        assert_eq!(byte_size("100"), Ok(100));
        assert!(byte_size("1GB").is_err());
        assert!(byte_size("lots").is_err());
        assert!(byte_size("99999999999TiB").is_err());
    }
}
