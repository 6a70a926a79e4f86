//! Store and forward: line-protocol writes that cannot be delivered now are kept on
//! disk, durably, and replayed when delivery works again (`--buffer-dir`).
//!
//! A pure core — [`record`] (the checksummed on-disk record), [`stamp`] (giving points
//! without a timestamp their arrival time), [`plan`] (batching, pacing, retry waits) —
//! and a thin shell: `log.rs` (segment files, blocking I/O), this file (group commit and
//! the replay loop) and `write.rs` (the request path for writes).
//!
//! **Group commit.** Writes hand their encoded record to one writer task over a channel;
//! it takes every record waiting, appends them with one `write` and one `fsync`, and
//! answers them all. Under concurrent load many writes share one `fsync`.
//!
//! **Order.** While anything is buffered, new writes go behind it, so InfluxDB sees
//! each target's points in the order they arrived; replay takes the oldest first and
//! keeps its place when delivery fails again.
//!
//! **Accounting.** `bytes` counts records from the moment their space is reserved
//! (before the `fsync`) until InfluxDB accepted them, so "empty" really means nothing
//! is waiting or on its way to disk.

mod log;
pub mod plan;
pub mod record;
pub mod stamp;
mod write;

use std::io::{self, Write as _};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use self::log::LogError;
use self::log::{Batch, Log};
use crate::connector::UpstreamConnector;
use crate::store::CredentialStore;
pub(crate) use write::{handle_write, is_write};

/// Records waiting for the writer task before writes wait for room in the channel.
const APPEND_QUEUE: usize = 1024;
/// Most records in one group commit.
const MAX_GROUP: usize = 1024;
/// The wait for a lease or new data when there is nothing to do (a safety net: both
/// are also signalled).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// The client replay and buffered-mode writes use: whole bodies, so a write can be
/// stored after an attempt to deliver it failed.
pub type WriteClient = Client<UpstreamConnector, Full<Bytes>>;

/// Buffer settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferConfig {
    /// The directory of segment files (created 0700).
    pub dir: PathBuf,
    /// Most bytes kept on disk; further writes get 503.
    pub max_bytes: u64,
    /// Replay rate limit, in body bytes per second.
    pub replay_rate: u64,
    /// How long a write or replay request may wait for InfluxDB's answer before the
    /// write is buffered (or the replay retried).
    pub upstream_timeout: Duration,
}

/// Why a write was not stored.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Storing it would pass `--buffer-max-bytes`.
    #[error("the write buffer is full")]
    Full,
    /// The disk refused it.
    #[error("the write buffer could not store the write: {0}")]
    Io(#[from] io::Error),
    /// The writer task has stopped (the proxy is shutting down).
    #[error("the write buffer is shutting down")]
    Stopped,
}

/// What `/metrics` and `/readyz` read: plain atomics.
#[derive(Debug, Default)]
pub struct BufferStats {
    /// `--buffer-max-bytes`.
    pub limit: u64,
    bytes: AtomicU64,
    /// Arrival of the oldest waiting write, ns since the epoch; 0 when empty.
    oldest_ns: AtomicU64,
    replayed: AtomicU64,
    dropped: AtomicU64,
}

impl BufferStats {
    /// Bytes waiting (on disk or being written).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// Age of the oldest waiting write.
    pub fn oldest_age(&self) -> Duration {
        match self.oldest_ns.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            oldest => Duration::from_nanos(now_ns().saturating_sub(oldest)),
        }
    }

    /// Records InfluxDB accepted on replay.
    pub fn replayed(&self) -> u64 {
        self.replayed.load(Ordering::Relaxed)
    }

    /// Records InfluxDB refused on replay (bad data, gone database), and so dropped.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Reserves room for `len` bytes; false when the buffer would pass its limit.
    fn reserve(&self, len: u64) -> bool {
        self.bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bytes| {
                bytes.checked_add(len).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, len: u64) {
        let _ = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                Some(b.saturating_sub(len))
            });
    }
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

struct Append {
    record: Vec<u8>,
    done: oneshot::Sender<io::Result<()>>,
}

/// The open buffer: the writer's channel, the log and the figures.
pub struct Buffer {
    appends: mpsc::Sender<Append>,
    log: Arc<Mutex<Log>>,
    stats: Arc<BufferStats>,
    /// Signals the replay loop that something was appended.
    appended: Notify,
    client: WriteClient,
    config: BufferConfig,
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("config", &self.config)
            .field("bytes", &self.stats.bytes())
            .finish_non_exhaustive()
    }
}

