//! The agent's durable command state: which command ids it has seen (so a
//! command delivered twice is applied once), which command is in force on
//! each writable point (for ramp limits, supersession and the revert when
//! a duration ends), and the site's upcoming deliveries (ETA actions).
//!
//! On-disk format: one SQLite file, `state.sqlite` in the log directory,
//! WAL mode with `synchronous=FULL`: a change is on disk before the agent
//! acknowledges it.
//!
//! ```sql
//! commands   (id TEXT PRIMARY KEY, issued_seq INTEGER, kind TEXT,
//!             state TEXT,            -- received | writing | applied | done
//!             expires_ms INTEGER, received_ms INTEGER, updated_ms INTEGER,
//!             body BLOB)             -- the Command (protobuf), to settle it after a crash
//! points     (point TEXT PRIMARY KEY, -- "asset.field"
//!             command_id TEXT,        -- in force; NULL after a revert
//!             issued_seq INTEGER, value REAL, applied_ms INTEGER,
//!             ends_ms INTEGER)        -- NULL: no duration
//! deliveries (load_ref TEXT PRIMARY KEY, command_id TEXT, issued_seq INTEGER,
//!             state TEXT,             -- expected | delivering | delivered | cancelled
//!             eta BLOB,               -- the EtaAction (protobuf)
//!             delivered_l REAL, updated_ms INTEGER)
//! detectors  (tank TEXT PRIMARY KEY,  -- delivery detection state per tank,
//!             state TEXT,             -- JSON, saved while a delivery is under way
//!             updated_ms INTEGER)     -- and when it ends
//! gauge_marks (tank TEXT PRIMARY KEY, -- the newest tank gauge delivery record
//!             end_ms INTEGER,         -- reported (its end); older ones are not news
//!             updated_ms INTEGER)
//! outbox     (row INTEGER PRIMARY KEY, -- answers not yet durable in the log
//!             class INTEGER, ts_ms INTEGER, payload BLOB, created_ms INTEGER)
//! meta       (key TEXT PRIMARY KEY, value INTEGER)
//!   'state_lost' 1 while the headend has to send the active setpoints again
//!                (this file was made anew, or damaged and moved aside, while
//!                the log shows the agent ran before)
//! ```
//!
//! Write-ahead (issue 28): a command is stored with its body before it is
//! acted on, set `writing` before its device write, and every state change
//! puts its answer in the outbox in the same transaction (`outbox.rs`). At
//! start the executor hands the outbox over again and settles every
//! command left `received` or `writing` (see `commands::settle`).
//!
//! Bound: `done` command ids are kept [`KEEP_DONE_MS`] after their expiry
//! (long enough that a redelivery is still recognised), then pruned;
//! delivered and cancelled loads are pruned after the same time.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

mod deliveries;
mod outbox;
pub use outbox::{Note, Outgoing};

/// How long finished commands and deliveries are remembered, ms (7 days).
pub const KEEP_DONE_MS: i64 = 7 * 24 * 3600 * 1000;

#[derive(Debug, thiserror::Error)]
#[error("command state store: {0}")]
pub struct StoreError(#[from] rusqlite::Error);

type Result<T> = std::result::Result<T, StoreError>;

/// What is in force on a writable point.
#[derive(Debug, Clone, PartialEq)]
pub struct PointState {
    pub point: String,
    pub command_id: Option<String>,
    pub issued_seq: i64,
    pub value: f64,
    pub applied_ms: i64,
    pub ends_ms: Option<i64>,
}

/// One upcoming (or recent) delivery.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct Delivery {
    pub load_ref: String,
    pub command_id: String,
    pub issued_seq: i64,
    pub state: String,
    pub tanks: Vec<String>,
    pub product: String,
    pub planned_volume_l: f64,
    pub eta_ms: i64,
    pub eta_source: String,
    pub delivered_l: Option<f64>,
    pub updated_ms: i64,
}

