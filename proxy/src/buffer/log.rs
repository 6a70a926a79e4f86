//! The buffer's files: a directory of numbered segment files, appended at the back and
//! consumed at the front. Blocking I/O; the async shell calls it from blocking tasks.
//!
//! - **Durable before acknowledged**: [`Log::append`] writes a group of records and
//!   `fsync`s once; a segment's `len` (what the reader may read) grows only after that,
//!   so replay never sees bytes that a crash could still take back.
//! - **Crash-safe**: [`Log::open`] checks every record (length bound and CRC-32); at the
//!   first bad one the segment is cut there — a torn tail is dropped, never replayed.
//! - **Bounded files**: a segment is closed once it passes [`SEGMENT_BYTES`]; a consumed
//!   segment is deleted. Replay keeps its place in memory; after a restart a segment is
//!   replayed from its start (at least once: InfluxDB overwrites an identical point).
//! - **Private**: the directory is made 0700 and files 0600; a lock file keeps a second
//!   proxy out of the same directory.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tracing::warn;

use super::plan;
use super::record::{self, DecodeError, HEADER_LEN, Record};

/// A segment is closed and a new one started once it holds this much.
pub const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

const SEGMENT_SUFFIX: &str = ".seg";
const LOCK_FILE: &str = "LOCK";

/// Why the buffer directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file operation failed.
    #[error("buffer directory {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Another process holds the directory's lock.
    #[error("buffer directory {0} is in use by another proxy")]
    Locked(PathBuf),
}

/// What [`Log::open`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Bytes of valid records waiting.
    pub bytes: u64,
    /// Valid records waiting.
    pub records: u64,
    /// Bytes cut off as torn or corrupt.
    pub dropped_bytes: u64,
    /// Arrival time of the oldest record, if any.
    pub oldest_arrival_ns: Option<u64>,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    /// Durable, readable length.
    len: u64,
}

/// The next batch to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Path and query of every record in it.
    pub target: String,
    /// Their bodies, joined.
    pub body: Bytes,
    /// How many records.
    pub records: usize,
    /// Their size on disk, to [`Log::consume`] once delivered.
    pub disk_bytes: u64,
    /// Arrival of the first.
    pub arrival_ns: u64,
}

/// The open buffer directory.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    _lock: File,
    /// Oldest first; the last one is appended to.
    segments: VecDeque<Segment>,
    active: File,
    /// The front segment, open for reading, and the offset replay has reached in it.
    reader: Option<File>,
    offset: u64,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_owned(),
        source,
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SEGMENT_SUFFIX}"))
}

fn private_file(path: &Path, create_new: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .create_new(create_new)
        .mode(0o600)
        .open(path)
}

