//! The simulator's Veeder-Root TLS console: the same tanks served over the
//! console's serial interface on TCP, in both reply formats (a lowercase
//! `i` asks for the computer format, an uppercase `I` for the display
//! format), in US units (gallons, inches, °F) on a UTC clock.
//!
//! Written from the protocol description (docs/veeder-root.md), not from
//! the agent's parser, so that tests compare two implementations; the
//! computer format is also checked against the PyPI
//! `veeder-root-tls-socket-library`.
//!
//! Faults for tests ([`Fault`], one per reply): a bad checksum, a reply cut
//! short, a connection dropped in the middle of a reply, no answer, and the
//! console's "unsupported" answer.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{State, Tank, lock};

const SOH: u8 = 0x01;
const ETX: u8 = 0x03;
const GAL: f64 = 3.785_411_784;
/// Records kept per tank, like a console.
pub const KEEP_DELIVERIES: usize = 10;

/// A fault applied to the next reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// One character of the checksum is wrong.
    BadChecksum,
    /// Half the reply, then ETX (a bridge that cut it).
    Truncated,
    /// Half the reply, then the connection closes.
    DropMidReply,
    /// No answer at all (the connection stays open).
    Silent,
    /// `9999FF1B`, as for an unknown function.
    Unsupported,
    /// A valid reply to another function (a late reply: out of step).
    OutOfStep,
}

/// A delivery the console recorded (tank units: litres, mm, °C; converted when served).
#[derive(Debug, Clone, PartialEq)]
pub struct SimDelivery {
    pub start_ms: i64,
    pub end_ms: i64,
    pub start_volume: f64,
    pub end_volume: f64,
    pub start_height: f64,
    pub end_height: f64,
    pub temperature: f64,
}

/// Wall-clock Unix ms (the console's clock).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The console's clock (UTC), civil fields.
fn civil(ms: i64) -> jiff::civil::DateTime {
    jiff::Timestamp::from_millisecond(ms)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .datetime()
}

fn compact(ms: i64) -> String {
    let d = civil(ms);
    format!(
        "{:02}{:02}{:02}{:02}{:02}",
        d.year() % 100,
        d.month(),
        d.day(),
        d.hour(),
        d.minute()
    )
}

/// `NOV 23, 2026  3:04 PM`
fn printed(ms: i64) -> String {
    const M: [&str; 12] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    let d = civil(ms);
    let h = d.hour();
    let h12 = if h % 12 == 0 { 12 } else { h % 12 };
    format!(
        "{} {}, {} {:>2}:{:02} {}",
        M[(d.month() - 1) as usize],
        d.day(),
        d.year(),
        h12,
        d.minute(),
        if h < 12 { "AM" } else { "PM" }
    )
}

fn hex(v: f64) -> String {
    format!("{:08X}", (v as f32).to_bits())
}

fn gal(l: f64) -> f64 {
    l / GAL
}
fn inch(mm: f64) -> f64 {
    mm / 25.4
}
fn fahrenheit(c: f64) -> f64 {
    c * 9.0 / 5.0 + 32.0
}

/// Alarm codes (TLS-3XX tank alarm types) the simulated tank raises.
fn alarm_codes(t: &Tank) -> Vec<(&'static str, &'static str)> {
    let pct = t.volume / t.capacity;
    let mut v = Vec::new();
    if t.leak {
        v.push(("02", "LEAK ALARM"));
    }
    if t.water_height > 50.0 {
        v.push(("03", "HIGH WATER ALARM"));
    }
    if pct < 0.10 {
        v.push(("05", "LOW PRODUCT ALARM"));
    }
    if pct > 0.95 {
        v.push(("07", "HIGH PRODUCT ALARM"));
    }
    v
}

fn selected(tanks: &[Tank], tank: usize) -> Vec<(usize, &Tank)> {
    tanks
        .iter()
        .enumerate()
        .filter(|(i, _)| tank == 0 || *i + 1 == tank)
        .collect()
}

