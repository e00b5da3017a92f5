//! The display format's report text (after [`crate::frame::check`]),
//! sans-IO. The printed layouts differ between console models and
//! firmware; this reads the subset in `docs/veeder-root.md` by column
//! names and trailing numbers rather than fixed columns:
//!
//! - every report starts with the console's date line,
//!   `NOV 23, 2026  3:04 PM` (12 h), `NOV 23, 2026 15:04` (24 h),
//!   `11/23/2026 15:04` or `11-23-26 3:04PM` (GasPot and other emulators);
//!   an unreadable one is tolerated for I201 and I205 (their readings are
//!   stamped with the agent's clock) and refused for I202 (delivery times
//!   are console times);
//! - I201: a header line `TANK PRODUCT <columns>` (VOLUME, TC VOLUME,
//!   ULLAGE, HEIGHT, WATER, TEMP; GALLONS/LITRES for VOLUME), then one line
//!   per tank: number, product name (may hold spaces), the numbers;
//! - I202: per tank a line `T 1:PRODUCT`, then per delivery an `END:` and
//!   a `START:` line, each a date and volume, TC volume, water, temperature,
//!   height; `AMOUNT:` lines are ignored (END - START);
//! - I205: per tank a line with its number and an alarm text (or `ALL
//!   FUNCTIONS NORMAL`), further alarms of the tank on indented lines; a
//!   `TANK PRODUCT STATUS` header puts the product name first (GasPot),
//!   `NORMAL` is no alarm.

use crate::frame::Function;
use crate::report::{
    ConsoleTime, Delivery, Report, TankAlarm, TankAlarms, TankDeliveries, TankInventory,
};

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// A clock time `15:04`, `3:04` followed by `AM`/`PM` as the next token,
/// or `3:04PM` in one; returns (hour 0-23, minute, tokens used).
fn clock(tokens: &[&str]) -> Option<(i8, i8, usize)> {
    let t = tokens.first()?;
    let (body, glued) = match t.strip_suffix("AM").or_else(|| t.strip_suffix("PM")) {
        Some(b) => (b, Some(t.ends_with("PM"))),
        None => (*t, None),
    };
    let (h, m) = body.split_once(':')?;
    let (mut hour, minute): (i8, i8) = (h.parse().ok()?, m.parse().ok()?);
    let pm = match (glued, tokens.get(1).copied()) {
        (Some(pm), _) => Some((pm, 1)),
        (None, Some("AM")) => Some((false, 2)),
        (None, Some("PM")) => Some((true, 2)),
        _ => None,
    };
    let used = match pm {
        Some((pm, used)) => {
            if !(1..=12).contains(&hour) {
                return None;
            }
            hour = hour % 12 + if pm { 12 } else { 0 };
            used
        }
        None => 1,
    };
    Some((hour, minute, used))
}

/// Reads a date at the start of `tokens`; returns it and how many tokens
/// it took. Layouts real consoles and emulators print: `NOV 23, 2026 3:04
/// PM`, `NOV 23, 2026 15:04`, `11/23/2026 15:04` (month first),
/// `11-23-26 3:04PM` (two-digit years are 2000-2099).
fn date(tokens: &[&str]) -> Option<(ConsoleTime, usize)> {
    let (year, month, day, used) =
        if let Some(m) = MONTHS.iter().position(|m| tokens.first() == Some(m)) {
            let day: i8 = tokens.get(1)?.strip_suffix(',')?.parse().ok()?;
            let year: i16 = tokens.get(2)?.parse().ok()?;
            (year, m as i8 + 1, day, 3)
        } else {
            let t = tokens.first()?;
            let parts: Vec<&str> = t.split(['/', '-']).collect();
            let [m, d, y] = parts.as_slice() else {
                return None;
            };
            let year: i16 = match y.len() {
                4 => y.parse().ok()?,
                2 => 2000 + y.parse::<i16>().ok()?,
                _ => return None,
            };
            (year, m.parse().ok()?, d.parse().ok()?, 1)
        };
    let (hour, minute, more) = clock(tokens.get(used..)?)?;
    ConsoleTime {
        year,
        month,
        day,
        hour,
        minute,
    }
    .valid()
    .map(|t| (t, used + more))
}

fn number(t: &str, line: usize) -> Result<f64, String> {
    t.replace(',', "")
        .parse()
        .map_err(|_| format!("line {line}: {t:?} is not a number"))
}

/// The report's date line and the lines after it (numbered from 1 after the echo).
/// Numbered lines of a report.
type Lines<'a> = Vec<(usize, &'a str)>;

