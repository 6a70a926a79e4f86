//! The control at fleet scale: release `leasehold control serve` processes (one, or
//! several replicas on a PostgreSQL of the benchmark's own) issuing v2 leases against
//! the InfluxDB v2 test server (in a child process, `influx.rs`), to sidecar-like
//! clients in this process.
//!
//! ```sh
//! cargo build --release --example fleet_bench --bin leasehold
//! target/release/examples/fleet_bench fleet --clients 10000 --replicas 3 --ttl 60 --seconds 60 --herd
//! target/release/examples/fleet_bench saturate --replicas 1 --store redb --clients 32 --seconds 15
//! target/release/examples/fleet_bench history --store postgres --records 0,100000,1000000
//! ```
//! (`bench/fleet.sh` runs the set BENCHMARKS.md reports.)
//!
//! - `fleet`: CLIENTS enrolled identities, each renewing leases of TTL seconds exactly as
//!   the proxy does (`sidecar.rs`), first leases spread over one renewal interval. Once
//!   every client holds a lease and one TTL has passed, a window of SECONDS is measured:
//!   leases/s, latency percentiles, and the replicas' CPU per lease. With `--herd`, every
//!   replica is then killed and restarted, and every client asks at the same instant for
//!   a lease on a new channel: the time until all hold one, and the replicas' CPU per
//!   fresh-channel lease.
//! - `saturate`: CLIENTS clients asking back to back (one open channel each, or a new
//!   channel per lease with `--fresh`): the issuance rate and CPU per lease.
//! - `history`: one control whose store holds RECORDS ended leases (and ACTIVE live
//!   ones): spawn-to-ready time and `leasehold lease list --status active` time.
//!
//! CPU is the replicas' own (utime + stime from `/proc/PID/stat`): the clients'
//! handshakes and the store fill run in this process, the test server and PostgreSQL in
//! their own. Every line carries the load average: the machine may be shared.

mod fleet;
mod influx;
mod population;
mod report;
mod sidecar;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use leasehold_channel::Secret;
use leasehold_channel::home::Enrollment;
use leasehold_protocol::client::Client;
use leasehold_protocol::{AddonConfig, Request};
use leasehold_testkit::postgres::Postgres;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use leasehold_control::metrics::REVOCATIONS_DONE;

use crate::fleet::Fleet;
use crate::report::{Latencies, load, per_lease_us};
use crate::sidecar::Tally;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Enrolled sidecars renewing with the proxy's jitter; then, with --herd, all of
    /// them at once after every replica restarted.
    Fleet {
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        #[arg(long, default_value_t = 3)]
        replicas: usize,
        #[arg(long, value_enum, default_value_t = StoreKind::Postgres)]
        store: StoreKind,
        /// Lease lifetime in seconds (the default lease is 300: a shorter one compresses
        /// time, every renewal keeping its place relative to the lifetime).
        #[arg(long, default_value_t = 60)]
        ttl: u64,
        /// Length of the measured window.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        #[arg(long)]
        herd: bool,
    },
    /// Clients asking back to back.
    Saturate {
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 1)]
        replicas: usize,
        #[arg(long, value_enum, default_value_t = StoreKind::Postgres)]
        store: StoreKind,
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        /// A new channel (handshake) per lease.
        #[arg(long)]
        fresh: bool,
    },
    /// Start-up and `lease list --status active` against a store with history.
    History {
        #[arg(long, value_enum, default_value_t = StoreKind::Postgres)]
        store: StoreKind,
        /// Ended lease records, one run per value.
        #[arg(long, value_delimiter = ',', default_value = "0,100000,1000000")]
        records: Vec<usize>,
        /// Live lease records (what `--status active` lists).
        #[arg(long, default_value_t = 1000)]
        active: usize,
        /// Timed runs of each (start-up, listing).
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// (Internal) the InfluxDB stand-in, in a process of its own (`influx.rs`).
    #[command(hide = true)]
    ServeInflux,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    Postgres,
    Redb,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().scenario {
        Scenario::Fleet {
            clients,
            replicas,
            store,
            ttl,
            seconds,
            herd,
        } => {
            fleet_run(
                clients,
                replicas,
                store,
                Duration::from_secs(ttl),
                seconds,
                herd,
            )
            .await
        }
        Scenario::Saturate {
            clients,
            replicas,
            store,
            seconds,
            fresh,
        } => saturate(clients, replicas, store, seconds, fresh).await,
        Scenario::History {
            store,
            records,
            active,
            runs,
        } => history(store, &records, active, runs).await,
        Scenario::ServeInflux => influx::serve().await,
    }
}

