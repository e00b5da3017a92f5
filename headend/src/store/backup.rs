//! Backups of a SQLite headend database, and their restore (issue 36).
//!
//! **Backup** uses SQLite's online backup API in one step: the copy is
//! read in one read transaction, so it is the database as of one commit,
//! while the headend goes on writing (WAL: a reader never blocks the
//! writer). It is written beside its destination, switched out of WAL
//! (one self-contained file), checked (`PRAGMA integrity_check`), synced
//! and only then renamed to its name: a backup that exists is whole.
//!
//! **Restore** checks the file first (integrity, a tankwatch database, a
//! schema this build knows), never overwrites a database unless asked,
//! and then keeps the one it replaces (with its WAL files) beside it.
//! The caller then opens the restored file ([`super::Db::connect`] runs
//! the migrations of this build) and verifies the audit chain.
//!
//! PostgreSQL is backed up with its own tools (`pg_dump`, a base backup):
//! docs/runbooks/restore-from-backup.md.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::pool::{Backend, sqlite_path};
use crate::Error;

/// What a backup or a restore holds: its size and the rows of the tables
/// an operator checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub bytes: u64,
    /// The newest migration applied to it.
    pub schema_version: i64,
    /// `(table, rows)` of [`COUNTED`].
    pub rows: Vec<(&'static str, i64)>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes, schema {}", self.bytes, self.schema_version)?;
        for (t, n) in &self.rows {
            write!(f, ", {t} {n}")?;
        }
        Ok(())
    }
}

/// The tables a summary counts.
pub const COUNTED: &[&str] = &[
    "sites",
    "readings",
    "commands",
    "loads",
    "audit_log",
    "agent_certificates",
];

/// How long a backup waits for SQLite's locks, in all.
const BUSY: Duration = Duration::from_secs(30);

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Config(format!("{what} {}: {e}", path.display()))
}

/// The SQLite file of `url`, or why there is none.
fn file_of(url: &str, verb: &str) -> Result<PathBuf, Error> {
    match Backend::from_url(url)? {
        Backend::Sqlite => Ok(PathBuf::from(sqlite_path(url))),
        Backend::Postgres => Err(Error::Config(format!(
            "{verb}: this command copies a SQLite database; back up PostgreSQL with pg_dump or a base backup (docs/runbooks/restore-from-backup.md)"
        ))),
    }
}