/// The data of a computer-format reply (after the echo, before `&&`).
fn computer(s: &State, function: &str, tank: usize, now: i64) -> Option<String> {
    let mut d = compact(now);
    for (i, t) in selected(&s.tanks, tank) {
        let n = i + 1;
        let code = (b'1' + (i % 9) as u8) as char;
        match function {
            "201" => {
                let status = u16::from(t.delivering);
                d += &format!("{n:02}{code}{status:04X}07");
                for v in [
                    gal(t.volume),
                    gal(t.tc_volume()),
                    gal(t.ullage()),
                    inch(t.height()),
                    inch(t.water_height),
                    fahrenheit(t.temperature),
                    gal(t.water_height / t.max_height * t.capacity),
                ] {
                    d += &hex(v);
                }
            }
            "202" => {
                let recs = s.deliveries.get(i).map(Vec::as_slice).unwrap_or(&[]);
                d += &format!("{n:02}{code}{:02}", recs.len());
                // newest first, like the console
                for r in recs.iter().rev() {
                    d += &compact(r.start_ms);
                    d += &compact(r.end_ms);
                    d += "0A";
                    let tc = |v: f64| v * (1.0 - 0.001 * (r.temperature - 15.0));
                    for v in [
                        gal(r.start_volume),
                        gal(tc(r.start_volume)),
                        0.0,
                        fahrenheit(r.temperature),
                        gal(r.end_volume),
                        gal(tc(r.end_volume)),
                        0.0,
                        fahrenheit(r.temperature),
                        inch(r.start_height),
                        inch(r.end_height),
                    ] {
                        d += &hex(v);
                    }
                }
            }
            "205" => {
                let codes = alarm_codes(t);
                d += &format!("{n:02}{:02X}", codes.len());
                for (c, _) in codes {
                    d += c;
                }
            }
            _ => return None,
        }
    }
    Some(d)
}

/// The report text of a display-format reply (after the echo line).
fn display(s: &State, function: &str, tank: usize, now: i64) -> Option<String> {
    let mut d = format!("{}\r\n\r\nTANKWATCH SIMULATED SITE\r\n\r\n", printed(now));
    match function {
        "201" => {
            d += "IN-TANK INVENTORY\r\n\r\nTANK PRODUCT             VOLUME TC VOLUME   ULLAGE   HEIGHT    WATER     TEMP\r\n";
            for (i, t) in selected(&s.tanks, tank) {
                d += &format!(
                    "{:>3}  {:<20}{:>8.0}{:>10.0}{:>9.0}{:>9.2}{:>9.2}{:>9.2}\r\n",
                    i + 1,
                    t.product.to_uppercase(),
                    gal(t.volume),
                    gal(t.tc_volume()),
                    gal(t.ullage()),
                    inch(t.height()),
                    inch(t.water_height),
                    fahrenheit(t.temperature)
                );
            }
        }
        "202" => {
            d += "DELIVERY REPORT\r\n";
            for (i, t) in selected(&s.tanks, tank) {
                d += &format!(
                    "\r\nT {}:{}\r\nINCREASE   DATE / TIME             VOLUME TC VOLUME  WATER   TEMP  HEIGHT\r\n\r\n",
                    i + 1,
                    t.product.to_uppercase()
                );
                for r in s
                    .deliveries
                    .get(i)
                    .map(Vec::as_slice)
                    .unwrap_or(&[])
                    .iter()
                    .rev()
                {
                    let tc = |v: f64| v * (1.0 - 0.001 * (r.temperature - 15.0));
                    let f = fahrenheit(r.temperature);
                    d += &format!(
                        "      END: {} {:>9.0} {:>9.0} {:>6.2} {:>8.2} {:>7.2}\r\n",
                        printed(r.end_ms),
                        gal(r.end_volume),
                        gal(tc(r.end_volume)),
                        0.0,
                        f,
                        inch(r.end_height)
                    );
                    d += &format!(
                        "    START: {} {:>9.0} {:>9.0} {:>6.2} {:>8.2} {:>7.2}\r\n",
                        printed(r.start_ms),
                        gal(r.start_volume),
                        gal(tc(r.start_volume)),
                        0.0,
                        f,
                        inch(r.start_height)
                    );
                    d += &format!(
                        "   AMOUNT:                        {:>9.0} {:>9.0}\r\n\r\n",
                        gal(r.end_volume - r.start_volume),
                        gal(tc(r.end_volume) - tc(r.start_volume))
                    );
                }
            }
        }
        "205" => {
            d += "TANK   ALARM STATUS\r\n\r\n";
            for (i, t) in selected(&s.tanks, tank) {
                let codes = alarm_codes(t);
                if codes.is_empty() {
                    d += &format!("{:>3}    ALL FUNCTIONS NORMAL\r\n", i + 1);
                }
                for (k, (_, text)) in codes.iter().enumerate() {
                    if k == 0 {
                        d += &format!("{:>3}    {text}\r\n", i + 1);
                    } else {
                        d += &format!("       {text}\r\n");
                    }
                }
            }
        }
        _ => return None,
    }
    Some(d)
}

