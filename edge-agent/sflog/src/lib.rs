//! The agent's store-and-forward log: every reading is appended here, made
//! durable, and only then sent; an entry leaves the log only when the
//! headend has acknowledged it (cumulative ack, see the proto), or when the
//! byte bound forces the drop policy, which is recorded as a gap.
//!
//! # On-disk format (version 1)
//! One SQLite database `log.sqlite` in the configured directory (WAL mode,
//! `synchronous=FULL`), see ADR 0003 for why not sled:
//! ```sql
//! entries(seq INTEGER PRIMARY KEY,  -- the sequence number
//!         class INTEGER,            -- 0 telemetry, 1 alarm, 2 event, 3 command ack
//!         ts INTEGER,               -- append time, Unix ms
//!         crc INTEGER,              -- CRC-32 (IEEE) of class (1 byte) || ts (8 bytes LE) || payload
//!         payload BLOB)             -- opaque to the log; the agent stores a protobuf LogRecord
//! meta(key TEXT PRIMARY KEY, value INTEGER)
//!   'log_id'    random u64 (as i64) chosen when the log is created
//!   'seq_floor' every seq below it has been used (a seq is never reused, even after a full trim)
//!   'version'   1
//! ```
//!
//! # Durability (group commit)
//! [`Log::append`] writes into an open transaction; [`Log::flush`] commits
//! it, which fsyncs. Readers ([`Log::read_from`]) use their own connection
//! and see only committed entries, so an entry that was ever sent is on
//! disk. A crash (kill -9, power loss) loses at most the entries appended
//! since the last flush, none of which was sent; their seqs are reassigned.
//!
//! # Bound and drop policy
//! The database's live pages never exceed [`Options::max_bytes`]
//! (on disk: that, plus a WAL capped at [`WAL_BYTES`], plus the reserve
//! file of [`BALLAST_BYTES`]). Before an append
//! would cross it, entries are dropped in chunks, never an entry sent and
//! not yet acknowledged ([`Log::set_sent_through`]):
//! [`DropPolicy::Priority`] (default) drops the oldest entries of the
//! lowest class first (telemetry, then alarms, then events, then command
//! acks); [`DropPolicy::Oldest`] drops the oldest entries whatever their
//! class. Every drop is returned as [`DropRun`]s (seq range, count, class,
//! time range) for the caller to log as gap records, and counted per class.
//!
//! # Full disk, and giving space back (`space.rs`, ADR 0005)
//! The bound in force is `max_bytes` lowered to what the filesystem can
//! still hold ([`DISK_RESERVE`] kept free), so the drop policy acts before
//! SQLite runs out. If SQLite reports a full disk anyway, the transaction
//! is rolled back, the bound lowered, and its writes replayed after the
//! drops (or given up and reported as a gap); no full-disk error reaches
//! the caller. Acknowledgements that leave much free space give it back
//! (incremental vacuum).
//!
//! Freeing space must never need more space than the log keeps (issue 28):
//! an acknowledgement trims in transactions of [`ACK_CHUNK_BYTES`] with a
//! checkpoint after each (the WAL file is reused, not grown), vacuum goes
//! in steps of its own, and a reserve file (`DIR/reserve`,
//! [`BALLAST_BYTES`]) is deleted the moment SQLite finds the disk full, so
//! that the recovery's trims and drops have room even when another process
//! took the last byte; it is written again once there is room.
//!
//! # Corruption
//! A record whose CRC does not match is skipped by [`Log::read_from`],
//! counted, and handed out once by [`Log::take_corrupt`] (which deletes it)
//! so that it too becomes a gap record; it never stops the rest of the log.
//! A damaged file (SQLite's own structure, impossible seqs) is found at
//! open by an integrity check, moved aside, and replaced by a new log with
//! a new id; [`Log::take_damage`] tells what was lost (`damage.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rusqlite::{Connection, OptionalExtension, params};

