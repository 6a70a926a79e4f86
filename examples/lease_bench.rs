//! Lease issuance throughput: a real control (in process) issuing v2 leases against the
//! InfluxDB v2 test server, so the backend costs next to nothing and the figure is the
//! control's own: channel handshake, policy lookup, durable store write, scheduling.
//!
//! ```sh
//! cargo run --release --example lease_bench -- [SECONDS] [CONCURRENCY] [fresh|fresh-resume|open|pipelined|all] [--control-process] [--leases N]
//! ```
//! Prints leases/s, p50 and p99 for four ways of asking:
//! - `fresh`: CONCURRENCY clients, each opening a new channel (a full IK handshake) per
//!   lease;
//! - `fresh-resume`: the same, but each client resumes with the ticket its previous
//!   channel brought (as the sidecar does), so only its first channel is a full one;
//! - `open`: CONCURRENCY clients, each with one open channel, one request at a time;
//! - `pipelined`: one open channel with CONCURRENCY requests in flight.
//!
//! Naming one mode runs only that one (for profiling). Each line also gives the CPU time
//! the whole process (clients, control and test server together) spent per lease: the
//! figure that machine load moves least.
//!
//! With `--control-process` the control runs as a separate `leasehold control serve`
//! (the `leasehold` binary built next to this example: `cargo build --release --example
//! lease_bench --bin leasehold`), still against the in-process test server, and each line
//! adds that process's own CPU per lease (utime + stime from `/proc/PID/stat`): the
//! control's side alone, with the clients' handshakes in this process.
//!
//! For a count of the control's instructions, which machine load does not move:
//! `--leases N` runs each mode until N leases are issued (SECONDS is then ignored), and
//! `LEASE_BENCH_CONTROL_WRAP` (e.g. `valgrind --tool=callgrind`) is put before the
//! control's command line; the control is then stopped with SIGTERM, so the tool can
//! write its report. Two runs with different N give the instructions per lease as the
//! difference over the difference of N, start-up and shutdown cancelling out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use leasehold_channel::home::Home;
use leasehold_channel::resumption::TicketSlot;
use leasehold_channel::{Identity, PublicIdentity, Secret};
use leasehold_control::datadir::{DataDir, Settings};
use leasehold_protocol::client::Client;
use leasehold_protocol::{AddonConfig, Reply, Request};
use leasehold_testkit::v2server::V2Server;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let separate = args.iter().any(|a| a == "--control-process");
    args.retain(|a| a != "--control-process");
    let leases: Option<usize> = match args.iter().position(|a| a == "--leases") {
        Some(at) => {
            let count = args
                .get(at + 1)
                .context("--leases needs a count")?
                .parse()?;
            args.drain(at..at + 2);
            Some(count)
        }
        None => None,
    };
    let mut args = args.into_iter();
    let seconds: u64 = args.next().map_or(Ok(5), |s| s.parse())?;
    let concurrency: usize = args.next().map_or(Ok(8), |s| s.parse())?;
    let modes: &[Mode] = match args.next().as_deref() {
        None | Some("all") => &[Mode::Fresh, Mode::FreshResume, Mode::Open, Mode::Pipelined],
        Some("fresh") => &[Mode::Fresh],
        Some("fresh-resume") => &[Mode::FreshResume],
        Some("open") => &[Mode::Open],
        Some("pipelined") => &[Mode::Pipelined],
        Some(other) => {
            anyhow::bail!("unknown mode {other:?}: fresh, fresh-resume, open, pipelined or all")
        }
    };

    let v2 = V2Server::start_default().await?;
    let dir = tempfile::tempdir()?;
    let home = Home::new(dir.path());
    let data = DataDir::new(home.control_dir());
    let handle = if separate {
        ControlHandle::process(&home, &data).await?
    } else {
        ControlHandle::in_process(&home, &data).await?
    };
    let (addr, control) = (handle.addr, handle.identity);
    let control_pid = handle.pid();
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

    let per_mode = leases.map_or(format!("{seconds}s"), |n| format!("{n} leases"));
    println!("lease issuance, {concurrency} concurrent clients, {per_mode} per mode");
    for &mode in modes {
        let cpu_before = process_cpu("self");
        let control_before = control_pid.and_then(|pid| process_cpu(&pid.to_string()));
        let started = Instant::now();
        let deadline = started + Duration::from_secs(seconds);
        let workers: Vec<_> = match mode {
            Mode::Pipelined => vec![tokio::spawn(pipelined(
                addrs.clone(),
                control,
                admin.clone(),
                concurrency,
                Until::new(deadline, leases),
            ))],
            Mode::Fresh | Mode::FreshResume | Mode::Open => (0..concurrency)
                .map(|client| {
                    // The count shared out, the first clients taking the remainder.
                    let share =
                        leases.map(|n| n / concurrency + usize::from(client < n % concurrency));
                    tokio::spawn(worker(
                        addrs.clone(),
                        control,
                        admin.clone(),
                        mode,
                        Until::new(deadline, share),
                    ))
                })
                .collect(),
        };
        let mut latencies = Vec::new();
        for worker in workers {
            latencies.extend(worker.await??);
        }
        let cpu = process_cpu("self")
            .zip(cpu_before)
            .map(|(after, before)| after - before);
        let control_cpu = control_pid
            .and_then(|pid| process_cpu(&pid.to_string()))
            .zip(control_before)
            .map(|(after, before)| after - before);
        latencies.sort();
        let per_lease = |cpu: Option<Duration>| {
            cpu.map_or(f64::NAN, |cpu| {
                cpu.as_secs_f64() * 1e6 / latencies.len() as f64
            })
        };
        let pct =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        println!(
            "{:<28} {:>8.0} leases/s   p50 {:>7.2} ms   p99 {:>7.2} ms   cpu {:>5.0} us/lease{}   ({} leases)",
            match mode {
                Mode::Fresh => "fresh channel per lease",
                Mode::FreshResume => "fresh channel, resumed",
                Mode::Open => "one open channel per client",
                Mode::Pipelined => "one channel, pipelined",
            },
            latencies.len() as f64 / started.elapsed().as_secs_f64(),
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            per_lease(
                cpu.zip(control_cpu)
                    .map(|(bench, control)| bench + control)
                    .or(cpu)
            ),
            control_cpu.map_or(String::new(), |control| format!(
                " (control process {:>5.0})",
                per_lease(Some(control))
            )),
            latencies.len()
        );
    }
    handle.stop().await;
    Ok(())
}

