//! `leasehold control init|migrate|serve|set-advertise`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use leasehold_channel::home::Home;
use leasehold_control::datadir::{DataDir, DataDirError, Settings, local_address};
use leasehold_control::server;
use tokio_util::sync::CancellationToken;

use super::output::{self, Output};
use super::signal::Signals;
use super::{UsageError, duration_secs};

/// How long the control may take to finish the requests it has taken after SIGTERM.
const CONTROL_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The default control listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4100";
/// The default address of the control's `/healthz`, `/readyz` and `/metrics`.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:4101";

/// Control subcommands.
#[derive(Debug, Subcommand)]
pub enum ControlCommand {
    /// Create the control identity and store, and the local admin identity.
    Init(InitArgs),
    /// Bring a shared store's schema to this release's (once per upgrade, from any
    /// replica: the others are restarted after).
    Migrate(MigrateArgs),
    /// Run the control plane.
    Serve(ServeArgs),
    /// Replace the addresses written into new tickets (restart `control serve` after).
    SetAdvertise(SetAdvertiseArgs),
}

/// `control set-advertise` arguments.
#[derive(Debug, Args)]
pub struct SetAdvertiseArgs {
    /// Addresses clients use to reach the control: every replica's (also as a comma
    /// list). Clients start at a random one and move on from one that does not answer.
    #[arg(required = true, value_delimiter = ',', value_parser = host_port, value_name = "HOST:PORT")]
    pub addrs: Vec<String>,
    /// Data directory [default: $LEASEHOLD_HOME/control].
    #[arg(long, env = "LEASEHOLD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// `HOST:PORT`, as a ticket carries it.
fn host_port(text: &str) -> Result<String, String> {
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(text.to_owned())
        }
        _ => Err(format!(
            "{text:?}: expected HOST:PORT, e.g. control.example.com:4100"
        )),
    }
}

/// `control init` flags.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Data directory [default: $LEASEHOLD_HOME/control].
    #[arg(long, env = "LEASEHOLD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address the control listens on.
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Address clients use to reach the control, written into tickets: with several
    /// replicas, every replica's (repeatable, or a comma list); clients start at a
    /// random one and move on from one that does not answer [default: the listen
    /// address, loopback if it is unspecified].
    #[arg(long, value_delimiter = ',', value_parser = host_port, value_name = "HOST:PORT")]
    pub advertise: Vec<String>,
    /// Where the control's state lives: `redb` (the default: embedded, in the data
    /// directory) or a PostgreSQL URL (`postgres://USER:PASSWORD@HOST/DB`, with
    /// `?sslmode=verify-full&sslrootcert=CA.pem` for TLS, as libpq reads them) shared by
    /// several control replicas. Best given in the environment: it holds a password.
    #[arg(
        long,
        env = "LEASEHOLD_STORE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub store: Option<String>,
}

/// `control migrate` flags.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Data directory of one of the control's replicas (its identity must be the one
    /// the database records) [default: $LEASEHOLD_HOME/control].
    #[arg(long, env = "LEASEHOLD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The shared store: a PostgreSQL URL, as for `control serve`. Best given in the
    /// environment: it holds a password.
    #[arg(
        long,
        env = "LEASEHOLD_STORE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub store: Option<String>,
}