mod damage;
mod hooks;
mod open;
mod read;
mod room;
mod space;
pub use damage::{Damage, integrity_problem};
use space::Op;
pub use space::{BALLAST_BYTES, DISK_RESERVE, fs_available, is_disk_full};

/// Upper bound of the write-ahead log file, bytes.
pub const WAL_BYTES: u64 = 1024 * 1024;
/// Entries trimmed by one acknowledgement transaction, bytes: small enough
/// that its write-ahead log fits the reserve many times over.
pub const ACK_CHUNK_BYTES: u64 = 128 * 1024;
const FORMAT_VERSION: i64 = 1;
const INSERT: &str =
    "INSERT INTO entries (seq, class, ts, crc, payload) VALUES (?1, ?2, ?3, ?4, ?5)";
const READ_FROM: &str = "SELECT seq, class, ts, crc, payload FROM entries WHERE seq >= ?1 AND seq <= ?3 ORDER BY seq LIMIT ?2";
/// Control entries (alarms, events, command acks: every class but telemetry), in seq order.
const READ_CONTROL: &str = "SELECT seq, class, ts, crc, payload FROM entries WHERE class >= 1 AND seq > ?1 AND seq <= ?3 ORDER BY seq LIMIT ?2";
const READ_NEWEST: &str = "SELECT seq, class, ts, crc, payload FROM entries WHERE seq > ?1 AND seq <= ?3 ORDER BY seq DESC LIMIT ?2";

#[derive(Clone, Copy)]
enum Protect {
    No,
    InOrder,
    Preview,
}

/// Errors of the log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store-and-forward log at {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error(
        "store-and-forward log at {path} is in use by another process (is the agent running? stop it first)"
    )]
    InUse { path: String },
    #[error("store-and-forward log: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(
        "store-and-forward log at {path} has format version {found}; this agent reads version {FORMAT_VERSION}"
    )]
    Version { path: String, found: i64 },
}

pub type Result<T> = std::result::Result<T, Error>;

/// What an entry is; decides what is dropped first when the log is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Class {
    Telemetry = 0,
    Alarm = 1,
    Event = 2,
    CommandAck = 3,
}

impl Class {
    pub const ALL: [Class; 4] = [
        Class::Telemetry,
        Class::Alarm,
        Class::Event,
        Class::CommandAck,
    ];
    pub fn from_u8(b: u8) -> Option<Class> {
        Class::ALL.get(usize::from(b)).copied()
    }
    pub fn name(self) -> &'static str {
        match self {
            Class::Telemetry => "telemetry",
            Class::Alarm => "alarm",
            Class::Event => "event",
            Class::CommandAck => "command_ack",
        }
    }
}

/// What to drop when the log is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DropPolicy {
    /// Oldest bulk telemetry first; alarms, events and command acks are kept longest.
    #[default]
    Priority,
    /// Oldest first, whatever the class.
    Oldest,
}

/// One log entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub seq: u64,
    pub class: Class,
    pub appended_ms: i64,
    pub payload: Vec<u8>,
}

/// Entries removed without an ack: a contiguous seq range of one class (the
/// range may also hold kept entries of other classes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropRun {
    pub first_seq: u64,
    pub last_seq: u64,
    pub count: u64,
    pub class: Class,
    pub from_ms: i64,
    pub to_ms: i64,
    /// `disk_full` or `corrupt`.
    pub reason: &'static str,
}

/// Counters, for metrics and status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub entries: u64,
    /// Live bytes of the database (pages in use × page size).
    pub bytes: u64,
    pub max_bytes: u64,
    pub next_seq: u64,
    pub durable_seq: u64,
    pub acked_through: u64,
    pub corrupt: u64,
    /// Dropped by the bound, per class (index = class as u8).
    pub dropped: [u64; 4],
    /// Free bytes on the log's filesystem (0 if unknown).
    pub fs_free_bytes: u64,
    /// The bound in force: `max_bytes`, or less when the filesystem has less room.
    pub effective_max_bytes: u64,
    /// Times SQLite reported a full disk (each one recovered by dropping).
    pub disk_full_events: u64,
    /// Bytes given back to the filesystem by incremental vacuum.
    pub vacuumed_bytes: u64,
}

