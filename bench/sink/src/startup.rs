//! `sink startup`: how long a command takes from `spawn` to its first `200` on a
//! readiness URL — for leasehold, `/readyz`, which turns 200 once the first lease is
//! held. Polls every millisecond over a fresh connection (a refused connection costs
//! microseconds), stops the process with SIGTERM after each run, and reports the median.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// `sink startup` flags.
#[derive(Debug, clap::Args)]
pub struct StartupArgs {
    /// How many starts.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Readiness URL, `http://HOST:PORT/PATH`.
    #[arg(long)]
    ready: String,
    /// Give up on a start after this many seconds.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Where the command's stdout and stderr go (appended).
    #[arg(long)]
    log: PathBuf,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn run(args: &StartupArgs) -> anyhow::Result<()> {
    let rest = args
        .ready
        .strip_prefix("http://")
        .context("only http:// readiness URLs are supported")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut times = Vec::with_capacity(args.runs);
    for run in 1..=args.runs {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&args.log)?;
        let started = Instant::now();
        let mut child = Command::new(&args.command[0])
            .args(&args.command[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {:?}", args.command[0]))?;
        let outcome = wait_ready(&mut child, authority, path, args.timeout);
        let elapsed = started.elapsed();
        let rss_kib = vm_rss_kib(child.id());
        stop(&mut child)?;
        outcome?;
        println!(
            "RUN {run} ready_ms={:.1} rss_kib={}",
            elapsed.as_secs_f64() * 1e3,
            rss_kib.map_or_else(|| "?".to_owned(), |k| k.to_string())
        );
        times.push(elapsed);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "RESULT runs={} median_ms={:.1} min_ms={:.1} max_ms={:.1}",
        times.len(),
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1])
    );
    Ok(())
}

fn wait_ready(child: &mut Child, authority: &str, path: &str, timeout: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        if probe(authority, path) == Some(200) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("the command exited before it was ready ({status})");
        }
        if Instant::now() > deadline {
            bail!("not ready after {timeout}s");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One `GET`; the status, or `None` if nothing answered.
fn probe(authority: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(authority).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 32];
    let mut filled = 0;
    while filled < 12 {
        let n = stream.read(&mut head[filled..]).ok()?;
        if n == 0 {
            return None;
        }
        filled += n;
    }
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// SIGTERM (through `kill`, to stay free of `unsafe`), then SIGKILL after 5 s.
fn stop(child: &mut Child) -> anyhow::Result<()> {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}