/// The full reply to `cmd` (`i20100` / `I20100`), SOH..=ETX.
pub(crate) fn reply(s: &State, cmd: &str, now: i64) -> Vec<u8> {
    let unsupported = || b"\x019999FF1B\x03".to_vec();
    if cmd.len() != 6 || !cmd.is_ascii() {
        return unsupported();
    }
    let (function, tank) = (&cmd[1..4], cmd[4..].parse::<usize>().unwrap_or(usize::MAX));
    let mut v = vec![SOH];
    match &cmd[..1] {
        "i" => {
            let Some(data) = computer(s, function, tank, now) else {
                return unsupported();
            };
            v.extend_from_slice(cmd.as_bytes());
            v.extend_from_slice(data.as_bytes());
            v.extend_from_slice(b"&&");
            let sum = v.iter().fold(0u16, |a, &b| a.wrapping_add(u16::from(b)));
            v.extend_from_slice(format!("{:04X}", 0u16.wrapping_sub(sum)).as_bytes());
        }
        "I" => {
            let Some(text) = display(s, function, tank, now) else {
                return unsupported();
            };
            v.extend_from_slice(format!("\r\n{cmd}\r\n").as_bytes());
            v.extend_from_slice(text.as_bytes());
        }
        _ => return unsupported(),
    }
    v.push(ETX);
    v
}

/// Applies a fault to a reply: what to send, and whether to close after it.
fn faulty(mut r: Vec<u8>, f: Fault) -> (Vec<u8>, bool) {
    let half = r.len() / 2;
    match f {
        Fault::BadChecksum => {
            let n = r.len();
            if n >= 2 {
                r[n - 2] = if r[n - 2] == b'0' { b'1' } else { b'0' };
            }
            (r, false)
        }
        Fault::Truncated => {
            r.truncate(half);
            r.push(ETX);
            (r, false)
        }
        Fault::DropMidReply => {
            r.truncate(half);
            (r, true)
        }
        Fault::Silent => (Vec::new(), false),
        Fault::Unsupported => (b"\x019999FF1B\x03".to_vec(), false),
        Fault::OutOfStep => (r, false), // the reply was made for another command
    }
}