/// Log settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Bound of the live database, bytes (min 1 MiB).
    pub max_bytes: u64,
    pub policy: DropPolicy,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_bytes: 1024 * 1024 * 1024,
            policy: DropPolicy::Priority,
        }
    }
}

struct Writer {
    conn: Connection,
    in_txn: bool,
    /// Every write of the open transaction, in order, so that a transaction
    /// that SQLite rolled back on a full disk can be replayed after making
    /// room (see [`Log::recover_full`]).
    ops: Vec<Op>,
}

/// The store-and-forward log.
pub struct Log {
    /// An exclusive lock on `DIR/lock` while the log is open: a second
    /// process (an agent started twice, a backfill while it runs) cannot
    /// write beside this one and reuse its seqs.
    pub(crate) dir_lock: Option<nix::fcntl::Flock<std::fs::File>>,
    writer: Mutex<Writer>,
    reader: Mutex<Connection>,
    opts: Options,
    log_id: u64,
    page_size: u64,
    next_seq: AtomicU64,
    durable_seq: AtomicU64,
    acked_through: AtomicU64,
    /// Highest seq ever sent in order; entries up to it may be stored at the
    /// headend already, so the drop policy leaves them until acknowledged.
    sent_through: AtomicU64,
    /// Seq ranges sent ahead as previews (same reason), pruned by acks.
    previewed: Mutex<Vec<(u64, u64)>>,
    count: AtomicU64,
    corrupt: AtomicU64,
    dropped: [AtomicU64; 4],
    /// Corrupt records found by reads: seq -> (class byte, append time) as
    /// read, so that the gap is reported even if an ack trims the row first.
    corrupt_seen: Mutex<BTreeMap<u64, (u8, i64)>>,
    /// The damaged file this log replaced at open, until taken.
    damage: Mutex<Option<Damage>>,
    /// The database file, for its size and its filesystem's free space.
    path: PathBuf,
    /// After SQLite reported a full disk: a lower bound in force until the
    /// instant, so that the next transactions fit (see [`Log::recover_full`]).
    squeeze: Mutex<Option<(u64, Instant)>>,
    /// Drops made while recovering from a full disk, and entries that could
    /// not be written at all: handed out once by [`Log::take_drops`].
    pending_runs: Mutex<Vec<DropRun>>,
    disk_full_events: AtomicU64,
    /// Free bytes of the log's filesystem (for an unprivileged process), at the last append.
    fs_free: AtomicU64,
    /// The bound in force at the last append: `max_bytes`, or less when the
    /// filesystem has less room.
    effective_max: AtomicU64,
    vacuumed_bytes: AtomicU64,
    /// Whether the reserve file (`DIR/reserve`, [`BALLAST_BYTES`]) is on
    /// disk: released when SQLite finds the disk full, so that the log can
    /// always trim and checkpoint; made again once there is room.
    ballast: std::sync::atomic::AtomicBool,
}

/// The gap runs of dropped `(seq, class, ts)` entries: one per class, in
/// seq order (a run's range may also hold kept entries of other classes).
fn runs_of(entries: &[(i64, u8, i64)], reason: &'static str) -> Vec<DropRun> {
    Class::ALL
        .iter()
        .filter_map(|&c| {
            let of: Vec<&(i64, u8, i64)> = entries.iter().filter(|v| v.1 == c as u8).collect();
            let (a, b) = (of.first()?, of.last()?);
            Some(DropRun {
                first_seq: a.0 as u64,
                last_seq: b.0 as u64,
                count: of.len() as u64,
                class: c,
                from_ms: of.iter().map(|v| v.2).min().unwrap_or(0),
                to_ms: of.iter().map(|v| v.2).max().unwrap_or(0),
                reason,
            })
        })
        .collect()
}