/// The store server (if PostgreSQL), the InfluxDB stand-in, and a fleet initialized on
/// them with `clients` enrolled identities, serving.
struct Setup {
    // Dropped last (fields drop in order): the replicas before their database.
    fleet: Fleet,
    identities: Vec<leasehold_channel::Identity>,
    _v2: influx::Influx,
    _pg: Option<Postgres>,
    _dir: tempfile::TempDir,
}

impl Setup {
    /// `max_live_leases`: the add-on's cap per member (the default, 8, unless set).
    async fn start(
        store: StoreKind,
        replicas: usize,
        clients: usize,
        ttl: u64,
        max_live_leases: Option<u32>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let pg = match store {
            StoreKind::Postgres => Some(tokio::task::spawn_blocking(Postgres::start).await??),
            StoreKind::Redb => None,
        };
        let url = pg.as_ref().map(Postgres::url);
        let v2 = tokio::task::spawn_blocking(influx::Influx::spawn).await??;
        let mut fleet = Fleet::init(dir.path(), replicas, url.as_deref()).await?;
        let store = population::open(&fleet, url.as_deref()).await?;
        let started = Instant::now();
        let identities = population::enroll(&store, clients).await?;
        eprintln!("{clients} identities enrolled in {:.1?}", started.elapsed());
        drop(store);
        fleet.start()?;
        let mut admin =
            Client::connect_to(&fleet.addrs()[..1], &fleet.control, &fleet.admin()?).await?;
        admin
            .call(Request::AddonConfigure {
                addon: AddonConfig::Influxdb {
                    endpoint_url: v2.url.clone(),
                    token: Secret::new(&v2.token),
                    org_id: v2.org_id.clone(),
                    permissions: serde_json::json!([{"action":"write","resource":{"type":"buckets"}}]),
                    default_ttl_secs: Some(ttl),
                    max_ttl_secs: None,
                    max_live_leases,
                    ca_pem: None,
                },
                skip_verify: false,
            })
            .await?;
        fleet.ready().await?;
        Ok(Self {
            fleet,
            identities,
            _v2: v2,
            _pg: pg,
            _dir: dir,
        })
    }

    fn enrollment(&self) -> Enrollment {
        Enrollment {
            addrs: self.fleet.addrs(),
            control: self.fleet.control,
        }
    }
}

fn store_name(store: StoreKind, replicas: usize) -> String {
    match store {
        StoreKind::Postgres => format!("{replicas} replica(s) on PostgreSQL"),
        StoreKind::Redb => "1 control on redb".to_owned(),
    }
}

/// Joins every client; their tallies.
async fn join(clients: Vec<tokio::task::JoinHandle<Tally>>) -> anyhow::Result<Vec<Tally>> {
    let mut tallies = Vec::with_capacity(clients.len());
    for client in clients {
        tallies.push(client.await?);
    }
    Ok(tallies)
}

fn failures(tallies: &[Tally]) -> String {
    let count: u64 = tallies.iter().map(|t| t.failures).sum();
    match tallies.iter().find_map(|t| t.last_failure.as_deref()) {
        Some(example) if count > 0 => format!("{count} failed attempts (e.g. {example})"),
        _ => "no failed attempt".to_owned(),
    }
}

