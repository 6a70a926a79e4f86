//! `leasehold proxy` and `leasehold health`.

use clap::Args;
use leasehold_channel::home::Home;

/// `proxy` flags.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Local identity whose leases the proxy uses.
    #[arg(long, env = "LEASEHOLD_IDENTITY", value_name = "NAME")]
    pub identity: String,
}

/// `health` flags.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// URL to probe.
    #[arg(long, default_value = "http://127.0.0.1:8087/healthz")]
    pub url: String,
}

pub async fn run(_home: &Home, _args: ProxyArgs) -> anyhow::Result<()> {
    anyhow::bail!("the proxy is not wired into the command line yet")
}

pub async fn health(_args: HealthArgs) -> anyhow::Result<()> {
    anyhow::bail!("not wired yet")
}

/// Resolves on SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