/// Handle on the store (cheap to clone; one connection behind a mutex:
/// every operation is a few small statements).
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens (creating) `state.sqlite` in `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        Ok(Store::open_checked(dir)?.0)
    }

    /// Opens `state.sqlite` in `dir`; true when it had to be made anew
    /// (missing, or damaged and moved aside to `state.sqlite.damaged`).
    pub fn open_checked(dir: &Path) -> Result<(Store, bool)> {
        let _ = std::fs::create_dir_all(dir);
        let path = dir.join("state.sqlite");
        let mut fresh = !path.exists();
        if !fresh && let Some(why) = sflog::integrity_problem(&path) {
            tracing::error!(path = %path.display(), why, "the command state store is damaged: moved aside to state.sqlite.damaged; the headend is told so that it sends the active setpoints again");
            let _ = std::fs::rename(&path, dir.join("state.sqlite.damaged"));
            let _ = std::fs::rename(
                dir.join("state.sqlite-wal"),
                dir.join("state.sqlite.damaged-wal"),
            );
            let _ = std::fs::remove_file(dir.join("state.sqlite-shm"));
            fresh = true;
        }
        let conn = Connection::open(&path)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS commands (
                 id TEXT PRIMARY KEY, issued_seq INTEGER NOT NULL, kind TEXT NOT NULL,
                 state TEXT NOT NULL, expires_ms INTEGER NOT NULL,
                 received_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS points (
                 point TEXT PRIMARY KEY, command_id TEXT, issued_seq INTEGER NOT NULL,
                 value REAL NOT NULL, applied_ms INTEGER NOT NULL, ends_ms INTEGER);
             CREATE TABLE IF NOT EXISTS deliveries (
                 load_ref TEXT PRIMARY KEY, command_id TEXT NOT NULL, issued_seq INTEGER NOT NULL,
                 state TEXT NOT NULL, eta BLOB NOT NULL, delivered_l REAL,
                 updated_ms INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS detectors (
                 tank TEXT PRIMARY KEY, state TEXT NOT NULL, updated_ms INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS gauge_marks (
                 tank TEXT PRIMARY KEY, end_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS outbox (
                 row INTEGER PRIMARY KEY AUTOINCREMENT, class INTEGER NOT NULL,
                 ts_ms INTEGER NOT NULL, payload BLOB NOT NULL, created_ms INTEGER NOT NULL);",
        )?;
        // stores made before the outbox: the command itself, for settling it after a crash
        let has_body: i64 = conn.query_row(
            "SELECT COUNT(*) FROM pragma_table_info('commands') WHERE name = 'body'",
            [],
            |r| r.get(0),
        )?;
        if has_body == 0 {
            conn.execute_batch("ALTER TABLE commands ADD COLUMN body BLOB")?;
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);",
        )?;
        Ok((
            Store {
                conn: Arc::new(Mutex::new(conn)),
            },
            fresh,
        ))
    }

    /// Whether the agent's command state was lost and the headend has not
    /// yet had a full session to send the active setpoints again.
    pub fn state_lost(&self) -> Result<bool> {
        Ok(self
            .lock()
            .query_row("SELECT value FROM meta WHERE key = 'state_lost'", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .unwrap_or(0)
            == 1)
    }

    pub fn set_state_lost(&self, lost: bool) -> Result<()> {
        self.lock().execute(
            "INSERT INTO meta (key, value) VALUES ('state_lost', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [i64::from(lost)],
        )?;
        Ok(())
    }

    /// Opens an existing store read-only (for `edge-agent deliveries`).
    pub fn open_read_only(dir: &Path) -> Result<Store> {
        let conn = Connection::open_with_flags(
            dir.join("state.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a command id in `state` with the command itself (`body`,
    /// to settle it after a crash) and `notes` in one transaction; `None`
    /// when it was seen before (a redelivery).
    #[allow(clippy::too_many_arguments)]
    pub fn insert_new(
        &self,
        id: &str,
        issued_seq: i64,
        kind: &str,
        state: &str,
        expires_ms: i64,
        now: i64,
        body: Option<&[u8]>,
        notes: &[Note],
    ) -> Result<Option<Vec<Outgoing>>> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let n = tx.execute(
            "INSERT OR IGNORE INTO commands (id, issued_seq, kind, state, expires_ms, received_ms, updated_ms, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
            params![id, issued_seq, kind, state, expires_ms, now, body],
        )?;
        if n == 0 {
            return Ok(None);
        }
        let out = outbox::enqueue(&tx, notes, now)?;
        tx.commit()?;
        Ok(Some(out))
    }

    /// Sets a command's state and puts `notes` in the outbox, in one transaction.
    pub fn finish(&self, id: &str, state: &str, notes: &[Note], now: i64) -> Result<Vec<Outgoing>> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        tx.execute(
            "UPDATE commands SET state = ?2, updated_ms = ?3 WHERE id = ?1",
            params![id, state, now],
        )?;
        let out = outbox::enqueue(&tx, notes, now)?;
        tx.commit()?;
        Ok(out)
    }

    /// Commands received but not settled when the agent stopped (state
    /// `received` or `writing`), oldest first, with the command itself.
    pub fn unsettled(&self) -> Result<Vec<(String, String, Vec<u8>)>> {
        let c = self.lock();
        let mut st = c.prepare(
            "SELECT id, state, body FROM commands WHERE state IN ('received', 'writing') AND body IS NOT NULL
             ORDER BY received_ms, issued_seq",
        )?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// The state of a command id, if seen.
    pub fn command_state(&self, id: &str) -> Result<Option<String>> {
        Ok(self
            .lock()
            .query_row("SELECT state FROM commands WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn set_command_state(&self, id: &str, state: &str, now: i64) -> Result<()> {
        self.lock().execute(
            "UPDATE commands SET state = ?2, updated_ms = ?3 WHERE id = ?1",
            params![id, state, now],
        )?;
        Ok(())
    }

    /// The newest `issued_seq` this site has seen (commands and points; 0
    /// when none): a locally written setpoint takes it, so it supersedes
    /// every command already here and any command issued later beats it.
    pub fn newest_issued_seq(&self) -> Result<i64> {
        Ok(self.lock().query_row(
            "SELECT MAX(COALESCE((SELECT MAX(issued_seq) FROM commands), 0),
                        COALESCE((SELECT MAX(issued_seq) FROM points), 0))",
            [],
            |r| r.get(0),
        )?)
    }

    /// What is in force on `point`, if anything was ever applied.
    pub fn point(&self, point: &str) -> Result<Option<PointState>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT point, command_id, issued_seq, value, applied_ms, ends_ms FROM points WHERE point = ?1",
                [point],
                point_row,
            )
            .optional()?)
    }

    /// The point whose command is `id`, if that command is in force.
    pub fn point_of_command(&self, id: &str) -> Result<Option<PointState>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT point, command_id, issued_seq, value, applied_ms, ends_ms FROM points WHERE command_id = ?1",
                [id],
                point_row,
            )
            .optional()?)
    }

    /// Points whose command has a duration, soonest end first.
    pub fn timed_points(&self) -> Result<Vec<PointState>> {
        let c = self.lock();
        let mut st = c.prepare(
            "SELECT point, command_id, issued_seq, value, applied_ms, ends_ms FROM points
             WHERE command_id IS NOT NULL AND ends_ms IS NOT NULL ORDER BY ends_ms",
        )?;
        let rows = st.query_map([], point_row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Records a successful write: `command_id` (None for a revert) is now
    /// in force on the point (its command `applied`), `done` (the command
    /// it replaced or reverted) is over, and `notes` go to the outbox; one
    /// transaction.
    pub fn set_point(
        &self,
        p: &PointState,
        now: i64,
        done: Option<&str>,
        notes: &[Note],
    ) -> Result<Vec<Outgoing>> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        tx.execute(
            "INSERT INTO points (point, command_id, issued_seq, value, applied_ms, ends_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (point) DO UPDATE SET command_id = excluded.command_id,
               issued_seq = MAX(points.issued_seq, excluded.issued_seq), value = excluded.value,
               applied_ms = excluded.applied_ms, ends_ms = excluded.ends_ms",
            params![
                p.point,
                p.command_id,
                p.issued_seq,
                p.value,
                p.applied_ms,
                p.ends_ms
            ],
        )?;
        if let Some(id) = &p.command_id {
            tx.execute(
                "UPDATE commands SET state = 'applied', updated_ms = ?2 WHERE id = ?1",
                params![id, now],
            )?;
        }
        if let Some(id) = done {
            tx.execute(
                "UPDATE commands SET state = 'done', updated_ms = ?2 WHERE id = ?1",
                params![id, now],
            )?;
        }
        let out = outbox::enqueue(&tx, notes, now)?;
        tx.commit()?;
        Ok(out)
    }

    /// Forgets finished commands and deliveries older than [`KEEP_DONE_MS`].
    pub fn prune(&self, now: i64) -> Result<usize> {
        let c = self.lock();
        let cut = now - KEEP_DONE_MS;
        let a = c.execute(
            "DELETE FROM commands WHERE state = 'done' AND MAX(expires_ms, updated_ms) < ?1",
            [cut],
        )?;
        let b = c.execute(
            "DELETE FROM deliveries WHERE state IN ('delivered', 'cancelled') AND updated_ms < ?1",
            [cut],
        )?;
        Ok(a + b)
    }
}

fn point_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PointState> {
    Ok(PointState {
        point: r.get(0)?,
        command_id: r.get(1)?,
        issued_seq: r.get(2)?,
        value: r.get(3)?,
        applied_ms: r.get(4)?,
        ends_ms: r.get(5)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tankwatch_proto::v1;

    fn ins(s: &Store, id: &str, seq: i64, kind: &str, exp: i64, now: i64) -> bool {
        s.insert_new(id, seq, kind, "received", exp, now, None, &[])
            .unwrap()
            .is_some()
    }

    #[test]
    fn a_command_id_is_new_once_even_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert!(ins(&s, "c1", 1, "setpoint", 10, 1));
        assert!(!ins(&s, "c1", 1, "setpoint", 10, 2));
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert!(!ins(&s, "c1", 1, "setpoint", 10, 3));
        assert_eq!(s.command_state("c1").unwrap().as_deref(), Some("received"));
    }

    #[test]
    fn deliveries_survive_reopening_and_a_newer_eta_replaces_the_older() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut eta = v1::EtaAction {
            load_ref: "PO-1".into(),
            tanks: vec!["tank-1".into()],
            planned_volume_l: 5000.0,
            eta_ms: 100,
            ..Default::default()
        };
        ins(&s, "e1", 1, "eta", 1000, 1);
        s.put_delivery("e1", 1, &eta, 1, &[], &[]).unwrap();
        eta.eta_ms = 200;
        ins(&s, "e2", 2, "eta", 1000, 2);
        s.put_delivery("e2", 2, &eta, 2, &[], &[]).unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        let d = s.deliveries().unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].eta_ms, d[0].command_id.as_str(), d[0].state.as_str()),
            (200, "e2", "expected")
        );
        assert_eq!(s.command_state("e1").unwrap().as_deref(), Some("applied"));
    }

    #[test]
    fn a_damaged_state_file_is_moved_aside_and_made_anew_and_a_missing_one_is_new() {
        let dir = tempfile::tempdir().unwrap();
        let (s, fresh) = Store::open_checked(dir.path()).unwrap();
        assert!(fresh, "missing: new");
        assert!(ins(&s, "c1", 1, "setpoint", 10, 1));
        drop(s);
        let (_, fresh) = Store::open_checked(dir.path()).unwrap();
        assert!(!fresh, "sound: kept");
        std::fs::write(dir.path().join("state.sqlite"), b"garbage a bad disk left").unwrap();
        let (s, fresh) = Store::open_checked(dir.path()).unwrap();
        assert!(fresh, "damaged: new");
        assert!(
            dir.path().join("state.sqlite.damaged").exists(),
            "kept aside"
        );
        assert!(ins(&s, "c1", 1, "setpoint", 10, 2), "an empty store");
    }

    #[test]
    fn pruning_forgets_only_old_finished_commands() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        ins(&s, "old", 1, "setpoint", 10, 1);
        s.set_command_state("old", "done", 1).unwrap();
        ins(&s, "live", 2, "setpoint", 10, 1);
        assert_eq!(s.prune(KEEP_DONE_MS + 100).unwrap(), 1);
        assert!(s.command_state("old").unwrap().is_none());
        assert!(s.command_state("live").unwrap().is_some());
    }
}