/// `control serve` flags.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data directory [default: $LEASEHOLD_HOME/control].
    #[arg(long, env = "LEASEHOLD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Listen here instead of the address chosen at init.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Where the control's state lives: `redb` (the default: embedded, in the data
    /// directory) or a PostgreSQL URL (`postgres://USER:PASSWORD@HOST/DB`, with
    /// `?sslmode=verify-full&sslrootcert=CA.pem` for TLS, as libpq reads them) shared by
    /// several control replicas. Best given in the environment: it holds a password.
    #[arg(
        long,
        env = "LEASEHOLD_STORE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub store: Option<String>,
    /// How long the records of expired or revoked leases (whose credential is gone
    /// from InfluxDB) are kept before they are pruned.
    #[arg(long, env = "LEASEHOLD_RETENTION", default_value = "7d", value_parser = duration_secs, value_name = "DURATION")]
    pub retention: u64,
    /// How often the store is pruned of such records.
    #[arg(long, env = "LEASEHOLD_PRUNE_INTERVAL", default_value = "1h", value_parser = duration_secs, value_name = "DURATION")]
    pub prune_interval: u64,
    /// Time a peer has to complete the handshake, and then, if it is not a member, to
    /// send its enrollment.
    #[arg(long, default_value = "5s", value_parser = duration_secs, value_name = "DURATION")]
    pub handshake_timeout: u64,
    /// Close a member's channel after this long with no request.
    #[arg(long, default_value = "15m", value_parser = duration_secs, value_name = "DURATION")]
    pub idle_timeout: u64,
    /// Most connections open at once that have not proven membership (in the handshake,
    /// or a non-member's enrollment); more are closed at once.
    #[arg(long, default_value_t = server::DEFAULT_MAX_UNAUTHENTICATED, value_name = "N")]
    pub max_unauthenticated: usize,
    /// The same, from one source address (an IPv6 /64 counts as one).
    #[arg(long, default_value_t = server::DEFAULT_MAX_UNAUTHENTICATED_PER_IP, value_name = "N")]
    pub max_unauthenticated_per_ip: usize,
    /// Where /healthz, /readyz (store reachable, add-on configured) and /metrics
    /// (Prometheus) are served.
    #[arg(long, env = "LEASEHOLD_CONTROL_ADMIN_LISTEN", default_value = DEFAULT_ADMIN_LISTEN, value_name = "ADDR")]
    pub admin_listen: SocketAddr,
    /// Once listening, write `listen=ADDR` and `admin=ADDR` (the bound addresses) to
    /// this file.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// How often to sweep InfluxDB for expired credentials of ours (also swept at
    /// start-up and when the add-on is configured).
    #[arg(long, default_value = "60s", value_parser = super::duration_secs, value_name = "DURATION")]
    pub sweep_interval: u64,
}

impl ServeArgs {
    /// The limits, refusing zeros (they would lock everyone out).
    fn limits(&self) -> Result<server::Limits, UsageError> {
        let nonzero = |flag: &str, value: u64| {
            if value == 0 {
                Err(UsageError(format!("{flag} must be greater than zero")))
            } else {
                Ok(value)
            }
        };
        Ok(server::Limits {
            handshake_timeout: Duration::from_secs(nonzero(
                "--handshake-timeout",
                self.handshake_timeout,
            )?),
            idle_timeout: Duration::from_secs(nonzero("--idle-timeout", self.idle_timeout)?),
            max_unauthenticated: nonzero("--max-unauthenticated", self.max_unauthenticated as u64)?
                as usize,
            max_unauthenticated_per_ip: nonzero(
                "--max-unauthenticated-per-ip",
                self.max_unauthenticated_per_ip as u64,
            )? as usize,
        })
    }
}

