//! `edge-agent probe modbus HOST:PORT --unit 1 --read holding:0..10 --type f32`:
//! one read request, every value decoded, an exception named.

use adapter_api::probe::{Failure, ProbeError, tcp_connect};
use tokio_modbus::client::{Reader, tcp};
use tokio_modbus::prelude::Slave;

use crate::config::{DataType, Order, Table};
use crate::{codec, exception_meaning};

/// What to read: `holding:0..10` (end exclusive) or `input:5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub table: Table,
    pub start: u16,
    pub end: u16,
}

impl std::str::FromStr for Range {
    type Err = String;
    fn from_str(s: &str) -> Result<Range, String> {
        let bad = || {
            format!(
                "{s:?}: use TABLE:START..END (end exclusive) or TABLE:ADDR; TABLE is holding, input, coil or discrete_input"
            )
        };
        let (t, r) = s.split_once(':').ok_or_else(bad)?;
        let table = match t {
            "holding" => Table::Holding,
            "input" => Table::Input,
            "coil" => Table::Coil,
            "discrete_input" => Table::DiscreteInput,
            _ => return Err(bad()),
        };
        let (start, end) = match r.split_once("..") {
            Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
            None => {
                let a: u16 = r.parse().map_err(|_| bad())?;
                (a, a.checked_add(1).ok_or_else(bad)?)
            }
        };
        if end <= start || end - start > 125 {
            return Err(format!("{s:?}: read 1 to 125 registers"));
        }
        Ok(Range { table, start, end })
    }
}

/// Reads `range` from unit `unit` and prints it decoded as `ty`.
pub async fn probe(
    addr: &str,
    unit: u8,
    range: Range,
    ty: DataType,
    word_order: Order,
    timeout_ms: u64,
) -> Result<String, ProbeError> {
    let stream = tcp_connect(addr, timeout_ms).await?;
    let mut ctx = tcp::attach_slave(stream, Slave(unit));
    let count = range.end - range.start;
    let fut = async {
        let bits = |r: Result<Result<Vec<bool>, _>, _>| {
            r.map(|r| r.map(|v: Vec<bool>| v.into_iter().map(u16::from).collect()))
        };
        match range.table {
            Table::Holding => ctx.read_holding_registers(range.start, count).await,
            Table::Input => ctx.read_input_registers(range.start, count).await,
            Table::Coil => bits(ctx.read_coils(range.start, count).await),
            Table::DiscreteInput => bits(ctx.read_discrete_inputs(range.start, count).await),
        }
    };
    // a bit table is shown bit by bit, whatever --type says
    let ty = if range.table.is_bits() {
        DataType::Bool
    } else {
        ty
    };
    let what = format!(
        "reading {count} {:?} registers from {}",
        range.table, range.start
    );
    let regs = match tokio::time::timeout(std::time::Duration::from_millis(timeout_ms), fut).await {
        Err(_) => {
            return Err(ProbeError::timeout(
                &format!("{addr} unit {unit}: {what}"),
                timeout_ms,
            ));
        }
        Ok(Err(e)) => {
            return Err(ProbeError::new(
                Failure::Unreachable,
                format!("{addr}: {what}: the connection failed: {e}"),
            ));
        }
        Ok(Ok(Err(ex))) => {
            let code = u8::from(ex);
            return Err(ProbeError::new(
                Failure::Device,
                format!(
                    "{addr} unit {unit} answered {what} with exception {code} ({})",
                    exception_meaning(code)
                ),
            ));
        }
        Ok(Ok(Ok(r))) => r,
    };
    let mut out = format!(
        "{addr} unit {unit} answered: {count} {:?} registers from {}\n",
        range.table, range.start
    );
    let n = usize::from(ty.registers());
    for (k, chunk) in regs.chunks(n).enumerate() {
        let at = range.start as usize + k * n;
        let raw: Vec<String> = chunk.iter().map(|w| format!("{w:04x}")).collect();
        let v = if chunk.len() == n {
            codec::decode(chunk, ty, word_order, Order::Big)
                .map(|v| format!("{v}"))
                .unwrap_or_else(|| "not a number".into())
        } else {
            "(incomplete)".into()
        };
        out += &format!("  {at:>5}  {:<20} {v}\n", raw.join(" "));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_with_the_table_and_an_exclusive_end() {
        let r: Range = "holding:0..10".parse().unwrap();
        assert_eq!((r.table, r.start, r.end), (Table::Holding, 0, 10));
        let r: Range = "input:7".parse().unwrap();
        assert_eq!((r.table, r.start, r.end), (Table::Input, 7, 8));
        let r: Range = "coil:1".parse().unwrap();
        assert_eq!((r.table, r.start, r.end), (Table::Coil, 1, 2));
        let r: Range = "discrete_input:0..8".parse().unwrap();
        assert_eq!((r.table, r.start, r.end), (Table::DiscreteInput, 0, 8));
        for bad in [
            "register:1",
            "holding:5..5",
            "holding:0..200",
            "holding",
            "holding:x",
        ] {
            assert!(bad.parse::<Range>().is_err(), "{bad}");
        }
    }
}
