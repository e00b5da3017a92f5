//! The outbox (issue 28, item 3): every answer the executor owes the
//! headend (a command ack, a local command event) is written into
//! `outbox` in the **same transaction** as the state change it reports,
//! then handed to the log writer; the row goes once the log has fsynced
//! the record. A crash between the two leaves the row, and the next start
//! hands it over again (a duplicate at worst, which the headend's
//! lifecycle ignores). So the state store and the log never disagree about
//! what the site did.

use prost::Message;
use rusqlite::{Transaction, params};
use tankwatch_proto::v1;

use super::{Result, Store};

/// An answer to put in the outbox.
#[derive(Debug, Clone)]
pub enum Note {
    Ack(v1::CommandAck),
    Event(v1::Event),
}

/// An outbox row: a log record waiting to be durable in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub row: i64,
    /// The log class (`sflog::Class` as u8).
    pub class: u8,
    pub ts_ms: i64,
    pub payload: Vec<u8>,
}

impl Note {
    fn encode(&self) -> (u8, i64, Vec<u8>) {
        let (class, ts, kind) = match self {
            Note::Ack(a) => (
                sflog::Class::CommandAck,
                a.ts_ms,
                v1::log_record::Kind::CommandAck(a.clone()),
            ),
            Note::Event(e) => (
                sflog::Class::Event,
                e.ts_ms,
                v1::log_record::Kind::Event(e.clone()),
            ),
        };
        (
            class as u8,
            ts,
            v1::LogRecord { kind: Some(kind) }.encode_to_vec(),
        )
    }
}

/// Writes `notes` into the outbox within `tx`; returns the rows.
pub(super) fn enqueue(tx: &Transaction<'_>, notes: &[Note], now: i64) -> Result<Vec<Outgoing>> {
    let mut out = Vec::with_capacity(notes.len());
    for n in notes {
        let (class, ts_ms, payload) = n.encode();
        tx.execute(
            "INSERT INTO outbox (class, ts_ms, payload, created_ms) VALUES (?1, ?2, ?3, ?4)",
            params![class, ts_ms, payload, now],
        )?;
        out.push(Outgoing {
            row: tx.last_insert_rowid(),
            class,
            ts_ms,
            payload,
        });
    }
    Ok(out)
}

impl Store {
    /// Puts answers that go with no state change into the outbox.
    pub fn note(&self, notes: &[Note], now: i64) -> Result<Vec<Outgoing>> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let out = enqueue(&tx, notes, now)?;
        tx.commit()?;
        Ok(out)
    }

    /// Everything still in the outbox, oldest first (at start: what the
    /// last run handed over without seeing it durable).
    pub fn outbox(&self) -> Result<Vec<Outgoing>> {
        let c = self.lock();
        let mut st =
            c.prepare("SELECT row, class, ts_ms, payload FROM outbox ORDER BY row LIMIT 10000")?;
        let rows = st.query_map([], |r| {
            Ok(Outgoing {
                row: r.get(0)?,
                class: r.get(1)?,
                ts_ms: r.get(2)?,
                payload: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// The log has the row's record on disk: it leaves the outbox.
    pub fn outbox_done(&self, row: i64) -> Result<()> {
        self.lock()
            .execute("DELETE FROM outbox WHERE row = ?1", [row])?;
        Ok(())
    }
}
