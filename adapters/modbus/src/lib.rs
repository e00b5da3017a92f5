//! Modbus TCP adapter on tokio-modbus.
//!
//! Each configured device runs as its own task: a device that stops
//! answering delays only itself, never another device. Per poll, the points
//! are read in as few requests as [`codec::plan`] allows; each request has a
//! timeout. A Modbus exception marks the affected points `bad` (with the
//! exception named in `error`) and polling goes on; a timeout or I/O error
//! drops the connection and reconnects with exponential backoff and jitter.
//!
//! Emission rule: good readings are emitted every poll; a bad reading is
//! emitted when a point *enters* a failure state (or its error changes), not
//! on every failed poll, so a dead device does not flood the log.

pub mod codec;
pub mod config;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use adapter_api::{
    Adapter, AdapterError, Backoff, BoxFuture, Quality, Reading, ReadingSink, Stop, WriteOutcome,
    WriteRequest, WriteRx, now_ms, units,
};
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::prelude::*;

pub use config::ModbusDevice;
use config::{Point, Table};

/// Errors of this crate (configuration only; device failures become readings).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("device {device}: address {address:?} is not host:port ({detail})")]
    Address {
        device: String,
        address: String,
        detail: String,
    },
    #[error("device {device}: point {point}: unknown unit {unit:?}; known units: {}", units::KNOWN.join(", "))]
    Unit {
        device: String,
        point: String,
        unit: String,
    },
    #[error("device {device}: point {point}: bit {bit} does not exist in a {bits}-bit integer (use 0 to {max})", max = .bits - 1)]
    Bit {
        device: String,
        point: String,
        bit: u8,
        bits: u8,
    },
    #[error("device {device}: point {point}: `bit` needs an integer type, not a float")]
    BitOfFloat { device: String, point: String },
    #[error(
        "device {device}: point {point}: only holding registers can be writable (input registers are read-only)"
    )]
    WritableInput { device: String, point: String },
    #[error(
        "device {device}: point {point}: a writable bit needs type u16 (one register, read-modify-write)"
    )]
    WritableWideBit { device: String, point: String },
    #[error("device {device}: has no points; add at least one under `points`")]
    NoPoints { device: String },
}

impl From<Error> for AdapterError {
    fn from(e: Error) -> Self {
        AdapterError::Config {
            adapter: "modbus".into(),
            detail: e.to_string(),
        }
    }
}

/// Checks what serde cannot: the address resolves syntactically, units are known.
pub fn validate(dev: &ModbusDevice) -> Result<(), Error> {
    parse_address(dev)?;
    if dev.points.is_empty() {
        return Err(Error::NoPoints {
            device: dev.name.clone(),
        });
    }
    for (index, p) in dev.points.iter().enumerate() {
        if p.writable {
            let point = format!("{index} ({}.{})", p.asset, p.field);
            if p.table != Table::Holding {
                return Err(Error::WritableInput {
                    device: dev.name.clone(),
                    point,
                });
            }
            if p.bit.is_some() && p.data_type != config::DataType::U16 {
                return Err(Error::WritableWideBit {
                    device: dev.name.clone(),
                    point,
                });
            }
        }
        if let Some(bit) = p.bit {
            let point = format!("{index} ({}.{})", p.asset, p.field);
            if matches!(p.data_type, config::DataType::F32 | config::DataType::F64) {
                return Err(Error::BitOfFloat {
                    device: dev.name.clone(),
                    point,
                });
            }
            let bits = (p.data_type.registers() * 16) as u8;
            if bit >= bits {
                return Err(Error::Bit {
                    device: dev.name.clone(),
                    point,
                    bit,
                    bits,
                });
            }
        }
        if units::conversion(&p.unit).is_none() {
            return Err(Error::Unit {
                device: dev.name.clone(),
                point: format!("{index} ({}.{})", p.asset, p.field),
                unit: p.unit.clone(),
            });
        }
    }
    Ok(())
}

fn parse_address(dev: &ModbusDevice) -> Result<String, Error> {
    adapter_api::validate::host_port(&dev.address).map_err(|detail| Error::Address {
        device: dev.name.clone(),
        address: dev.address.clone(),
        detail: format!("{detail} (Modbus TCP usually uses port 502)"),
    })?;
    Ok(dev.address.clone())
}