impl Log {
    /// Opens (creating it if needed) the buffer directory and checks every record.
    pub fn open(dir: &Path) -> Result<(Self, Recovered), LogError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_error(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = private_file(&lock_path, false).map_err(io_error(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(LogError::Locked(dir.to_owned()));
        }
        let mut ids = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            let name = entry.file_name();
            let id = name
                .to_str()
                .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(id) = id {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let mut recovered = Recovered::default();
        let mut segments = VecDeque::new();
        for id in ids {
            let path = segment_path(dir, id);
            let scan = scan_segment(&path).map_err(io_error(&path))?;
            recovered.bytes += scan.valid;
            recovered.records += scan.records;
            recovered.dropped_bytes += scan.dropped;
            if recovered.oldest_arrival_ns.is_none() {
                recovered.oldest_arrival_ns = scan.first_arrival_ns;
            }
            if scan.valid == 0 {
                fs::remove_file(&path).map_err(io_error(&path))?;
            } else {
                segments.push_back(Segment {
                    id,
                    len: scan.valid,
                });
            }
        }
        let next = segments.back().map_or(1, |s| s.id + 1);
        let path = segment_path(dir, next);
        let active = private_file(&path, true).map_err(io_error(&path))?;
        segments.push_back(Segment { id: next, len: 0 });
        sync_dir(dir).map_err(io_error(dir))?;
        let log = Self {
            dir: dir.to_owned(),
            _lock: lock,
            segments,
            active,
            reader: None,
            offset: 0,
        };
        Ok((log, recovered))
    }

    /// Appends encoded records and makes them durable (one `fsync` for the group).
    pub fn append(&mut self, records: &[u8]) -> io::Result<()> {
        let Some(back) = self.segments.back_mut() else {
            return Err(io::Error::other("buffer log has no segment"));
        };
        if let Err(error) = self
            .active
            .write_all(records)
            .and_then(|()| self.active.sync_data())
        {
            // Whatever part was written is not acknowledged; cut it so the next group
            // does not follow garbage (and if even that fails, recovery will cut it).
            let _ = self.active.set_len(back.len);
            return Err(error);
        }
        back.len += records.len() as u64;
        if back.len >= SEGMENT_BYTES {
            self.start_segment()?;
        }
        Ok(())
    }

    /// The active segment for a write done outside the lock: its id, a handle, and its
    /// durable length. Replay keeps reading and deleting meanwhile; the writer task is
    /// the only writer, so nothing else moves the end of the file.
    pub fn active(&self) -> io::Result<(u64, File, u64)> {
        let back = self
            .segments
            .back()
            .ok_or_else(|| io::Error::other("buffer log has no segment"))?;
        Ok((back.id, self.active.try_clone()?, back.len))
    }

    /// Makes `records`, written and `fsync`ed to segment `id` by the caller, readable.
    /// If replay emptied and replaced that segment meanwhile (the file is gone), they
    /// are written again, here, to the new one.
    pub fn commit(&mut self, id: u64, records: &[u8]) -> io::Result<()> {
        let Some(back) = self.segments.back_mut() else {
            return Err(io::Error::other("buffer log has no segment"));
        };
        if back.id != id {
            return self.append(records);
        }
        back.len += records.len() as u64;
        if back.len >= SEGMENT_BYTES {
            self.start_segment()?;
        }
        Ok(())
    }

    fn start_segment(&mut self) -> io::Result<()> {
        let id = self.segments.back().map_or(1, |s| s.id + 1);
        self.active = private_file(&segment_path(&self.dir, id), true)?;
        self.segments.push_back(Segment { id, len: 0 });
        sync_dir(&self.dir)
    }

    /// The next records to replay (consecutive, same target, bounded), or `None` when
    /// everything durable has been consumed.
    pub fn next_batch(&mut self) -> io::Result<Option<Batch>> {
        loop {
            let Some(front) = self.segments.front() else {
                return Ok(None);
            };
            let remaining = front.len - self.offset;
            if remaining == 0 {
                if self.segments.len() == 1 {
                    return Ok(None);
                }
                self.drop_front()?;
                continue;
            }
            let id = front.id;
            let reader = match &mut self.reader {
                Some(reader) => reader,
                None => self.reader.insert(File::open(segment_path(&self.dir, id))?),
            };
            reader.seek(SeekFrom::Start(self.offset))?;
            let mut header = [0u8; HEADER_LEN];
            reader.read_exact(&mut header)?;
            let first = match record::payload_len(&header) {
                Ok(len) => (HEADER_LEN + len) as u64,
                Err(error) => {
                    self.skip_corrupt(error);
                    continue;
                }
            };
            let window = remaining.min(first.max((plan::MAX_BATCH_BYTES + 64 * 1024) as u64));
            let mut bytes = vec![0u8; usize::try_from(window).unwrap_or(usize::MAX)];
            reader.seek(SeekFrom::Start(self.offset))?;
            reader.read_exact(&mut bytes)?;
            let mut records: Vec<(Record<'_>, usize)> = Vec::new();
            let mut at = 0;
            let mut corrupt = None;
            while at < bytes.len() {
                match record::decode(&bytes[at..]) {
                    Ok((record, used)) => {
                        records.push((record, used));
                        at += used;
                    }
                    Err(DecodeError::Incomplete) => break,
                    Err(error) => {
                        corrupt = Some(error);
                        break;
                    }
                }
            }
            if records.is_empty() {
                self.skip_corrupt(corrupt.unwrap_or(DecodeError::Incomplete));
                continue;
            }
            let count = plan::batch_len(records.iter().map(|(r, _)| (r.target, r.body.len())));
            let taken = &records[..count];
            let mut body = Vec::with_capacity(taken.iter().map(|(r, _)| r.body.len()).sum());
            for (record, _) in taken {
                body.extend_from_slice(record.body);
            }
            return Ok(Some(Batch {
                target: taken[0].0.target.to_owned(),
                body: Bytes::from(body),
                records: count,
                disk_bytes: taken.iter().map(|(_, used)| *used as u64).sum(),
                arrival_ns: taken[0].0.arrival_ns,
            }));
        }
    }

    /// A record that passed recovery no longer decodes (the disk changed under us):
    /// the rest of that segment cannot be trusted and is skipped, loudly.
    fn skip_corrupt(&mut self, error: DecodeError) {
        if let Some(front) = self.segments.front() {
            warn!(
                segment = front.id,
                offset = self.offset,
                skipped = front.len - self.offset,
                %error,
                "buffer segment corrupt; skipping the rest of it"
            );
            self.offset = front.len;
        }
    }

    /// Marks `disk_bytes` at the front as delivered; deletes segments left empty.
    pub fn consume(&mut self, disk_bytes: u64) -> io::Result<()> {
        self.offset += disk_bytes;
        let Some(front) = self.segments.front() else {
            return Ok(());
        };
        if self.offset < front.len {
            return Ok(());
        }
        if self.segments.len() == 1 {
            // The active segment is fully delivered: start afresh so it does not grow.
            self.start_segment()?;
        }
        self.drop_front()
    }

    fn drop_front(&mut self) -> io::Result<()> {
        if let Some(front) = self.segments.pop_front() {
            self.reader = None;
            self.offset = 0;
            fs::remove_file(segment_path(&self.dir, front.id))?;
        }
        Ok(())
    }
}

struct Scan {
    valid: u64,
    records: u64,
    dropped: u64,
    first_arrival_ns: Option<u64>,
}

/// Checks every record of a segment; cuts the file at the first bad one.
fn scan_segment(path: &Path) -> io::Result<Scan> {
    let bytes = fs::read(path)?;
    let mut scan = Scan {
        valid: 0,
        records: 0,
        dropped: 0,
        first_arrival_ns: None,
    };
    let mut at = 0;
    let mut failure = None;
    while at < bytes.len() {
        match record::decode(&bytes[at..]) {
            Ok((record, used)) => {
                scan.first_arrival_ns.get_or_insert(record.arrival_ns);
                scan.records += 1;
                at += used;
            }
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    scan.valid = at as u64;
    if let Some(error) = failure {
        scan.dropped = (bytes.len() - at) as u64;
        warn!(
            segment = %path.display(),
            offset = at,
            dropped_bytes = scan.dropped,
            %error,
            "buffer segment has a torn or corrupt tail; dropping it"
        );
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(scan.valid)?;
        file.sync_all()?;
    }
    Ok(scan)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(arrival: u64, target: &str, body: &str) -> Vec<u8> {
        let mut out = Vec::new();
        record::encode(&mut out, arrival, target, body.as_bytes());
        out
    }

    #[test]
    fn appended_records_replay_in_order_batched_by_target() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, recovered) = Log::open(dir.path()).unwrap();
        assert_eq!(recovered, Recovered::default());
        let mut group = encoded(1, "/write?db=a", "m v=1 1\n");
        group.extend(encoded(2, "/write?db=a", "m v=2 2\n"));
        log.append(&group).unwrap();
        log.append(&encoded(3, "/write?db=b", "m v=3 3\n")).unwrap();
        let batch = log.next_batch().unwrap().unwrap();
        assert_eq!(batch.target, "/write?db=a");
        assert_eq!(&batch.body[..], b"m v=1 1\nm v=2 2\n");
        assert_eq!((batch.records, batch.arrival_ns), (2, 1));
        // Not consumed: the same batch again (replay keeps its place on failure).
        assert_eq!(log.next_batch().unwrap().unwrap(), batch);
        log.consume(batch.disk_bytes).unwrap();
        let batch = log.next_batch().unwrap().unwrap();
        assert_eq!(batch.target, "/write?db=b");
        log.consume(batch.disk_bytes).unwrap();
        assert_eq!(log.next_batch().unwrap(), None);
        // Only the fresh active segment is left.
        let segments = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some())
            .count();
        assert_eq!(segments, 1);
    }

    #[test]
    fn a_write_outside_the_lock_survives_replay_replacing_its_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path()).unwrap();
        log.append(&encoded(1, "/write", "m v=1 1\n")).unwrap();
        let (id, mut file, _) = log.active().unwrap();
        // Replay drains the segment (and replaces it) while the write is in flight.
        let batch = log.next_batch().unwrap().unwrap();
        log.consume(batch.disk_bytes).unwrap();
        let record = encoded(2, "/write", "m v=2 2\n");
        file.write_all(&record).unwrap();
        file.sync_data().unwrap();
        log.commit(id, &record).unwrap();
        let batch = log.next_batch().unwrap().unwrap();
        assert_eq!(&batch.body[..], b"m v=2 2\n");
    }

