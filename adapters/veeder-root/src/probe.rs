//! `edge-agent probe veeder-root HOST:PORT --cmd i20100`: one command, the
//! raw reply (escaped) and what it says.

use adapter_api::probe::{Failure, ProbeError, tcp_connect};

use crate::frame::{Command, Framer, escape};
use crate::report::Report;
use crate::session::{self, exchange};

/// Sends `cmd` (e.g. `i20100`, `I20500`) and returns the report, printed.
pub async fn probe(
    addr: &str,
    cmd: &str,
    security_code: &str,
    timeout_ms: u64,
) -> Result<String, ProbeError> {
    let command = Command::parse(cmd).ok_or_else(|| {
        ProbeError::new(
            Failure::Usage,
            format!("{cmd:?} is not a command this probe reads: use i20100 / I20100 (inventory), i20200 (deliveries) or i20500 (alarms), tank 00 for all or 01-99 for one"),
        )
    })?;
    let mut conn = tcp_connect(addr, timeout_ms).await?;
    let mut framer = Framer::new();
    let raw = exchange(&mut conn, &mut framer, &command, security_code, timeout_ms)
        .await
        .map_err(|f| match f {
            session::Failure::Lost { why, timeout, .. } => ProbeError::new(
                if timeout {
                    Failure::Timeout
                } else {
                    Failure::Unreachable
                },
                why,
            ),
            session::Failure::Reply(e) => ProbeError::new(
                Failure::Device,
                format!("{e}\nraw reply: {}", escape(e.raw(), 2000)),
            ),
        })?;
    let report = crate::decode(&command, &raw).map_err(|e| {
        ProbeError::new(
            Failure::Device,
            format!("{e}\nraw reply: {}", escape(e.raw(), 2000)),
        )
    })?;
    Ok(format!(
        "{addr} answered {cmd} ({} bytes):\n{}\n\n{}",
        raw.len(),
        escape(&raw, 2000),
        render(&report)
    ))
}

fn console_time(at: &Option<crate::report::ConsoleTime>) -> String {
    at.map(|t| t.to_string())
        .unwrap_or_else(|| "an unreadable date line".into())
}

/// A report as a table for the installer (console units).
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    match r {
        Report::Inventory { at, tanks } => {
            let at = console_time(at);
            s += &format!(
                "in-tank inventory at {at} (console clock)\ntank product          volume   tc_volume      ullage    height     water   temp  status\n"
            );
            for t in tanks {
                s += &format!(
                    "{:>4} {:<12} {:>11.2} {:>11.2} {:>11.2} {:>9.2} {:>9.2} {:>6.2}  {}\n",
                    t.tank,
                    t.product,
                    t.volume,
                    t.tc_volume,
                    t.ullage,
                    t.height,
                    t.water,
                    t.temperature,
                    t.status.map(|x| format!("{x:04X}")).unwrap_or_default()
                );
            }
        }
        Report::Deliveries { at, tanks } => {
            s += &format!("delivery reports at {at} (console clock)\n");
            for t in tanks {
                s += &format!(
                    "tank {} ({}): {} deliveries\n",
                    t.tank,
                    t.product,
                    t.deliveries.len()
                );
                for d in &t.deliveries {
                    s += &format!(
                        "  {} -> {}: {:.2} -> {:.2} (+{:.2})\n",
                        d.start,
                        d.end,
                        d.start_volume,
                        d.end_volume,
                        d.end_volume - d.start_volume
                    );
                }
            }
        }
        Report::Alarms { at, tanks } => {
            let at = console_time(at);
            s += &format!("tank alarms at {at} (console clock)\n");
            for t in tanks {
                let a: Vec<String> = t.alarms.iter().map(|a| a.item()).collect();
                s += &format!(
                    "tank {}: {}\n",
                    t.tank,
                    if a.is_empty() {
                        "no alarm".to_string()
                    } else {
                        a.join(", ")
                    }
                );
            }
        }
    }
    s
}
