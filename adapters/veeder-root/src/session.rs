//! The socket around the sans-IO parts: one TCP connection to the console,
//! commands asked one at a time, each reply read up to its `ETX` within
//! the timeout.
//!
//! A reply that arrives whole but is wrong (bad checksum, cut short before
//! its `ETX` was sent, garbled data) is counted (`malformed`), logged with
//! its raw bytes, and marks that function's points bad; the next poll
//! tries again on the same connection. A reply that does not arrive, a
//! connection closed mid-reply, or a reply to another command (out of
//! step) ends the session: the runner marks every point bad and connects
//! afresh, so readings resume by themselves.

use std::time::Duration;

use adapter_api::runner::{Device, Ended, Io, within};
use adapter_api::{GaugeDelivery, WriteOutcome, now_ms};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::frame::{Command, FrameError, Framer, Function, escape};
use crate::report::{Report, TankAlarm};
use crate::{Item, VeederRootDevice, decode};

/// Raw bytes shown in a log line, at most.
const LOG_RAW: usize = 600;
/// Longest a whole reply may take. Consoles talk at 9600 baud (960
/// bytes/s) behind most bridges: a 16-tank i202 is ~16 KB, 17 s on the
/// wire, and [`crate::frame::MAX_REPLY`] takes 68 s. The device's
/// `timeout_ms` bounds the silence before the first byte and between bytes.
pub(crate) const REPLY_DEADLINE_MS: u64 = 90_000;

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The link is unusable: reconnect. `timeout`: silence (else the peer
    /// closed or the socket failed); `cut`: part of a reply had arrived.
    Lost {
        why: String,
        timeout: bool,
        cut: bool,
    },
    /// The reply was wrong; the link is still in step.
    Reply(FrameError),
}

impl Failure {
    fn lost(why: String) -> Failure {
        Failure::Lost {
            why,
            timeout: false,
            cut: false,
        }
    }
}

/// Sends `cmd` and reads its reply (SOH..=ETX): the first byte within
/// `timeout_ms`, each next one within `timeout_ms` of the last, the whole
/// within [`REPLY_DEADLINE_MS`].
pub(crate) async fn exchange(
    conn: &mut TcpStream,
    framer: &mut Framer,
    cmd: &Command,
    security_code: &str,
    timeout_ms: u64,
) -> Result<Vec<u8>, Failure> {
    framer.clear();
    let text = cmd.text();
    within(
        timeout_ms,
        &format!("sending {text}"),
        conn.write_all(&cmd.encode(security_code)),
    )
    .await
    .map_err(|why| Failure::Lost {
        why,
        timeout: true,
        cut: false,
    })?
    .map_err(|e| Failure::lost(format!("sending {text}: {e}")))?;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(REPLY_DEADLINE_MS);
    let idle = Duration::from_millis(timeout_ms);
    let mut buf = [0u8; 4096];
    loop {
        if let Some(r) = framer.next_reply() {
            return r.map_err(Failure::Reply);
        }
        let wait = idle.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(wait, conn.read(&mut buf)).await {
            Err(_) => {
                let waited = if tokio::time::Instant::now() >= deadline {
                    format!("{REPLY_DEADLINE_MS} ms in all")
                } else {
                    format!("{timeout_ms} ms")
                };
                let cut = !framer.pending().is_empty();
                return Err(Failure::Lost {
                    why: if cut {
                        format!(
                            "the reply to {text} stopped after {} bytes without ETX for {waited}: {}",
                            framer.pending().len(),
                            escape(framer.pending(), LOG_RAW)
                        )
                    } else {
                        format!("no reply to {text} within {waited}")
                    },
                    timeout: true,
                    cut,
                });
            }
            Ok(Ok(0)) => {
                let cut = !framer.pending().is_empty();
                return Err(Failure::Lost {
                    why: if cut {
                        format!(
                            "the console closed the connection in the middle of the reply to {text} after {} bytes: {}",
                            framer.pending().len(),
                            escape(framer.pending(), LOG_RAW)
                        )
                    } else {
                        format!("the console closed the connection before answering {text}")
                    },
                    timeout: false,
                    cut,
                });
            }
            Ok(Ok(n)) => {
                if let Some(r) = framer.push(&buf[..n]) {
                    return r.map_err(Failure::Reply);
                }
            }
            Ok(Err(e)) => {
                return Err(Failure::lost(format!("reading the reply to {text}: {e}")));
            }
        }
    }
}

/// One console, as the runner drives it.
pub(crate) struct Console {
    dev: VeederRootDevice,
    tz: jiff::tz::TimeZone,
    framer: Framer,
}

