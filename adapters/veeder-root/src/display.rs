//! The display format's report text (after [`crate::frame::check`]),
//! sans-IO. The printed layouts differ between console models and
//! firmware; this reads the subset in `docs/veeder-root.md` by column
//! names and trailing numbers rather than fixed columns:
//!
//! - every report starts with the console's date line,
//!   `NOV 23, 2026  3:04 PM` (12 h) or `NOV 23, 2026 15:04` (24 h);
//! - I201: a header line `TANK PRODUCT <columns>` (VOLUME, TC VOLUME,
//!   ULLAGE, HEIGHT, WATER, TEMP; GALLONS/LITRES for VOLUME), then one line
//!   per tank: number, product name (may hold spaces), the numbers;
//! - I202: per tank a line `T 1:PRODUCT`, then per delivery an `END:` and
//!   a `START:` line, each a date and volume, TC volume, water, temperature,
//!   height; `AMOUNT:` lines are ignored (END - START);
//! - I205: per tank a line with its number and an alarm text (or `ALL
//!   FUNCTIONS NORMAL`), further alarms of the tank on indented lines.

use crate::frame::Function;
use crate::report::{
    ConsoleTime, Delivery, Report, TankAlarm, TankAlarms, TankDeliveries, TankInventory,
};

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// Reads a date at the start of `tokens`; returns it and how many tokens it took.
fn date(tokens: &[&str]) -> Option<(ConsoleTime, usize)> {
    let month = MONTHS.iter().position(|m| tokens.first() == Some(m))? as i8 + 1;
    let day: i8 = tokens.get(1)?.strip_suffix(',')?.parse().ok()?;
    let year: i16 = tokens.get(2)?.parse().ok()?;
    let (h, m) = tokens.get(3)?.split_once(':')?;
    let (mut hour, minute): (i8, i8) = (h.parse().ok()?, m.parse().ok()?);
    let mut used = 4;
    match tokens.get(4).copied() {
        Some("AM") | Some("PM") => {
            if !(1..=12).contains(&hour) {
                return None;
            }
            hour = hour % 12 + if tokens[4] == "PM" { 12 } else { 0 };
            used = 5;
        }
        _ => {}
    }
    ConsoleTime {
        year,
        month,
        day,
        hour,
        minute,
    }
    .valid()
    .map(|t| (t, used))
}

fn number(t: &str, line: usize) -> Result<f64, String> {
    t.replace(',', "")
        .parse()
        .map_err(|_| format!("line {line}: {t:?} is not a number"))
}

/// The report's date line and the lines after it (numbered from 1 after the echo).
/// Numbered lines of a report.
type Lines<'a> = Vec<(usize, &'a str)>;

fn head(text: &str) -> Result<(ConsoleTime, Lines<'_>), String> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end()));
    let (n, first) = lines
        .by_ref()
        .find(|(_, l)| !l.trim().is_empty())
        .ok_or("an empty report")?;
    let toks: Vec<&str> = first.split_whitespace().collect();
    let (at, _) =
        date(&toks).ok_or_else(|| format!("line {n}: {first:?} is not the report's date"))?;
    Ok((at, lines.collect()))
}

/// Column names of the I201 header, longest first: (text, field index).
const COLUMNS: &[(&str, usize)] = &[
    ("TC VOLUME", 1),
    ("TC GALLONS", 1),
    ("TC LITRES", 1),
    ("TC LITERS", 1),
    ("VOLUME", 0),
    ("GALLONS", 0),
    ("LITRES", 0),
    ("LITERS", 0),
    ("ULLAGE", 2),
    ("HEIGHT", 3),
    ("WATER", 4),
    ("TEMP", 5),
];

