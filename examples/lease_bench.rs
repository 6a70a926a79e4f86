//! Lease issuance throughput: a real control (in process) issuing v2 leases against the
//! InfluxDB v2 test server, so the backend costs next to nothing and the figure is the
//! control's own: channel handshake, policy lookup, durable store write, scheduling.
//!
//! ```sh
//! cargo run --release --example lease_bench -- [SECONDS] [CONCURRENCY] [fresh|open|pipelined|all]
//! ```
//! Prints leases/s, p50 and p99 for three ways of asking:
//! - `fresh`: CONCURRENCY clients, each opening a new channel (a handshake) per lease;
//! - `open`: CONCURRENCY clients, each with one open channel, one request at a time;
//! - `pipelined`: one open channel with CONCURRENCY requests in flight.
//!
//! Naming one mode runs only that one (for profiling). Each line also gives the CPU time
//! the whole process (clients, control and test server together) spent per lease: the
//! figure that machine load moves least.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use leasehold_channel::home::Home;
use leasehold_channel::{Identity, PublicIdentity, Secret};
use leasehold_control::datadir::{DataDir, Settings};
use leasehold_protocol::client::Client;
use leasehold_protocol::{AddonConfig, Reply, Request};
use leasehold_testkit::v2server::V2Server;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(Ok(5), |s| s.parse())?;
    let concurrency: usize = args.next().map_or(Ok(8), |s| s.parse())?;
    let modes: &[Mode] = match args.next().as_deref() {
        None | Some("all") => &[Mode::Fresh, Mode::Open, Mode::Pipelined],
        Some("fresh") => &[Mode::Fresh],
        Some("open") => &[Mode::Open],
        Some("pipelined") => &[Mode::Pipelined],
        Some(other) => anyhow::bail!("unknown mode {other:?}: fresh, open, pipelined or all"),
    };

    let v2 = V2Server::start_default().await?;
    let dir = tempfile::tempdir()?;
    let home = Home::new(dir.path());
    let data = DataDir::new(home.control_dir());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let settings = Settings {
        listen: addr,
        advertise: vec![addr.to_string()],
    };
    leasehold_control::init(&home, &data, &settings).await?;
    let shutdown = CancellationToken::new();
    let running = leasehold_control::start(&data, listener, shutdown.clone()).await?;
    let control = running.identity;
    let admin = home.load_identity("admin")?;
    let addrs = vec![addr.to_string()];

    let mut client = Client::connect_to(&addrs, &control, &admin).await?;
    client
        .call(Request::AddonConfigure {
            addon: AddonConfig::Influxdb {
                endpoint_url: v2.url(),
                token: Secret::new(v2.admin_token()),
                org_id: v2.org_id().to_owned(),
                permissions: serde_json::json!([{"action":"write","resource":{"type":"buckets"}}]),
                default_ttl_secs: Some(600),
                max_ttl_secs: None,
                // One member issues every lease here: lift the per-member cap.
                max_live_leases: Some(leasehold_control::policy::MAX_LIVE_LEASES_LIMIT),
                ca_pem: None,
            },
            skip_verify: false,
        })
        .await?;

    println!("lease issuance, {concurrency} concurrent clients, {seconds}s per mode");
    for &mode in modes {
        let cpu_before = process_cpu();
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let workers: Vec<_> = match mode {
            Mode::Pipelined => vec![tokio::spawn(pipelined(
                addrs.clone(),
                control,
                admin.clone(),
                concurrency,
                deadline,
            ))],
            Mode::Fresh | Mode::Open => (0..concurrency)
                .map(|_| {
                    tokio::spawn(worker(
                        addrs.clone(),
                        control,
                        admin.clone(),
                        mode == Mode::Fresh,
                        deadline,
                    ))
                })
                .collect(),
        };
        let mut latencies = Vec::new();
        for worker in workers {
            latencies.extend(worker.await??);
        }
        let cpu = process_cpu()
            .zip(cpu_before)
            .map(|(after, before)| after - before);
        latencies.sort();
        let pct =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        println!(
            "{:<28} {:>8.0} leases/s   p50 {:>7.2} ms   p99 {:>7.2} ms   cpu {:>5.0} us/lease   ({} leases)",
            match mode {
                Mode::Fresh => "fresh channel per lease",
                Mode::Open => "one open channel per client",
                Mode::Pipelined => "one channel, pipelined",
            },
            latencies.len() as f64 / seconds as f64,
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            cpu.map_or(f64::NAN, |cpu| cpu.as_secs_f64() * 1e6
                / latencies.len() as f64),
            latencies.len()
        );
    }
    shutdown.cancel();
    running.wait().await;
    Ok(())
}

/// User plus system CPU time of this process so far, from `/proc/self/stat` (Linux;
/// clock ticks of 1/100 s, the kernel's fixed `USER_HZ`).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Fresh,
    Open,
    Pipelined,
}

async fn worker(
    addrs: Vec<String>,
    control: PublicIdentity,
    identity: Identity,
    fresh: bool,
    deadline: Instant,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    let mut open = None;
    while Instant::now() < deadline {
        let start = Instant::now();
        if fresh || open.is_none() {
            open = Some(Client::connect_to(&addrs, &control, &identity).await?);
        }
        let client = open.as_mut().expect("connected");
        let Reply::Lease(lease) = client.call(Request::LeaseCreate { ttl_secs: None }).await?
        else {
            anyhow::bail!("unexpected reply");
        };
        anyhow::ensure!(lease.token.is_some(), "no token");
        latencies.push(start.elapsed());
    }
    Ok(latencies)
}

/// One channel with `depth` lease requests in flight until the deadline.
async fn pipelined(
    addrs: Vec<String>,
    control: PublicIdentity,
    identity: Identity,
    depth: usize,
    deadline: Instant,
) -> anyhow::Result<Vec<Duration>> {
    let mut client = Client::connect_to(&addrs, &control, &identity).await?;
    let mut sent = HashMap::new();
    let mut latencies = Vec::new();
    for _ in 0..depth {
        let id = client
            .submit(Request::LeaseCreate { ttl_secs: None })
            .await?;
        sent.insert(id, Instant::now());
    }
    while !sent.is_empty() {
        let (id, reply) = client.next_answer().await?;
        let Reply::Lease(lease) = reply? else {
            anyhow::bail!("unexpected reply");
        };
        anyhow::ensure!(lease.token.is_some(), "no token");
        let start = sent.remove(&id).context("answer to a request never sent")?;
        latencies.push(start.elapsed());
        if Instant::now() < deadline {
            let id = client
                .submit(Request::LeaseCreate { ttl_secs: None })
                .await?;
            sent.insert(id, Instant::now());
        }
    }
    Ok(latencies)
}
