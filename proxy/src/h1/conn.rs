//! One client connection on the HTTP/1 fast path: read a head, forward it with its body
//! over the connection's own upstream connection, stream the answer back, repeat — all
//! in the connection's own task, with no hyper state machine on either side.
//!
//! The loop hands the connection to hyper (with every byte read so far, see
//! [`Served::Handoff`]) as soon as a head is not the common case (`head.rs`), the
//! request would get one of the proxy's own answers other than a 502 (no lease: 503; a
//! web page: 403; a path it will not forward: 400), or the upstream is `https`. hyper
//! then serves the connection to its end, exactly as it serves connections that never
//! took this path.
//!
//! What the loop keeps of hyper's behaviour, and where: the head-read timeout (from the
//! moment a connection waits for a head) and the idle timeout while waiting for one;
//! the head size limit (an oversized head goes to hyper, which answers 431); the body
//! read timeout (each wait for more of the body); a request in flight finishes on
//! shutdown and is cut at the deadline; `Connection: close` either way; a request body
//! that fails (timeout, bad chunk, the client gone) aborts the upstream request and
//! closes both connections; an upstream that cannot be reached gets the same 502 as on
//! hyper's path, the body drained or the connection closed after it (`drain.rs`'s
//! limits); 401 asks the refresher for a new lease; statuses and upstream latency are
//! counted.
//!
//! Buffers: one read buffer per side, growing like hyper's (8 KiB, up to the head
//! limit, which is also how far a large body is read ahead), and one scratch buffer for
//! heads and re-chunked data. A small write costs one read and one vectored write each
//! way.

use std::error::Error as StdError;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::StatusCode;
use http::uri::Authority;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tracing::{debug, info, warn};

use super::chunked::{ChunkError, ChunkedDecoder, Decoded, LAST_CHUNK, write_chunk_header};
use super::head::{self, Framing, Parsed, ParsedResponse};
use super::io::{Dial, is_idle_open, write_two};
use crate::browser::Verdict;
use crate::connector;
use crate::drain::{DRAIN_LIMIT, DRAIN_TIME, LINGER_LIMIT, LINGER_TIME};
use crate::forward::Shared;
use crate::responses::{self, ErrorCode};

/// First size of a read buffer (hyper's).
const INITIAL_BUFFER: usize = 8 * 1024;
/// Least free space offered to a read.
const MIN_READ: usize = 4 * 1024;
/// Re-chunked data is written out once this much has gathered.
const FLUSH_AT: usize = 64 * 1024;
/// Largest upstream response head (hyper's client reads up to about this much).
const MAX_RESPONSE_HEAD: usize = 400 * 1024;

/// What the fast path needs besides the shared request state.
pub struct FastPath<D> {
    /// What every request handler shares (credential, metrics, browser policy).
    pub shared: Arc<Shared>,
    /// Opens upstream connections.
    pub dial: D,
    /// Largest request head; also how far a body is read ahead.
    pub max_head: usize,
    /// How long a head may take, from the moment the connection waits for it.
    pub header_read_timeout: Duration,
    /// How long a connection waiting for a head may go without a byte.
    pub idle_timeout: Duration,
}

/// How a connection left the fast path.
#[derive(Debug)]
pub enum Served {
    /// It is done; close it.
    Closed,
    /// hyper is to serve it from here, starting with these bytes already read.
    Handoff(BytesMut),
}

/// What happens to the connection after an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

/// A request head accepted for the fast path; the upstream head is in `Conn::out`.
struct Prepared {
    head_len: usize,
    framing: Framing,
    client_close: bool,
    head_request: bool,
    generation: u64,
    authority: Authority,
}

enum Prep {
    Partial,
    Unusual,
    Ready(Prepared),
}

enum HeadWait {
    Ready(Prepared),
    Unusual,
    Closed,
}

/// Why reading more of a request body from the client failed.
#[derive(Debug, thiserror::Error)]
enum ReadFail {
    #[error("the client closed the connection")]
    Eof,
    #[error("the client sent nothing of its request body for the body read timeout")]
    Timeout,
    #[error(transparent)]
    Io(std::io::Error),
}

