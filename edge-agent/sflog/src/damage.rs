//! A damaged log file at start (issue 28, item 2): a truncated file,
//! flipped bytes in a page, a seq that cannot be. Checked before the log
//! is used; a damaged file is moved aside (`log.sqlite.damaged`, only the
//! newest kept) and a new log with a new id is started, so that the site
//! keeps collecting. What could be read of the old log (its id, the seqs
//! not yet acknowledged, their times) is kept as a [`Damage`] for the
//! caller to record as a gap; a file that cannot be read at all gives a
//! damage with unknown bounds.
//!
//! Not damage: a file of another format version, a directory the process
//! may not write (those are errors that name the fix).

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

/// Files up to this size get `PRAGMA integrity_check`; larger ones the
/// cheaper `quick_check` (page structure and key order, not index content).
const FULL_CHECK_BYTES: u64 = 64 * 1024 * 1024;

/// What was lost with a damaged log (as far as the file still tells).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Why the file was judged damaged (SQLite's words or the check's).
    pub why: String,
    /// Where the file went.
    pub moved_to: String,
    /// The old log's id, if readable.
    pub old_log_id: Option<u64>,
    /// Seqs of the old log that were not yet acknowledged (first, last),
    /// if readable: some of them may have reached the headend.
    pub unacked: Option<(u64, u64)>,
    /// Append times of the oldest and newest entry still in the file, if readable.
    pub times: Option<(i64, i64)>,
}

/// Is this error damage (rather than a permission, a lock or a full disk)?
fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase))
}

/// Why the SQLite file at `path` is damaged, if it is: SQLite's own
/// integrity check (`integrity_check` up to [`FULL_CHECK_BYTES`], else
/// `quick_check`), or SQLite refusing it as corrupt or not a database.
/// `None` for a sound file, a missing one, or an error that is not damage
/// (permissions, locks: the normal open reports those). The agent's state
/// store uses it too.
pub fn integrity_problem(path: &Path) -> Option<String> {
    let size = std::fs::metadata(path).ok()?.len();
    let r = (|| -> rusqlite::Result<Vec<String>> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        let pragma = if size <= FULL_CHECK_BYTES {
            "PRAGMA integrity_check(8)"
        } else {
            "PRAGMA quick_check(8)"
        };
        conn.prepare(pragma)?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()
    })();
    match r {
        Ok(found) if found == ["ok"] => None,
        Ok(found) => Some(found.join("; ")),
        Err(e) if is_damage(&e) => Some(e.to_string()),
        Err(_) => None,
    }
}

/// Checks the log file at `path` (if it exists); `Some(why)` when it is
/// damaged: SQLite's integrity, then the log's own tables and seqs.
pub(crate) fn check(path: &Path) -> Option<String> {
    if let Some(why) = integrity_problem(path) {
        return Some(why);
    }
    let r = (|| -> rusqlite::Result<Option<String>> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        let tables: i64 = conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('entries', 'meta')",
            [],
            |r| r.get(0),
        )?;
        if tables == 0 {
            return Ok(None); // a new, empty file
        }
        if tables != 2 {
            return Ok(Some("a table of the log is missing".into()));
        }
        let (min, max): (Option<i64>, Option<i64>) =
            conn.query_row("SELECT MIN(seq), MAX(seq) FROM entries", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        if min.is_some_and(|m| m < 1) || max.is_some_and(|m| m >= i64::MAX / 2) {
            return Ok(Some(format!(
                "impossible sequence numbers (lowest {min:?}, highest {max:?})"
            )));
        }
        let floor: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = 'seq_floor'", [], |r| {
                r.get(0)
            })
            .optional()?;
        if floor.is_some_and(|f| !(1..i64::MAX / 2).contains(&f)) {
            return Ok(Some(format!("impossible sequence floor {floor:?}")));
        }
        Ok(None)
    })();
    match r {
        Ok(v) => v,
        Err(e) if is_damage(&e) => Some(e.to_string()),
        Err(_) => None,
    }
}

/// Reads what it can of a damaged file, then moves it (and its WAL) aside.
pub(crate) fn move_aside(path: &Path, why: String) -> std::io::Result<Damage> {
    let salvage = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).ok();
    let meta = |c: &Connection, key: &str| -> Option<i64> {
        c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .ok()
    };
    let (mut old_log_id, mut unacked, mut times) = (None, None, None);
    if let Some(c) = &salvage {
        old_log_id = meta(c, "log_id").filter(|&v| v > 0).map(|v| v as u64);
        let floor = meta(c, "seq_floor").filter(|&f| f >= 1);
        let range: Option<[Option<i64>; 4]> = c
            .query_row(
                "SELECT MIN(seq), MAX(seq), MIN(ts), MAX(ts) FROM entries",
                [],
                |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?]),
            )
            .ok();
        if let Some([lo, hi, t0, t1]) = range {
            let first = floor.or(lo).filter(|&f| f >= 1);
            if let (Some(first), Some(hi)) = (first, hi.filter(|&h| h >= 1)) {
                unacked = (hi >= first).then_some((first as u64, hi as u64));
            }
            times = t0.zip(t1);
        }
    }
    drop(salvage);
    let aside = path.with_extension("sqlite.damaged");
    std::fs::rename(path, &aside)?;
    let wal = path.with_extension("sqlite-wal");
    if wal.exists() {
        std::fs::rename(&wal, path.with_extension("sqlite.damaged-wal"))?;
    } else {
        let _ = std::fs::remove_file(path.with_extension("sqlite.damaged-wal"));
    }
    let _ = std::fs::remove_file(path.with_extension("sqlite-shm"));
    Ok(Damage {
        why,
        moved_to: aside.display().to_string(),
        old_log_id,
        unacked,
        times,
    })
}