/// The date line (or why it is unreadable) and the lines after it. A
/// report whose first line is not a date in a known layout keeps all its
/// lines: only the delivery report needs the console's clock.
fn head(text: &str) -> Result<(Result<ConsoleTime, String>, Lines<'_>), String> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end()));
    let (n, first) = lines
        .by_ref()
        .find(|(_, l)| !l.trim().is_empty())
        .ok_or("an empty report")?;
    let toks: Vec<&str> = first.split_whitespace().collect();
    match date(&toks) {
        Some((at, _)) => Ok((Ok(at), lines.collect())),
        None => {
            let why = format!("line {n}: {first:?} is not the report's date");
            let mut all = vec![(n, first)];
            all.extend(lines);
            Ok((Err(why), all))
        }
    }
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
    let Some(h) = lines.iter().position(|(_, l)| {
        l.trim_start().starts_with("TANK") && (l.contains("ALARM") || l.contains("STATUS"))
    }) else {
        return Err("no TANK ... ALARM STATUS header line".into());
    };
    // `TANK PRODUCT STATUS` (GasPot and some firmware): the product name
    // comes first, the status is the last run of text
    let with_product = lines[h].1.contains("PRODUCT");
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
                let rest = rest.trim();
                match rest.rsplit_once("  ") {
                    Some((_, status)) if with_product => status.trim(),
                    _ => rest,
                }
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
        if !text.is_empty() && text != "ALL FUNCTIONS NORMAL" && text != "NORMAL" {
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
            at: at.ok(),
            tanks: inventory(&lines)?,
        },
        // delivery times are console times: the date layout must be known
        Function::Deliveries => Report::Deliveries {
            at: at?,
            tanks: deliveries(&lines)?,
        },
        Function::Alarms => Report::Alarms {
            at: at.ok(),
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
        assert_eq!(at.map(|a| (a.hour, a.minute)), Some((15, 4)));
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
        assert_eq!(at.map(|a| a.hour), Some(15));
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
            parse(Function::Deliveries, "HELLO\n")
                .unwrap_err()
                .contains("line 1")
        );
        assert!(
            parse(Function::Inventory, "HELLO\n")
                .unwrap_err()
                .contains("no TANK PRODUCT")
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

    /// GasPot 2.x (a widely used TLS-350 emulator) prints its date line as
    /// `12/04/2026 18:39` and I205 as `TANK PRODUCT STATUS` with the
    /// product first: both read (before: the whole inventory unreadable,
    /// the alarm layout refused). Text as GasPot's `cmd_I20100` and
    /// `cmd_I20500` build it (product padded to 22).
    #[test]
    fn gaspots_layouts_are_read() {
        let inv = "\nI20100\n12/04/2026 18:39\n\n    EXXON STATION\n\n\nIN-TANK INVENTORY\n\n\
TANK PRODUCT             VOLUME TC VOLUME   ULLAGE   HEIGHT    WATER     TEMP\n\
  1  SUPER                   9357        9313      3643    64.32      0.81    56.75\n\
  2  UNLEAD                  4127        4143      5873    37.18      0.00    55.80\n";
        // GasPot's reply starts with the echo; the frame layer strips it
        let text = inv.trim_start().strip_prefix("I20100").unwrap();
        let Report::Inventory { at, tanks } = parse(Function::Inventory, text).unwrap() else {
            panic!()
        };
        assert_eq!(
            at.map(|a| (a.month, a.day, a.hour, a.minute)),
            Some((12, 4, 18, 39))
        );
        assert_eq!(tanks.len(), 2);
        assert_eq!(
            (
                tanks[0].tank,
                tanks[0].product.as_str(),
                tanks[0].volume,
                tanks[0].water
            ),
            (1, "SUPER", 9357.0, 0.81)
        );
        let st =
            "12/04/2026 18:39\n\n\n    EXXON STATION\n\n\nTANK   PRODUCT                 STATUS\n\n\
  1    SUPER                                    NORMAL\n\n\
  2    UNLEAD                                   HIGH WATER ALARM\n"
                .to_string()
                + &" ".repeat(31) + "HIGH WATER WARNING\n\n";
        let Report::Alarms { tanks, .. } = parse(Function::Alarms, &st).unwrap() else {
            panic!()
        };
        let got: Vec<(u8, Vec<String>)> = tanks
            .iter()
            .map(|t| (t.tank, t.alarms.iter().map(|a| a.item()).collect()))
            .collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].1.is_empty(), "NORMAL is no alarm: {got:?}");
        assert_eq!(got[1].1.len(), 2, "{got:?}");
        assert!(
            got[1].1.iter().all(|a| !a.starts_with("other:")),
            "known alarms: {got:?}"
        );
    }

    #[test]
    fn dates_in_every_layout_real_consoles_print_and_what_is_not_a_date() {
        let d = |s: &str| {
            let t: Vec<&str> = s.split_whitespace().collect();
            date(&t).map(|(c, used)| (c.year, c.month, c.day, c.hour, c.minute, used))
        };
        assert_eq!(d("NOV 23, 2026  3:04 PM"), Some((2026, 11, 23, 15, 4, 5)));
        assert_eq!(d("NOV 23, 2026 15:04"), Some((2026, 11, 23, 15, 4, 4)));
        assert_eq!(d("12/04/2026 18:39"), Some((2026, 12, 4, 18, 39, 2)));
        assert_eq!(d("12-04-26  6:39PM"), Some((2026, 12, 4, 18, 39, 2)));
        assert_eq!(d("12/04/26 12:05 AM"), Some((2026, 12, 4, 0, 5, 3)));
        assert_eq!(d("13/04/2026 18:39"), None, "month 13");
        assert_eq!(d("12/04/2026 13:05 PM"), None, "13 PM");
        assert_eq!(d("EXXON STATION"), None);
        assert_eq!(d("12/04/2026"), None, "no time");
        // an unreadable date line: the inventory is read all the same,
        // the delivery report (console times) is refused naming the line
        let t = "THURSDAY 4TH\nTANK PRODUCT VOLUME TC VOLUME ULLAGE HEIGHT WATER TEMP\n 1 SUPER 100 99 900 10 0 60\n";
        let Report::Inventory { at, tanks } = parse(Function::Inventory, t).unwrap() else {
            panic!()
        };
        assert_eq!((at, tanks.len()), (None, 1));
        let e = parse(Function::Deliveries, t).unwrap_err();
        assert!(
            e.contains("line 1") && e.contains("not the report's date"),
            "{e}"
        );
    }
}