/// Copies the database of `url` to `to` (which must not exist) while it
/// is in use. Blocking: run it off the async runtime.
pub fn backup(url: &str, to: &Path) -> Result<Summary, Error> {
    let from = file_of(url, "backup")?;
    if !from.is_file() {
        return Err(Error::Config(format!(
            "backup: no database at {} (--database-url)",
            from.display()
        )));
    }
    if to.exists() {
        return Err(Error::Config(format!(
            "backup: {} exists; give a new file name (a backup never overwrites)",
            to.display()
        )));
    }
    let partial = with_suffix(to, ".partial");
    let _ = std::fs::remove_file(&partial);
    let result = copy_online(&from, &partial)
        .map_err(|e| writing(&partial, e))
        .and_then(|()| {
            let summary = check(&partial)?;
            // what the database holds (password hashes, tokens): its owner's alone
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| io("backup: setting the mode of", &partial, e))?;
            sync_file(&partial)?;
            std::fs::rename(&partial, to).map_err(|e| io("backup: renaming to", to, e))?;
            sync_dir(to)?;
            Ok(summary)
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// The name of a scheduled backup taken at `now_ms`:
/// `headend-YYYYMMDDTHHMMSSZ.db` (UTC, so that names sort by time).
pub fn scheduled_name(now_ms: i64) -> Result<String, Error> {
    let t = jiff::Timestamp::from_millisecond(now_ms)
        .map_err(|e| Error::Config(format!("backup: the clock ({now_ms} ms): {e}")))?;
    Ok(format!("headend-{}.db", t.strftime("%Y%m%dT%H%M%SZ")))
}

/// Whether `name` is a scheduled backup's ([`scheduled_name`]); any other
/// file in the directory (a copy an administrator made) is never pruned.
fn is_scheduled(name: &str) -> bool {
    let Some(stamp) = name
        .strip_prefix("headend-")
        .and_then(|r| r.strip_suffix(".db"))
    else {
        return false;
    };
    let b = stamp.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

/// Deletes the scheduled backups in `dir` beyond the `keep` newest, and
/// the partial copies of scheduled backups that were cut (a crash, a full
/// disk). Run after a backup succeeded, so that the newest is whole.
/// Returns what it deleted, oldest first.
pub fn prune(dir: &Path, keep: usize) -> Result<Vec<PathBuf>, Error> {
    let mut backups = Vec::new();
    let mut gone = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| io("backup: listing", dir, e))? {
        let e = e.map_err(|e| io("backup: listing", dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if is_scheduled(&name) {
            backups.push(name);
        } else if name.strip_suffix(".partial").is_some_and(is_scheduled) {
            gone.push(e.path());
        }
    }
    backups.sort();
    let extra = backups.len().saturating_sub(keep);
    gone.extend(backups[..extra].iter().map(|n| dir.join(n)));
    gone.sort();
    for f in &gone {
        std::fs::remove_file(f).map_err(|e| io("backup: deleting", f, e))?;
    }
    if !gone.is_empty() {
        sync_dir(&dir.join("."))?;
    }
    Ok(gone)
}

/// A SQLite error while writing the copy `to`, named with its file; a
/// full disk says what was kept.
fn writing(to: &Path, e: Error) -> Error {
    let Error::Sqlite(inner) = &e else {
        return e;
    };
    let full = matches!(inner, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull);
    Error::Db(format!(
        "backup: writing {}: {inner}{}",
        to.display(),
        if full {
            " (the disk is full: the partial copy is deleted and no older backup was touched; make room or write elsewhere)"
        } else {
            ""
        }
    ))
}

/// The online backup, in one step (one read transaction: one commit's
/// state), then out of WAL mode so that the file stands alone.
fn copy_online(from: &Path, to: &Path) -> Result<(), Error> {
    let src = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    src.busy_timeout(BUSY)?;
    let mut dst = Connection::open(to)?;
    {
        let b = rusqlite::backup::Backup::new(&src, &mut dst)?;
        let deadline = std::time::Instant::now() + BUSY;
        loop {
            match b.step(-1)? {
                rusqlite::backup::StepResult::Done => break,
                // the source is locked for a moment (a checkpoint): again
                _ if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => {
                    return Err(Error::Db(format!(
                        "backup: the database stayed locked for {} s ({other:?})",
                        BUSY.as_secs()
                    )));
                }
            }
        }
    }
    let mode: String = dst.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))?;
    if mode != "delete" {
        return Err(Error::Db(format!(
            "backup: the copy stayed in journal mode {mode}"
        )));
    }
    dst.close().map_err(|(_, e)| Error::Sqlite(e))?;
    Ok(())
}

/// Opens `file` read-only and checks that it is a whole tankwatch
/// database of a schema this build knows.
pub fn check(file: &Path) -> Result<Summary, Error> {
    let bad = |why: String| Error::Config(format!("{}: {why}", file.display()));
    let c = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| bad(format!("cannot open it as SQLite: {e}")))?;
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| bad(format!("not a readable SQLite database: {e}")))?;
    if ok != "ok" {
        return Err(bad(format!("damaged (integrity_check: {ok})")));
    }
    let schema_version: i64 = c
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success",
            [],
            |r| r.get(0),
        )
        .map_err(|e| bad(format!("not a tankwatch headend database ({e})")))?;
    let known = super::pool::sqlite_schema_version();
    if schema_version > known {
        return Err(bad(format!(
            "made by a newer headend (schema {schema_version}; this build knows up to {known}): restore it with that release"
        )));
    }
    let mut rows = Vec::with_capacity(COUNTED.len());
    for t in COUNTED {
        let n: i64 = c
            .query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))
            .map_err(|e| bad(format!("not a tankwatch headend database ({t}: {e})")))?;
        rows.push((*t, n));
    }
    let bytes = std::fs::metadata(file)
        .map_err(|e| io("reading", file, e))?
        .len();
    Ok(Summary {
        bytes,
        schema_version,
        rows,
    })
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    pub summary: Summary,
    pub path: PathBuf,
    /// Where the database it replaced was kept (with `replace`).
    pub kept: Option<PathBuf>,
}