/// The adapter for one Modbus TCP device.
pub struct ModbusAdapter {
    dev: ModbusDevice,
    health: adapter_api::Health,
}

impl ModbusAdapter {
    pub fn new(dev: ModbusDevice) -> Result<Self, Error> {
        validate(&dev)?;
        Ok(Self {
            dev,
            health: adapter_api::Health::default(),
        })
    }

    /// Where the adapter reports the device's health (for `/status`).
    pub fn with_health(mut self, health: adapter_api::Health) -> Self {
        self.health = health;
        self
    }
}

impl Adapter for ModbusAdapter {
    fn kind(&self) -> &'static str {
        "modbus"
    }
    fn name(&self) -> &str {
        &self.dev.name
    }
    fn run(
        self: Box<Self>,
        sink: ReadingSink,
        writes: WriteRx,
        stop: Stop,
    ) -> BoxFuture<Result<(), AdapterError>> {
        Box::pin(run_device(self.dev, self.health, sink, writes, stop))
    }
}

/// Modbus function code of a read from `table` (for logs).
fn function_of(table: Table) -> u8 {
    match table {
        Table::Holding => 0x03,
        Table::Input => 0x04,
    }
}

/// What an exception code means, for an installer reading the log.
pub fn exception_meaning(code: u8) -> &'static str {
    match code {
        0x01 => "illegal function: the device does not support this request",
        0x02 => "illegal data address: a register in the request is not mapped on the device",
        0x03 => "illegal data value: the request's count or value is not accepted",
        0x04 => "server device failure",
        0x05 => "acknowledge: the device is busy with a long request",
        0x06 => "server device busy",
        0x0A => "gateway path unavailable",
        0x0B => "gateway target device failed to respond (check the unit id)",
        _ => "unknown exception",
    }
}

/// An exception is logged at most this often per request and code.
const EXCEPTION_LOG_EVERY: Duration = Duration::from_secs(60);

/// Why a point is not good, as last reported.
type PointState = HashMap<usize, String>;

struct Poller {
    dev: ModbusDevice,
    blocks: Vec<codec::Block>,
    sink: ReadingSink,
    /// Last error per point index; absent = good.
    failing: PointState,
    /// Last value emitted, for on-change points.
    last: HashMap<usize, f64>,
    health: adapter_api::Health,
    /// When each (table, start, count, code) exception was last logged
    /// (bounded by the requests of the plan).
    logged: HashMap<(u8, u16, u16, u8), tokio::time::Instant>,
}

async fn run_device(
    dev: ModbusDevice,
    health: adapter_api::Health,
    sink: ReadingSink,
    mut writes: WriteRx,
    mut stop: Stop,
) -> Result<(), AdapterError> {
    let mut writes_open = true;
    let mut last_error: String;
    let blocks = codec::plan_with_gap(&dev.points, dev.max_gap);
    let poll = Duration::from_millis(dev.poll_interval_ms);
    let mut p = Poller {
        blocks,
        sink,
        failing: PointState::new(),
        last: HashMap::new(),
        health,
        logged: HashMap::new(),
        dev,
    };
    let mut backoff = Backoff::new(p.dev.poll_interval_ms.min(1000), p.dev.max_backoff_ms);
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        match p.connect().await {
            Ok(mut ctx) => {
                tracing::info!(device = %p.dev.name, address = %p.dev.address, "modbus connected");
                p.health.update(|s| s.connected = true);
                let mut ticker = tokio::time::interval(poll);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = ticker.tick() => {}
                        w = writes.recv(), if writes_open => {
                            match w {
                                Some(req) => {
                                    if let Err(e) = p.write(&mut ctx, req).await {
                                        tracing::warn!(device = %p.dev.name, error = %e, "modbus link lost during a write; reconnecting");
                                        last_error = e.clone();
                                        p.fail_all(&e).await?;
                                        break;
                                    }
                                }
                                None => writes_open = false,
                            }
                            continue;
                        }
                        _ = stop.changed() => { let _ = ctx.disconnect().await; return Ok(()); }
                    }
                    match p.poll_once(&mut ctx).await {
                        Ok(()) => backoff.reset(),
                        Err(PollError::Link(e)) => {
                            tracing::warn!(device = %p.dev.name, error = %e, "modbus link lost; reconnecting");
                            last_error = e.clone();
                            p.fail_all(&e).await?;
                            break;
                        }
                        Err(PollError::SinkClosed) => {
                            return Err(AdapterError::SinkClosed {
                                adapter: p.dev.name.clone(),
                            });
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(device = %p.dev.name, address = %p.dev.address, error = %e, "modbus connect failed");
                last_error = e.clone();
                p.fail_all(&e).await?;
            }
        }
        let wait = tokio::time::sleep(backoff.next_delay());
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                // no connection: a write is answered at once, never queued for later
                w = writes.recv(), if writes_open => match w {
                    Some(req) => {
                        let _ = req.reply.send(WriteOutcome::Unreachable(format!("device {} not connected: {last_error}", p.dev.name)));
                    }
                    None => writes_open = false,
                },
                _ = stop.changed() => return Ok(()),
            }
        }
    }
}

