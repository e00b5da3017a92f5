//! The log's disk side: how much room it may take (the bound follows the
//! filesystem's free space), what happens when SQLite still finds the disk
//! full (rollback, lower bound, drop, replay; ADR 0005), checkpoints, and
//! giving space back after a drain (incremental vacuum).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

use crate::{DropRun, INSERT, Log, Result, WAL_BYTES, Writer, crc, lock, runs_of};

/// One write of the open transaction.
pub(crate) enum Op {
    Insert {
        seq: i64,
        class: u8,
        ts: i64,
        payload: Vec<u8>,
    },
    /// Dropped by the bound (or corrupt): counted in `dropped` already.
    Delete { seq: i64, class: u8 },
    /// Acknowledged through `seq` (floor first, then the trim).
    Ack { seq: i64 },
}

/// Every seq below `seq_floor` has been used; it only rises.
const RAISE_FLOOR: &str = "INSERT INTO meta (key, value) VALUES ('seq_floor', ?1) ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)";

impl Op {
    pub(crate) fn exec(&self, conn: &Connection) -> rusqlite::Result<usize> {
        Ok(match self {
            Op::Insert {
                seq,
                class,
                ts,
                payload,
            } => conn.prepare_cached(INSERT)?.execute(params![
                seq,
                class,
                ts,
                crc(*class, *ts, payload),
                payload
            ])?,
            // A dropped entry raises the floor past itself too: when the
            // drops took the newest entries and acks took the rest, the
            // log would otherwise reopen below seqs it handed out (found
            // by the model test: fill, drop, ack, crash, then seq 14 again
            // after 27). The floor only ever rises.
            Op::Delete { seq, .. } => {
                conn.prepare_cached(RAISE_FLOOR)?.execute([seq + 1])?;
                conn.prepare_cached("DELETE FROM entries WHERE seq = ?1")?
                    .execute([seq])?
            }
            Op::Ack { seq } => {
                conn.prepare_cached(RAISE_FLOOR)?.execute([seq + 1])?;
                conn.prepare_cached("DELETE FROM entries WHERE seq <= ?1")?
                    .execute([seq])?
            }
        })
    }
}

/// Is this SQLite's "database or disk is full"?
pub fn is_disk_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
}

/// Space kept free on the log's filesystem for the write-ahead log and
/// SQLite's temporary needs; the log shrinks its bound to stay clear of it.
pub const DISK_RESERVE: u64 = WAL_BYTES + 256 * 1024;
/// A file of this size (`DIR/reserve`) is kept beside the log and deleted
/// when SQLite finds the disk full anyway (another process filled it): the
/// room it leaves lets the log trim, checkpoint and drop its way back under
/// the bound. It is written again once the filesystem has room for it.
pub const BALLAST_BYTES: u64 = 512 * 1024;
/// Free pages given back per step of incremental vacuum (each step its own
/// small transaction), and how long one acknowledgement spends on it.
pub(crate) const VACUUM_STEP_PAGES: i64 = 32;
pub(crate) const VACUUM_BUDGET: Duration = Duration::from_millis(100);
/// How long a bound lowered by a full-disk error stays in force.
pub(crate) const SQUEEZE_FOR: Duration = Duration::from_secs(60);
/// Free pages above this (or an eighth of the bound in force, if less; and
/// above a quarter of the live pages) are given back to the filesystem
/// after acknowledgements trim the log.
pub(crate) const VACUUM_SLACK: u64 = 4 * 1024 * 1024;