async fn connection(mut sock: TcpStream, state: Arc<Mutex<State>>) {
    let mut buf = [0u8; 256];
    let mut cmd: Option<Vec<u8>> = None;
    loop {
        let n = match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            match (&mut cmd, b) {
                (_, SOH) => cmd = Some(Vec::new()),
                (Some(c), b'\r' | b'\n') if c.is_empty() => {}
                (Some(c), _) => c.push(b),
                (None, _) => {}
            }
            // with a security code set, a command is the code and the function
            let code = lock(&state).vr_security_code.clone();
            let want = 6 + code.as_ref().map_or(0, String::len);
            // six characters that cannot begin the code: a command without it
            let no_code = |c: &Vec<u8>| {
                c.len() == 6 && code.as_ref().is_some_and(|k| !c.starts_with(k.as_bytes()))
            };
            let Some(c) = cmd.as_ref().filter(|c| c.len() == want || no_code(c)) else {
                continue;
            };
            let raw = String::from_utf8_lossy(c).to_string();
            cmd = None;
            let text = match &code {
                Some(code) if raw.len() == want && raw.starts_with(code.as_str()) => {
                    raw[code.len()..].to_string()
                }
                Some(_) => "denied".to_string(), // answered 9999FF1B
                None => raw,
            };
            let (out, close, pace) = {
                let mut s = lock(&state);
                s.requests += 1;
                if s.vr_commands.len() < 1000 || s.vr_commands.contains_key(&text) {
                    *s.vr_commands.entry(text.clone()).or_default() += 1;
                }
                let fault = s.vr_faults.front().copied();
                let asked = if fault == Some(Fault::OutOfStep) {
                    // the same format, another function
                    let other = if text.get(1..4) == Some("205") {
                        "201"
                    } else {
                        "205"
                    };
                    format!("{}{other}{}", &text[..1], text.get(4..).unwrap_or("00"))
                } else {
                    text.clone()
                };
                let r = reply(&s, &asked, now_ms());
                let (out, close) = match s.vr_faults.pop_front() {
                    Some(f) => faulty(r, f),
                    None => (r, false),
                };
                (out, close, s.vr_bytes_per_s)
            };
            // a serial line: a tenth of a second's bytes every 100 ms
            let step = pace.map_or(out.len().max(1), |b| (b / 10).max(1) as usize);
            for chunk in out.chunks(step) {
                if sock.write_all(chunk).await.is_err() {
                    return;
                }
                if pace.is_some() {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
            if close {
                return;
            }
        }
    }
}

pub(crate) async fn serve(listener: TcpListener, state: Arc<Mutex<State>>) {
    loop {
        match listener.accept().await {
            Ok((sock, _)) => {
                tokio::spawn(connection(sock, state.clone()));
            }
            Err(e) => {
                tracing::debug!(error = %e, "veeder-root accept");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// The agent's YAML device entry (under `devices:`) reading these of the
/// console's tanks (console number, tank) in `format` (`computer` or
/// `display`), in the console's US units.
pub fn yaml_device(
    name: &str,
    addr: SocketAddr,
    tanks: &[(usize, &Tank)],
    format: &str,
    poll_ms: u64,
) -> String {
    let mut s = format!(
        "  - veeder_root:\n      name: {name}\n      address: \"{addr}\"\n      format: {format}\n      timezone: UTC\n      poll_interval_ms: {poll_ms}\n      delivery_poll_ms: 5000\n      timeout_ms: 2000\n      max_backoff_ms: 2000\n      points:\n"
    );
    for &(n, t) in tanks {
        for (item, field, unit) in [
            ("volume", "volume", "gal"),
            ("tc_volume", "tc_volume", "gal"),
            ("ullage", "ullage", "gal"),
            ("height", "height", "in"),
            ("water", "water_height", "in"),
            ("temperature", "temperature", "degF"),
        ] {
            s += &format!(
                "        - {{ tank: {n}, item: {item}, asset: {}, field: {field}, unit: {unit} }}\n",
                t.id
            );
        }
        for (item, field) in [
            ("alarm.high_water", "alarm.water"),
            ("alarm.high_product", "alarm.high_level"),
            ("alarm.low_product", "alarm.low_level"),
            ("alarm.leak", "alarm.leak"),
        ] {
            s += &format!(
                "        - {{ tank: {n}, item: {item}, asset: {}, field: {field}, unit: bool, class: alarm }}\n",
                t.id
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_clock_prints_in_both_formats() {
        let ms = 1_795_446_240_000; // 2026-11-23 15:04 UTC
        assert_eq!(compact(ms), "2611231504");
        assert_eq!(printed(ms), "NOV 23, 2026  3:04 PM");
        assert_eq!(printed(ms - 15 * 3_600_000), "NOV 23, 2026 12:04 AM");
    }
}