/// Merges runs of the same class and reason into one (the lowest first
/// seq, the highest last, the counts summed, the widest time range): at
/// most one gap record per class and reason, however many drops a full
/// disk forced one entry at a time. Order: by class, then reason.
pub fn coalesce(runs: Vec<DropRun>) -> Vec<DropRun> {
    let mut out: Vec<DropRun> = Vec::new();
    for r in runs {
        match out
            .iter_mut()
            .find(|o| o.class == r.class && o.reason == r.reason)
        {
            Some(o) => {
                o.first_seq = o.first_seq.min(r.first_seq);
                o.last_seq = o.last_seq.max(r.last_seq);
                o.count += r.count;
                o.from_ms = o.from_ms.min(r.from_ms);
                o.to_ms = o.to_ms.max(r.to_ms);
            }
            None => out.push(r),
        }
    }
    out.sort_by(|a, b| (a.class, a.reason).cmp(&(b.class, b.reason)));
    out
}

fn crc(class: u8, ts: i64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[class]);
    h.update(&ts.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Log {
    /// This log's identity (see the proto's sequence semantics).
    pub fn log_id(&self) -> u64 {
        self.log_id
    }

    fn begin(w: &mut Writer) -> rusqlite::Result<()> {
        if !w.in_txn {
            w.conn.execute_batch("BEGIN IMMEDIATE")?;
            w.in_txn = true;
        }
        Ok(())
    }

    fn used_bytes(&self, conn: &Connection) -> rusqlite::Result<u64> {
        let (pages, free): (i64, i64) = conn.query_row(
            "SELECT (SELECT page_count FROM pragma_page_count()), (SELECT freelist_count FROM pragma_freelist_count())",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((pages - free).max(0) as u64 * self.page_size)
    }

    /// Appends entries (in the open transaction: durable at the next
    /// [`Log::flush`]); returns the seq of the first and what the bound
    /// forced out. Callers append from one task (the agent's log writer).
    /// A full disk is not an error (see the module doc, "Full disk").
    pub fn append(&self, items: &[(Class, i64, Vec<u8>)]) -> Result<(u64, Vec<DropRun>)> {
        let mut w = lock(&self.writer);
        let first = self.next_seq.load(Ordering::SeqCst);
        let mut runs = Vec::new();
        match self.append_in(&mut w, first, items, &mut runs) {
            Ok(()) => Ok((first, runs)),
            Err(e) if is_disk_full(&e) => {
                // this call's inserts and drops are in `ops`: the replay makes them again
                self.recover_full(&mut w, e)?;
                Ok((first, runs))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn append_in(
        &self,
        w: &mut Writer,
        first: u64,
        items: &[(Class, i64, Vec<u8>)],
        runs: &mut Vec<DropRun>,
    ) -> rusqlite::Result<()> {
        if let Err(e) = Self::begin(w) {
            if is_disk_full(&e) {
                // nothing recorded yet: record the inserts so that recovery writes them
                self.record_inserts(w, first, items);
            }
            return Err(e);
        }
        // what the rows will take, pages and index included: the measured
        // average row, or the payload plus overhead, whichever is larger, +25 %
        let n = self.count.load(Ordering::Relaxed);
        let avg = self.used_bytes(&w.conn)?.checked_div(n).unwrap_or(0);
        let incoming: u64 = items
            .iter()
            .map(|(_, _, p)| (p.len() as u64 + 64).max(avg) * 5 / 4)
            .sum();
        // the seqs are taken (and the ops recorded) before anything runs, so
        // that a replay after a full disk writes exactly these entries
        let start = self.record_inserts(w, first, items);
        self.make_room(w, incoming, runs)?;
        // one prepared statement for the whole group (a cache lookup per
        // row cost a quarter of the append rate)
        let mut stmt = w.conn.prepare_cached(INSERT)?;
        for op in &w.ops[start..] {
            if let Op::Insert {
                seq,
                class,
                ts,
                payload,
            } = op
            {
                stmt.execute(params![seq, class, ts, crc(*class, *ts, payload), payload])?;
            }
        }
        Ok(())
    }

    /// Records `items` as insert ops with seqs from `first`; returns the
    /// index of the first op.
    fn record_inserts(&self, w: &mut Writer, first: u64, items: &[(Class, i64, Vec<u8>)]) -> usize {
        let start = w.ops.len();
        for (i, (class, ts, payload)) in items.iter().enumerate() {
            w.ops.push(Op::Insert {
                seq: (first + i as u64) as i64,
                class: *class as u8,
                ts: *ts,
                payload: payload.clone(),
            });
        }
        self.next_seq
            .store(first + items.len() as u64, Ordering::SeqCst);
        self.count.fetch_add(items.len() as u64, Ordering::Relaxed);
        start
    }

    /// Commits (fsyncs) everything appended so far and advances [`Log::durable_seq`].
    pub fn flush(&self) -> Result<u64> {
        let mut w = lock(&self.writer);
        self.commit(&mut w)
    }

    /// [`Log::flush`] under the writer's lock.
    fn commit(&self, w: &mut Writer) -> Result<u64> {
        let upto = self.next_seq.load(Ordering::SeqCst) - 1;
        if w.in_txn {
            match w.conn.execute_batch("COMMIT") {
                Ok(()) => {
                    w.in_txn = false;
                    w.ops.clear();
                }
                Err(e) if is_disk_full(&e) => self.recover_full(w, e)?,
                Err(e) => return Err(e.into()),
            }
            self.checkpoint(w);
        }
        self.ensure_ballast();
        self.durable_seq.fetch_max(upto, Ordering::SeqCst);
        Ok(upto)
    }

    /// Drops made while recovering from a full disk, and entries given up
    /// on it, each handed out once (for gap records), with the corrupt
    /// records found so far ([`Log::take_corrupt`]).
    pub fn has_pending_drops(&self) -> bool {
        !lock(&self.pending_runs).is_empty() || !lock(&self.corrupt_seen).is_empty()
    }

    pub fn take_drops(&self) -> Result<Vec<DropRun>> {
        let mut runs = std::mem::take(&mut *lock(&self.pending_runs));
        runs.extend(self.take_corrupt()?);
        Ok(coalesce(runs))
    }

    /// Runs a caller could not record yet (its gap records pushed out more
    /// entries in turn): handed out again by the next [`Log::take_drops`].
    pub fn requeue_drops(&self, runs: Vec<DropRun>) {
        lock(&self.pending_runs).extend(runs);
    }

    /// The damaged log file this log replaced when it was opened (moved
    /// aside, see `damage.rs`), handed out once: the caller records it as a gap.
    pub fn take_damage(&self) -> Option<Damage> {
        lock(&self.damage).take()
    }

    /// Highest seq known to be on disk.
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq.load(Ordering::SeqCst)
    }

    /// Runs `ops` in the open transaction; returns the rows the last one
    /// changed (unknown, so 0, after a full-disk recovery replayed them).
    fn run_ops(&self, w: &mut Writer, ops: Vec<Op>) -> Result<usize> {
        let start = w.ops.len();
        w.ops.extend(ops);
        let r = (|| {
            Self::begin(w)?;
            let mut n = 0;
            for op in &w.ops[start..] {
                n = op.exec(&w.conn)?;
            }
            Ok(n)
        })();
        match r {
            Ok(n) => Ok(n),
            Err(e) if is_disk_full(&e) => {
                self.recover_full(w, e)?;
                Ok(0)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Entries up to `seq` have been sent: they may be stored at the
    /// headend already, so the drop policy leaves them alone until they are
    /// acknowledged (otherwise a gap record would count an entry that SQL
    /// has). Monotonic; at most a window of batches is protected this way.
    pub fn set_sent_through(&self, seq: u64) {
        self.sent_through.fetch_max(seq, Ordering::SeqCst);
    }

    /// Entries `lo..=hi` were sent ahead as a preview: protected like
    /// [`Log::set_sent_through`] until acknowledged.
    pub fn mark_previewed(&self, lo: u64, hi: u64) {
        let mut p = lock(&self.previewed);
        p.push((lo, hi));
        // bounded: the oldest ranges merge into one
        if p.len() > 64 {
            let (lo0, _) = p[0];
            let (_, hi1) = p[1];
            p.splice(0..2, [(lo0, hi1)]);
        }
    }

    /// The headend committed everything through `seq`: remove those entries.
    ///
    /// The trim goes in small transactions ([`ACK_CHUNK_BYTES`] of entries
    /// each, checkpointed in between), so that the write-ahead log never
    /// needs more room than the reserve: acknowledging a whole outage's
    /// backlog at once on a full disk cannot fill it (issue 28). Whatever
    /// was appended and not yet flushed is committed first.
    pub fn ack(&self, seq: u64) -> Result<u64> {
        let seq = seq.min(self.durable_seq());
        let prev = self.acked_through.fetch_max(seq, Ordering::SeqCst);
        if seq <= prev {
            return Ok(0);
        }
        let mut w = lock(&self.writer);
        lock(&self.previewed).retain(|&(_, hi)| hi > seq);
        self.commit(&mut w)?;
        let mut total = 0u64;
        loop {
            let first: Option<i64> = w
                .conn
                .query_row("SELECT MIN(seq) FROM entries", [], |r| r.get(0))?;
            let Some(first) = first.filter(|&f| f >= 0 && f as u64 <= seq) else {
                break;
            };
            let n = self.count.load(Ordering::Relaxed).max(1);
            let per_row = (self.used_bytes(&w.conn)? / n).max(1);
            let rows = (ACK_CHUNK_BYTES / per_row).max(64);
            let upto = (first as u64).saturating_add(rows - 1).min(seq);
            // the floor first (in the op): if we crash mid-trim, seqs stay unique
            let trimmed = self.run_ops(&mut w, vec![Op::Ack { seq: upto as i64 }])? as u64;
            if w.in_txn {
                self.count.fetch_sub(
                    trimmed.min(self.count.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
                total += trimmed;
                self.commit(&mut w)?;
            } else {
                // recovered from a full disk (the trim was replayed and committed): recount
                let c: i64 = w
                    .conn
                    .query_row("SELECT COUNT(*) FROM entries", [], |r| r.get(0))?;
                self.count.store(c as u64, Ordering::Relaxed);
            }
            self.checkpoint_now(&w);
            if upto >= seq {
                break;
            }
        }
        self.give_back_space(&mut w)?;
        Ok(total)
    }

    /// Oldest entry still in the log (committed), with its append time.
    pub fn oldest(&self) -> Result<Option<(u64, i64)>> {
        let conn = lock(&self.reader);
        Ok(conn
            .query_row(
                "SELECT seq, ts FROM entries ORDER BY seq LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )
            .optional()?)
    }

    /// Oldest entry still in the log, if any.
    pub fn first_seq(&self) -> Result<Option<u64>> {
        Ok(self.oldest()?.map(|(s, _)| s))
    }

    pub fn stats(&self) -> Stats {
        let bytes = {
            let conn = lock(&self.reader);
            self.used_bytes(&conn).unwrap_or(0)
        };
        Stats {
            entries: self.count.load(Ordering::Relaxed),
            bytes,
            max_bytes: self.opts.max_bytes,
            next_seq: self.next_seq.load(Ordering::SeqCst),
            durable_seq: self.durable_seq(),
            acked_through: self.acked_through.load(Ordering::SeqCst),
            corrupt: self.corrupt.load(Ordering::Relaxed),
            dropped: std::array::from_fn(|i| self.dropped[i].load(Ordering::Relaxed)),
            fs_free_bytes: fs_available(&self.path).unwrap_or(0),
            effective_max_bytes: self.effective_max.load(Ordering::Relaxed),
            disk_full_events: self.disk_full_events.load(Ordering::Relaxed),
            vacuumed_bytes: self.vacuumed_bytes.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        // an orderly shutdown commits what was appended
        let _ = self.flush();
    }
}

#[cfg(test)]
pub(crate) mod tests;