/// The control under test: in this process, or a `leasehold control serve` child.
struct ControlHandle {
    addr: SocketAddr,
    identity: PublicIdentity,
    running: Running,
}

enum Running {
    InProcess(CancellationToken, Box<leasehold_control::Running>),
    Process(std::process::Child),
}

impl ControlHandle {
    async fn in_process(home: &Home, data: &DataDir) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let settings = Settings {
            listen: addr,
            advertise: vec![addr.to_string()],
        };
        leasehold_control::init(home, data, &settings).await?;
        let shutdown = CancellationToken::new();
        let running = leasehold_control::start(data, listener, shutdown.clone()).await?;
        Ok(Self {
            addr,
            identity: running.identity,
            running: Running::InProcess(shutdown, Box::new(running)),
        })
    }

    /// `leasehold control serve` on ports of its own choosing, read back from its ready
    /// file; the binary is the one built next to this example.
    async fn process(home: &Home, data: &DataDir) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let bin = exe
            .parent()
            .and_then(|examples| examples.parent())
            .context("the example's directory")?
            .join("leasehold");
        anyhow::ensure!(
            bin.exists(),
            "{} is missing: cargo build --release --bin leasehold",
            bin.display()
        );
        let any: SocketAddr = "127.0.0.1:0".parse()?;
        let settings = Settings {
            listen: any,
            advertise: vec![any.to_string()],
        };
        let identity = leasehold_control::init(home, data, &settings)
            .await?
            .public();
        let ready = home.root().join("control.ready");
        // A tool to run the control under, e.g. `valgrind --tool=callgrind`.
        let wrap = std::env::var("LEASE_BENCH_CONTROL_WRAP").unwrap_or_default();
        let mut wrap = wrap.split_whitespace();
        let mut command = match wrap.next() {
            Some(tool) => {
                let mut command = std::process::Command::new(tool);
                command.args(wrap).arg(&bin);
                command
            }
            None => std::process::Command::new(&bin),
        };
        let child = command
            .arg("--home")
            .arg(home.root())
            .args(["control", "serve", "--ready-file"])
            .arg(&ready)
            .env("LEASEHOLD_CONTROL_ADMIN_LISTEN", "127.0.0.1:0")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut handle = Self {
            addr: any,
            identity,
            running: Running::Process(child),
        };
        // Generous: under an instrumenting tool start-up is slow.
        let deadline = Instant::now() + Duration::from_secs(300);
        let text = loop {
            if let Ok(text) = std::fs::read_to_string(&ready)
                && text.contains("admin=")
            {
                break text;
            }
            if let Running::Process(child) = &mut handle.running
                && let Some(status) = child.try_wait()?
            {
                anyhow::bail!("control serve exited: {status}");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "control serve not ready in 300 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        handle.addr = text
            .lines()
            .find_map(|line| line.strip_prefix("listen="))
            .context("no listen= in the ready file")?
            .trim()
            .parse()?;
        Ok(handle)
    }

    fn pid(&self) -> Option<u32> {
        match &self.running {
            Running::Process(child) => Some(child.id()),
            Running::InProcess(..) => None,
        }
    }

    async fn stop(self) {
        match self.running {
            Running::InProcess(shutdown, running) => {
                shutdown.cancel();
                running.wait().await;
            }
            Running::Process(mut child) => {
                // SIGTERM, so that a tool the control runs under writes its report; the
                // control drains within its grace period.
                let terminated = std::process::Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status()
                    .is_ok_and(|status| status.success());
                if !terminated {
                    let _ = child.kill();
                }
                let _ = child.wait();
            }
        }
    }
}