impl Buffer {
    /// Opens the directory (recovering what a previous run left) and starts the writer
    /// task, which ends when the buffer is dropped. Must be called inside a runtime.
    pub fn open(config: BufferConfig, connector: UpstreamConnector) -> Result<Arc<Self>, LogError> {
        let (log, recovered) = Log::open(&config.dir)?;
        if recovered.records > 0 || recovered.dropped_bytes > 0 {
            info!(
                records = recovered.records,
                bytes = recovered.bytes,
                dropped_bytes = recovered.dropped_bytes,
                "buffered writes found; they will be replayed"
            );
        }
        let stats = Arc::new(BufferStats {
            limit: config.max_bytes,
            bytes: AtomicU64::new(recovered.bytes),
            oldest_ns: AtomicU64::new(recovered.oldest_arrival_ns.unwrap_or(0)),
            ..BufferStats::default()
        });
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let (appends, receiver) = mpsc::channel(APPEND_QUEUE);
        let log = Arc::new(Mutex::new(log));
        let buffer = Arc::new(Self {
            appends,
            log: Arc::clone(&log),
            stats,
            appended: Notify::new(),
            client,
            config,
        });
        tokio::spawn(write_loop(receiver, log, Arc::downgrade(&buffer)));
        Ok(buffer)
    }

    /// The figures, for metrics.
    pub fn stats(&self) -> &Arc<BufferStats> {
        &self.stats
    }

    /// Whether nothing is waiting: new writes may then go straight to InfluxDB.
    pub fn is_empty(&self) -> bool {
        self.stats.bytes() == 0
    }

    /// Stores an encoded record durably; resolves once it is on disk.
    async fn append(&self, record: Vec<u8>, arrival_ns: u64) -> Result<(), AppendError> {
        let len = record.len() as u64;
        if !self.stats.reserve(len) {
            return Err(AppendError::Full);
        }
        let _ = self.stats.oldest_ns.compare_exchange(
            0,
            arrival_ns,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        let (done, result) = oneshot::channel();
        let outcome = match self.appends.send(Append { record, done }).await {
            Ok(()) => match result.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(AppendError::Io(error)),
                Err(_) => Err(AppendError::Stopped),
            },
            Err(_) => Err(AppendError::Stopped),
        };
        if outcome.is_err() {
            self.stats.release(len);
        }
        outcome
    }

    /// Replays until `shutdown`: oldest first, with the current lease, paced, keeping
    /// its place on failure.
    pub async fn replay(self: Arc<Self>, store: Arc<CredentialStore>, shutdown: CancellationToken) {
        let mut failures = 0u32;
        // A new lease (or its loss) ends a wait at once: replay resumes as soon as
        // delivery can work, not at the end of a back-off.
        let mut leases = store.subscribe_ready();
        loop {
            let log = Arc::clone(&self.log);
            let next = tokio::task::spawn_blocking(move || {
                log.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .next_batch()
            })
            .await;
            let batch = match next {
                Ok(Ok(Some(batch))) => batch,
                Ok(Ok(None)) => {
                    if self.is_empty() {
                        self.stats.oldest_ns.store(0, Ordering::Relaxed);
                    }
                    if !self.pause(&shutdown, &mut leases, IDLE_POLL, true).await {
                        return;
                    }
                    continue;
                }
                Ok(Err(error)) => {
                    error!(%error, "reading the write buffer failed; retrying");
                    if !self
                        .pause(&shutdown, &mut leases, plan::MAX_RETRY, false)
                        .await
                    {
                        return;
                    }
                    continue;
                }
                Err(_) => return,
            };
            self.stats
                .oldest_ns
                .store(batch.arrival_ns, Ordering::Relaxed);
            let started = tokio::time::Instant::now();
            match self.deliver(&batch, &store).await {
                Delivery::Accepted | Delivery::Refused => {
                    failures = 0;
                    if !self.consume(&batch).await {
                        return;
                    }
                    let pace = plan::paced(batch.body.len(), self.config.replay_rate)
                        .saturating_sub(started.elapsed());
                    if !pace.is_zero() && !self.pause(&shutdown, &mut leases, pace, false).await {
                        return;
                    }
                }
                Delivery::Later => {
                    failures = failures.saturating_add(1);
                    if !self
                        .pause(&shutdown, &mut leases, plan::retry_after(failures), false)
                        .await
                    {
                        return;
                    }
                }
            }
        }
    }