/// Puts the backup `from` in place as the database of `url`. Refuses to
/// replace an existing database unless `replace`; the one replaced is
/// moved aside (its WAL files with it), never deleted. Stop every headend
/// on the file first. Blocking.
pub fn restore(from: &Path, url: &str, replace: bool, now_ms: i64) -> Result<Restored, Error> {
    let to = file_of(url, "restore")?;
    let summary = check(from)?;
    if to.exists() && !replace {
        return Err(Error::Config(format!(
            "restore: {} exists; stop every headend on it and pass --replace (it is kept as {}.replaced-<time>)",
            to.display(),
            to.display()
        )));
    }
    if !to.exists() {
        // a WAL left without its database would be applied to the restored one
        for sfx in ["-wal", "-shm"] {
            let f = with_suffix(&to, sfx);
            if f.exists() {
                return Err(Error::Config(format!(
                    "restore: {} is there without its database; move it away first",
                    f.display()
                )));
            }
        }
        if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io("restore: creating", dir, e))?;
        }
    }
    let _restoring = lock(&to, true)?;
    // the copy first, beside the database: until it is complete and on
    // disk nothing moves; while `.restoring` is there no headend opens the
    // database (`interrupted_restore`), so a crash between the renames
    // below never lets one start on an empty file
    let partial = restoring(&to);
    std::fs::copy(from, &partial).map_err(|e| io("restore: copying to", &partial, e))?;
    sync_file(&partial)?;
    sync_dir(&to)?;
    let mut kept = None;
    if to.exists() {
        let aside = with_suffix(&to, &format!(".replaced-{now_ms}"));
        for sfx in ["-wal", "-shm"] {
            let f = with_suffix(&to, sfx);
            if f.exists() {
                std::fs::rename(&f, with_suffix(&aside, sfx))
                    .map_err(|e| io("restore: moving aside", &f, e))?;
            }
        }
        std::fs::rename(&to, &aside).map_err(|e| io("restore: moving aside", &to, e))?;
        kept = Some(aside);
    }
    std::fs::rename(&partial, &to).map_err(|e| io("restore: renaming to", &to, e))?;
    sync_dir(&to)?;
    Ok(Restored {
        summary,
        path: to,
        kept,
    })
}

