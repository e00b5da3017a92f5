//! The log writer: the one task that appends to the store-and-forward log.
//!
//! Readings arrive from all adapters through one bounded channel
//! ([`READING_QUEUE`]); when it is full, adapters wait (their next poll is
//! delayed), nothing is dropped. Appends are grouped and fsynced at most
//! `flush_interval_ms` apart (group commit) or after every group when
//! `sync_every_batch` is set; after each fsync the durable seq is published
//! and the uplink may send up to it.

use std::sync::Arc;
use std::time::Duration;

use adapter_api::{Event, GaugeDelivery, Reading, SourceGap};
use prost::Message;
use sflog::{Class, DropRun, Log};
use tankwatch_proto::v1;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::Error;
use crate::config::LogConfig;

/// Capacity of the adapters -> log writer channel.
pub const READING_QUEUE: usize = 4096;
/// Capacity of the log writer -> executor channel of gauge delivery
/// records; when full a record is dropped (with a warning): the gauge
/// repeats its recent records at every poll, and the executor acts on
/// each once.
pub const GAUGE_QUEUE: usize = 64;
/// Capacity of the command executor -> log writer channel (acks, events);
/// when full the executor waits.
pub const RECORD_QUEUE: usize = 256;

/// A log entry that is not a reading (a command ack, a delivery event).
/// Records are appended and fsynced at once, ahead of the flush interval:
/// an operator is waiting for them. `durable`, when set, is told once the
/// record is on disk (the executor's outbox then lets go of it).
#[derive(Debug)]
pub struct Record {
    pub class: Class,
    pub ts_ms: i64,
    pub payload: Vec<u8>,
    pub durable: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Record {
    pub fn ack(a: v1::CommandAck) -> Record {
        Record {
            class: Class::CommandAck,
            ts_ms: a.ts_ms,
            payload: v1::LogRecord {
                kind: Some(v1::log_record::Kind::CommandAck(a)),
            }
            .encode_to_vec(),
            durable: None,
        }
    }
    pub fn event(e: v1::Event) -> Record {
        Record {
            class: Class::Event,
            ts_ms: e.ts_ms,
            payload: v1::LogRecord {
                kind: Some(v1::log_record::Kind::Event(e)),
            }
            .encode_to_vec(),
            durable: None,
        }
    }
    /// An outbox row of the state store, and what tells it the row is durable.
    pub fn from_outbox(o: crate::store::Outgoing) -> (Record, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (
            Record {
                class: Class::from_u8(o.class).unwrap_or(Class::Event),
                ts_ms: o.ts_ms,
                payload: o.payload,
                durable: Some(tx),
            },
            rx,
        )
    }
}

/// (value, good quality, device time) by (asset, field).
type LatestMap = std::collections::HashMap<(String, String), (f64, bool, i64)>;

/// The newest value of every point the writer has seen (for interlocks and
/// delivery detection). Bounded by the number of configured points.
#[derive(Default)]
pub struct Latest {
    inner: std::sync::Mutex<LatestMap>,
    /// The OPC UA server's feed, when it runs (takes every reading, never waits).
    tap: Option<Arc<agent_opcua_server::Feed>>,
}

impl Latest {
    fn lock(&self) -> std::sync::MutexGuard<'_, LatestMap> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Latest values that also feed the OPC UA server.
    pub fn with_feed(feed: Arc<agent_opcua_server::Feed>) -> Latest {
        Latest {
            inner: Default::default(),
            tap: Some(feed),
        }
    }

