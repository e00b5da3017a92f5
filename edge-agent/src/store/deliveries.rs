//! The site's upcoming deliveries (ETA actions), the delivery detectors'
//! saved state and the tank gauges' delivery marks (see the schema in
//! `mod.rs`).

use prost::Message;
use rusqlite::{OptionalExtension, params};
use tankwatch_proto::v1;

use super::{Delivery, Note, Outgoing, Result, Store};

impl Store {
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
    /// Stores an ETA action (insert or replace the load), marks its
    /// command applied (or `done` when listed in `done`, with any command
    /// it supersedes) and puts `notes` in the outbox; one transaction.
    #[allow(clippy::too_many_arguments)]
    pub fn put_delivery(
        &self,
        command_id: &str,
        issued_seq: i64,
        eta: &v1::EtaAction,
        now: i64,
        done: &[&str],
        notes: &[Note],
    ) -> Result<Vec<Outgoing>> {
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
        for id in done {
            tx.execute(
                "UPDATE commands SET state = 'done', updated_ms = ?2 WHERE id = ?1",
                params![id, now],
            )?;
        }
        let out = super::outbox::enqueue(&tx, notes, now)?;
        tx.commit()?;
        Ok(out)
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
