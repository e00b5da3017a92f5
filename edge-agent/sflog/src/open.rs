//! Opening the log: the file, its pragmas and schema (see the format at
//! the top of `lib.rs`), the one-time conversion to incremental vacuum,
//! the format version, the log's identity, and where the seqs stand after
//! whatever happened before (a crash, a wipe, a full trim).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use rusqlite::{Connection, OptionalExtension, params};

use crate::space::{BALLAST_BYTES, DISK_RESERVE, fs_available};
use crate::{Error, FORMAT_VERSION, Log, Options, Result, WAL_BYTES, Writer};

impl Log {
    /// Opens (or creates) the log in `dir`.
    pub fn open(dir: &Path, opts: &Options) -> Result<Log> {
        let path = dir.join("log.sqlite");
        let open_err = |source| Error::Open {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| open_err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(|e| open_err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| Error::InUse {
                path: dir.display().to_string(),
            })?;
        // a damaged file is moved aside and a new log started (damage.rs)
        let damage = match crate::damage::check(&path) {
            Some(why) => {
                let d = crate::damage::move_aside(&path, why)
                    .map_err(|e| open_err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
                tracing::error!(
                    path = %path.display(),
                    moved_to = %d.moved_to,
                    why = %d.why,
                    old_log_id = ?d.old_log_id,
                    unacked = ?d.unacked,
                    "store-and-forward log damaged: moved aside, a new log starts; what it held unsent is recorded as a gap"
                );
                Some(d)
            }
            None => None,
        };
        let conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let fresh: i64 = conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))?;
        if fresh == 0 {
            // before the first table: free pages can be given back (incremental vacuum)
            conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")?;
        }
        conn.execute_batch(&format!(
            "PRAGMA page_size = 4096;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA wal_autocheckpoint = 0;
             PRAGMA journal_size_limit = {WAL_BYTES};
             CREATE TABLE IF NOT EXISTS entries (
                 seq INTEGER PRIMARY KEY, class INTEGER NOT NULL, ts INTEGER NOT NULL,
                 crc INTEGER NOT NULL, payload BLOB NOT NULL);
             CREATE INDEX IF NOT EXISTS entries_by_class ON entries (class, seq);
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        ))?;
        // a log created before incremental vacuum: convert it once, if the
        // filesystem has room for the copy VACUUM makes
        let av: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
        if av != 2 {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if fs_available(dir).is_some_and(|f| f > 2 * size + DISK_RESERVE) {
                conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")?;
            } else {
                tracing::warn!(path = %path.display(), "log: not enough free space to enable incremental vacuum; the file keeps its size");
            }
        }
        match meta(&conn, "version")? {
            None => set_meta(&conn, "version", FORMAT_VERSION)?,
            Some(FORMAT_VERSION) => {}
            Some(found) => {
                return Err(Error::Version {
                    path: path.display().to_string(),
                    found,
                });
            }
        }
        let log_id = match meta(&conn, "log_id")? {
            Some(v) => v as u64,
            None => {
                let id = fastrand::u64(1..i64::MAX as u64);
                set_meta(&conn, "log_id", id as i64)?;
                id
            }
        };
        let floor = meta(&conn, "seq_floor")?.unwrap_or(1).max(1) as u64;
        let (count, first, last): (i64, Option<i64>, Option<i64>) = conn.query_row(
            "SELECT COUNT(*), MIN(seq), MAX(seq) FROM entries",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let next = floor.max(last.unwrap_or(0) as u64 + 1);
        let acked = match first {
            Some(f) => (f as u64).saturating_sub(1),
            None => next - 1,
        }
        .min(
            floor
                .saturating_sub(1)
                .max(first.map(|f| f as u64 - 1).unwrap_or(0)),
        );
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let reader = Connection::open(&path).map_err(open_err)?;
        reader.busy_timeout(std::time::Duration::from_secs(10))?;
        reader.execute_batch("PRAGMA query_only = 1;")?;
        let log = Log {
            dir_lock: Some(lock),
            writer: Mutex::new(Writer {
                conn,
                in_txn: false,
                ops: Vec::new(),
            }),
            reader: Mutex::new(reader),
            opts: Options {
                max_bytes: opts.max_bytes.max(1024 * 1024),
                ..opts.clone()
            },
            log_id,
            page_size: page_size as u64,
            next_seq: AtomicU64::new(next),
            // everything found on disk at open is durable by definition
            durable_seq: AtomicU64::new(next - 1),
            acked_through: AtomicU64::new(acked),
            sent_through: AtomicU64::new(acked),
            previewed: Mutex::new(Vec::new()),
            count: AtomicU64::new(count as u64),
            corrupt: AtomicU64::new(0),
            dropped: Default::default(),
            corrupt_seen: Mutex::new(BTreeMap::new()),
            damage: Mutex::new(damage),
            path,
            squeeze: Mutex::new(None),
            pending_runs: Mutex::new(Vec::new()),
            disk_full_events: AtomicU64::new(0),
            fs_free: AtomicU64::new(0),
            effective_max: AtomicU64::new(opts.max_bytes.max(1024 * 1024)),
            vacuumed_bytes: AtomicU64::new(0),
            ballast: std::sync::atomic::AtomicBool::new(
                std::fs::metadata(dir.join("reserve")).is_ok_and(|m| m.len() == BALLAST_BYTES),
            ),
        };
        log.ensure_ballast();
        Ok(log)
    }
}

fn meta(conn: &Connection, key: &str) -> Result<Option<i64>> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

fn set_meta(conn: &Connection, key: &str, v: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, v],
    )?;
    Ok(())
}