/// Why a request could not be sent whole.
#[derive(Debug, thiserror::Error)]
enum SendFail {
    #[error("the client's request body failed")]
    Client(#[source] ReadFail),
    #[error("invalid chunked request body: {0}")]
    Chunk(ChunkError),
    #[error("writing to the upstream failed")]
    Upstream(#[source] std::io::Error),
}

/// Why relaying a response failed.
enum RelayFail {
    /// Before anything reached the client: a 502 can still be sent.
    NoAnswer(Box<dyn StdError + Send + Sync>),
    /// Partway: the client's connection can only be closed.
    Broken,
}

/// How discarding an unread body went (`drain.rs`'s outcomes).
enum Discarded {
    Ended,
    Unfinished,
    Failed,
}

/// An open upstream connection and where it goes.
struct Held<U> {
    authority: Authority,
    io: U,
}

struct Conn<'a, C, D: Dial> {
    fast: &'a FastPath<D>,
    client: &'a mut C,
    /// Client bytes read and not yet used.
    inbuf: BytesMut,
    upstream: Option<Held<D::Io>>,
    /// Upstream bytes read and not yet used.
    upbuf: BytesMut,
    /// Heads being written, and re-chunked data.
    out: Vec<u8>,
    /// The one timer of the connection, re-armed for each wait (head, body, drain).
    timer: Pin<Box<Sleep>>,
}

impl<D: Dial> FastPath<D> {
    /// Serves `client` until it closes, or until a request for hyper comes.
    pub async fn serve<C>(
        &self,
        client: &mut C,
        shutdown: &CancellationToken,
        deadline: &CancellationToken,
    ) -> Served
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let mut conn = Conn {
            fast: self,
            client,
            inbuf: BytesMut::with_capacity(INITIAL_BUFFER),
            upstream: None,
            upbuf: BytesMut::new(),
            out: Vec::with_capacity(1024),
            timer: Box::pin(sleep_until(Instant::now() + self.header_read_timeout)),
        };
        conn.run(shutdown, deadline).await
    }
}

