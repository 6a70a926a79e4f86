//! `leasehold control init|serve`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use leasehold_channel::home::Home;
use leasehold_control::datadir::{DataDir, Settings, local_address};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::UsageError;
use super::output::{self, Output};

/// The default control listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4100";

/// Control subcommands.
#[derive(Debug, Subcommand)]
pub enum ControlCommand {
    /// Create the control identity and store, and the local admin identity.
    Init(InitArgs),
    /// Run the control plane.
    Serve(ServeArgs),
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
    /// Address clients use to reach the control, written into tickets (repeatable)
    /// [default: the listen address, loopback if it is unspecified].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Vec<String>,
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
    /// Once listening, write `listen=ADDR` (the bound address) to this file.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// How often to sweep InfluxDB for expired credentials of ours (also swept at
    /// start-up and when the add-on is configured).
    #[arg(long, default_value = "60s", value_parser = super::duration_secs, value_name = "DURATION")]
    pub sweep_interval: u64,
}

pub async fn run(home: &Home, out: Output, cmd: ControlCommand) -> anyhow::Result<()> {
    match cmd {
        ControlCommand::Init(args) => {
            let data = DataDir::new(args.data_dir.unwrap_or_else(|| home.control_dir()));
            let advertise = if args.advertise.is_empty() {
                vec![local_address(args.listen)]
            } else {
                args.advertise
            };
            let settings = Settings {
                listen: args.listen,
                advertise,
            };
            let identity = leasehold_control::init(home, &data, &settings).await?;
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
        ControlCommand::Serve(args) => {
            let data = DataDir::new(args.data_dir.unwrap_or_else(|| home.control_dir()));
            let (_, settings) = data.load().map_err(|e| UsageError(e.to_string()))?;
            if args.sweep_interval == 0 {
                return Err(UsageError("--sweep-interval must be at least 1s".into()).into());
            }
            let listen = args.listen.unwrap_or(settings.listen);
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let shutdown = CancellationToken::new();
            let running = leasehold_control::start(&data, listener, shutdown.clone()).await?;
            let sweep_interval = std::time::Duration::from_secs(args.sweep_interval);
            if sweep_interval != leasehold_control::control::SWEEP_INTERVAL {
                running.set_sweep_interval(sweep_interval);
            }
            if let Some(path) = &args.ready_file {
                super::ready::write(path, &[("listen", running.local_addr)])?;
            }
            super::proxy::wait_for_signal().await;
            tracing::info!("shutting down");
            shutdown.cancel();
            running.wait().await;
            Ok(())
        }
    }
}