async fn fleet_run(
    clients: usize,
    replicas: usize,
    store: StoreKind,
    ttl: Duration,
    seconds: u64,
    herd: bool,
) -> anyhow::Result<()> {
    let mut setup = Setup::start(store, replicas, clients, ttl.as_secs(), None).await?;
    let enrollment = setup.enrollment();
    let stop = CancellationToken::new();
    let holding = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    // A fleet already running: first leases spread over one renewal interval.
    let spread = ttl.mul_f64(leasehold_proxy::schedule::RENEW_FRACTION);
    let tasks: Vec<_> = setup
        .identities
        .iter()
        .map(|identity| {
            let first_at = t0 + spread.mul_f64(leasehold_proxy::schedule::jitter_sample());
            tokio::spawn(sidecar::renew(
                enrollment.clone(),
                identity.clone(),
                ttl,
                first_at,
                holding.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let mut progress = Instant::now();
    while holding.load(Ordering::Relaxed) < clients || t0.elapsed() < ttl {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(600),
            "warm-up longer than 10 minutes"
        );
        if progress.elapsed() >= Duration::from_secs(10) {
            eprintln!(
                "warm-up: {} of {clients} hold a lease after {:.0?}",
                holding.load(Ordering::Relaxed),
                t0.elapsed()
            );
            progress = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let warm = t0.elapsed();
    let (window, cpu_before, load_before) = (Instant::now(), setup.fleet.cpu(), load());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (end, cpu) = (Instant::now(), setup.fleet.cpu() - cpu_before);
    stop.cancel();
    let tallies = join(tasks).await?;
    let latencies = Latencies::new(
        tallies
            .iter()
            .flat_map(|t| &t.leases)
            .filter(|(at, _)| (window..end).contains(at))
            .map(|&(_, took)| took)
            .collect(),
    );
    println!(
        "fleet: {clients} sidecars, {}-s leases, {}: warm in {warm:.1?}; over {seconds} s: \
         {:.0} leases/s, {}, replicas' CPU {:.0} us/lease ({} leases); {}; load {load_before} -> {}",
        ttl.as_secs(),
        store_name(store, replicas),
        latencies.len() as f64 / seconds as f64,
        latencies.summary(),
        per_lease_us(cpu, latencies.len()),
        latencies.len(),
        failures(&tallies),
        load()
    );
    if herd {
        thundering_herd(&mut setup).await?;
    }
    Ok(())
}

/// Every replica killed and restarted; then every client at once on a new channel,
/// asking for a lease of the default lifetime (time is not compressed here: a lease
/// that took longer than a shortened lifetime to arrive would be refused as expired).
async fn thundering_herd(setup: &mut Setup) -> anyhow::Result<()> {
    let ttl = Duration::from_secs(leasehold_control::policy::DEFAULT_TTL_SECS);
    setup.fleet.kill();
    let restart = setup.fleet.start()?;
    setup.fleet.ready().await?;
    let enrollment = setup.enrollment();
    let go = CancellationToken::new();
    let tasks: Vec<_> = setup
        .identities
        .iter()
        .map(|identity| {
            tokio::spawn(sidecar::first_lease(
                enrollment.clone(),
                identity.clone(),
                ttl,
                go.clone(),
                Duration::from_secs(300),
            ))
        })
        .collect();
    // Every client parked on `go` before it is given.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (cpu_before, load_before) = (setup.fleet.cpu(), load());
    let started = Instant::now();
    go.cancel();
    // How it converges (or not): every 10 s, the clients done (leased, or gave up).
    let mut progress = Instant::now();
    while tasks.iter().any(|t| !t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if progress.elapsed() >= Duration::from_secs(10) {
            // Not the replicas' /metrics here: under the herd a scrape took them tens
            // of seconds to answer, and held this loop as long.
            let done = tasks.iter().filter(|t| t.is_finished()).count();
            eprintln!(
                "herd: {done} of {} done after {:.0?}; load {}",
                tasks.len(),
                started.elapsed(),
                load()
            );
            progress = Instant::now();
        }
    }
    let tallies = join(tasks).await?;
    let cpu = setup.fleet.cpu() - cpu_before;
    let revoked = setup.fleet.metric(REVOCATIONS_DONE).await;
    setup.fleet.keep_logs()?;
    let leased: Vec<_> = tallies.iter().filter_map(|t| t.leases.first()).collect();
    let last = leased
        .iter()
        .map(|(at, _)| *at - started)
        .max()
        .unwrap_or_default();
    let latencies = Latencies::new(leased.iter().map(|(at, _)| *at - started).collect());
    println!(
        "herd: {} of {} sidecars leased after all {} replicas restarted (ready in {restart:.1?}): \
         all within {last:.1?} (time to lease p50 {:.0} ms p99 {:.0} ms), replicas' CPU {:.0} us \
         per fresh-channel lease; {revoked} credentials revoked meanwhile; {}; load \
         {load_before} -> {}",
        leased.len(),
        tallies.len(),
        setup.fleet.addrs().len(),
        latencies.ms(0.5),
        latencies.ms(0.99),
        per_lease_us(cpu, leased.len()),
        failures(&tallies),
        load()
    );
    Ok(())
}

async fn saturate(
    clients: usize,
    replicas: usize,
    store: StoreKind,
    seconds: u64,
    fresh: bool,
) -> anyhow::Result<()> {
    // Each client asks back to back: lift the per-member cap, as lease_bench does.
    let cap = Some(leasehold_control::policy::MAX_LIVE_LEASES_LIMIT);
    let setup = Setup::start(store, replicas, clients, 600, cap).await?;
    let enrollment = setup.enrollment();
    let (cpu_before, load_before) = (setup.fleet.cpu(), load());
    let until = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = setup
        .identities
        .iter()
        .map(|identity| {
            tokio::spawn(sidecar::back_to_back(
                enrollment.clone(),
                identity.clone(),
                fresh,
                until,
            ))
        })
        .collect();
    let tallies = join(tasks).await?;
    let cpu = setup.fleet.cpu() - cpu_before;
    let latencies = Latencies::new(
        tallies
            .iter()
            .flat_map(|t| &t.leases)
            .map(|&(_, took)| took)
            .collect(),
    );
    println!(
        "saturate: {}, {clients} clients, {}: {:.0} leases/s, {}, replicas' CPU {:.0} us/lease \
         ({} leases); {}; load {load_before} -> {}",
        store_name(store, replicas),
        if fresh {
            "new channel per lease"
        } else {
            "one open channel each"
        },
        latencies.len() as f64 / seconds as f64,
        latencies.summary(),
        per_lease_us(cpu, latencies.len()),
        latencies.len(),
        failures(&tallies),
        load()
    );
    Ok(())
}

async fn history(
    store: StoreKind,
    records: &[usize],
    active: usize,
    runs: usize,
) -> anyhow::Result<()> {
    let pg = match store {
        StoreKind::Postgres => Some(tokio::task::spawn_blocking(Postgres::start).await??),
        StoreKind::Redb => None,
    };
    for &count in records {
        let dir = tempfile::tempdir()?;
        let database = format!("history_{count}");
        let url = match &pg {
            Some(pg) => Some(pg.create_database(&database)?),
            None => None,
        };
        let mut fleet = Fleet::init(dir.path(), 1, url.as_deref()).await?;
        let member = fleet.admin()?.public();
        let endpoint = "http://127.0.0.1:8086";
        let filled = Instant::now();
        let store_handle = population::open(&fleet, url.as_deref()).await?;
        population::active(&store_handle, member, endpoint, active).await?;
        match &pg {
            Some(pg) => population::history_sql(pg, &database, member, endpoint, count)?,
            None => population::history(&store_handle, member, endpoint, count).await?,
        }
        drop(store_handle);
        eprintln!(
            "{count} history records written in {:.1?}",
            filled.elapsed()
        );
        // Restarts after a clean stop, then one after a crash (`SIGKILL`): the embedded
        // store checks a file that was not closed before it opens it.
        let mut starts = Vec::new();
        for _ in 0..runs {
            starts.push(fleet.start()?);
            fleet.stop()?;
        }
        fleet.start()?;
        fleet.kill();
        let after_crash = fleet.start()?;
        let mut lists = Vec::new();
        for _ in 0..runs {
            let (took, listed) = list_active(&fleet)?;
            anyhow::ensure!(
                listed == active,
                "listed {listed} active leases, expected {active}"
            );
            lists.push(took);
        }
        fleet.kill();
        println!(
            "history: {} with {count} ended + {active} active lease records: start-up (spawn to \
             ready) {}, after a crash {after_crash:.1?}; `lease list --status active` {}; load {}",
            store_name(store, 1),
            Latencies::new(starts).summary(),
            Latencies::new(lists).summary(),
            load()
        );
    }
    Ok(())
}

/// Runs `leasehold lease list --status active` as the admin; its wall time and how many
/// leases it printed.
fn list_active(fleet: &Fleet) -> anyhow::Result<(Duration, usize)> {
    let started = std::time::Instant::now();
    let output = std::process::Command::new(fleet.bin())
        .arg("--home")
        .arg(fleet.home().root())
        .args(["lease", "list", "--status", "active"])
        .output()?;
    let took = started.elapsed();
    anyhow::ensure!(
        output.status.success(),
        "lease list: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains(" active "))
        .count();
    Ok((took, listed))
}