/// The lock of a SQLite database's headends and restores: `<db>.lock`
/// beside it (`flock`). Each serving headend holds it shared for its life;
/// a restore holds it exclusive. So a restore under a running headend
/// (which would go on writing into the file moved aside, and lose what it
/// wrote at its next start) is refused, and so is a headend starting
/// during a restore. A separate file, never the database itself: closing
/// another descriptor of the database would drop SQLite's own POSIX
/// locks. Released when dropped, or when the process dies.
#[derive(Debug)]
pub struct ServeLock(#[allow(dead_code)] std::fs::File);

/// The serving headend's [`ServeLock`] on the database of `url` (none on
/// PostgreSQL).
pub fn serve_lock_of(url: &str) -> Result<Option<ServeLock>, Error> {
    match Backend::from_url(url)? {
        Backend::Sqlite => Ok(Some(lock(Path::new(sqlite_path(url)), false)?)),
        Backend::Postgres => Ok(None),
    }
}

/// Takes the lock of the SQLite database `db`: exclusive for a restore,
/// shared for a headend; or says who holds it and what to do.
fn lock(db: &Path, restore: bool) -> Result<ServeLock, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let who = if restore { "restore" } else { "headend" };
    let path = with_suffix(db, ".lock");
    // read-only is enough to lock, and the file holds nothing (0644, in
    // the database's own directory): a lock file another user made (root
    // running a restore) does not keep the service's user out
    let f = match std::fs::File::open(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o644)
            .open(&path),
        other => other,
    }
    .map_err(|e| io(&format!("{who}: opening"), &path, e))?;
    let r = if restore {
        f.try_lock()
    } else {
        f.try_lock_shared()
    };
    match r {
        Ok(()) => Ok(ServeLock(f)),
        Err(std::fs::TryLockError::WouldBlock) if restore => Err(Error::Config(format!(
            "restore: a headend is serving {} (it holds {}); stop it first (systemctl stop tankwatch-headend): a restore under a running headend would lose what it writes next",
            db.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Config(format!(
            "headend: a restore into {} is running (it holds {}); start the headend once it has finished",
            db.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(io(&format!("{who}: locking"), &path, e)),
    }
}

/// The restore's copy beside the database `db`, renamed onto it when
/// complete.
fn restoring(db: &Path) -> PathBuf {
    with_suffix(db, ".restoring")
}

/// Refuses to open the SQLite database `db` while a restore into it is
/// unfinished (its `.restoring` copy is there): a crash between moving
/// the old database aside and renaming the copy in would otherwise start
/// the headend on a new, empty database, and agents would stream into it.
pub fn interrupted_restore(db: &Path) -> Result<(), Error> {
    let partial = restoring(db);
    if partial.exists() {
        return Err(Error::Config(format!(
            "{}: a restore into this database did not finish ({} is there); run `headend restore --from BACKUP --replace` again, or remove {} to start on the database as it is",
            db.display(),
            partial.display(),
            partial.display()
        )));
    }
    Ok(())
}

fn with_suffix(p: &Path, sfx: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(sfx);
    PathBuf::from(s)
}

fn sync_file(p: &Path) -> Result<(), Error> {
    std::fs::File::open(p)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("syncing", p, e))
}

fn sync_dir(p: &Path) -> Result<(), Error> {
    let dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("syncing", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn database(dir: &Path) -> (String, super::super::Db) {
        let url = format!("sqlite://{}", dir.join("h.db").display());
        let db = super::super::Db::connect(&url, 2).await.unwrap();
        (url, db)
    }

    #[tokio::test]
    async fn a_backup_never_overwrites_and_a_restore_never_replaces_unasked() {
        let dir = tempfile::tempdir().unwrap();
        let (url, _db) = database(dir.path()).await;
        let to = dir.path().join("b.db");
        let s = backup(&url, &to).unwrap();
        assert!(s.schema_version >= 1 && s.bytes > 0, "{s}");
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&to), 0o600, "the backup is its owner's alone");
        assert_eq!(
            mode(&dir.path().join("h.db")),
            0o600,
            "so is a new database"
        );
        let again = backup(&url, &to).unwrap_err().to_string();
        assert!(again.contains("never overwrites"), "{again}");
        let refused = restore(&to, &url, false, 1).unwrap_err().to_string();
        assert!(refused.contains("--replace"), "{refused}");
        let r = restore(&to, &url, true, 7).unwrap();
        let kept = r.kept.unwrap();
        assert!(kept.ends_with("h.db.replaced-7") && kept.is_file());
        assert!(!dir.path().join("b.db.partial").exists());
    }

    #[tokio::test]
    async fn a_restore_cut_between_its_renames_keeps_every_headend_off_the_database_until_it_is_run_again()
     {
        let dir = tempfile::tempdir().unwrap();
        let (url, db) = database(dir.path()).await;
        let to = dir.path().join("b.db");
        backup(&url, &to).unwrap();
        db.pool().close().await;
        // the crash: the old database moved aside, the copy not yet renamed in
        let live = dir.path().join("h.db");
        for f in ["h.db-wal", "h.db-shm", "h.db"] {
            let p = dir.path().join(f);
            if p.exists() {
                std::fs::rename(&p, dir.path().join(format!("{f}.replaced-1"))).unwrap();
            }
        }
        let bytes = std::fs::read(&to).unwrap();
        std::fs::write(dir.path().join("h.db.restoring"), &bytes[..bytes.len() / 2]).unwrap();
        let e = match super::super::Db::connect(&url, 2).await {
            Ok(_) => panic!("a headend opened a database whose restore did not finish"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("did not finish") && e.contains("h.db.restoring") && e.contains("--replace"),
            "{e}"
        );
        assert!(!live.exists(), "no empty database made in its place");
        // run again, it completes; the database opens with the backup's schema
        let r = restore(&to, &url, true, 2).unwrap();
        assert!(r.kept.is_none() && live.is_file());
        assert!(!dir.path().join("h.db.restoring").exists());
        let db = super::super::Db::connect(&url, 2).await.unwrap();
        drop(db);
        assert_eq!(
            check(&live).unwrap().schema_version,
            r.summary.schema_version
        );
    }

    #[test]
    fn scheduled_backups_are_named_by_utc_time_and_pruned_to_the_newest_without_touching_other_files()
     {
        assert_eq!(
            scheduled_name(1_796_643_296_789).unwrap(),
            "headend-20261207T113456Z.db"
        );
        for (name, ok) in [
            ("headend-20261207T104136Z.db", true),
            ("headend-20261207T104136Z.db.partial", false),
            ("headend-before-upgrade.db", false),
            ("headend-20261207T1041360.db", false),
            ("headend-2026120xT104136Z.db", false),
            ("headend.db", false),
        ] {
            assert_eq!(is_scheduled(name), ok, "{name}");
        }
        let dir = tempfile::tempdir().unwrap();
        let touch = |n: &str| std::fs::write(dir.path().join(n), b"x").unwrap();
        for h in 10..15 {
            touch(&format!("headend-20261207T{h}0000Z.db"));
        }
        touch("headend-20261207T090000Z.db.partial");
        touch("headend-before-upgrade.db");
        let gone = prune(dir.path(), 2).unwrap();
        let names: Vec<String> = gone
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "headend-20261207T090000Z.db.partial",
                "headend-20261207T100000Z.db",
                "headend-20261207T110000Z.db",
                "headend-20261207T120000Z.db",
            ]
        );
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| is_scheduled(n) || n.contains("upgrade"))
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "headend-20261207T130000Z.db",
                "headend-20261207T140000Z.db",
                "headend-before-upgrade.db",
            ]
        );
        assert!(
            prune(dir.path(), 2).unwrap().is_empty(),
            "nothing more to prune"
        );
    }

    #[tokio::test]
    async fn a_restore_is_refused_while_a_headend_serves_the_database_and_a_headend_during_a_restore()
     {
        let dir = tempfile::tempdir().unwrap();
        let (url, db) = database(dir.path()).await;
        let to = dir.path().join("b.db");
        backup(&url, &to).unwrap();
        let live = dir.path().join("h.db");
        let serving = serve_lock_of(&url).unwrap();
        let also = serve_lock_of(&url).unwrap();
        assert!(serving.is_some() && also.is_some(), "headends share it");
        let e = restore(&to, &url, true, 1).unwrap_err().to_string();
        assert!(
            e.contains("a headend is serving") && e.contains("stop it first"),
            "{e}"
        );
        assert!(
            live.is_file() && !dir.path().join("h.db.restoring").exists(),
            "nothing moved"
        );
        drop((serving, also));
        let restoring = lock(&live, true).unwrap();
        let e = serve_lock_of(&url).unwrap_err().to_string();
        assert!(
            e.contains("a restore into") && e.contains("h.db.lock"),
            "{e}"
        );
        drop(restoring);
        db.pool().close().await;
        restore(&to, &url, true, 2).unwrap();
        serve_lock_of(&url).unwrap();
    }

    #[tokio::test]
    async fn a_damaged_or_foreign_file_is_refused_before_anything_moves() {
        let dir = tempfile::tempdir().unwrap();
        let (url, _db) = database(dir.path()).await;
        let to = dir.path().join("b.db");
        backup(&url, &to).unwrap();
        // damage a page in the middle of the file
        let mut bytes = std::fs::read(&to).unwrap();
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 4096] {
            *b = 0x5a;
        }
        let damaged = dir.path().join("damaged.db");
        std::fs::write(&damaged, bytes).unwrap();
        let e = restore(&damaged, &url, true, 1).unwrap_err().to_string();
        assert!(e.contains("damaged") || e.contains("not a readable"), "{e}");
        let foreign = dir.path().join("foreign.db");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let e = restore(&foreign, &url, true, 1).unwrap_err().to_string();
        assert!(e.contains("not a tankwatch headend database"), "{e}");
        assert!(
            !dir.path().join("h.db.replaced-1").exists(),
            "nothing moved"
        );
    }

    #[tokio::test]
    async fn postgres_is_sent_to_its_own_tools() {
        let e = backup("postgres://u@h/db", Path::new("/tmp/x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("pg_dump"), "{e}");
    }
}