pub async fn run(home: &Home, out: Output, cmd: ControlCommand) -> anyhow::Result<()> {
    match cmd {
        ControlCommand::Init(args) => {
            let data = DataDir::new(args.data_dir.unwrap_or_else(|| home.control_dir()));
            // A second control in the same home would silently re-point the home's
            // `admin` enrollment (and lock the first control's admin out).
            if data.load().is_err()
                && let Ok(enrollment) = home.load_enrollment("admin")
            {
                anyhow::bail!(
                    "the identity \"admin\" in {} is already enrolled with control {} \
                     (another data directory): nothing was changed; use a separate --home \
                     for each control",
                    home.root().display(),
                    enrollment.control
                );
            }
            let advertise = if args.advertise.is_empty() {
                vec![local_address(args.listen)]
            } else {
                args.advertise
            };
            let settings = Settings {
                listen: args.listen,
                advertise,
            };
            let location = store_location(args.store.as_deref())?;
            let identity =
                leasehold_control::init_with_store(home, &data, &settings, &location).await?;
            let view = serde_json::json!({
                "control": identity.public().to_string(),
                "data_dir": data.path(),
                "listen": settings.listen,
                "advertise": settings.advertise,
                "admin_identity": "admin",
            });
            match out {
                Output::Json => output::json(&view),
                Output::Plain => output::fields(&[
                    ("control", identity.public().to_string()),
                    ("data dir", data.path().display().to_string()),
                    ("listen", settings.listen.to_string()),
                    ("advertise", settings.advertise.join(", ")),
                    ("admin identity", "admin (enrolled, role=admin)".into()),
                ]),
            }
            Ok(())
        }
        ControlCommand::Migrate(args) => {
            let location = store_location(args.store.as_deref())?;
            let data = DataDir::new(args.data_dir.unwrap_or_else(|| home.control_dir()));
            // Checked first, for a message about this command: `init` would be the
            // wrong advice for a database that already has a control.
            match data.load() {
                Err(DataDirError::NotInitialized(path)) => {
                    return Err(UsageError(format!(
                        "{} holds no control identity: `control migrate` runs with the data \
                         directory of one of the control's replicas (--data-dir), whose \
                         identity key is the one the database records",
                        path.display()
                    ))
                    .into());
                }
                Err(e) => return Err(UsageError(e.to_string()).into()),
                Ok(_) => {}
            }
            let migrated = leasehold_control::migrate_store(&data, &location).await?;
            match (out, migrated) {
                (Output::Json, None) => output::json(&serde_json::json!({ "store": "redb" })),
                (Output::Json, Some(m)) => output::json(&serde_json::json!({
                    "store": "postgres",
                    "from": m.from,
                    "to": m.to,
                    "applied": m.to - m.from,
                })),
                (Output::Plain, None) => say!(
                    "the embedded store (no --store URL given) needs no migration: \
                     `control serve` brings it up to date when it opens it"
                ),
                (Output::Plain, Some(m)) if m.applied() => say!(
                    "schema {} \u{2192} {}: migrated; restart the replicas one by one",
                    m.from,
                    m.to
                ),
                (Output::Plain, Some(m)) => say!("already at schema {}: nothing to do", m.to),
            }
            Ok(())
        }
        ControlCommand::SetAdvertise(args) => {
            let data = DataDir::new(args.data_dir.unwrap_or_else(|| home.control_dir()));
            let (_, settings) = data.load().map_err(|e| UsageError(e.to_string()))?;
            let settings = Settings {
                advertise: args.addrs,
                ..settings
            };
            data.save_settings(&settings)?;
            match out {
                Output::Json => output::json(&serde_json::json!({
                    "data_dir": data.path(),
                    "advertise": settings.advertise,
                })),
                Output::Plain => say!(
                    "tickets will carry {}; restart `control serve` for it to take effect \
                     (tickets already issued keep their addresses)",
                    settings.advertise.join(", ")
                ),
            }
            Ok(())
        }
        ControlCommand::Serve(args) => {
            let limits = args.limits()?;
            let location = store_location(args.store.as_deref())?;
            let data = DataDir::new(args.data_dir.unwrap_or_else(|| home.control_dir()));
            let (_, settings) = data.load().map_err(|e| UsageError(e.to_string()))?;
            super::open_files::raise_to_hard_limit();
            if args.sweep_interval == 0 {
                return Err(UsageError("--sweep-interval must be at least 1s".into()).into());
            }
            let listen = args.listen.unwrap_or(settings.listen);
            let listener = leasehold_control::server::bind(listen)
                .map_err(|e| super::common::address_in_use(listen, &e, "--listen"))?;
            let admin = tokio::net::TcpListener::bind(args.admin_listen)
                .await
                .map_err(|e| {
                    super::common::address_in_use(args.admin_listen, &e, "--admin-listen")
                })?;
            let shutdown = CancellationToken::new();
            let signals = Signals::install()?;
            let housekeeping = leasehold_control::control::Housekeeping {
                retention: std::time::Duration::from_secs(args.retention),
                prune_interval: std::time::Duration::from_secs(args.prune_interval),
            };
            let running = leasehold_control::start_with_store(
                &data,
                &location,
                listener,
                shutdown.clone(),
                housekeeping,
                limits,
            )
            .await?;
            let sweep_interval = std::time::Duration::from_secs(args.sweep_interval);
            if sweep_interval != leasehold_control::control::SWEEP_INTERVAL {
                running.set_sweep_interval(sweep_interval);
            }
            let admin_addr = running.serve_admin(admin)?;
            signals.cancel_on_signal(shutdown, CONTROL_GRACE);
            if let Some(path) = &args.ready_file {
                super::ready::write(
                    path,
                    &[("listen", running.local_addr), ("admin", admin_addr)],
                )?;
            }
            running.wait().await;
            Ok(())
        }
    }
}

/// `--store`: absent or `redb` is the embedded store; a PostgreSQL URL the shared one.
/// The value is never repeated in an error (it may hold a password).
fn store_location(value: Option<&str>) -> Result<leasehold_control::StoreLocation, UsageError> {
    value
        .map_or(Ok(leasehold_control::StoreLocation::Embedded), |v| {
            v.parse()
        })
        .map_err(|e| UsageError(format!("--store (LEASEHOLD_STORE_URL): {e}")))
}