    #[test]
    fn a_torn_tail_is_dropped_on_open_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path()).unwrap();
        log.append(&encoded(1, "/write?db=a", "m v=1 1\n")).unwrap();
        log.append(&encoded(2, "/write?db=a", "m v=2 2\n")).unwrap();
        drop(log);
        let path = segment_path(dir.path(), 1);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let (mut log, recovered) = Log::open(dir.path()).unwrap();
        assert_eq!(recovered.records, 1);
        assert!(recovered.dropped_bytes > 0);
        assert_eq!(recovered.oldest_arrival_ns, Some(1));
        let batch = log.next_batch().unwrap().unwrap();
        assert_eq!(&batch.body[..], b"m v=1 1\n");
        log.consume(batch.disk_bytes).unwrap();
        assert_eq!(log.next_batch().unwrap(), None);
    }

    #[test]
    fn files_are_private_and_the_directory_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = dir.path().join("buffer");
        let (mut log, _) = Log::open(&buffer).unwrap();
        log.append(&encoded(1, "/write", "m v=1\n")).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&buffer), 0o700);
        assert_eq!(mode(&segment_path(&buffer, 1)), 0o600);
        assert!(matches!(Log::open(&buffer), Err(LogError::Locked(_))));
    }

    #[test]
    fn segments_rotate_and_are_deleted_once_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path()).unwrap();
        let body = "m v=1 1\n".repeat(1 << 17);
        for i in 0..10 {
            log.append(&encoded(i, "/write?db=a", &body)).unwrap();
        }
        assert!(log.segments.len() > 1);
        drop(log);
        let (mut log, recovered) = Log::open(dir.path()).unwrap();
        assert_eq!(recovered.records, 10);
        let mut delivered = 0;
        while let Some(batch) = log.next_batch().unwrap() {
            delivered += batch.records;
            log.consume(batch.disk_bytes).unwrap();
        }
        assert_eq!(delivered, 10);
        assert_eq!(log.segments.len(), 1);
    }
}
