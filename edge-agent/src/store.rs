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
//!             state TEXT,            -- received | applied | done
//!             expires_ms INTEGER, received_ms INTEGER, updated_ms INTEGER)
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
//! ```
//!
//! Bound: `done` command ids are kept [`KEEP_DONE_MS`] after their expiry
//! (long enough that a redelivery is still recognised), then pruned;
//! delivered and cancelled loads are pruned after the same time.

use std::path::Path;
use std::sync::{Arc, Mutex};

use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};
use tankwatch_proto::v1;

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
        let _ = std::fs::create_dir_all(dir);
        let conn = Connection::open(dir.join("state.sqlite"))?;
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
                 tank TEXT PRIMARY KEY, end_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);",
        )?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
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

    /// Records a command id; false when it was seen before (a redelivery).
    pub fn insert_new(
        &self,
        id: &str,
        issued_seq: i64,
        kind: &str,
        expires_ms: i64,
        now: i64,
    ) -> Result<bool> {
        let n = self.lock().execute(
            "INSERT OR IGNORE INTO commands (id, issued_seq, kind, state, expires_ms, received_ms, updated_ms)
             VALUES (?1, ?2, ?3, 'received', ?4, ?5, ?5)",
            params![id, issued_seq, kind, expires_ms, now],
        )?;
        Ok(n == 1)
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
    /// in force on the point, and the command's own state.
    pub fn set_point(&self, p: &PointState, now: i64) -> Result<()> {
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
        tx.commit()?;
        Ok(())
    }

    /// The delivery of `load_ref`, if known.
    pub fn delivery(&self, load_ref: &str) -> Result<Option<Delivery>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT load_ref, command_id, issued_seq, state, eta, delivered_l, updated_ms FROM deliveries WHERE load_ref = ?1",
                [load_ref],
                delivery_row,
            )
            .optional()?)
    }

    /// Saves a tank's delivery detector state (JSON).
    pub fn save_detector(&self, tank: &str, state: &str, now: i64) -> Result<()> {
        self.lock().execute(
            "INSERT INTO detectors (tank, state, updated_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (tank) DO UPDATE SET state = excluded.state, updated_ms = excluded.updated_ms",
            rusqlite::params![tank, state, now],
        )?;
        Ok(())
    }

    /// End time of the newest gauge delivery record reported for `tank`.
    pub fn gauge_mark(&self, tank: &str) -> Result<Option<i64>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT end_ms FROM gauge_marks WHERE tank = ?1",
                [tank],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Records that gauge records of `tank` up to `end_ms` are reported.
    pub fn set_gauge_mark(&self, tank: &str, end_ms: i64, now: i64) -> Result<()> {
        self.lock().execute(
            "INSERT INTO gauge_marks (tank, end_ms, updated_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (tank) DO UPDATE SET end_ms = MAX(end_ms, excluded.end_ms), updated_ms = excluded.updated_ms",
            rusqlite::params![tank, end_ms, now],
        )?;
        Ok(())
    }

    /// Saved delivery detector states by tank.
    pub fn detectors(&self) -> Result<std::collections::HashMap<String, String>> {
        let c = self.lock();
        let mut st = c.prepare("SELECT tank, state FROM detectors")?;
        let v = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<std::result::Result<_, _>>()?;
        Ok(v)
    }

    /// Every known delivery, by ETA.
    pub fn deliveries(&self) -> Result<Vec<Delivery>> {
        let c = self.lock();
        let mut st = c.prepare(
            "SELECT load_ref, command_id, issued_seq, state, eta, delivered_l, updated_ms FROM deliveries",
        )?;
        let mut v: Vec<Delivery> = st
            .query_map([], delivery_row)?
            .collect::<std::result::Result<_, _>>()?;
        v.sort_by_key(|d| (d.eta_ms, d.load_ref.clone()));
        Ok(v)
    }

    /// Stores an ETA action (insert or replace the load) and marks its command applied.
    pub fn put_delivery(
        &self,
        command_id: &str,
        issued_seq: i64,
        eta: &v1::EtaAction,
        now: i64,
    ) -> Result<()> {
        let state = if eta.cancelled {
            "cancelled"
        } else {
            "expected"
        };
        let mut c = self.lock();
        let tx = c.transaction()?;
        tx.execute(
            "INSERT INTO deliveries (load_ref, command_id, issued_seq, state, eta, delivered_l, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6)
             ON CONFLICT (load_ref) DO UPDATE SET command_id = excluded.command_id,
               issued_seq = excluded.issued_seq, eta = excluded.eta, updated_ms = excluded.updated_ms,
               state = CASE WHEN deliveries.state IN ('delivering', 'delivered') AND excluded.state = 'expected'
                            THEN deliveries.state ELSE excluded.state END",
            params![eta.load_ref, command_id, issued_seq, state, eta.encode_to_vec(), now],
        )?;
        tx.execute(
            "UPDATE commands SET state = 'applied', updated_ms = ?2 WHERE id = ?1",
            params![command_id, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn set_delivery_state(
        &self,
        load_ref: &str,
        state: &str,
        delivered_l: Option<f64>,
        now: i64,
    ) -> Result<()> {
        self.lock().execute(
            "UPDATE deliveries SET state = ?2, delivered_l = COALESCE(?3, delivered_l), updated_ms = ?4 WHERE load_ref = ?1",
            params![load_ref, state, delivered_l, now],
        )?;
        Ok(())
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

fn delivery_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    let blob: Vec<u8> = r.get(4)?;
    // written by put_delivery from a decoded message; a damaged blob shows as empty
    let eta = v1::EtaAction::decode(blob.as_slice()).unwrap_or_default();
    Ok(Delivery {
        load_ref: r.get(0)?,
        command_id: r.get(1)?,
        issued_seq: r.get(2)?,
        state: r.get(3)?,
        tanks: eta.tanks,
        product: eta.product,
        planned_volume_l: eta.planned_volume_l,
        eta_ms: eta.eta_ms,
        eta_source: eta.eta_source,
        delivered_l: r.get(5)?,
        updated_ms: r.get(6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_id_is_new_once_even_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert!(s.insert_new("c1", 1, "setpoint", 10, 1).unwrap());
        assert!(!s.insert_new("c1", 1, "setpoint", 10, 2).unwrap());
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert!(!s.insert_new("c1", 1, "setpoint", 10, 3).unwrap());
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
        s.insert_new("e1", 1, "eta", 1000, 1).unwrap();
        s.put_delivery("e1", 1, &eta, 1).unwrap();
        eta.eta_ms = 200;
        s.insert_new("e2", 2, "eta", 1000, 2).unwrap();
        s.put_delivery("e2", 2, &eta, 2).unwrap();
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
    fn pruning_forgets_only_old_finished_commands() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.insert_new("old", 1, "setpoint", 10, 1).unwrap();
        s.set_command_state("old", "done", 1).unwrap();
        s.insert_new("live", 2, "setpoint", 10, 1).unwrap();
        assert_eq!(s.prune(KEEP_DONE_MS + 100).unwrap(), 1);
        assert!(s.command_state("old").unwrap().is_none());
        assert!(s.command_state("live").unwrap().is_some());
    }
}