/// User plus system CPU time of a process (`self` or a pid) so far, from
/// `/proc/PID/stat` (Linux; clock ticks of 1/100 s, the kernel's fixed `USER_HZ`).
fn process_cpu(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// When a client stops asking: at a deadline, or after a count of leases.
#[derive(Clone, Copy)]
enum Until {
    Deadline(Instant),
    Count(usize),
}

impl Until {
    fn new(deadline: Instant, count: Option<usize>) -> Self {
        count.map_or(Self::Deadline(deadline), Self::Count)
    }

    /// Whether to ask again, `asked` leases in.
    fn more(self, asked: usize) -> bool {
        match self {
            Self::Deadline(deadline) => Instant::now() < deadline,
            Self::Count(count) => asked < count,
        }
    }

    /// The most leases to ask for.
    fn cap(self) -> usize {
        match self {
            Self::Deadline(_) => usize::MAX,
            Self::Count(count) => count,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Fresh,
    FreshResume,
    Open,
    Pipelined,
}

async fn worker(
    addrs: Vec<String>,
    control: PublicIdentity,
    identity: Identity,
    mode: Mode,
    until: Until,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    let mut open = None;
    let mut tickets = TicketSlot::new();
    while until.more(latencies.len()) {
        let start = Instant::now();
        if mode != Mode::Open || open.is_none() {
            open = Some(match mode {
                Mode::FreshResume => {
                    Client::connect_resuming(&addrs, &control, &identity, &mut tickets).await?
                }
                _ => Client::connect_to(&addrs, &control, &identity).await?,
            });
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
    until: Until,
) -> anyhow::Result<Vec<Duration>> {
    let mut client = Client::connect_to(&addrs, &control, &identity).await?;
    let mut sent = HashMap::new();
    let mut latencies = Vec::new();
    for _ in 0..depth.min(until.cap()) {
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
        if until.more(latencies.len() + sent.len()) {
            let id = client
                .submit(Request::LeaseCreate { ttl_secs: None })
                .await?;
            sent.insert(id, Instant::now());
        }
    }
    Ok(latencies)
}