    pub fn update(&self, r: &Reading) {
        if let Some(f) = &self.tap {
            f.update(r);
        }
        self.lock().insert(
            (r.asset_id.clone(), r.field.clone()),
            (
                r.value,
                r.quality == adapter_api::Quality::Good,
                r.source_ts_ms,
            ),
        );
    }
    /// The newest value of `asset.field` if it is of good quality, with its time.
    pub fn good(&self, asset: &str, field: &str) -> Option<(f64, i64)> {
        self.lock()
            .get(&(asset.to_string(), field.to_string()))
            .filter(|(_, good, _)| *good)
            .map(|(v, _, ts)| (*v, *ts))
    }
}
/// Most readings appended in one group (one call to `Log::append`).
const GROUP: usize = 1024;

/// Converts an adapter reading into the wire/log form (seq is the log key, filled when sending).
pub fn to_wire(r: &Reading) -> v1::Reading {
    v1::Reading {
        seq: 0,
        asset_id: r.asset_id.clone(),
        field: r.field.clone(),
        value: r.value,
        unit: r.unit.clone(),
        quality: match r.quality {
            adapter_api::Quality::Good => v1::Quality::Good,
            adapter_api::Quality::Uncertain => v1::Quality::Uncertain,
            adapter_api::Quality::Bad => v1::Quality::Bad,
        } as i32,
        source_ts_ms: r.source_ts_ms,
        received_ts_ms: r.received_ts_ms,
        source: r.source.clone(),
        error: r.error.clone(),
    }
}

/// Which drop class a reading belongs to (set per point in the config).
pub fn class_of(r: &Reading) -> Class {
    match r.class {
        adapter_api::DropClass::Alarm => Class::Alarm,
        adapter_api::DropClass::Telemetry => Class::Telemetry,
    }
}

/// The log payload of a gap an adapter reported (shed readings, a source's
/// seq break or overflow): no log seqs, the device named.
pub fn source_gap_record(log_id: u64, g: &SourceGap) -> Vec<u8> {
    v1::LogRecord {
        kind: Some(v1::log_record::Kind::Gap(v1::Gap {
            log_id,
            first_seq: 0,
            last_seq: 0,
            count: g.count,
            reason: g.reason.as_str().to_string(),
            from_ts_ms: g.from_ms,
            to_ts_ms: g.to_ms,
            seq: 0,
            class: Class::Telemetry.name().to_string(),
            device: g.device.clone(),
        })),
    }
    .encode_to_vec()
}

/// The gap record of a damaged log file the log replaced at open (see
/// `sflog::Damage`): device `log`, reason `log_damaged`, the old log's id,
/// the count of entries it held unacknowledged (0 when unreadable; some
/// may have reached the headend) and their times.
pub fn damage_record(d: &sflog::Damage, now_ms: i64) -> Vec<u8> {
    let (from, to) = d.times.unwrap_or((0, now_ms));
    v1::LogRecord {
        kind: Some(v1::log_record::Kind::Gap(v1::Gap {
            log_id: d.old_log_id.unwrap_or(0),
            first_seq: 0,
            last_seq: 0,
            count: d.unacked.map(|(a, b)| b - a + 1).unwrap_or(0),
            reason: "log_damaged".into(),
            from_ts_ms: from,
            to_ts_ms: to,
            seq: 0,
            class: Class::Telemetry.name().to_string(),
            device: "log".into(),
        })),
    }
    .encode_to_vec()
}

/// If the log replaced a damaged file when it opened, makes the new log's
/// first entry the gap record of that loss ([`damage_record`]) and flushes
/// it; true when it did. Whoever opens the log calls this (the agent, a
/// backfill), so that no loss goes unreported.
pub fn record_damage(log: &Log) -> Result<bool, sflog::Error> {
    let Some(d) = log.take_damage() else {
        return Ok(false);
    };
    let now = adapter_api::now_ms();
    let (_, runs) = log.append(&[(Class::Event, now, damage_record(&d, now))])?;
    // (a new log drops nothing; if it did, the next append reports it)
    log.requeue_drops(runs);
    log.flush()?;
    Ok(true)
}

/// The log payload of a reading.
pub fn reading_record(r: &Reading) -> Vec<u8> {
    v1::LogRecord {
        kind: Some(v1::log_record::Kind::Reading(to_wire(r))),
    }
    .encode_to_vec()
}

/// The log payload of a gap record describing `run`.
pub fn gap_record(log_id: u64, run: &DropRun) -> Vec<u8> {
    v1::LogRecord {
        kind: Some(v1::log_record::Kind::Gap(v1::Gap {
            log_id,
            first_seq: run.first_seq,
            last_seq: run.last_seq,
            count: run.count,
            reason: run.reason.to_string(),
            from_ts_ms: run.from_ms,
            to_ts_ms: run.to_ms,
            seq: 0,
            class: run.class.name().to_string(),
            device: String::new(),
        })),
    }
    .encode_to_vec()
}

/// Appends `items`, then one gap record per run the bound (or corruption)
/// forced out, so that every dropped entry is accounted for in the log itself.
///
/// Runs are coalesced (one gap record per class and reason, see
/// [`sflog::coalesce`]), and a round's gap records are appended in one
/// go: a disk that refuses every write costs one small record per flush,
/// never a record per dropped entry.
pub fn append_accounted(log: &Log, items: &[(Class, i64, Vec<u8>)]) -> Result<(), Error> {
    let (_, mut runs) = log.append(items)?;
    // corrupt records, drops made while recovering from a full disk, and
    // entries a full disk would not take at all
    runs.extend(log.take_drops()?);
    let mut runs = sflog::coalesce(runs);
    // each round's records can only push out entries of lower classes, so
    // this ends; the bound is a guard
    for _ in 0..8 {
        if runs.is_empty() {
            break;
        }
        let now = adapter_api::now_ms();
        let gaps: Vec<(Class, i64, Vec<u8>)> = runs
            .iter()
            .map(|r| (Class::Event, now, gap_record(log.log_id(), r)))
            .collect();
        for r in &runs {
            tracing::warn!(
                first = r.first_seq,
                last = r.last_seq,
                count = r.count,
                class = r.class.name(),
                reason = r.reason,
                "log entries dropped; recorded as a gap"
            );
        }
        // gap records are small and kept longest; appending them may in turn drop telemetry
        runs = sflog::coalesce(log.append(&gaps)?.1);
    }
    if !runs.is_empty() {
        // still dropping: the log hands these out again at the next flush
        log.requeue_drops(runs);
    }
    Ok(())
}

async fn flush(log: &Arc<Log>, durable: &watch::Sender<u64>) -> Result<(), Error> {
    let l = log.clone();
    let upto = tokio::task::spawn_blocking(move || {
        let upto = l.flush()?;
        // a commit that met a full disk may have dropped entries to get
        // through: their gap records go into the log at once
        if l.has_pending_drops() {
            append_accounted(&l, &[])?;
            return Ok::<_, Error>(l.flush()?);
        }
        Ok(upto)
    })
    .await
    .map_err(|e| Error::Internal(format!("flush task: {e}")))??;
    durable.send_replace(upto);
    Ok(())
}

/// Runs until both channels close (all adapters and the command executor
/// stopped), then flushes and returns.
pub async fn run(
    log: Arc<Log>,
    mut rx: mpsc::Receiver<Event>,
    mut records: mpsc::Receiver<Record>,
    cfg: LogConfig,
    durable: watch::Sender<u64>,
    latest: Arc<Latest>,
    gauge: mpsc::Sender<GaugeDelivery>,
) -> Result<(), Error> {
    let interval = Duration::from_millis(cfg.flush_interval_ms);
    let mut deadline: Option<Instant> = None;
    let mut buf = Vec::with_capacity(GROUP);
    let mut rbuf = Vec::with_capacity(64);
    let (mut readings_open, mut records_open) = (true, true);
    loop {
        if !readings_open && !records_open {
            flush(&log, &durable).await?;
            return Ok(());
        }
        tokio::select! {
            n = records.recv_many(&mut rbuf, 64), if records_open => {
                if n == 0 {
                    records_open = false;
                    continue;
                }
                let mut told = Vec::new();
                let items: Vec<(Class, i64, Vec<u8>)> = rbuf
                    .drain(..)
                    .map(|r| {
                        told.extend(r.durable);
                        (r.class, r.ts_ms, r.payload)
                    })
                    .collect();
                append_accounted(&log, &items)?;
                flush(&log, &durable).await?;
                for t in told {
                    let _ = t.send(());
                }
                deadline = None;
            }
            n = rx.recv_many(&mut buf, GROUP), if readings_open => {
                if n == 0 {
                    readings_open = false;
                    continue;
                }
                let items: Vec<(Class, i64, Vec<u8>)> = buf
                    .drain(..)
                    .filter_map(|e| match e {
                        Event::Reading(r) => {
                            latest.update(&r);
                            Some((class_of(&r), r.received_ts_ms, reading_record(&r)))
                        }
                        Event::Gap(g) => {
                            tracing::warn!(device = %g.device, reason = g.reason.as_str(), count = g.count, "device data missing; recorded as a gap");
                            Some((Class::Event, g.to_ms, source_gap_record(log.log_id(), &g)))
                        }
                        Event::Delivery(d) => {
                            // the executor decides what is new and logs the event
                            if gauge.try_send(d).is_err() {
                                tracing::warn!("gauge delivery record dropped (executor busy); the gauge reports it again");
                            }
                            None
                        }
                    })
                    .collect();
                append_accounted(&log, &items)?;
                if cfg.sync_every_batch {
                    flush(&log, &durable).await?;
                } else if deadline.is_none() {
                    deadline = Some(Instant::now() + interval);
                }
            }
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)).await }, if deadline.is_some() => {
                deadline = None;
                flush(&log, &durable).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(v: f64) -> Reading {
        Reading {
            asset_id: "tank-1".into(),
            field: "volume".into(),
            value: v,
            unit: "L".into(),
            quality: adapter_api::Quality::Good,
            source_ts_ms: 1,
            received_ts_ms: 1,
            source: "test".into(),
            error: String::new(),
            class: adapter_api::DropClass::Telemetry,
        }
    }

    fn gaps(log: &Log) -> Vec<(u64, v1::Gap)> {
        log.read_from(1, usize::MAX, usize::MAX)
            .unwrap()
            .into_iter()
            .filter_map(
                |e| match v1::LogRecord::decode(e.payload.as_slice()).ok()?.kind? {
                    v1::log_record::Kind::Gap(g) => Some((e.seq, g)),
                    _ => None,
                },
            )
            .collect()
    }

    #[test]
    fn a_corrupt_record_becomes_a_gap_record_in_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), &sflog::Options::default()).unwrap();
        let items: Vec<_> = (0..3)
            .map(|i| (Class::Telemetry, 1, reading_record(&reading(f64::from(i)))))
            .collect();
        append_accounted(&log, &items).unwrap();
        log.flush().unwrap();
        log.corrupt_for_test(2).unwrap();
        log.flush().unwrap();
        log.read_from(1, 100, usize::MAX).unwrap(); // the uplink's read finds it
        append_accounted(
            &log,
            &[(Class::Telemetry, 2, reading_record(&reading(9.0)))],
        )
        .unwrap();
        log.flush().unwrap();
        let g = gaps(&log);
        assert_eq!(g.len(), 1, "{g:?}");
        let (seq, gap) = &g[0];
        assert_eq!(
            (gap.first_seq, gap.last_seq, gap.count, gap.reason.as_str()),
            (2, 2, 1, "corrupt")
        );
        assert_eq!(gap.log_id, log.log_id());
        assert!(*seq > 4, "the gap record is a new entry after the reading");
        let seqs: Vec<u64> = log
            .read_from(1, 100, usize::MAX)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert!(!seqs.contains(&2), "the corrupt record is gone: {seqs:?}");
    }

    #[test]
    fn whoever_opens_a_log_that_replaced_a_damaged_file_records_the_loss_first() {
        let dir = tempfile::tempdir().unwrap();
        let old = {
            let log = Log::open(dir.path(), &sflog::Options::default()).unwrap();
            let items: Vec<_> = (0..500)
                .map(|i| (Class::Telemetry, 1, reading_record(&reading(f64::from(i)))))
                .collect();
            append_accounted(&log, &items).unwrap();
            log.flush().unwrap();
            log.log_id()
        };
        let file = dir.path().join("log.sqlite");
        std::fs::write(&file, b"not a database at all, as a bad disk leaves it").unwrap();
        let log = Log::open(dir.path(), &sflog::Options::default()).unwrap();
        assert_ne!(log.log_id(), old);
        assert!(record_damage(&log).unwrap());
        assert!(!record_damage(&log).unwrap(), "once");
        let first = log.read_from(1, 1, usize::MAX).unwrap();
        let g = match v1::LogRecord::decode(first[0].payload.as_slice())
            .unwrap()
            .kind
        {
            Some(v1::log_record::Kind::Gap(g)) => g,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (g.reason.as_str(), g.device.as_str(), first[0].seq),
            ("log_damaged", "log", 1)
        );
    }

    #[test]
    fn drops_forced_by_the_bound_become_gap_records_in_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(
            dir.path(),
            &sflog::Options {
                max_bytes: 1024 * 1024,
                ..Default::default()
            },
        )
        .unwrap();
        for round in 0..100 {
            let items: Vec<_> = (0..500)
                .map(|i| {
                    (
                        Class::Telemetry,
                        round,
                        reading_record(&reading(f64::from(i))),
                    )
                })
                .collect();
            append_accounted(&log, &items).unwrap();
            log.flush().unwrap();
        }
        let dropped = log.stats().dropped[0];
        assert!(dropped > 0);
        let reported: u64 = gaps(&log).iter().map(|(_, g)| g.count).sum();
        assert_eq!(
            reported, dropped,
            "every dropped entry is accounted for by a gap record"
        );
    }
}
