//! `sink load`: open-loop load at a fixed request rate, for latency at a realistic rate
//! rather than at saturation (what wrk measures).
//!
//! Request `i` is due at `start + i / rate` and goes on connection `i mod C`, each
//! connection driven by its own thread with blocking I/O — at 1,000 requests/s a thread
//! per connection costs little, and `std::thread::sleep` (an hrtimer, ~50 µs slack) is
//! far finer than tokio's 1 ms timer wheel, which would blur sub-millisecond figures.
//!
//! Latency is measured from when the request was *sent* if its connection was free at
//! its due time (timer slack is not the server's fault), and from its *due time* if an
//! earlier request on that connection was still outstanding — the queueing a closed-loop
//! generator hides ("coordinated omission"). `late` counts those queued requests.
//!
//! The output line has the same `RESULT key=value` shape as `bench/wrk/report.lua`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// `sink load` flags.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Target, `http://HOST:PORT/PATH?QUERY`.
    #[arg(long)]
    url: String,
    /// Requests per second, all connections together.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Warm-up seconds, sent at the same rate but not recorded.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// File sent as every request's body (POST).
    #[arg(long)]
    body: PathBuf,
    /// Extra header, `Name: value`; repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
}

/// What one connection thread saw.
#[derive(Default)]
struct Tally {
    /// Recorded latencies in nanoseconds.
    latencies: Vec<u64>,
    errors: u64,
    late: u64,
}

pub fn run(args: &LoadArgs) -> anyhow::Result<()> {
    let (authority, path) = parse_url(&args.url)?;
    anyhow::ensure!(
        args.rate > 0 && args.connections > 0,
        "rate and connections must be > 0"
    );
    let body = std::fs::read(&args.body).with_context(|| format!("reading {:?}", args.body))?;
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
        body.len()
    );
    for header in &args.headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(&body);

    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let start = Instant::now() + Duration::from_millis(100);
    let measured_from = start + Duration::from_secs_f64(args.warmup);
    let end = measured_from + Duration::from_secs_f64(args.seconds);
    let connections = args.connections;
    let threads: Vec<_> = (0..connections)
        .map(|k| {
            let request = request.clone();
            let authority = authority.clone();
            std::thread::spawn(move || {
                connection(
                    &authority,
                    &request,
                    Schedule {
                        first: k,
                        step: connections,
                        interval,
                        start,
                        measured_from,
                        end,
                    },
                )
            })
        })
        .collect();
    let mut total = Tally::default();
    for thread in threads {
        let tally = thread
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        total.latencies.extend(tally.latencies);
        total.errors += tally.errors;
        total.late += tally.late;
    }
    let mut latencies = total.latencies;
    if latencies.is_empty() {
        bail!("no request completed");
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64) * p / 100.0).ceil() as usize;
        latencies[i.clamp(1, latencies.len()) - 1] / 1000
    };
    println!(
        "RESULT requests={} duration_us={} p50_us={} p99_us={} p999_us={} max_us={} errors={} late={}",
        latencies.len(),
        (args.seconds * 1e6) as u64,
        pct(50.0),
        pct(99.0),
        pct(99.9),
        latencies[latencies.len() - 1] / 1000,
        total.errors,
        total.late,
    );
    Ok(())
}

/// Which requests one connection sends, and when.
struct Schedule {
    first: usize,
    step: usize,
    interval: Duration,
    start: Instant,
    measured_from: Instant,
    end: Instant,
}

fn connection(authority: &str, request: &[u8], schedule: Schedule) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let mut stream = connect(authority)?;
    let mut buffer = Vec::with_capacity(4096);
    let mut previous_done = schedule.start;
    let mut i = schedule.first;
    loop {
        let due = schedule.start + schedule.interval * u32::try_from(i)?;
        if due >= schedule.end {
            break;
        }
        i += schedule.step;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let sent = Instant::now();
        let queued = previous_done > due;
        let outcome = exchange(&mut stream, request, &mut buffer);
        let done = Instant::now();
        previous_done = done;
        let ok = match outcome {
            Ok(status) => (200..300).contains(&status),
            Err(_) => {
                stream = connect(authority)?;
                false
            }
        };
        if due < schedule.measured_from {
            continue;
        }
        if !ok {
            tally.errors += 1;
            continue;
        }
        let from = if queued {
            tally.late += 1;
            due
        } else {
            sent
        };
        tally
            .latencies
            .push(u64::try_from((done - from).as_nanos()).unwrap_or(u64::MAX));
    }
    Ok(tally)
}

fn connect(authority: &str) -> anyhow::Result<TcpStream> {
    let stream =
        TcpStream::connect(authority).with_context(|| format!("connecting to {authority}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// Sends one request and reads one response; returns its status.
fn exchange(stream: &mut TcpStream, request: &[u8], buffer: &mut Vec<u8>) -> anyhow::Result<u16> {
    stream.write_all(request)?;
    buffer.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = find(buffer, b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed");
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buffer[..head_end])?.to_ascii_lowercase();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .context("no status")?
        .parse()
        .context("bad status")?;
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    if let Some(length) = header("content-length:") {
        let length: usize = length.parse()?;
        while buffer.len() < head_end + length {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                bail!("connection closed in the body");
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
    } else if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
        while !buffer[head_end..].ends_with(b"0\r\n\r\n") {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                bail!("connection closed in the body");
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
    }
    Ok(status)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `http://HOST:PORT/PATH?QUERY` into (`HOST:PORT`, `/PATH?QUERY`).
fn parse_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .context("only http:// URLs are supported")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok((authority.to_owned(), path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_target() {
        assert_eq!(
            parse_url("http://127.0.0.1:9/write?db=x").unwrap(),
            ("127.0.0.1:9".to_owned(), "/write?db=x".to_owned())
        );
        assert_eq!(
            parse_url("http://h:1").unwrap(),
            ("h:1".to_owned(), "/".to_owned())
        );
        assert!(parse_url("https://h/").is_err());
    }
}