    /// Waits `wait`, or until a lease is installed, or (when `on_append`) something is
    /// appended; false on shutdown.
    async fn pause(
        &self,
        shutdown: &CancellationToken,
        leases: &mut watch::Receiver<bool>,
        wait: Duration,
        on_append: bool,
    ) -> bool {
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = self.appended.notified(), if on_append => true,
            Ok(()) = leases.changed() => true,
            () = tokio::time::sleep(wait) => true,
        }
    }

    async fn consume(&self, batch: &Batch) -> bool {
        let log = Arc::clone(&self.log);
        let disk_bytes = batch.disk_bytes;
        let consumed = tokio::task::spawn_blocking(move || {
            log.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .consume(disk_bytes)
        })
        .await;
        match consumed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => warn!(%error, "removing a replayed buffer segment failed"),
            Err(_) => return false,
        }
        self.stats.release(disk_bytes);
        if self.is_empty() {
            self.stats.oldest_ns.store(0, Ordering::Relaxed);
            info!("write buffer replayed; writes go straight to InfluxDB again");
        }
        true
    }

    async fn deliver(&self, batch: &Batch, store: &CredentialStore) -> Delivery {
        let Some(credential) = store.current(tokio::time::Instant::now()) else {
            return Delivery::Later;
        };
        let upstream = credential.upstream();
        let uri = PathAndQuery::from_str(&batch.target)
            .ok()
            .and_then(|pq| upstream.target_path(Some(pq)).ok())
            .and_then(|path| upstream.absolute_uri(path).ok());
        let Some(uri) = uri else {
            warn!(
                records = batch.records,
                "a buffered write's target is not usable; dropping it"
            );
            self.stats
                .dropped
                .fetch_add(batch.records as u64, Ordering::Relaxed);
            return Delivery::Refused;
        };
        let mut request = Request::new(Full::new(batch.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert(AUTHORIZATION, credential.header().clone());
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        let generation = credential.generation();
        drop(credential);
        let sent = tokio::time::timeout(self.config.upstream_timeout, self.client.request(request));
        let status = match sent.await {
            Ok(Ok(response)) => response.status(),
            Ok(Err(error)) => {
                let (_, message) = crate::connector::describe_error(&error);
                warn!(error = %message, "replaying buffered writes failed; will retry");
                return Delivery::Later;
            }
            Err(_) => {
                warn!("InfluxDB did not answer a replayed write in time; will retry");
                return Delivery::Later;
            }
        };
        match classify(status) {
            Outcome::Delivered => {
                self.stats
                    .replayed
                    .fetch_add(batch.records as u64, Ordering::Relaxed);
                Delivery::Accepted
            }
            Outcome::Retry => {
                if status == StatusCode::UNAUTHORIZED && store.request_renewal(generation) {
                    info!(generation, "replay got 401; lease renewal requested");
                }
                Delivery::Later
            }
            Outcome::Refused => {
                error!(
                    %status,
                    records = batch.records,
                    target = %batch.target,
                    "InfluxDB refused buffered writes; they are dropped"
                );
                self.stats
                    .dropped
                    .fetch_add(batch.records as u64, Ordering::Relaxed);
                Delivery::Refused
            }
        }
    }
}

enum Delivery {
    Accepted,
    /// InfluxDB will never take it: move past it.
    Refused,
    Later,
}

/// What an InfluxDB answer to a write means for the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored in InfluxDB.
    Delivered,
    /// Not now (5xx, 429, or a 401 while the lease is being renewed): keep it.
    Retry,
    /// InfluxDB's own refusal (400, 403, 404, 413...): never buffered; dropped on replay.
    Refused,
}

/// Classifies InfluxDB's answer to a write.
pub fn classify(status: StatusCode) -> Outcome {
    if status.is_success() {
        Outcome::Delivered
    } else if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::UNAUTHORIZED
    {
        Outcome::Retry
    } else {
        Outcome::Refused
    }
}

/// The writer task: group commit until the buffer is dropped.
async fn write_loop(
    mut receiver: mpsc::Receiver<Append>,
    log: Arc<Mutex<Log>>,
    buffer: std::sync::Weak<Buffer>,
) {
    while let Some(first) = receiver.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(append) => group.push(append),
                Err(_) => break,
            }
        }
        let mut bytes = Vec::with_capacity(group.iter().map(|a| a.record.len()).sum());
        for append in &group {
            bytes.extend_from_slice(&append.record);
        }
        let log = Arc::clone(&log);
        // The write and its `fsync` run without the lock, so replay's reads and deletes
        // do not wait for the disk.
        let written = tokio::task::spawn_blocking(move || {
            let lock = || log.lock().unwrap_or_else(PoisonError::into_inner);
            let (id, mut file, durable) = lock().active()?;
            if let Err(error) = file.write_all(&bytes).and_then(|()| file.sync_data()) {
                // Not acknowledged: cut it, so the next group does not follow garbage
                // (if even that fails, recovery cuts it).
                let _ = file.set_len(durable);
                return Err(error);
            }
            lock().commit(id, &bytes)
        })
        .await
        .unwrap_or_else(|_| Err(io::Error::other("the buffer writer panicked")));
        if let Err(error) = &written {
            error!(%error, records = group.len(), "writing to the write buffer failed");
        }
        for append in group {
            let result = match &written {
                Ok(()) => Ok(()),
                Err(error) => Err(io::Error::new(error.kind(), error.to_string())),
            };
            let _ = append.done.send(result);
        }
        match buffer.upgrade() {
            Some(buffer) => buffer.appended.notify_one(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn influxdb_answers_are_classified() {
        assert_eq!(classify(StatusCode::NO_CONTENT), Outcome::Delivered);
        for retry in [500, 502, 503, 504, 429, 401] {
            let status = StatusCode::from_u16(retry).unwrap();
            assert_eq!(classify(status), Outcome::Retry, "{retry}");
        }
        for refused in [400, 403, 404, 413] {
            let status = StatusCode::from_u16(refused).unwrap();
            assert_eq!(classify(status), Outcome::Refused, "{refused}");
        }
    }

    #[test]
    fn reservations_respect_the_limit() {
        let stats = BufferStats {
            limit: 10,
            ..BufferStats::default()
        };
        assert!(stats.reserve(6));
        assert!(!stats.reserve(5));
        assert!(stats.reserve(4));
        stats.release(10);
        assert_eq!(stats.bytes(), 0);
    }
}
