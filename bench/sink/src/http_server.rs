//! The HTTP/1.1 server behind `sink serve` and `sink issuer`: keep-alive connections,
//! `TCP_NODELAY`, one task per connection, no logging on the request path.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::answer::status;
use crate::issuer::Issuer;

/// What the server answers.
#[derive(Clone, Copy, Debug)]
pub enum Role {
    /// 204 to everything, body read and dropped; at most this many bits per second per
    /// request if set (an upstream behind a slower link than loopback).
    Sink(Option<u64>),
    /// The v2 authorizations stub.
    Issuer,
}

/// Binds `addr`, prints `listening on ADDR` and serves until killed.
pub async fn run(addr: SocketAddr, role: Role) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    // The harness reads this line to learn the port when `addr` had port 0.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {}", listener.local_addr()?)?;
    stdout.flush()?;
    let issuer = Issuer::default();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("accept failed: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let issuer = issuer.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let issuer = issuer.clone();
                async move {
                    Ok::<_, Infallible>(match role {
                        Role::Sink(bits_per_sec) => sink(request, bits_per_sec).await,
                        Role::Issuer => issuer.handle(request).await,
                    })
                }
            });
            // Errors are clients going away mid-request; nothing to report in a benchmark.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Reads the body frame by frame, keeping nothing, and answers 204. With a rate, each
/// frame is followed by a pause that keeps the request at or under `bits_per_sec`; TCP
/// flow control then slows the sender as a slower link would.
async fn sink(request: Request<Incoming>, bits_per_sec: Option<u64>) -> Response<Full<Bytes>> {
    let started = tokio::time::Instant::now();
    let mut bytes: u64 = 0;
    let mut body = request.into_body();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return status(StatusCode::BAD_REQUEST);
        };
        if let (Some(rate), Some(data)) = (bits_per_sec, frame.data_ref()) {
            bytes += data.len() as u64;
            let due =
                started + std::time::Duration::from_secs_f64(bytes as f64 * 8.0 / rate as f64);
            tokio::time::sleep_until(due).await;
        }
    }
    status(StatusCode::NO_CONTENT)
}
