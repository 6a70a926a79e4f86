//! `sink`: the helpers `bench/run.sh` needs besides wrk, nginx and HAProxy.
//!
//! - `sink serve`: the upstream every contender forwards to — reads and discards each
//!   request body, answers `204`. It does the least work an InfluxDB write endpoint can,
//!   so what a benchmark measures is the proxy in front of it.
//! - `sink issuer`: a stub of the InfluxDB v2 authorizations API (create, delete, list)
//!   for the control's `influxdb` add-on, so that issuing a lease costs the backend
//!   nothing and start-to-ready measures leasehold alone.
//! - `sink load`: an open-loop, rate-limited load generator (wrk cannot rate-limit and
//!   Debian has no wrk2) for the "added latency at 1,000 requests/s" figure.
//! - `sink startup`: starts a command repeatedly and times process start to the first
//!   `200` from a readiness URL.
//! - `sink ports`: prints free loopback ports for the harness to hand out.
#![forbid(unsafe_code)]

mod answer;
mod http_server;
mod issuer;
mod load;
mod startup;

use std::net::{SocketAddr, TcpListener};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "sink", about = "leasehold benchmark helpers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Answer every request with 204 after reading and discarding its body.
    Serve(ServeArgs),
    /// A stub of the InfluxDB v2 authorizations API that issues tokens.
    Issuer(ServeArgs),
    /// Open-loop load at a fixed rate; prints latency percentiles.
    Load(load::LoadArgs),
    /// Time from process start to ready, over several starts.
    Startup(startup::StartupArgs),
    /// Print N free loopback ports, one a line.
    Ports {
        /// How many.
        count: usize,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on (port 0: any; the address is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Runtime worker threads (1: a current-thread runtime, the cheapest on one core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// `serve` only: read each request body at most this fast, in Mbit/s (0: no limit).
    #[arg(long, default_value_t = 0)]
    mbit_per_request: u64,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => {
            let rate = (args.mbit_per_request > 0).then(|| args.mbit_per_request * 1_000_000);
            run_server(&args, http_server::Role::Sink(rate))
        }
        Command::Issuer(args) => run_server(&args, http_server::Role::Issuer),
        Command::Load(args) => load::run(&args),
        Command::Startup(args) => startup::run(&args),
        Command::Ports { count } => {
            // Hold every listener until all are chosen, so the ports are distinct.
            let listeners = (0..count)
                .map(|_| TcpListener::bind("127.0.0.1:0"))
                .collect::<Result<Vec<_>, _>>()?;
            for listener in listeners {
                println!("{}", listener.local_addr()?.port());
            }
            Ok(())
        }
    }
}

fn run_server(args: &ServeArgs, role: http_server::Role) -> anyhow::Result<()> {
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(http_server::run(args.listen, role))
}