impl<C, D> Conn<'_, C, D>
where
    C: AsyncRead + AsyncWrite + Unpin,
    D: Dial,
{
    async fn run(&mut self, shutdown: &CancellationToken, deadline: &CancellationToken) -> Served {
        // Made once per connection: each `cancelled()` registers a waiter.
        let mut stopping = pin!(shutdown.cancelled());
        let mut cut = pin!(deadline.cancelled());
        loop {
            let prepared = match self.next_head(stopping.as_mut()).await {
                HeadWait::Ready(prepared) => prepared,
                HeadWait::Closed => return Served::Closed,
                HeadWait::Unusual => return Served::Handoff(std::mem::take(&mut self.inbuf)),
            };
            let next = tokio::select! {
                biased;
                next = self.exchange(prepared) => next,
                () = cut.as_mut() => {
                    debug!("closed at the shutdown deadline");
                    return Served::Closed;
                }
            };
            if next == Next::Close || shutdown.is_cancelled() {
                return Served::Closed;
            }
        }
    }

    /// Reads until a whole head is buffered, then judges it.
    async fn next_head(
        &mut self,
        mut stopping: Pin<&mut WaitForCancellationFuture<'_>>,
    ) -> HeadWait {
        let mut waiting_since: Option<Instant> = None;
        loop {
            if !self.inbuf.is_empty() {
                match self.prepare() {
                    Prep::Ready(prepared) => return HeadWait::Ready(prepared),
                    Prep::Unusual => return HeadWait::Unusual,
                    Prep::Partial => {}
                }
                // hyper answers an oversized head (431).
                if self.inbuf.len() >= self.fast.max_head {
                    return HeadWait::Unusual;
                }
            }
            // Armed only when the connection has to wait: the head-read clock starts
            // then, and the idle clock restarts with every byte.
            let now = Instant::now();
            let since = *waiting_since.get_or_insert(now);
            let due = (since + self.fast.header_read_timeout).min(now + self.fast.idle_timeout);
            self.timer.as_mut().reset(due);
            reserve(&mut self.inbuf, MIN_READ);
            let read = tokio::select! {
                biased;
                read = self.client.read_buf(&mut self.inbuf) => read,
                () = self.timer.as_mut() => {
                    debug!("no request head in time, or idle; closing");
                    return HeadWait::Closed;
                }
                () = stopping.as_mut() => return HeadWait::Closed,
            };
            match read {
                Ok(0) => return HeadWait::Closed,
                Ok(_) => {}
                Err(error) => {
                    debug!(%error, "client connection failed");
                    return HeadWait::Closed;
                }
            }
        }
    }

    /// Parses and judges the buffered head; on the fast path, writes the upstream head
    /// into `out`.
    fn prepare(&mut self) -> Prep {
        let mut slots = head::header_slots();
        let head = match head::parse_request(&self.inbuf, &mut slots) {
            Parsed::Fast(head) => head,
            Parsed::Partial => return Prep::Partial,
            Parsed::Unusual => return Prep::Unusual,
        };
        let shared = &*self.fast.shared;
        if shared.browser.judge(head.host, None, head.sec_fetch_site) != Verdict::Allowed {
            return Prep::Unusual;
        }
        let Some(credential) = shared.store.current(Instant::now()) else {
            return Prep::Unusual;
        };
        let upstream = credential.upstream();
        if upstream.is_https() {
            return Prep::Unusual;
        }
        let Ok(path) = upstream.map_target(head.target) else {
            return Prep::Unusual;
        };
        self.out.clear();
        head.write_upstream(
            &path,
            upstream.host_header().as_bytes(),
            credential.header().as_bytes(),
            &mut self.out,
        );
        Prep::Ready(Prepared {
            head_len: head.len,
            framing: head.framing,
            client_close: head.close,
            head_request: head.method == "HEAD",
            generation: credential.generation(),
            authority: upstream.authority().clone(),
        })
    }

    /// One request and its answer.
    async fn exchange(&mut self, prepared: Prepared) -> Next {
        self.inbuf.advance(prepared.head_len);
        let reusable = self
            .upstream
            .as_mut()
            .is_some_and(|held| held.authority == prepared.authority && is_idle_open(&mut held.io));
        if !reusable {
            self.upstream = None;
            match self.fast.dial.dial(&prepared.authority).await {
                Ok(io) => {
                    self.upstream = Some(Held {
                        authority: prepared.authority.clone(),
                        io,
                    });
                }
                Err(error) => {
                    let (_, message) = connector::describe(true, Some(&*error));
                    return self.unsent_bad_gateway(&message, &prepared).await;
                }
            }
        }
        let started = Instant::now();
        if let Err(error) = self.send_request(prepared.framing).await {
            // An upstream that stops reading a body it refuses (InfluxDB's 413 for an
            // oversized write) answers first and then closes: that answer is what the
            // client gets, with the connection closed after it (the body's rest unread).
            if matches!(error, SendFail::Upstream(_)) {
                let last = Prepared {
                    client_close: true,
                    ..prepared
                };
                let answered =
                    tokio::time::timeout(DRAIN_TIME, self.relay_response(&last, started)).await;
                if let Ok(Ok(_)) = answered {
                    debug!(error = %error, "the upstream answered before reading the whole body");
                    self.upstream = None;
                    return Next::Close;
                }
                if let Ok(Err(RelayFail::Broken)) = answered {
                    self.upstream = None;
                    return Next::Close;
                }
            }
            // The rest of the body is unknown: nothing more can be read on either side.
            self.upstream = None;
            let unreachable = false;
            let (_, message) = connector::describe(unreachable, Some(&error));
            if matches!(error, SendFail::Upstream(_)) {
                warn!(error = %message, "upstream request failed; answering 502");
            } else {
                debug!(error = %message, "request body failed; closing the connection");
            }
            self.answer_bad_gateway(unreachable, &message, true).await;
            return Next::Close;
        }
        match self.relay_response(&prepared, started).await {
            Ok(next) => next,
            Err(RelayFail::NoAnswer(error)) => {
                self.upstream = None;
                let (_, message) = connector::describe(false, Some(&*error));
                warn!(error = %message, "upstream request failed; answering 502");
                self.answer_bad_gateway(false, &message, prepared.client_close)
                    .await
            }
            Err(RelayFail::Broken) => {
                self.upstream = None;
                Next::Close
            }
        }
    }

    /// Writes the upstream head and the request body.
    async fn send_request(&mut self, framing: Framing) -> Result<(), SendFail> {
        let Some(held) = self.upstream.as_mut() else {
            unreachable!("connected before sending");
        };
        let up = &mut held.io;
        match framing {
            Framing::Empty | Framing::UntilClose => {
                up.write_all(&self.out).await.map_err(SendFail::Upstream)?;
                up.flush().await.map_err(SendFail::Upstream)?;
            }
            Framing::Length(length) => {
                let mut remaining = length;
                let mut head: &[u8] = &self.out;
                loop {
                    let take = self.inbuf.len().min(clamp(remaining));
                    write_two(up, head, &self.inbuf[..take])
                        .await
                        .map_err(SendFail::Upstream)?;
                    head = &[];
                    self.inbuf.advance(take);
                    remaining -= take as u64;
                    if remaining == 0 {
                        return Ok(());
                    }
                    let want = clamp(remaining).min(self.fast.max_head);
                    read_for_body(
                        self.client,
                        &mut self.inbuf,
                        &mut self.timer,
                        self.fast.shared.body_read_timeout,
                        want,
                    )
                    .await
                    .map_err(SendFail::Client)?;
                }
            }
            Framing::Chunked => {
                let mut decoder = ChunkedDecoder::new();
                loop {
                    let done = rechunk(&mut decoder, &mut self.inbuf, &mut self.out)
                        .map_err(SendFail::Chunk)?;
                    // Whatever is gathered goes out before waiting for the client, so a
                    // slow stream reaches the upstream as it comes.
                    if !self.out.is_empty() {
                        up.write_all(&self.out).await.map_err(SendFail::Upstream)?;
                        up.flush().await.map_err(SendFail::Upstream)?;
                        self.out.clear();
                    }
                    if done {
                        return Ok(());
                    }
                    read_for_body(
                        self.client,
                        &mut self.inbuf,
                        &mut self.timer,
                        self.fast.shared.body_read_timeout,
                        self.fast.max_head,
                    )
                    .await
                    .map_err(SendFail::Client)?;
                }
            }
        }
        Ok(())
    }

    /// Reads the upstream's answer and streams it to the client.
    async fn relay_response(
        &mut self,
        prepared: &Prepared,
        started: Instant,
    ) -> Result<Next, RelayFail> {
        let shared = &*self.fast.shared;
        let Some(held) = self.upstream.as_mut() else {
            unreachable!("connected before relaying");
        };
        let up = &mut held.io;
        self.upbuf.clear();
        let (head_len, framing, upstream_close) = loop {
            if !self.upbuf.is_empty() {
                let mut slots = head::header_slots();
                match head::parse_response(&self.upbuf, &mut slots, prepared.head_request) {
                    Err(bad) => return Err(RelayFail::NoAnswer(bad.into())),
                    Ok(ParsedResponse::Partial) => {}
                    Ok(ParsedResponse::Interim(len)) => {
                        self.upbuf.advance(len);
                        continue;
                    }
                    Ok(ParsedResponse::Final(response)) => {
                        shared.metrics.observe_upstream_latency(started.elapsed());
                        if response.status == 401
                            && shared.store.request_renewal(prepared.generation)
                        {
                            info!(
                                generation = prepared.generation,
                                "upstream answered 401; lease renewal requested"
                            );
                        }
                        shared.metrics.record_status(
                            StatusCode::from_u16(response.status)
                                .unwrap_or(StatusCode::BAD_GATEWAY),
                        );
                        self.out.clear();
                        response.write_client(prepared.client_close, &mut self.out);
                        break (response.len, response.framing, response.close);
                    }
                }
                if self.upbuf.len() >= MAX_RESPONSE_HEAD {
                    return Err(RelayFail::NoAnswer(
                        "the upstream's response head is too large".into(),
                    ));
                }
            }
            reserve(&mut self.upbuf, MIN_READ);
            match up.read_buf(&mut self.upbuf).await {
                Ok(0) => {
                    return Err(RelayFail::NoAnswer(
                        "connection closed before message completed".into(),
                    ));
                }
                Ok(_) => {}
                Err(error) => return Err(RelayFail::NoAnswer(error.into())),
            }
        };
        self.upbuf.advance(head_len);
        let client = &mut *self.client;
        let mut reusable = !upstream_close;
        match framing {
            Framing::Empty => {
                write_two(client, &self.out, &[])
                    .await
                    .map_err(|_| RelayFail::Broken)?;
            }
            Framing::Length(length) => {
                let mut remaining = length;
                let mut head: &[u8] = &self.out;
                loop {
                    let take = self.upbuf.len().min(clamp(remaining));
                    write_two(client, head, &self.upbuf[..take])
                        .await
                        .map_err(|_| RelayFail::Broken)?;
                    head = &[];
                    self.upbuf.advance(take);
                    remaining -= take as u64;
                    if remaining == 0 {
                        break;
                    }
                    reserve(&mut self.upbuf, clamp(remaining).min(self.fast.max_head));
                    match up.read_buf(&mut self.upbuf).await {
                        Ok(0) | Err(_) => return Err(RelayFail::Broken),
                        Ok(_) => {}
                    }
                }
            }
            Framing::Chunked => {
                let mut decoder = ChunkedDecoder::new();
                loop {
                    let done = rechunk(&mut decoder, &mut self.upbuf, &mut self.out)
                        .map_err(|_| RelayFail::Broken)?;
                    if !self.out.is_empty() {
                        write_two(client, &self.out, &[])
                            .await
                            .map_err(|_| RelayFail::Broken)?;
                        self.out.clear();
                    }
                    if done {
                        break;
                    }
                    reserve(&mut self.upbuf, self.fast.max_head.min(FLUSH_AT));
                    match up.read_buf(&mut self.upbuf).await {
                        Ok(0) | Err(_) => return Err(RelayFail::Broken),
                        Ok(_) => {}
                    }
                }
            }
            Framing::UntilClose => {
                reusable = false;
                loop {
                    if !self.upbuf.is_empty() {
                        write_chunk_header(self.upbuf.len(), &mut self.out);
                        self.out.extend_from_slice(&self.upbuf);
                        self.out.extend_from_slice(b"\r\n");
                        self.upbuf.clear();
                    }
                    if !self.out.is_empty() {
                        write_two(client, &self.out, &[])
                            .await
                            .map_err(|_| RelayFail::Broken)?;
                        self.out.clear();
                    }
                    reserve(&mut self.upbuf, self.fast.max_head.min(FLUSH_AT));
                    match up.read_buf(&mut self.upbuf).await {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(_) => return Err(RelayFail::Broken),
                    }
                }
                write_two(client, LAST_CHUNK, &[])
                    .await
                    .map_err(|_| RelayFail::Broken)?;
            }
        }
        // Bytes after the answer: the upstream is confused; do not reuse it.
        if !reusable || !self.upbuf.is_empty() {
            self.upstream = None;
        }
        Ok(if prepared.client_close {
            Next::Close
        } else {
            Next::KeepAlive
        })
    }

    /// The 502 for a request that never went out: its body is still the client's, so it
    /// is read and discarded when that is cheap, as `drain.rs` does for hyper's path.
    async fn unsent_bad_gateway(&mut self, message: &str, prepared: &Prepared) -> Next {
        warn!(error = %message, "upstream request failed; answering 502");
        let outcome = self
            .discard_body(prepared.framing, DRAIN_LIMIT, Instant::now() + DRAIN_TIME)
            .await;
        let close = prepared.client_close || !matches!(outcome, Discarded::Ended);
        let next = self.answer_bad_gateway(true, message, close).await;
        if matches!(outcome, Discarded::Unfinished) {
            // A lingering close: the client may still be writing the body.
            self.discard_body(prepared.framing, LINGER_LIMIT, Instant::now() + LINGER_TIME)
                .await;
        }
        next
    }

    /// Writes the proxy's own 502; `close` adds `Connection: close` and ends the
    /// connection after it.
    async fn answer_bad_gateway(&mut self, unreachable: bool, message: &str, close: bool) -> Next {
        let code = if unreachable {
            ErrorCode::Unavailable
        } else {
            ErrorCode::Internal
        };
        self.fast
            .shared
            .metrics
            .record_status(StatusCode::BAD_GATEWAY);
        let body = responses::error_body(code, message);
        self.out.clear();
        self.out.extend_from_slice(
            b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ",
        );
        head::write_decimal(body.len() as u64, &mut self.out);
        if close {
            self.out.extend_from_slice(b"\r\nconnection: close");
        }
        self.out.extend_from_slice(b"\r\n\r\n");
        if write_two(self.client, &self.out, &body).await.is_err() || close {
            return Next::Close;
        }
        Next::KeepAlive
    }

    /// Reads and drops an unread request body, up to `limit` bytes until `until`.
    async fn discard_body(&mut self, framing: Framing, limit: u64, until: Instant) -> Discarded {
        let mut read: u64 = 0;
        let mut decoder = ChunkedDecoder::new();
        let mut remaining = match framing {
            Framing::Empty | Framing::UntilClose => return Discarded::Ended,
            Framing::Length(length) if length > limit => return Discarded::Unfinished,
            Framing::Length(length) => length,
            Framing::Chunked => u64::MAX,
        };
        loop {
            match framing {
                Framing::Chunked => loop {
                    match decoder.decode(&self.inbuf) {
                        Err(_) => return Discarded::Failed,
                        Ok((framing, Decoded::Data(len))) => {
                            self.inbuf.advance(framing + len);
                            read += len as u64;
                            if read > limit {
                                return Discarded::Unfinished;
                            }
                        }
                        Ok((framing, Decoded::NeedMore)) => {
                            self.inbuf.advance(framing);
                            break;
                        }
                        Ok((framing, Decoded::End)) => {
                            self.inbuf.advance(framing);
                            return Discarded::Ended;
                        }
                    }
                },
                _ => {
                    let take = self.inbuf.len().min(clamp(remaining));
                    self.inbuf.advance(take);
                    remaining -= take as u64;
                    if remaining == 0 {
                        return Discarded::Ended;
                    }
                }
            }
            self.timer.as_mut().reset(until);
            reserve(&mut self.inbuf, MIN_READ);
            let read = tokio::select! {
                biased;
                read = self.client.read_buf(&mut self.inbuf) => read,
                () = self.timer.as_mut() => return Discarded::Unfinished,
            };
            match read {
                Ok(0) | Err(_) => return Discarded::Failed,
                Ok(_) => {}
            }
        }
    }
}