enum PollError {
    /// Timeout or I/O error: the connection is unusable.
    Link(String),
    SinkClosed,
}

impl Poller {
    async fn connect(&self) -> Result<Context, String> {
        let timeout = Duration::from_millis(self.dev.timeout_ms);
        let addr: SocketAddr =
            match tokio::time::timeout(timeout, tokio::net::lookup_host(&self.dev.address)).await {
                Ok(Ok(mut it)) => it
                    .next()
                    .ok_or_else(|| format!("{} resolved to no address", self.dev.address))?,
                Ok(Err(e)) => return Err(format!("cannot resolve {}: {e}", self.dev.address)),
                Err(_) => return Err(format!("resolving {} timed out", self.dev.address)),
            };
        match tokio::time::timeout(timeout, tcp::connect_slave(addr, Slave(self.dev.unit_id))).await
        {
            Ok(Ok(ctx)) => Ok(ctx),
            Ok(Err(e)) => Err(format!("connect: {e}")),
            Err(_) => Err(format!(
                "connect timed out after {} ms",
                self.dev.timeout_ms
            )),
        }
    }

    async fn poll_once(&mut self, ctx: &mut Context) -> Result<(), PollError> {
        let timeout = Duration::from_millis(self.dev.timeout_ms);
        let mut next = 0;
        while next < self.blocks.len() {
            let bi = next;
            next += 1;
            let (table, start, count) = {
                let b = &self.blocks[bi];
                (b.table, b.start, b.count)
            };
            let fut = async {
                match table {
                    Table::Holding => ctx.read_holding_registers(start, count).await,
                    Table::Input => ctx.read_input_registers(start, count).await,
                }
            };
            let ts = now_ms();
            match tokio::time::timeout(timeout, fut).await {
                Err(_) => {
                    return Err(PollError::Link(format!(
                        "request timed out after {} ms",
                        self.dev.timeout_ms
                    )));
                }
                Ok(Err(e)) => return Err(PollError::Link(format!("transport error: {e}"))),
                Ok(Ok(Err(exception))) => {
                    let code = u8::from(exception);
                    self.health.update(|s| s.exceptions += 1);
                    let key = (function_of(table), start, count, code);
                    let now = tokio::time::Instant::now();
                    if self
                        .logged
                        .get(&key)
                        .is_none_or(|t| now.duration_since(*t) >= EXCEPTION_LOG_EVERY)
                    {
                        self.logged.insert(key, now);
                        tracing::warn!(
                            device = %self.dev.name,
                            function = format!("0x{:02x}", key.0),
                            start,
                            count,
                            exception = format!("0x{code:02x}"),
                            meaning = exception_meaning(code),
                            "modbus exception (logged at most once a minute per request)"
                        );
                    }
                    // an address or value exception for a merged request: read
                    // its points one by one from now on (this poll included)
                    if matches!(code, 0x02 | 0x03)
                        && let Some(parts) = codec::split(&self.blocks[bi], &self.dev.points)
                    {
                        tracing::info!(device = %self.dev.name, start, count, points = parts.len(), "splitting a merged request the device refused");
                        self.health.update(|s| s.split_requests += 1);
                        self.blocks.splice(bi..=bi, parts);
                        next = bi; // read the first part now
                        continue;
                    }
                    let msg = format!(
                        "modbus exception {exception:?} (0x{code:02x}): {}",
                        exception_meaning(code)
                    );
                    self.health.error(&msg);
                    let pts = self.blocks[bi].points.clone();
                    for i in pts {
                        self.report_bad(i, &msg, ts).await?;
                    }
                }
                Ok(Ok(Ok(regs))) => {
                    self.health.update(|s| s.last_good_ms = ts);
                    let pts = self.blocks[bi].points.clone();
                    for i in pts {
                        let p = &self.dev.points[i];
                        let off = usize::from(p.register - start);
                        let n = usize::from(p.data_type.registers());
                        let raw = regs.get(off..off + n).and_then(|r| {
                            codec::decode(r, p.data_type, p.word_order, p.byte_order)
                        });
                        match raw {
                            Some(v) if v.is_finite() => {
                                let value = match p.bit {
                                    Some(bit) => ((v as i128 as u128 >> bit) & 1) as f64,
                                    None => v * p.scale + p.offset,
                                };
                                let recovered = self.failing.remove(&i).is_some();
                                if p.reports_on_change()
                                    && !recovered
                                    && self.last.get(&i) == Some(&value)
                                {
                                    continue;
                                }
                                self.last.insert(i, value);
                                let r = self.reading(i, value, Quality::Good, String::new(), ts);
                                self.sink.send(r).await.map_err(|_| PollError::SinkClosed)?;
                            }
                            Some(_) => self.report_bad(i, "value is NaN or infinite", ts).await?,
                            None => {
                                self.report_bad(
                                    i,
                                    "device returned fewer registers than requested",
                                    ts,
                                )
                                .await?
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn reading(&self, i: usize, scaled: f64, quality: Quality, error: String, ts: i64) -> Reading {
        let p: &Point = &self.dev.points[i];
        // validate() guarantees the unit is known; fall back to identity anyway.
        let (unit, f, o) = units::conversion(&p.unit).unwrap_or(("", 1.0, 0.0));
        let table = match p.table {
            Table::Holding => "hr",
            Table::Input => "ir",
        };
        Reading {
            asset_id: p.asset.clone(),
            field: p.field.clone(),
            value: scaled * f + o,
            unit: unit.to_string(),
            quality,
            source_ts_ms: ts,
            received_ts_ms: now_ms(),
            source: format!(
                "modbus://{}/unit{}/{}{}",
                self.dev.address, self.dev.unit_id, table, p.register
            ),
            error,
        }
    }

    /// Serves one write request: encode, write, read back, compare. Returns
    /// `Err` (after answering the request) when the link is unusable.
    async fn write(&mut self, ctx: &mut Context, req: WriteRequest) -> Result<(), String> {
        let timeout = Duration::from_millis(self.dev.timeout_ms);
        let Some(i) = self
            .dev
            .points
            .iter()
            .position(|p| p.writable && p.asset == req.asset_id && p.field == req.field)
        else {
            let _ = req.reply.send(WriteOutcome::UnknownPoint);
            return Ok(());
        };
        let p = self.dev.points[i].clone();
        let n = p.data_type.registers();
        let link = |e: String, reply: tokio::sync::oneshot::Sender<WriteOutcome>| {
            let _ = reply.send(WriteOutcome::Unreachable(e.clone()));
            Err(e)
        };
        // canonical unit -> device unit -> raw register value
        let (_, f, o) = units::conversion(&p.unit).unwrap_or(("", 1.0, 0.0));
        let words: Vec<u16> = match p.bit {
            Some(bit) => {
                let cur =
                    match tokio::time::timeout(timeout, ctx.read_holding_registers(p.register, 1))
                        .await
                    {
                        Err(_) => {
                            return link(
                                format!(
                                    "read before write timed out after {} ms",
                                    self.dev.timeout_ms
                                ),
                                req.reply,
                            );
                        }
                        Ok(Err(e)) => return link(format!("transport error: {e}"), req.reply),
                        Ok(Ok(Err(x))) => {
                            let _ = req
                                .reply
                                .send(WriteOutcome::Failed(format!("modbus exception {x:?}")));
                            return Ok(());
                        }
                        Ok(Ok(Ok(r))) => r.first().copied().unwrap_or(0),
                    };
                let mask = 1u16 << bit;
                vec![if req.value != 0.0 {
                    cur | mask
                } else {
                    cur & !mask
                }]
            }
            None => {
                let raw = ((req.value - o) / f - p.offset) / p.scale;
                let is_int = !matches!(p.data_type, config::DataType::F32 | config::DataType::F64);
                let raw = if is_int && (raw - raw.round()).abs() < 1e-6 {
                    raw.round()
                } else {
                    raw
                };
                match codec::encode(raw, p.data_type, p.word_order, p.byte_order) {
                    Some(w) => w,
                    None => {
                        let _ = req.reply.send(WriteOutcome::NotRepresentable(format!(
                            "{} ({} raw) does not fit the point's type {:?}",
                            req.value, raw, p.data_type
                        )));
                        return Ok(());
                    }
                }
            }
        };
        let written = async {
            if words.len() == 1 {
                ctx.write_single_register(p.register, words[0]).await
            } else {
                ctx.write_multiple_registers(p.register, &words).await
            }
        };
        match tokio::time::timeout(timeout, written).await {
            Err(_) => {
                return link(
                    format!("write timed out after {} ms", self.dev.timeout_ms),
                    req.reply,
                );
            }
            Ok(Err(e)) => return link(format!("transport error: {e}"), req.reply),
            Ok(Ok(Err(x))) => {
                let _ = req.reply.send(WriteOutcome::Failed(format!(
                    "modbus exception {x:?} (0x{:02x})",
                    u8::from(x)
                )));
                return Ok(());
            }
            Ok(Ok(Ok(()))) => {}
        }
        let back =
            match tokio::time::timeout(timeout, ctx.read_holding_registers(p.register, n)).await {
                Err(_) => {
                    return link(
                        format!("read-back timed out after {} ms", self.dev.timeout_ms),
                        req.reply,
                    );
                }
                Ok(Err(e)) => return link(format!("transport error: {e}"), req.reply),
                Ok(Ok(Err(x))) => {
                    let _ = req.reply.send(WriteOutcome::Failed(format!(
                        "read-back: modbus exception {x:?}"
                    )));
                    return Ok(());
                }
                Ok(Ok(Ok(r))) => r,
            };
        let canonical = |regs: &[u16]| -> f64 {
            match p.bit {
                Some(bit) => f64::from((regs.first().copied().unwrap_or(0) >> bit) & 1),
                None => codec::decode(regs, p.data_type, p.word_order, p.byte_order)
                    .map(|raw| (raw * p.scale + p.offset) * f + o)
                    .unwrap_or(f64::NAN),
            }
        };
        let read = canonical(&back);
        let same = match p.bit {
            Some(bit) => (back.first().copied().unwrap_or(0) >> bit) & 1 == (words[0] >> bit) & 1,
            None => back == words,
        };
        let _ = req.reply.send(if same {
            WriteOutcome::Applied { readback: read }
        } else {
            WriteOutcome::ReadbackMismatch {
                wrote: req.value,
                read,
            }
        });
        Ok(())
    }

    async fn report_bad(&mut self, i: usize, msg: &str, ts: i64) -> Result<(), PollError> {
        if self.failing.get(&i).map(String::as_str) == Some(msg) {
            return Ok(());
        }
        self.failing.insert(i, msg.to_string());
        // A bad reading's value carries no information; 0 keeps SQL NOT NULL.
        let r = self.reading(i, 0.0, Quality::Bad, msg.to_string(), ts);
        self.sink.send(r).await.map_err(|_| PollError::SinkClosed)
    }

    async fn fail_all(&mut self, msg: &str) -> Result<(), AdapterError> {
        self.health.update(|s| s.connected = false);
        self.health.error(msg);
        let ts = now_ms();
        for i in 0..self.dev.points.len() {
            if self.report_bad(i, msg, ts).await.is_err() {
                return Err(AdapterError::SinkClosed {
                    adapter: self.dev.name.clone(),
                });
            }
        }
        Ok(())
    }
}