impl Console {
    pub(crate) fn new(dev: VeederRootDevice, tz: jiff::tz::TimeZone) -> Console {
        Console {
            dev,
            tz,
            framer: Framer::new(),
        }
    }

    /// Asks `function` for `tank` (0: all); `Err(Ended)` when the session must end.
    async fn ask(
        &mut self,
        conn: &mut TcpStream,
        io: &mut Io,
        function: Function,
        tank: u8,
    ) -> Result<Option<Report>, Ended> {
        let cmd = Command::new(function, tank, self.dev.format);
        let got = exchange(
            conn,
            &mut self.framer,
            &cmd,
            &self.dev.security_code,
            self.dev.timeout_ms,
        )
        .await
        .and_then(|raw| decode(&cmd, &raw).map_err(Failure::Reply));
        match got {
            Ok(r) => Ok(Some(r)),
            Err(Failure::Lost { why, cut, .. }) => {
                if cut {
                    io.sink.health().update(|s| s.malformed += 1);
                }
                Err(Ended::Lost(why))
            }
            Err(Failure::Reply(e)) => {
                io.sink.health().update(|s| s.malformed += 1);
                let msg = format!("{}: {e}", cmd.text());
                io.error(&msg);
                tracing::warn!(device = %self.dev.name, command = %cmd.text(), kind = e.kind(), error = %e, raw = %escape(e.raw(), LOG_RAW), "bad reply from the tank gauge");
                if matches!(e, FrameError::WrongEcho { .. }) {
                    // out of step: a late reply to an earlier command; start afresh
                    return Err(Ended::Lost(msg));
                }
                let ts = now_ms();
                for (i, p) in self.dev.points.iter().enumerate() {
                    let asked = if function == Function::Alarms {
                        p.item.is_alarm()
                    } else {
                        !p.item.is_alarm()
                    };
                    if asked && function != Function::Deliveries && (tank == 0 || p.tank == tank) {
                        io.bad(i, &msg, ts).await?;
                    }
                }
                Ok(None)
            }
        }
    }