fn columns(header: &str, line: usize) -> Result<Vec<usize>, String> {
    let mut rest = header
        .trim_start()
        .strip_prefix("TANK")
        .map(str::trim_start)
        .and_then(|r| r.strip_prefix("PRODUCT"))
        .ok_or_else(|| format!("line {line}: the header does not start with TANK PRODUCT"))?
        .trim_start();
    let mut cols = Vec::new();
    while !rest.is_empty() {
        let (name, idx) = COLUMNS
            .iter()
            .find(|(n, _)| rest.starts_with(n))
            .ok_or_else(|| format!("line {line}: unknown column at {rest:?}"))?;
        cols.push(*idx);
        rest = rest[name.len()..].trim_start();
    }
    for need in 0..6 {
        if !cols.contains(&need) {
            return Err(format!(
                "line {line}: the header lacks the {} column",
                ["VOLUME", "TC VOLUME", "ULLAGE", "HEIGHT", "WATER", "TEMP"][need]
            ));
        }
    }
    Ok(cols)
}

fn inventory(lines: &[(usize, &str)]) -> Result<Vec<TankInventory>, String> {
    let Some(h) = lines
        .iter()
        .position(|(_, l)| l.trim_start().starts_with("TANK PRODUCT"))
    else {
        return Err("no TANK PRODUCT header line".into());
    };
    let cols = columns(lines[h].1, lines[h].0)?;
    let mut tanks = Vec::new();
    for &(n, l) in &lines[h + 1..] {
        let toks: Vec<&str> = l.split_whitespace().collect();
        let Some(Ok(tank)) = toks.first().map(|t| t.parse::<u8>()) else {
            if toks.is_empty() {
                continue;
            }
            return Err(format!("line {n}: {l:?} is not a tank line"));
        };
        if toks.len() < cols.len() + 1 {
            return Err(format!(
                "line {n}: {} values, {} expected",
                toks.len() - 1,
                cols.len()
            ));
        }
        let nums = &toks[toks.len() - cols.len()..];
        let mut v = [0.0; 6];
        for (c, t) in cols.iter().zip(nums) {
            v[*c] = number(t, n)?;
        }
        tanks.push(TankInventory {
            tank,
            product: toks[1..toks.len() - cols.len()].join(" "),
            status: None,
            volume: v[0],
            tc_volume: v[1],
            ullage: v[2],
            height: v[3],
            water: v[4],
            temperature: v[5],
            water_volume: None,
        });
    }
    Ok(tanks)
}

/// An `END:` / `START:` line: its date and five numbers.
fn delivery_line(toks: &[&str], n: usize) -> Result<(ConsoleTime, [f64; 5]), String> {
    let (t, used) =
        date(&toks[1..]).ok_or_else(|| format!("line {n}: no date after {}", toks[0]))?;
    let nums = &toks[1 + used..];
    if nums.len() < 5 {
        return Err(format!("line {n}: {} values, 5 expected", nums.len()));
    }
    let mut v = [0.0; 5];
    for (i, x) in nums[..5].iter().enumerate() {
        v[i] = number(x, n)?;
    }
    Ok((t, v))
}

fn deliveries(lines: &[(usize, &str)]) -> Result<Vec<TankDeliveries>, String> {
    let mut tanks: Vec<TankDeliveries> = Vec::new();
    let mut end: Option<(ConsoleTime, [f64; 5])> = None;
    for &(n, l) in lines {
        let t = l.trim();
        if let Some(rest) = t.strip_prefix('T').filter(|r| r.contains(':'))
            && let Some((num, product)) = rest.split_once(':')
            && let Ok(tank) = num.trim().parse::<u8>()
        {
            end = None;
            tanks.push(TankDeliveries {
                tank,
                product: product.trim().to_string(),
                deliveries: Vec::new(),
            });
            continue;
        }
        let toks: Vec<&str> = t.split_whitespace().collect();
        match toks.first().copied() {
            Some("END:") => end = Some(delivery_line(&toks, n)?),
            Some("START:") => {
                let (start, s) = delivery_line(&toks, n)?;
                let (e_at, e) = end
                    .take()
                    .ok_or_else(|| format!("line {n}: START: without END:"))?;
                let tank = tanks
                    .last_mut()
                    .ok_or_else(|| format!("line {n}: a delivery before any T n: line"))?;
                tank.deliveries.push(Delivery {
                    start,
                    end: e_at,
                    start_volume: s[0],
                    start_tc_volume: s[1],
                    start_water: s[2],
                    start_temperature: s[3],
                    start_height: s[4],
                    end_volume: e[0],
                    end_tc_volume: e[1],
                    end_water: e[2],
                    end_temperature: e[3],
                    end_height: e[4],
                });
            }
            _ => {}
        }
    }
    if end.is_some() {
        return Err("an END: line without its START: line (a cut report)".into());
    }
    Ok(tanks)
}

