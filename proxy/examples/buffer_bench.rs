//! Store-and-forward figures for BENCHMARKS.md: writes into the buffer against direct
//! delivery, replay with live writes continuing, and recovery of a backlog.
//!
//! Everything runs in this process over loopback: a stub upstream (reads each body,
//! answers 204, or 503 while "down"), the proxy with a fixed lease, and the writers.
//! The buffer directory is a temporary directory under the current one.
//!
//! ```sh
//! cargo run --release -p leasehold-proxy --example buffer_bench -- [SECONDS] [BACKLOG_MIB]
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use leasehold_channel::{Identity, Secret};
use leasehold_protocol::{AuthScheme, LeaseRecord, LeaseStatus, Timestamp};
use leasehold_proxy::buffer::BufferConfig;
use leasehold_proxy::{Config, LeaseSource, Running, SourceError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Ends the live writers of the replay measurement.
static STOP_LIVE: AtomicBool = AtomicBool::new(false);

struct Source {
    endpoint: String,
}

impl LeaseSource for Source {
    async fn fetch(&mut self) -> Result<LeaseRecord, SourceError> {
        let created_at = Timestamp::now();
        Ok(LeaseRecord {
            id: "0000000000000001".into(),
            issued_for: Identity::from_seed(&[9; 32]).public(),
            created_at,
            expires_at: created_at.plus_secs(3600),
            token: Some(Secret::new(String::from("bench-token"))),
            status: LeaseStatus::Active,
            auth_scheme: AuthScheme::Token,
            endpoint_url: self.endpoint.clone(),
            ttl_ms: Some(3_600_000),
            membership: None,
        })
    }
}

#[derive(Default)]
struct Upstream {
    down: AtomicBool,
    accepted_bytes: AtomicU64,
}

async fn upstream(state: Arc<Upstream>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let state = Arc::clone(&state);
                    async move {
                        let body = request.into_body().collect().await.map(|b| b.to_bytes());
                        let status = if state.down.load(Ordering::Relaxed) {
                            StatusCode::SERVICE_UNAVAILABLE
                        } else {
                            if let Ok(body) = body {
                                state
                                    .accepted_bytes
                                    .fetch_add(body.len() as u64, Ordering::Relaxed);
                            }
                            StatusCode::NO_CONTENT
                        };
                        let mut response = Response::new(Empty::<Bytes>::new());
                        *response.status_mut() = status;
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn proxy(endpoint: String, buffer: Option<BufferConfig>) -> (Running, CancellationToken) {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        buffer,
        ..Config::default()
    }
    .validate()
    .unwrap();
    let listener = TcpListener::bind(config.listen()).await.unwrap();
    let admin = TcpListener::bind(config.admin_listen()).await.unwrap();
    let shutdown = CancellationToken::new();
    let mut running = leasehold_proxy::start(
        config,
        Source { endpoint },
        listener,
        admin,
        shutdown.clone(),
    )
    .unwrap();
    running.ready().await.unwrap();
    (running, shutdown)
}

type WriteClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> WriteClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// `writers` closed-loop writers for `duration` (each pausing `pause` between writes);
/// returns the latencies of the 204s. Panics on any other answer.
async fn load(
    url: &str,
    writers: usize,
    duration: Duration,
    body: Bytes,
    pause: Duration,
) -> Vec<Duration> {
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (url, body, client) = (url.to_owned(), body.clone(), client());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline && !STOP_LIVE.load(Ordering::Relaxed) {
                    let request = Request::post(url.as_str())
                        .body(Full::new(body.clone()))
                        .unwrap();
                    let started = Instant::now();
                    let response = client.request(request).await.unwrap();
                    let status = response.status();
                    let _ = response.into_body().collect().await;
                    assert_eq!(status, StatusCode::NO_CONTENT);
                    latencies.push(started.elapsed());
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

fn report(name: &str, mut latencies: Vec<Duration>, duration: Duration) {
    latencies.sort();
    let at = |p: f64| {
        let index = ((latencies.len() as f64 * p) as usize).min(latencies.len() - 1);
        latencies[index].as_secs_f64() * 1e3
    };
    println!(
        "{name}: {:.0} writes/s, p50 {:.2} ms, p99 {:.2} ms ({} writes)",
        latencies.len() as f64 / duration.as_secs_f64(),
        at(0.50),
        at(0.99),
        latencies.len()
    );
}

async fn buffered_bytes(admin: SocketAddr) -> u64 {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let uri = format!("http://{admin}/metrics").parse().unwrap();
    let response = client.get(uri).await.unwrap();
    let text = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .find_map(|l| l.strip_prefix("leasehold_proxy_buffer_bytes "))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("the buffer gauge") as u64
}

/// Waits until the buffer is empty; returns when the upstream first accepted a byte
/// (replay waits out its retry back-off first, at most 5 s) and when it was drained.
async fn wait_drained(admin: SocketAddr, upstream: &Upstream) -> (Duration, Duration) {
    let started = Instant::now();
    let already = upstream.accepted_bytes.load(Ordering::Relaxed);
    let mut first = None;
    while buffered_bytes(admin).await > 0 {
        if first.is_none() && upstream.accepted_bytes.load(Ordering::Relaxed) > already {
            first = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drained = started.elapsed();
    (first.unwrap_or(drained), drained)
}

/// ~1 KiB of line protocol: 10 points without timestamps (the buffer stamps them).
fn small_body() -> Bytes {
    let mut body = String::new();
    for i in 0..10 {
        body.push_str(&format!(
            "sensor,site=plant-{i},device=dev-0001,kind=temperature value={i}.5,status=\"ok\",battery=87i,rssi=-67i,firmware=\"1.4.2\"\n"
        ));
    }
    Bytes::from(body)
}

/// ~64 KiB of line protocol with timestamps (stored byte for byte).
fn batch_body() -> Bytes {
    let mut body = String::new();
    let mut i = 0u64;
    while body.len() < 64 * 1024 {
        body.push_str(&format!(
            "sensor,site=plant-{},device=dev-{i:04} value={i}.5,battery=87i {}\n",
            i % 16,
            1_700_000_000_000_000_000 + i
        ));
        i += 1;
    }
    Bytes::from(body)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let backlog_mib: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    let duration = Duration::from_secs(seconds);
    let dir = tempfile::tempdir_in(".").unwrap();
    let state = Arc::new(Upstream::default());
    let endpoint = format!("http://{}", upstream(Arc::clone(&state)).await);
    let small = small_body();
    println!(
        "small write: {} B, 16 writers, {seconds} s each",
        small.len()
    );

    let (plain, stop) = proxy(endpoint.clone(), None).await;
    let url = format!("http://{}/write?db=bench", plain.proxy_addr());
    let latencies = load(&url, 16, duration, small.clone(), Duration::ZERO).await;
    report("no buffer, delivered", latencies, duration);
    stop.cancel();
    plain.wait().await.unwrap();

    let buffer = |rate: u64| BufferConfig {
        dir: dir.path().join("buffer"),
        max_bytes: 8 << 30,
        replay_rate: rate,
        upstream_timeout: Duration::from_secs(10),
    };
    let (running, stop) = proxy(endpoint.clone(), Some(buffer(16 << 20))).await;
    let url = format!("http://{}/write?db=bench", running.proxy_addr());
    let admin = running.admin_addr();
    let latencies = load(&url, 16, duration, small.clone(), Duration::ZERO).await;
    report("buffer on, delivered", latencies, duration);
    state.down.store(true, Ordering::Relaxed);
    let latencies = load(&url, 16, duration, small.clone(), Duration::ZERO).await;
    report("buffer on, upstream 503: stored", latencies, duration);
    let backlog = buffered_bytes(admin).await;
    // Replay (16 MiB/s limit) while 4 writers keep writing, ~100 writes/s each.
    state.down.store(false, Ordering::Relaxed);
    state.accepted_bytes.store(0, Ordering::Relaxed);
    let live = {
        let (url, small) = (url.clone(), small.clone());
        let forever = Duration::from_secs(3600);
        tokio::spawn(async move { load(&url, 4, forever, small, Duration::from_millis(10)).await })
    };
    let (first, drained) = wait_drained(admin, &state).await;
    STOP_LIVE.store(true, Ordering::Relaxed);
    let live_writes = live.await.unwrap().len();
    let delivered = state.accepted_bytes.load(Ordering::Relaxed) as f64 / 1048576.0;
    let replaying = (drained - first).as_secs_f64();
    println!(
        "replay of {:.1} MiB with live writes continuing ({live_writes} written meanwhile): \
         first delivery after {:.2} s (retry back-off), then drained in {replaying:.2} s, \
         {:.1} MiB/s delivered",
        backlog as f64 / 1048576.0,
        first.as_secs_f64(),
        delivered / replaying,
    );

    stop.cancel();
    running.wait().await.unwrap();

    // Recovery of a backlog of BACKLOG_MIB, at the default limit and unlimited.
    let batch = batch_body();
    for (name, rate) in [("16 MiB/s (default)", 16u64 << 20), ("unlimited", u64::MAX)] {
        let (running, stop) = proxy(endpoint.clone(), Some(buffer(rate))).await;
        let url = format!("http://{}/write?db=bench", running.proxy_addr());
        let admin = running.admin_addr();
        state.down.store(true, Ordering::Relaxed);
        let filling = Instant::now();
        let client = client();
        while buffered_bytes(admin).await < backlog_mib << 20 {
            let mut writes = Vec::new();
            for _ in 0..64 {
                let request = Request::post(url.as_str())
                    .body(Full::new(batch.clone()))
                    .unwrap();
                writes.push(client.request(request));
            }
            for write in writes {
                assert_eq!(write.await.unwrap().status(), StatusCode::NO_CONTENT);
            }
        }
        let filled = filling.elapsed().as_secs_f64();
        let backlog = buffered_bytes(admin).await as f64 / 1048576.0;
        state.down.store(false, Ordering::Relaxed);
        let (first, drained) = wait_drained(admin, &state).await;
        let replaying = (drained - first).as_secs_f64();
        println!(
            "backlog {backlog:.0} MiB (stored in {filled:.1} s, {:.0} MiB/s of 64 KiB writes): \
             first delivery after {:.2} s, replayed at {name} in {replaying:.1} s ({:.0} MiB/s)",
            backlog / filled,
            first.as_secs_f64(),
            backlog / replaying
        );
        stop.cancel();
        running.wait().await.unwrap();
    }
}