/// Free space of the filesystem holding `path` (bytes available to an unprivileged process).
pub fn fs_available(path: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

impl Log {
    /// The bound in force now: `max_bytes`, lowered so that the database
    /// file can grow only into the filesystem's free space (less
    /// [`DISK_RESERVE`]), and lowered further for a while after SQLite
    /// reported a full disk anyway (another process filled it).
    pub(crate) fn effective_bound(&self) -> u64 {
        let mut cap = self.opts.max_bytes;
        if let Some(free) = fs_available(&self.path) {
            self.fs_free.store(free, Ordering::Relaxed);
            let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            // the WAL file's space is reused once checkpointed: count it as ours
            let ours = len(&self.path) + len(&self.path.with_extension("sqlite-wal"));
            // the reserve file's room is not the log's to fill
            let ballast = if self.ballast.load(Ordering::Relaxed) {
                BALLAST_BYTES
            } else {
                0
            };
            cap = cap.min((ours + free + ballast).saturating_sub(DISK_RESERVE + BALLAST_BYTES));
        }
        let mut sq = lock(&self.squeeze);
        match *sq {
            Some((bound, until)) if Instant::now() < until => cap = cap.min(bound),
            Some(_) => *sq = None,
            None => {}
        }
        self.effective_max.store(cap, Ordering::Relaxed);
        cap
    }

    /// SQLite reported a full disk (another process filled the filesystem,
    /// or the free space estimate was short). The open transaction is
    /// rolled back, the bound is lowered below what the log holds, and the
    /// transaction's writes are replayed after the drop policy made room,
    /// up to four times, each lowering the bound further. If even that
    /// fails, the entries of the transaction (never durable, never sent)
    /// are given up and accounted as a gap ([`Log::take_drops`]) and the
    /// log goes on: a full disk never stops the agent.
    pub(crate) fn recover_full(&self, w: &mut Writer, err: rusqlite::Error) -> Result<()> {
        self.disk_full_events.fetch_add(1, Ordering::Relaxed);
        self.release_ballast();
        tracing::warn!(error = %err, fs_free = ?fs_available(&self.path), "log: the disk is full; dropping the oldest telemetry to make room");
        let ops = std::mem::take(&mut w.ops);
        let mut last_err = err;
        // a failed attempt's drops are rolled back: so is their bookkeeping
        let saved_count = self.count.load(Ordering::Relaxed);
        let saved_dropped: [u64; 4] =
            std::array::from_fn(|i| self.dropped[i].load(Ordering::Relaxed));
        let restore = || {
            self.count.store(saved_count, Ordering::Relaxed);
            for (d, v) in self.dropped.iter().zip(saved_dropped) {
                d.store(v, Ordering::Relaxed);
            }
        };
        for attempt in 1..=4u64 {
            restore();
            if !w.conn.is_autocommit() {
                let _ = w.conn.execute_batch("ROLLBACK");
            }
            w.in_txn = false;
            w.ops.clear();
            let used = self.used_bytes(&w.conn)?;
            let bound = used.saturating_sub(used / 8 * attempt).max(64 * 1024);
            *lock(&self.squeeze) = Some((bound, Instant::now() + SQUEEZE_FOR));
            match self.replay(w, &ops) {
                Ok(runs) => {
                    lock(&self.pending_runs).extend(runs);
                    return Ok(());
                }
                Err(e) if is_disk_full(&e) => last_err = e,
                Err(e) => return Err(e.into()),
            }
        }
        if !w.conn.is_autocommit() {
            let _ = w.conn.execute_batch("ROLLBACK");
        }
        w.in_txn = false;
        w.ops.clear();
        restore();
        // undo the bookkeeping of what was rolled back
        let mut lost = Vec::new();
        for op in &ops {
            match op {
                Op::Insert { seq, class, ts, .. } => lost.push((*seq, *class, *ts)),
                Op::Delete { class, .. } => {
                    self.dropped[usize::from(*class).min(3)].fetch_sub(1, Ordering::Relaxed);
                }
                Op::Ack { .. } => {}
            }
        }
        let n: i64 = w
            .conn
            .query_row("SELECT COUNT(*) FROM entries", [], |r| r.get(0))?;
        self.count.store(n as u64, Ordering::Relaxed);
        tracing::error!(error = %last_err, lost = lost.len(), "log: the disk stays full; entries not yet written are given up and recorded as a gap");
        let runs = runs_of(&lost, "disk_full");
        for r in &runs {
            self.dropped[r.class as usize].fetch_add(r.count, Ordering::Relaxed);
        }
        lock(&self.pending_runs).extend(runs);
        Ok(())
    }

    /// Replays a rolled-back transaction in one new one, after making room.
    pub(crate) fn replay(&self, w: &mut Writer, ops: &[Op]) -> rusqlite::Result<Vec<DropRun>> {
        Self::begin(w)?;
        let incoming: u64 = ops
            .iter()
            .map(|o| match o {
                Op::Insert { payload, .. } => payload.len() as u64 + 64,
                _ => 0,
            })
            .sum();
        let mut runs = Vec::new();
        self.make_room(w, incoming, &mut runs)?;
        for op in ops {
            op.exec(&w.conn)?;
        }
        w.conn.execute_batch("COMMIT")?;
        w.in_txn = false;
        w.ops.clear();
        Ok(runs)
    }

    /// Copies the write-ahead log into the database once it passes half its
    /// cap (automatic checkpoints are off: a checkpoint that fails on a full
    /// disk must not look like a failed commit). A failure is logged; the
    /// WAL then grows until a later checkpoint succeeds.
    pub(crate) fn checkpoint(&self, w: &Writer) {
        let wal = self.path.with_extension("sqlite-wal");
        let len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        // past its cap (a big transaction: a long outage's ack, a vacuum)
        // the WAL file is truncated too, not left at its high-water mark
        let sql = match len {
            l if l < WAL_BYTES / 2 => return,
            l if l <= WAL_BYTES => "PRAGMA wal_checkpoint(PASSIVE)",
            _ => "PRAGMA wal_checkpoint(TRUNCATE)",
        };
        if let Err(e) = w.conn.query_row(sql, [], |_| Ok(())) {
            tracing::warn!(error = %e, "log: checkpoint failed; will retry");
        }
    }

    /// A passive checkpoint now (between the small transactions of a trim):
    /// the next transaction starts the write-ahead log from its beginning,
    /// reusing its file instead of growing it.
    pub(crate) fn checkpoint_now(&self, w: &Writer) {
        if let Err(e) = w
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "log: checkpoint failed; will retry");
        }
    }

    /// Writes the reserve file if it is missing and the filesystem has room
    /// for it beyond [`DISK_RESERVE`]. A failure leaves it missing (tried again later).
    pub(crate) fn ensure_ballast(&self) {
        if self.ballast.load(Ordering::Relaxed) {
            return;
        }
        let Some(dir) = self.path.parent() else {
            return;
        };
        if fs_available(dir).is_none_or(|f| f < DISK_RESERVE + BALLAST_BYTES) {
            return;
        }
        let file = dir.join("reserve");
        let r = (|| {
            use std::io::Write;
            let mut f = std::fs::File::create(&file)?;
            // real blocks (a sparse file would hold no room)
            f.write_all(&vec![0u8; BALLAST_BYTES as usize])?;
            f.sync_all()
        })();
        match r {
            Ok(()) => {
                self.ballast.store(true, Ordering::Relaxed);
                tracing::info!(path = %file.display(), bytes = BALLAST_BYTES, "log: reserve file in place");
            }
            Err(e) => {
                let _ = std::fs::remove_file(&file);
                tracing::warn!(path = %file.display(), error = %e, "log: could not write the reserve file; will retry");
            }
        }
    }

    /// Deletes the reserve file (the disk is full): its room is what the
    /// recovery's trims, drops and checkpoints write into.
    pub(crate) fn release_ballast(&self) {
        if !self.ballast.swap(false, Ordering::Relaxed) {
            return;
        }
        if let Some(dir) = self.path.parent() {
            let file = dir.join("reserve");
            match std::fs::remove_file(&file) {
                Ok(()) => {
                    tracing::warn!(path = %file.display(), bytes = BALLAST_BYTES, "log: the disk is full; released the reserve file to make room")
                }
                Err(e) => {
                    tracing::warn!(path = %file.display(), error = %e, "log: could not release the reserve file")
                }
            }
        }
    }

    /// Gives free pages back to the filesystem (incremental vacuum) once
    /// acknowledgements leave more than [`VACUUM_SLACK`] and a quarter of
    /// the live pages free, so that the file does not stay at its
    /// high-water mark after an outage drained. It goes in steps of
    /// [`VACUUM_STEP_PAGES`], each its own transaction followed by a
    /// checkpoint (a step moves pages: its write-ahead log stays small),
    /// for at most [`VACUUM_BUDGET`] per call; the next ack goes on.
    pub(crate) fn give_back_space(&self, w: &mut Writer) -> Result<()> {
        if w.in_txn {
            return Ok(());
        }
        let started = Instant::now();
        let ps = self.page_size as i64;
        while started.elapsed() < VACUUM_BUDGET {
            let (pages, free): (i64, i64) = w.conn.query_row(
                "SELECT (SELECT page_count FROM pragma_page_count()), (SELECT freelist_count FROM pragma_freelist_count())",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            // on a small filesystem the slack is an eighth of the bound:
            // the room is given back for the reserve file and the state store
            let slack = VACUUM_SLACK.min(self.effective_max.load(Ordering::Relaxed) / 8);
            let keep = ((pages - free) / 4).max(slack as i64 / ps);
            if free <= keep {
                break;
            }
            let n = (free - keep).min(VACUUM_STEP_PAGES);
            // each step of the pragma frees one page: step it to the end
            let r = w
                .conn
                .prepare(&format!("PRAGMA incremental_vacuum({n})"))
                .and_then(|mut st| {
                    let mut rows = st.query([])?;
                    while rows.next()?.is_some() {}
                    Ok(())
                });
            match r {
                Ok(()) => {
                    self.vacuumed_bytes
                        .fetch_add((n * ps) as u64, Ordering::Relaxed);
                    self.checkpoint_now(w);
                }
                Err(e) if is_disk_full(&e) => {
                    self.release_ballast();
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::tests::{items, kept, open};
    use crate::{Class, Options};

    /// A small real filesystem (tmpfs) mounted for one test; unmounted on drop.
    /// The tests run as root (CI too); a failed mount fails the test.
    pub(crate) struct Tmpfs(pub tempfile::TempDir);

    impl Tmpfs {
        pub(crate) fn new(size: &str) -> Tmpfs {
            let dir = tempfile::tempdir().unwrap();
            let st = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .status()
                .expect("mount(8)");
            assert!(st.success(), "mounting a tmpfs needs root");
            Tmpfs(dir)
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.0.path())
                .status();
        }
    }

    /// Fills the log on a 3 MiB filesystem with a 1 GiB bound; returns the
    /// runs the drops and recoveries reported, and the alarm seqs.
    fn fill_a_small_disk(opts: Options) -> (Tmpfs, Log, Vec<DropRun>, Vec<u64>) {
        let fs = Tmpfs::new("3m");
        let log = Log::open(fs.0.path(), &opts).unwrap();
        let mut runs = Vec::new();
        let mut alarms = Vec::new();
        for round in 0..120 {
            let mut batch: Vec<(Class, i64, Vec<u8>)> = (0..250)
                .map(|i| (Class::Telemetry, i, vec![7u8; 120]))
                .collect();
            batch.push((Class::Alarm, round, b"alarm".to_vec()));
            let (first, r) = log.append(&batch).expect("a full disk is not an error");
            alarms.push(first + 250);
            runs.extend(r);
            log.flush().expect("a full disk is not an error");
            runs.extend(log.take_drops().unwrap());
        }
        (fs, log, runs, alarms)
    }

    fn check_full_disk_outcome(log: &Log, runs: &[DropRun], alarms: &[u64]) {
        let st = log.stats();
        eprintln!("{st:?}");
        assert!(st.dropped[0] > 0, "30,000 readings cannot fit in 3 MiB");
        assert_eq!(st.dropped[1], 0, "no alarm dropped");
        assert_eq!(
            runs.iter().map(|r| r.count).sum::<u64>(),
            st.dropped.iter().sum::<u64>(),
            "every drop is reported once"
        );
        let kept = kept(log);
        let dropped: BTreeSet<u64> = runs
            .iter()
            .flat_map(|r| r.first_seq..=r.last_seq)
            .filter(|s| !kept.contains(s))
            .collect();
        assert_eq!(
            kept.len() as u64 + st.dropped[0],
            120 * 251,
            "kept + dropped = appended"
        );
        assert!(dropped.len() as u64 >= st.dropped[0]);
        assert!(alarms.iter().all(|a| kept.contains(a)), "every alarm kept");
        assert!(
            kept.contains(&(120 * 251 - 1)),
            "the newest reading is kept"
        );
    }

    #[test]
    fn a_full_filesystem_shrinks_the_bound_and_the_log_keeps_writing() {
        let (fs, log, runs, alarms) = fill_a_small_disk(Options::default());
        check_full_disk_outcome(&log, &runs, &alarms);
        let st = log.stats();
        assert!(
            st.effective_max_bytes < 3 * 1024 * 1024,
            "bound follows the filesystem: {}",
            st.effective_max_bytes
        );
        assert!(st.fs_free_bytes > 0, "the reserve stays free");
        drop(log);
        // and it opens again on the still-full disk, and appends
        let log = Log::open(fs.0.path(), &Options::default()).unwrap();
        log.append(&items(100)).unwrap();
        log.flush().unwrap();
    }

    #[test]
    fn a_disk_filled_by_another_process_costs_only_accounted_entries_and_writing_resumes() {
        let fs = Tmpfs::new("4m");
        let log = open(fs.0.path());
        let batch = |round: i64| -> Vec<(Class, i64, Vec<u8>)> {
            let mut b: Vec<_> = (0..250)
                .map(|i| (Class::Telemetry, i, vec![7u8; 120]))
                .collect();
            b.push((Class::Alarm, round, b"alarm".to_vec()));
            b
        };
        let mut runs = Vec::new();
        for round in 0..10 {
            runs.extend(log.append(&batch(round)).unwrap().1);
            log.flush().unwrap();
        }
        // another process takes every free byte
        let filler = fs.0.path().join("filler");
        let free = fs_available(fs.0.path()).unwrap();
        std::fs::write(&filler, vec![0u8; free as usize]).unwrap_or(());
        for round in 10..40 {
            runs.extend(log.append(&batch(round)).expect("not an error").1);
            log.flush().expect("not an error");
            runs.extend(log.take_drops().unwrap());
        }
        std::fs::remove_file(&filler).unwrap();
        let (first, r) = log.append(&batch(40)).unwrap();
        runs.extend(r);
        log.flush().unwrap();
        runs.extend(log.take_drops().unwrap());
        let st = log.stats();
        let kept = kept(&log);
        assert!(
            (first..first + 251).all(|s| kept.contains(&s)),
            "writing resumed once space came back: {st:?}"
        );
        let dropped: u64 = st.dropped.iter().sum();
        assert_eq!(
            runs.iter().map(|r| r.count).sum::<u64>(),
            dropped,
            "every drop is reported once"
        );
        assert_eq!(
            kept.len() as u64 + dropped,
            41 * 251,
            "kept + dropped = appended: {st:?}"
        );
        assert_eq!(st.entries, kept.len() as u64, "the count stays true");
    }

    /// Fills a 4 MiB filesystem's log to its bound with nothing sent (a
    /// long outage); returns the filesystem and the log.
    fn an_outage_on_a_4_mib_disk() -> (Tmpfs, Log) {
        let fs = Tmpfs::new("4m");
        let log = open(fs.0.path());
        for round in 0..60 {
            let batch: Vec<(Class, i64, Vec<u8>)> = (0..500)
                .map(|i| (Class::Telemetry, round * 500 + i, vec![7u8; 150]))
                .collect();
            log.append(&batch).unwrap();
            log.flush().unwrap();
        }
        assert!(log.stats().dropped[0] > 0, "the bound was reached");
        (fs, log)
    }

    #[test]
    fn acknowledging_a_whole_outage_at_once_on_a_small_disk_never_fills_it() {
        let (fs, log) = an_outage_on_a_4_mib_disk();
        let events = log.stats().disk_full_events;
        log.ack(log.durable_seq()).unwrap();
        let st = log.stats();
        assert_eq!(st.entries, 0, "{st:?}");
        assert_eq!(
            st.disk_full_events, events,
            "the trim went in small transactions: {st:?}"
        );
        let wal = std::fs::metadata(fs.0.path().join("log.sqlite-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(wal <= WAL_BYTES, "the write-ahead log stayed small: {wal}");
        let (first, _) = log.append(&items(10)).unwrap();
        log.flush().unwrap();
        assert!(kept(&log).contains(&(first + 9)), "writing goes on");
    }

    #[test]
    fn on_a_disk_another_process_filled_to_the_last_byte_the_reserve_lets_the_log_trim_and_go_on() {
        let (fs, log) = an_outage_on_a_4_mib_disk();
        assert!(
            fs.0.path().join("reserve").exists(),
            "the reserve file is in place"
        );
        // the write-ahead log holds no room of its own any more
        log.flush_checkpoint_for_test();
        let filler = fs.0.path().join("filler");
        let free = fs_available(fs.0.path()).unwrap();
        std::fs::write(&filler, vec![0u8; free as usize]).unwrap_or(());
        assert!(
            fs_available(fs.0.path()).unwrap() < 8192,
            "the disk is full"
        );
        log.ack(log.durable_seq()).unwrap();
        let st = log.stats();
        assert_eq!(st.entries, 0, "the trim went through: {st:?}");
        assert!(
            !fs.0.path().join("reserve").exists(),
            "the reserve was released"
        );
        // and the log keeps writing on what the trim freed
        let (first, _) = log.append(&items(100)).unwrap();
        log.flush().unwrap();
        assert!(kept(&log).contains(&(first + 99)), "{:?}", log.stats());
        // space comes back: the reserve is made again
        std::fs::remove_file(&filler).unwrap();
        log.append(&items(1)).unwrap();
        log.flush().unwrap();
        assert!(
            fs.0.path().join("reserve").exists(),
            "the reserve is back: free {:?}, {:?}",
            fs_available(fs.0.path()),
            log.stats()
        );
    }

    #[test]
    fn a_drained_log_gives_its_space_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        for _ in 0..40 {
            log.append(
                &(0..1000)
                    .map(|i| (Class::Telemetry, i, vec![3u8; 300]))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
            log.flush().unwrap();
        }
        let size = || {
            std::fs::metadata(dir.path().join("log.sqlite"))
                .unwrap()
                .len()
        };
        let full = size();
        assert!(full > 12 * 1024 * 1024, "{full}");
        let last = log.stats().durable_seq;
        log.ack(last - 10).unwrap();
        // each ack vacuums for at most VACUUM_BUDGET: under load (tests
        // run four at a time) one ack may not finish; the next ones go on,
        // as the agent's acks do every batch
        for k in 1..=20 {
            log.flush().unwrap();
            // the checkpoint copies the shrunk database back into the file
            log.append(&items(1)).unwrap();
            log.flush().unwrap();
            log.flush_checkpoint_for_test();
            if size() < full / 2 {
                break;
            }
            log.ack(last - 10 + k).unwrap();
        }
        assert!(
            size() < full / 2,
            "file stays at its high-water mark: {} of {full}; {:?}",
            size(),
            log.stats()
        );
        assert!(log.stats().vacuumed_bytes > 0);
    }
}