fn alarms(lines: &[(usize, &str)]) -> Result<Vec<TankAlarms>, String> {
    let Some(h) = lines
        .iter()
        .position(|(_, l)| l.trim_start().starts_with("TANK") && l.contains("ALARM"))
    else {
        return Err("no TANK ... ALARM STATUS header line".into());
    };
    let mut tanks: Vec<TankAlarms> = Vec::new();
    for &(n, l) in &lines[h + 1..] {
        let t = l.trim();
        if t.is_empty() {
            continue;
        }
        let (first, rest) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
        let text = match first.parse::<u8>() {
            Ok(tank) => {
                tanks.push(TankAlarms {
                    tank,
                    alarms: Vec::new(),
                });
                rest.trim()
            }
            Err(_) if l.starts_with(char::is_whitespace) => t,
            Err(_) => {
                return Err(format!(
                    "line {n}: {l:?} is neither a tank nor an indented alarm"
                ));
            }
        };
        let tank = tanks
            .last_mut()
            .ok_or_else(|| format!("line {n}: an alarm before any tank"))?;
        if !text.is_empty() && text != "ALL FUNCTIONS NORMAL" {
            tank.alarms.push(TankAlarm::from_text(text));
        }
    }
    Ok(tanks)
}

/// Parses the report text of a display-format reply to `function`.
pub fn parse(function: Function, text: &str) -> Result<Report, String> {
    let (at, lines) = head(text)?;
    Ok(match function {
        Function::Inventory => Report::Inventory {
            at,
            tanks: inventory(&lines)?,
        },
        Function::Deliveries => Report::Deliveries {
            at,
            tanks: deliveries(&lines)?,
        },
        Function::Alarms => Report::Alarms {
            at,
            tanks: alarms(&lines)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVENTORY: &str = "NOV 23, 2026  3:04 PM\r\n\r\nTANKWATCH SIM\r\n\r\nIN-TANK INVENTORY\r\n\r\n\
TANK PRODUCT             VOLUME TC VOLUME   ULLAGE   HEIGHT    WATER     TEMP\r\n\
  1  REGULAR UNLEADED       6189      6154     3811    57.83     0.00    68.12\r\n\
  2  DIESEL                 1,234     1244     5678    54.32     3.12    52.14\r\n";

    #[test]
    fn an_inventory_is_read_by_its_column_names() {
        let Report::Inventory { at, tanks } = parse(Function::Inventory, INVENTORY).unwrap() else {
            panic!()
        };
        assert_eq!((at.hour, at.minute), (15, 4));
        assert_eq!(tanks.len(), 2);
        assert_eq!(tanks[0].product, "REGULAR UNLEADED");
        assert_eq!(
            (tanks[0].volume, tanks[0].tc_volume, tanks[0].ullage),
            (6189.0, 6154.0, 3811.0)
        );
        assert_eq!(
            (tanks[1].volume, tanks[1].water, tanks[1].temperature),
            (1234.0, 3.12, 52.14)
        );
        assert_eq!(tanks[1].status, None);
        // columns in another order, gallons and 24 h time
        let t = "NOV 23, 2026 15:04\nTANK PRODUCT GALLONS ULLAGE TC GALLONS HEIGHT TEMP WATER\n 3 PREM 10 20 9 1.5 60 0\n";
        let Report::Inventory { at, tanks } = parse(Function::Inventory, t).unwrap() else {
            panic!()
        };
        assert_eq!(at.hour, 15);
        assert_eq!(
            (tanks[0].ullage, tanks[0].tc_volume, tanks[0].water),
            (20.0, 9.0, 0.0)
        );
    }

    #[test]
    fn a_delivery_report_pairs_end_and_start_lines_per_tank() {
        let t = "NOV 23, 2026  3:04 PM\n\nDELIVERY REPORT\n\nT 1:SUPER\n\
INCREASE   DATE / TIME             VOLUME TC VOLUME  WATER   TEMP  HEIGHT\n\n\
      END: NOV 23, 2026  2:40 PM     9000      8970    0.00   60.00  80.00\n\
    START: NOV 23, 2026  2:10 PM     4000      3990    0.00   60.00  40.00\n\
   AMOUNT:                           5000      4980\n\nT 2:DIESEL\n";
        let Report::Deliveries { tanks, .. } = parse(Function::Deliveries, t).unwrap() else {
            panic!()
        };
        assert_eq!(tanks.len(), 2);
        let d = &tanks[0].deliveries[0];
        assert_eq!((d.start.hour, d.start.minute, d.end.minute), (14, 10, 40));
        assert_eq!(
            (d.start_volume, d.end_volume, d.start_height, d.end_height),
            (4000.0, 9000.0, 40.0, 80.0)
        );
        assert!(tanks[1].deliveries.is_empty());
        let cut = t.split("START:").next().unwrap();
        assert!(
            parse(Function::Deliveries, cut)
                .unwrap_err()
                .contains("END: line without")
        );
    }

    #[test]
    fn alarms_are_read_per_tank_with_continuation_lines() {
        let t = "NOV 23, 2026  3:04 PM\n\nTANK   ALARM STATUS\n\n  1    HIGH WATER ALARM\n       OVERFILL ALARM\n  2    ALL FUNCTIONS NORMAL\n  3    SOMETHING NEW\n";
        let Report::Alarms { tanks, .. } = parse(Function::Alarms, t).unwrap() else {
            panic!()
        };
        assert_eq!(
            tanks[0].alarms,
            vec![TankAlarm::Known(3), TankAlarm::Known(4)]
        );
        assert!(tanks[1].alarms.is_empty());
        assert_eq!(
            tanks[2].alarms,
            vec![TankAlarm::Other("SOMETHING NEW".into())]
        );
    }

    #[test]
    fn broken_reports_are_errors_naming_the_line() {
        assert!(
            parse(Function::Inventory, "")
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            parse(Function::Inventory, "HELLO\n")
                .unwrap_err()
                .contains("line 1")
        );
        assert!(
            parse(Function::Inventory, "NOV 23, 2026 3:04 PM\n")
                .unwrap_err()
                .contains("no TANK PRODUCT")
        );
        let e = parse(
            Function::Inventory,
            "NOV 23, 2026 3:04 PM\nTANK PRODUCT VOLUME\n",
        )
        .unwrap_err();
        assert!(e.contains("lacks the TC VOLUME"), "{e}");
        let cut = INVENTORY.rsplit_once("0.00").unwrap().0;
        let e = parse(Function::Inventory, cut).unwrap_err();
        assert!(e.contains("line 8"), "{e}");
        assert!(parse(Function::Inventory, "FEB 30, 2026 3:04 PM\n").is_err());
        assert!(parse(Function::Inventory, "NOV 23, 2026 13:04 PM\n").is_err());
        assert!(
            parse(
                Function::Alarms,
                "NOV 23, 2026 3:04 PM\nTANK ALARM\nHIGH WATER\n"
            )
            .is_err()
        );
    }
}