    /// Emits what a reply to a request for `asked` (0: all tanks) says.
    async fn emit(&mut self, io: &mut Io, report: Report, asked: u8) -> Result<(), Ended> {
        let ts = now_ms();
        let mine = |p: &crate::Point| asked == 0 || p.tank == asked;
        match report {
            Report::Inventory { tanks, .. } => {
                for (i, p) in self.dev.points.iter().enumerate() {
                    if p.item.is_alarm() || !mine(p) {
                        continue;
                    }
                    let Some(t) = tanks.iter().find(|t| t.tank == p.tank) else {
                        io.bad(
                            i,
                            &format!("tank {} is not in the console's inventory (i201)", p.tank),
                            ts,
                        )
                        .await?;
                        continue;
                    };
                    let bit = |b: u16| t.status.map(|s| f64::from(s >> b & 1));
                    let v = match p.item {
                        Item::Volume => Some(t.volume),
                        Item::TcVolume => Some(t.tc_volume),
                        Item::Ullage => Some(t.ullage),
                        Item::Height => Some(t.height),
                        Item::Water => Some(t.water),
                        Item::Temperature => Some(t.temperature),
                        Item::WaterVolume => t.water_volume,
                        Item::DeliveryInProgress => bit(0),
                        Item::LeakTestInProgress => bit(1),
                        Item::InvalidHeight => bit(2),
                        Item::AlarmCount | Item::Alarm(_) => None,
                    };
                    match v {
                        Some(v) => io.good(i, v, adapter_api::Quality::Good, ts).await?,
                        None => {
                            io.bad(i, "the console's reply does not carry this item", ts)
                                .await?
                        }
                    }
                }
            }
            Report::Alarms { tanks, .. } => {
                for (i, p) in self.dev.points.iter().enumerate() {
                    if !p.item.is_alarm() || !mine(p) {
                        continue;
                    }
                    let Some(t) = tanks.iter().find(|t| t.tank == p.tank) else {
                        io.bad(
                            i,
                            &format!(
                                "tank {} is not in the console's status report (i205)",
                                p.tank
                            ),
                            ts,
                        )
                        .await?;
                        continue;
                    };
                    let v = match p.item {
                        Item::Alarm(code) => {
                            f64::from(u8::from(t.alarms.contains(&TankAlarm::Known(code))))
                        }
                        _ => t.alarms.len() as f64,
                    };
                    io.good(i, v, adapter_api::Quality::Good, ts).await?;
                }
            }
            Report::Deliveries { tanks, .. } => {
                for t in tanks {
                    let Some(i) = self
                        .dev
                        .points
                        .iter()
                        .position(|p| p.tank == t.tank && p.item == Item::Volume)
                    else {
                        continue; // a tank this site does not map
                    };
                    let spec = io.points.specs()[i].clone();
                    // oldest first: the agent reports what ends after the
                    // newest record it already reported
                    let mut records = t.deliveries;
                    records.sort_by_key(|d| (d.end, d.start));
                    for d in records {
                        let (Some(start_ms), Some(end_ms)) =
                            (d.start.to_unix_ms(&self.tz), d.end.to_unix_ms(&self.tz))
                        else {
                            continue;
                        };
                        let l = |v: f64| spec.conv.to_canonical(v);
                        io.sink
                            .delivery(GaugeDelivery {
                                device: self.dev.name.clone(),
                                asset: spec.asset.clone(),
                                start_ms,
                                end_ms,
                                start_volume_l: l(d.start_volume),
                                end_volume_l: l(d.end_volume),
                                start_tc_volume_l: Some(l(d.start_tc_volume)),
                                end_tc_volume_l: Some(l(d.end_tc_volume)),
                                source: format!(
                                    "veeder-root://{}/tank{}/i202",
                                    self.dev.address, t.tank
                                ),
                            })
                            .await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Asks `f` for all tanks, or for each mapped tank that has points of
    /// `f` (`per_tank_requests`), and emits the replies.
    async fn poll(&mut self, conn: &mut TcpStream, io: &mut Io, f: Function) -> Result<(), Ended> {
        let tanks: Vec<u8> = if self.dev.per_tank_requests {
            let mut t: Vec<u8> = self
                .dev
                .points
                .iter()
                .filter(|p| match f {
                    Function::Inventory => !p.item.is_alarm(),
                    Function::Alarms => p.item.is_alarm(),
                    Function::Deliveries => p.item == Item::Volume,
                })
                .map(|p| p.tank)
                .collect();
            t.sort_unstable();
            t.dedup();
            t
        } else {
            vec![0]
        };
        for tank in tanks {
            if let Some(r) = self.ask(conn, io, f, tank).await? {
                io.sink.health().update(|s| s.last_good_ms = now_ms());
                self.emit(io, r, tank).await?;
            }
        }
        Ok(())
    }
}

impl Device for Console {
    type Conn = TcpStream;

    fn name(&self) -> &str {
        &self.dev.name
    }

    async fn connect(&mut self) -> Result<TcpStream, adapter_api::runner::ConnectError> {
        let addr = self.dev.address.clone();
        adapter_api::runner::connecting(
            self.dev.timeout_ms,
            &format!("connecting to {addr}"),
            TcpStream::connect(&addr),
        )
        .await?
        .map_err(|e| {
            let mut p = adapter_api::probe::ProbeError::connect(&addr, &e);
            p.message = format!("connecting to {addr}: {e}");
            p
        })
    }

    async fn session(&mut self, mut conn: TcpStream, io: &mut Io) -> Ended {
        let _ = conn.set_nodelay(true);
        let alarms = self.dev.points.iter().any(|p| p.item.is_alarm());
        let inventory = self.dev.points.iter().any(|p| !p.item.is_alarm());
        let delivery_every = Duration::from_millis(self.dev.delivery_poll_ms);
        let mut next_deliveries = tokio::time::Instant::now();
        let poll = Duration::from_millis(self.dev.poll_interval_ms);
        loop {
            let started = tokio::time::Instant::now();
            let stopped = io.stopped();
            let round = async {
                if inventory {
                    self.poll(&mut conn, io, Function::Inventory).await?;
                }
                if alarms {
                    self.poll(&mut conn, io, Function::Alarms).await?;
                }
                if !delivery_every.is_zero() && started >= next_deliveries {
                    next_deliveries = started + delivery_every;
                    self.poll(&mut conn, io, Function::Deliveries).await?;
                }
                Ok::<(), Ended>(())
            };
            tokio::select! {
                r = round => if let Err(e) = r { return e },
                _ = stopped => return Ended::Stopped,
            }
            let wait = tokio::time::sleep_until(started + poll);
            let stopped = io.stopped();
            tokio::pin!(wait, stopped);
            loop {
                tokio::select! {
                    _ = &mut wait => break,
                    w = io.next_write() => {
                        let _ = w.reply.send(WriteOutcome::UnknownPoint);
                    }
                    _ = &mut stopped => return Ended::Stopped,
                }
            }
        }
    }
}
