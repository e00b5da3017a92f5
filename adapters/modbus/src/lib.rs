//! Modbus TCP adapter on tokio-modbus.
//!
//! Each configured device runs as its own task: a device that stops
//! answering delays only itself, never another device. Per poll, the points
//! are read in as few requests as [`codec::plan`] allows; each request has a
//! timeout. A Modbus exception marks the affected points `bad` (with the
//! exception named in `error`) and polling goes on; a timeout or I/O error
//! drops the connection and reconnects with exponential backoff and jitter.
//!
//! Coils and discrete inputs are read as 0/1 through the same path as
//! registers. Writes with read-back are in `write.rs`.
//!
//! Emission rule: good readings are emitted every poll; a bad reading is
//! emitted when a point *enters* a failure state (or its error changes), not
//! on every failed poll, so a dead device does not flood the log.

pub mod codec;
pub mod config;
pub mod probe;
mod write;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use adapter_api::runner::{self, Device, Ended, Io, Points, Retry};
use adapter_api::{
    Adapter, AdapterError, BoxFuture, Linear, PointSpec, Quality, Sink, Stop, WhenFull, WriteRx,
    now_ms,
};
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::prelude::*;

pub use config::ModbusDevice;
use config::Table;

/// Errors of this crate (configuration only; device failures become readings).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("device {device}: address {address:?} is not host:port ({detail})")]
    Address {
        device: String,
        address: String,
        detail: String,
    },
    #[error("device {device}: point {point}: {detail}")]
    Mapping {
        device: String,
        point: String,
        detail: String,
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

/// Checks what serde cannot: the address is host:port, each point's
/// mapping (unit, scale) and Modbus shape (bit, writable table) is sound.
pub fn validate(dev: &ModbusDevice) -> Result<(), Error> {
    parse_address(dev)?;
    if dev.points.is_empty() {
        return Err(Error::NoPoints {
            device: dev.name.clone(),
        });
    }
    for (index, p) in dev.points.iter().enumerate() {
        let point = format!("{index} ({}.{})", p.asset, p.field);
        p.check_mapping().map_err(|detail| Error::Mapping {
            device: dev.name.clone(),
            point: point.clone(),
            detail,
        })?;
        if p.table.is_bits() != (p.data_type == config::DataType::Bool)
            || (p.table.is_bits() && p.bit.is_some())
        {
            return Err(Error::Mapping {
                device: dev.name.clone(),
                point,
                detail: "coils and discrete inputs have `type: bool` (and no `bit`); `bool` is only for them".into(),
            });
        }
        if p.writable {
            if !matches!(p.table, Table::Holding | Table::Coil) {
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
    }
    Ok(())
}

/// The protocol-free points of a device, in config order.
pub fn specs(dev: &ModbusDevice) -> Vec<PointSpec> {
    dev.points
        .iter()
        .map(|p| {
            let table = p.table.short();
            let source = format!(
                "modbus://{}/unit{}/{table}{}",
                dev.address, dev.unit_id, p.register
            );
            let mut spec = p.spec(source);
            if p.bit.is_some() {
                // a bit reads 0 or 1: no scale or offset
                spec.conv = Linear::identity(&p.unit).unwrap_or(spec.conv);
            }
            spec
        })
        .collect()
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
}

impl ModbusAdapter {
    pub fn new(dev: ModbusDevice) -> Result<Self, Error> {
        validate(&dev)?;
        Ok(Self { dev })
    }
}

impl Adapter for ModbusAdapter {
    fn kind(&self) -> &'static str {
        "modbus"
    }
    fn name(&self) -> &str {
        &self.dev.name
    }
    fn points(&self) -> Vec<PointSpec> {
        specs(&self.dev)
    }
    /// A poller: a full channel delays the next poll, nothing is lost.
    fn when_full(&self) -> WhenFull {
        WhenFull::Block
    }
    fn run(
        self: Box<Self>,
        sink: Sink,
        writes: WriteRx,
        stop: Stop,
    ) -> BoxFuture<Result<(), AdapterError>> {
        let retry = Retry {
            initial_ms: self.dev.poll_interval_ms.min(1000),
            max_ms: self.dev.max_backoff_ms,
        };
        let points = specs(&self.dev);
        let dev = Poller {
            convs: points.iter().map(|p| p.conv).collect(),
            blocks: codec::plan_with_gap(&self.dev.points, self.dev.max_gap),
            logged: HashMap::new(),
            dev: self.dev,
        };
        let io = Io::new(sink, Points::new(points), writes, stop);
        Box::pin(runner::run(dev, io, retry))
    }
}

/// Modbus function code of a read from `table` (for logs).
fn function_of(table: Table) -> u8 {
    table.function()
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

/// A transport error in an installer's words. tokio-modbus reports a
/// connection the device closed as an I/O error with OS error 0, which
/// prints "Success (os error 0)" (issue 29, item 14).
pub fn transport_error(e: &tokio_modbus::Error) -> String {
    if let tokio_modbus::Error::Transport(io) = e {
        if io.raw_os_error() == Some(0) || io.kind() == std::io::ErrorKind::UnexpectedEof {
            return "the device closed the connection".into();
        }
        return format!("transport error: {io}");
    }
    format!("transport error: {e}")
}

/// An exception is logged at most this often per request and code.
const EXCEPTION_LOG_EVERY: Duration = Duration::from_secs(60);

struct Poller {
    dev: ModbusDevice,
    blocks: Vec<codec::Block>,
    /// Canonical mapping per point (for writes and read-backs).
    convs: Vec<Linear>,
    /// When each (table, start, count, code) exception was last logged
    /// (bounded by the requests of the plan).
    logged: HashMap<(u8, u16, u16, u8), tokio::time::Instant>,
}

impl Device for Poller {
    type Conn = Context;

    fn name(&self) -> &str {
        &self.dev.name
    }

    async fn connect(&mut self) -> Result<Context, runner::ConnectError> {
        use adapter_api::probe::{Failure, ProbeError};
        let ms = self.dev.timeout_ms;
        let unreachable = |m: String| ProbeError::new(Failure::Unreachable, m);
        let addr: SocketAddr =
            runner::connecting(ms, "resolving", tokio::net::lookup_host(&self.dev.address))
                .await?
                .map_err(|e| unreachable(format!("cannot resolve {}: {e}", self.dev.address)))?
                .next()
                .ok_or_else(|| {
                    unreachable(format!("{} resolved to no address", self.dev.address))
                })?;
        let ctx = runner::connecting(
            ms,
            "connect",
            tcp::connect_slave(addr, Slave(self.dev.unit_id)),
        )
        .await?
        .map_err(|e| {
            let mut p = ProbeError::connect(&addr.to_string(), &e);
            p.message = format!("connect: {e}");
            p
        })?;
        tracing::info!(device = %self.dev.name, address = %self.dev.address, "modbus connected");
        Ok(ctx)
    }

    async fn session(&mut self, mut ctx: Context, io: &mut Io) -> Ended {
        let mut ticker = tokio::time::interval(Duration::from_millis(self.dev.poll_interval_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopped = io.stopped();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                req = io.next_write() => {
                    if let Err(e) = self.write(&mut ctx, req).await {
                        return Ended::Lost(format!("during a write: {e}"));
                    }
                    continue;
                }
                _ = &mut stopped => {
                    let _ = ctx.disconnect().await;
                    return Ended::Stopped;
                }
            }
            if let Err(end) = self.poll_once(&mut ctx, io).await {
                return end;
            }
        }
    }
}

impl Poller {
    async fn poll_once(&mut self, ctx: &mut Context, io: &mut Io) -> Result<(), Ended> {
        let mut next = 0;
        while next < self.blocks.len() {
            let bi = next;
            next += 1;
            let (table, start, count) = {
                let b = &self.blocks[bi];
                (b.table, b.start, b.count)
            };
            // bits (coils, discrete inputs) come as 0/1 words, so the rest is one path
            let fut = async {
                let bits = |r: Result<Result<Vec<bool>, _>, _>| {
                    r.map(|r| r.map(|v: Vec<bool>| v.into_iter().map(u16::from).collect()))
                };
                match table {
                    Table::Holding => ctx.read_holding_registers(start, count).await,
                    Table::Input => ctx.read_input_registers(start, count).await,
                    Table::Coil => bits(ctx.read_coils(start, count).await),
                    Table::DiscreteInput => bits(ctx.read_discrete_inputs(start, count).await),
                }
            };
            let ts = now_ms();
            match runner::within(self.dev.timeout_ms, "request", fut).await {
                Err(e) => return Err(Ended::Lost(e)),
                Ok(Err(e)) => return Err(Ended::Lost(transport_error(&e))),
                Ok(Ok(Err(exception))) => {
                    let code = u8::from(exception);
                    io.sink.health().update(|s| s.exceptions += 1);
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
                        io.sink.health().update(|s| s.split_requests += 1);
                        self.blocks.splice(bi..=bi, parts);
                        next = bi; // read the first part now
                        continue;
                    }
                    let msg = format!(
                        "modbus exception {exception:?} (0x{code:02x}): {}",
                        exception_meaning(code)
                    );
                    io.error(&msg);
                    for &i in &self.blocks[bi].points {
                        io.bad(i, &msg, ts).await?;
                    }
                }
                Ok(Ok(Ok(regs))) => {
                    for &i in &self.blocks[bi].points {
                        let p = &self.dev.points[i];
                        let off = usize::from(p.register - start);
                        let n = usize::from(p.data_type.registers());
                        let raw = regs.get(off..off + n).and_then(|r| {
                            codec::decode(r, p.data_type, p.word_order, p.byte_order)
                        });
                        match raw {
                            Some(v) => {
                                let v = match p.bit {
                                    Some(bit) if v.is_finite() => {
                                        ((v as i128 as u128 >> bit) & 1) as f64
                                    }
                                    _ => v,
                                };
                                io.good(i, v, Quality::Good, ts).await?
                            }
                            None => {
                                io.bad(i, "device returned fewer registers than requested", ts)
                                    .await?
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod transport_tests {
    #[test]
    fn a_connection_the_device_closed_is_said_so_not_success_os_error_0() {
        let closed = tokio_modbus::Error::Transport(std::io::Error::from_raw_os_error(0));
        assert_eq!(
            super::transport_error(&closed),
            "the device closed the connection"
        );
        let eof = tokio_modbus::Error::Transport(std::io::ErrorKind::UnexpectedEof.into());
        assert_eq!(
            super::transport_error(&eof),
            "the device closed the connection"
        );
        let reset = tokio_modbus::Error::Transport(std::io::ErrorKind::ConnectionReset.into());
        assert!(super::transport_error(&reset).starts_with("transport error: "));
    }
}
