//! The agent's store-and-forward log: every reading is appended here, made
//! durable, and only then sent; an entry leaves the log only when the
//! headend has acknowledged it (cumulative ack, see the proto).
//!
//! # On-disk format (version 1)
//! A sled database in the configured directory with two trees:
//! * `entries`: key = sequence number, u64 big-endian (so key order = seq
//!   order); value = a record:
//!   ```text
//!   byte 0        format version (1)
//!   byte 1        class (0 telemetry, 1 alarm, 2 event, 3 command ack)
//!   bytes 2..6    CRC-32 (IEEE) of bytes 6.. , little-endian
//!   bytes 6..14   append time, Unix ms, i64 little-endian
//!   bytes 14..    payload (opaque to the log; the agent stores a protobuf Reading)
//!   ```
//! * `meta`: `log_id` -> u64 BE, random, chosen when the log is created;
//!   `seq_floor` -> u64 BE, every seq below it has been used (written before
//!   entries are trimmed, so a seq is never reused after a full trim).
//!
//! # Durability
//! [`Log::append`] writes into sled's buffers; [`Log::flush`] fsyncs. The
//! agent calls `flush` at the end of every group of appends (group commit,
//! at most `flush_interval` apart) and sends only entries at or below
//! [`Log::durable_seq`]. So an entry that was ever sent is on disk, and a
//! crash (kill -9, power loss) can only lose entries appended within the
//! last flush interval, which were never sent.
//!
//! # Corruption
//! A record whose CRC does not match (torn write) is skipped, counted in
//! [`Stats::corrupt`] and deleted; it never stops the rest of the log.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

const VERSION: u8 = 1;
const HEADER: usize = 14;
const KEY_LOG_ID: &[u8] = b"log_id";
const KEY_SEQ_FLOOR: &[u8] = b"seq_floor";

/// Errors of the log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store-and-forward log at {path}: {source} (is another agent using this directory?)")]
    Open { path: String, source: sled::Error },
    #[error("store-and-forward log I/O: {0}")]
    Sled(#[from] sled::Error),
    #[error(
        "store-and-forward log metadata is damaged ({0}); move the directory aside to start a new log"
    )]
    Meta(&'static str),
}

pub type Result<T> = std::result::Result<T, Error>;

/// What an entry is; decides what is dropped first when the log is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Class {
    Telemetry = 0,
    Alarm = 1,
    Event = 2,
    CommandAck = 3,
}

impl Class {
    fn from_u8(b: u8) -> Option<Class> {
        Some(match b {
            0 => Class::Telemetry,
            1 => Class::Alarm,
            2 => Class::Event,
            3 => Class::CommandAck,
            _ => return None,
        })
    }
}

/// One log entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub seq: u64,
    pub class: Class,
    pub appended_ms: i64,
    pub payload: Vec<u8>,
}

/// Counters, for metrics and the status command.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub entries: u64,
    pub bytes: u64,
    pub next_seq: u64,
    pub durable_seq: u64,
    pub acked_through: u64,
    pub corrupt: u64,
}

/// Log settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// sled's own background flush period, ms (a safety net; the agent flushes explicitly).
    pub background_flush_ms: u64,
    /// sled page cache, bytes.
    pub cache_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            background_flush_ms: 1000,
            cache_bytes: 16 * 1024 * 1024,
        }
    }
}

/// The store-and-forward log.
pub struct Log {
    db: sled::Db,
    entries: sled::Tree,
    meta: sled::Tree,
    log_id: u64,
    next_seq: AtomicU64,
    durable_seq: AtomicU64,
    acked_through: AtomicU64,
    count: AtomicU64,
    bytes: AtomicU64,
    corrupt: AtomicU64,
}

fn be(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

fn read_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

/// Encodes a record (see the format above).
pub fn encode(class: Class, appended_ms: i64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + payload.len());
    v.push(VERSION);
    v.push(class as u8);
    v.extend_from_slice(&[0; 4]);
    v.extend_from_slice(&appended_ms.to_le_bytes());
    v.extend_from_slice(payload);
    let crc = crc32fast::hash(&v[6..]);
    v[2..6].copy_from_slice(&crc.to_le_bytes());
    v
}

/// Decodes a record; `None` when it is torn or corrupt.
pub fn decode(seq: u64, rec: &[u8]) -> Option<Entry> {
    if rec.len() < HEADER || rec[0] != VERSION {
        return None;
    }
    let crc = u32::from_le_bytes(rec[2..6].try_into().ok()?);
    if crc32fast::hash(&rec[6..]) != crc {
        return None;
    }
    Some(Entry {
        seq,
        class: Class::from_u8(rec[1])?,
        appended_ms: i64::from_le_bytes(rec[6..14].try_into().ok()?),
        payload: rec[HEADER..].to_vec(),
    })
}