/// Reads more of a request body from `client` into `buf` (room for `want` bytes made),
/// failing if nothing comes for `timeout`.
async fn read_for_body<C: AsyncRead + Unpin>(
    client: &mut C,
    buf: &mut BytesMut,
    timer: &mut Pin<Box<Sleep>>,
    timeout: Duration,
    want: usize,
) -> Result<(), ReadFail> {
    reserve(buf, want.max(MIN_READ));
    timer.as_mut().reset(Instant::now() + timeout);
    let read = tokio::select! {
        biased;
        read = client.read_buf(buf) => read,
        () = timer.as_mut() => return Err(ReadFail::Timeout),
    };
    match read {
        Ok(0) => Err(ReadFail::Eof),
        Ok(_) => Ok(()),
        Err(error) => Err(ReadFail::Io(error)),
    }
}

/// Decodes the chunked data in `src` and appends it to `out`, re-chunked; returns
/// whether the body ended. What it used is removed from `src`.
fn rechunk(
    decoder: &mut ChunkedDecoder,
    src: &mut BytesMut,
    out: &mut Vec<u8>,
) -> Result<bool, ChunkError> {
    loop {
        let (framing, decoded) = decoder.decode(src)?;
        match decoded {
            Decoded::Data(len) => {
                write_chunk_header(len, out);
                out.extend_from_slice(&src[framing..framing + len]);
                out.extend_from_slice(b"\r\n");
                src.advance(framing + len);
            }
            Decoded::NeedMore => {
                src.advance(framing);
                return Ok(false);
            }
            Decoded::End => {
                src.advance(framing);
                out.extend_from_slice(LAST_CHUNK);
                return Ok(true);
            }
        }
    }
}

/// Makes room for at least `want` more bytes (growing from the initial size).
fn reserve(buf: &mut BytesMut, want: usize) {
    if buf.capacity() - buf.len() < want {
        buf.reserve(want.max(INITIAL_BUFFER));
    }
}

/// A byte count as `usize`, saturating.
fn clamp(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}