impl Log {
    /// Opens (or creates) the log in `dir`.
    pub fn open(dir: &Path, opts: &Options) -> Result<Log> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(opts.cache_bytes)
            .flush_every_ms(Some(opts.background_flush_ms))
            .open()
            .map_err(|source| Error::Open {
                path: dir.display().to_string(),
                source,
            })?;
        let entries = db.open_tree("entries")?;
        let meta = db.open_tree("meta")?;
        let log_id = match meta.get(KEY_LOG_ID)? {
            Some(v) => read_u64(&v).ok_or(Error::Meta("log_id is not 8 bytes"))?,
            None => {
                let id = fastrand::u64(1..);
                meta.insert(KEY_LOG_ID, &be(id))?;
                db.flush()?;
                id
            }
        };
        let floor = match meta.get(KEY_SEQ_FLOOR)? {
            Some(v) => read_u64(&v).ok_or(Error::Meta("seq_floor is not 8 bytes"))?,
            None => 1,
        };
        let mut count = 0;
        let mut bytes = 0;
        for kv in entries.iter() {
            let (k, v) = kv?;
            count += 1;
            bytes += (k.len() + v.len()) as u64;
        }
        let last = match entries.last()? {
            Some((k, _)) => read_u64(&k).unwrap_or(0),
            None => 0,
        };
        let next = floor.max(last + 1);
        let acked = floor.saturating_sub(1).min(match entries.first()? {
            Some((k, _)) => read_u64(&k).unwrap_or(1).saturating_sub(1),
            None => next - 1,
        });
        Ok(Log {
            db,
            entries,
            meta,
            log_id,
            next_seq: AtomicU64::new(next),
            // everything found on disk at open is durable by definition
            durable_seq: AtomicU64::new(next - 1),
            acked_through: AtomicU64::new(acked),
            count: AtomicU64::new(count),
            bytes: AtomicU64::new(bytes),
            corrupt: AtomicU64::new(0),
        })
    }

    /// This log's identity (see the proto's sequence semantics).
    pub fn log_id(&self) -> u64 {
        self.log_id
    }

    /// Appends entries atomically; returns the seq of the first. Not durable
    /// until [`Log::flush`]. Callers append from one task (the agent's log writer).
    pub fn append(&self, items: &[(Class, i64, Vec<u8>)]) -> Result<u64> {
        let first = self.next_seq.load(Ordering::SeqCst);
        let mut batch = sled::Batch::default();
        let mut bytes = 0u64;
        for (i, (class, ts, payload)) in items.iter().enumerate() {
            let rec = encode(*class, *ts, payload);
            bytes += (8 + rec.len()) as u64;
            batch.insert(&be(first + i as u64), rec);
        }
        self.entries.apply_batch(batch)?;
        self.next_seq
            .store(first + items.len() as u64, Ordering::SeqCst);
        self.count.fetch_add(items.len() as u64, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(first)
    }

    /// Fsyncs everything appended so far and advances [`Log::durable_seq`].
    pub fn flush(&self) -> Result<u64> {
        let upto = self.next_seq.load(Ordering::SeqCst) - 1;
        self.db.flush()?;
        self.durable_seq.fetch_max(upto, Ordering::SeqCst);
        Ok(upto)
    }

    /// Highest seq known to be on disk.
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq.load(Ordering::SeqCst)
    }

    /// Reads durable entries with seq >= `from`, at most `max_count` entries
    /// and about `max_bytes` bytes of payload. Corrupt records are skipped,
    /// counted and deleted.
    pub fn read_from(&self, from: u64, max_count: usize, max_bytes: usize) -> Result<Vec<Entry>> {
        let durable = self.durable_seq();
        let mut out = Vec::new();
        let mut size = 0;
        if from > durable {
            return Ok(out);
        }
        for kv in self.entries.range(be(from)..=be(durable)) {
            let (k, v) = kv?;
            let Some(seq) = read_u64(&k) else { continue };
            match decode(seq, &v) {
                Some(e) => {
                    size += e.payload.len();
                    out.push(e);
                }
                None => {
                    tracing::warn!(seq, "skipping corrupt log record (checksum mismatch)");
                    self.corrupt.fetch_add(1, Ordering::Relaxed);
                    if self.entries.remove(&k)?.is_some() {
                        self.count.fetch_sub(1, Ordering::Relaxed);
                        self.bytes
                            .fetch_sub((k.len() + v.len()) as u64, Ordering::Relaxed);
                    }
                }
            }
            if out.len() >= max_count || size >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// The headend committed everything through `seq`: remove those entries.
    pub fn ack(&self, seq: u64) -> Result<usize> {
        let seq = seq.min(self.durable_seq());
        let prev = self.acked_through.fetch_max(seq, Ordering::SeqCst);
        if seq <= prev {
            return Ok(0);
        }
        // Record the floor first: if we crash mid-trim, seqs stay unique.
        self.meta.insert(KEY_SEQ_FLOOR, &be(seq + 1))?;
        let mut batch = sled::Batch::default();
        let mut n = 0;
        let mut bytes = 0u64;
        for kv in self.entries.range(..=be(seq)) {
            let (k, v) = kv?;
            bytes += (k.len() + v.len()) as u64;
            batch.remove(k);
            n += 1;
        }
        self.entries.apply_batch(batch)?;
        self.count.fetch_sub(n as u64, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        Ok(n)
    }

    /// Oldest entry still in the log, if any.
    pub fn first_seq(&self) -> Result<Option<u64>> {
        Ok(self.entries.first()?.and_then(|(k, _)| read_u64(&k)))
    }

    pub fn stats(&self) -> Stats {
        Stats {
            entries: self.count.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            next_seq: self.next_seq.load(Ordering::SeqCst),
            durable_seq: self.durable_seq(),
            acked_through: self.acked_through.load(Ordering::SeqCst),
            corrupt: self.corrupt.load(Ordering::Relaxed),
        }
    }

    /// Test hook: overwrite a record's bytes, as a torn write would.
    #[doc(hidden)]
    pub fn corrupt_for_test(&self, seq: u64) -> Result<()> {
        if let Some(v) = self.entries.get(be(seq))? {
            let mut v = v.to_vec();
            let last = v.len() - 1;
            v[last] ^= 0xff;
            self.entries.insert(be(seq), v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize) -> Vec<(Class, i64, Vec<u8>)> {
        (0..n)
            .map(|i| (Class::Telemetry, i as i64, format!("r{i}").into_bytes()))
            .collect()
    }

    #[test]
    fn sequence_numbers_increase_and_survive_reopen_and_full_trim() {
        let dir = tempfile::tempdir().unwrap();
        let id;
        {
            let log = Log::open(dir.path(), &Options::default()).unwrap();
            id = log.log_id();
            assert_eq!(log.append(&items(3)).unwrap(), 1);
            assert_eq!(log.append(&items(2)).unwrap(), 4);
            log.flush().unwrap();
            assert_eq!(log.ack(5).unwrap(), 5);
            log.flush().unwrap();
        }
        let log = Log::open(dir.path(), &Options::default()).unwrap();
        assert_eq!(log.log_id(), id, "log id is stable");
        assert_eq!(
            log.append(&items(1)).unwrap(),
            6,
            "a seq is never reused, even after a full trim"
        );
    }

    #[test]
    fn only_durable_entries_are_readable_and_acks_trim() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), &Options::default()).unwrap();
        log.append(&items(10)).unwrap();
        assert!(
            log.read_from(1, 100, 1 << 20).unwrap().is_empty(),
            "not flushed yet"
        );
        log.flush().unwrap();
        let e = log.read_from(1, 4, 1 << 20).unwrap();
        assert_eq!(
            e.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(e[2].payload, b"r2");
        log.ack(4).unwrap();
        assert_eq!(log.first_seq().unwrap(), Some(5));
        assert_eq!(log.stats().entries, 6);
        assert_eq!(
            log.ack(3).unwrap(),
            0,
            "acks are cumulative; an older ack is a no-op"
        );
    }

    #[test]
    fn a_corrupt_record_is_skipped_counted_and_does_not_block_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), &Options::default()).unwrap();
        log.append(&items(5)).unwrap();
        log.flush().unwrap();
        log.corrupt_for_test(3).unwrap();
        let seqs: Vec<u64> = log
            .read_from(1, 100, 1 << 20)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, vec![1, 2, 4, 5]);
        assert_eq!(log.stats().corrupt, 1);
        assert_eq!(log.stats().entries, 4);
    }

    #[test]
    fn decode_rejects_torn_records() {
        let rec = encode(Class::Alarm, 42, b"hello");
        assert_eq!(decode(7, &rec).unwrap().class, Class::Alarm);
        assert!(decode(7, &rec[..rec.len() - 1]).is_none());
        assert!(decode(7, &rec[..5]).is_none());
    }
}
