//! The computer format's data (after [`crate::frame::check`]), sans-IO.
//!
//! - i201: `YYMMDDHHmm` then per tank `TT p ssss NN` + NN hex floats of 8
//!   hex digits (volume, TC volume, ullage, height, water, temperature,
//!   water volume; TLS-3XX sends NN = 07).
//! - i202: `YYMMDDHHmm` then per tank `TT p dd` (deliveries to follow,
//!   decimal) and per delivery `YYMMDDHHmm` start, `YYMMDDHHmm` end, `NN`
//!   and NN floats (start volume, start TC volume, start water, start
//!   temperature, end volume, end TC volume, end water, end temperature,
//!   start height, end height; NN = 0A).
//! - i205: `YYMMDDHHmm` then per tank `TT nn` (alarms, hex) + nn x `AA` (alarm type).
//!
//! Extra fields beyond the ones named are skipped (newer consoles add
//! some); fewer than needed is an error.

use crate::frame::Function;
use crate::report::{
    ConsoleTime, Delivery, Report, TankAlarm, TankAlarms, TankDeliveries, TankInventory,
};

/// A cursor over the data, with errors that say where.
struct Cursor<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a str, String> {
        let end = self.at + n;
        let v = self.s.get(self.at..end).ok_or_else(|| {
            format!(
                "{what} at character {}: the data ends after {} characters",
                self.at,
                self.s.len()
            )
        })?;
        self.at = end;
        Ok(v)
    }
    fn done(&self) -> bool {
        self.at >= self.s.len()
    }
    fn hex(&mut self, n: usize, what: &str) -> Result<u32, String> {
        let at = self.at;
        let t = self.take(n, what)?;
        u32::from_str_radix(t, 16)
            .map_err(|_| format!("{what} at character {at}: {t:?} is not hex"))
    }
    fn dec(&mut self, n: usize, what: &str) -> Result<u32, String> {
        let at = self.at;
        let t = self.take(n, what)?;
        t.parse()
            .map_err(|_| format!("{what} at character {at}: {t:?} is not a number"))
    }
    fn time(&mut self, what: &str) -> Result<ConsoleTime, String> {
        let at = self.at;
        let t = self.take(10, what)?;
        ConsoleTime::parse_compact(t)
            .ok_or_else(|| format!("{what} at character {at}: {t:?} is not a date YYMMDDHHmm"))
    }
    fn tank(&mut self) -> Result<u8, String> {
        Ok(self.dec(2, "tank number")? as u8)
    }
    /// `NN` hex floats; at least `need`.
    fn floats(&mut self, need: usize, what: &str) -> Result<Vec<f64>, String> {
        let n = self.hex(2, "field count")? as usize;
        if n < need {
            return Err(format!("{what}: {n} fields, at least {need} expected"));
        }
        (0..n)
            .map(|_| self.hex(8, what).map(|b| f64::from(f32::from_bits(b))))
            .collect()
    }
}

/// Parses the data of a computer-format reply to `function`.
pub fn parse(function: Function, data: &str) -> Result<Report, String> {
    if !data.is_ascii() {
        return Err("non-ASCII characters in the data".into());
    }
    let mut c = Cursor { s: data, at: 0 };
    let at = c.time("report time")?;
    match function {
        Function::Inventory => {
            let mut tanks = Vec::new();
            while !c.done() {
                let tank = c.tank()?;
                let product = c.take(1, "product code")?.to_string();
                let status = c.hex(4, "tank status")? as u16;
                let f = c.floats(6, "inventory")?;
                tanks.push(TankInventory {
                    tank,
                    product,
                    status: Some(status),
                    volume: f[0],
                    tc_volume: f[1],
                    ullage: f[2],
                    height: f[3],
                    water: f[4],
                    temperature: f[5],
                    water_volume: f.get(6).copied(),
                });
            }
            Ok(Report::Inventory {
                at: Some(at),
                tanks,
            })
        }
        Function::Deliveries => {
            let mut tanks = Vec::new();
            while !c.done() {
                let tank = c.tank()?;
                let product = c.take(1, "product code")?.to_string();
                let n = c.dec(2, "delivery count")?;
                let mut deliveries = Vec::new();
                for _ in 0..n {
                    let start = c.time("delivery start")?;
                    let end = c.time("delivery end")?;
                    let f = c.floats(10, "delivery")?;
                    deliveries.push(Delivery {
                        start,
                        end,
                        start_volume: f[0],
                        start_tc_volume: f[1],
                        start_water: f[2],
                        start_temperature: f[3],
                        end_volume: f[4],
                        end_tc_volume: f[5],
                        end_water: f[6],
                        end_temperature: f[7],
                        start_height: f[8],
                        end_height: f[9],
                    });
                }
                tanks.push(TankDeliveries {
                    tank,
                    product,
                    deliveries,
                });
            }
            Ok(Report::Deliveries { at, tanks })
        }
        Function::Alarms => {
            let mut tanks = Vec::new();
            while !c.done() {
                let tank = c.tank()?;
                let n = c.hex(2, "alarm count")?;
                let alarms = (0..n)
                    .map(|_| c.take(2, "alarm type").map(TankAlarm::from_code))
                    .collect::<Result<_, _>>()?;
                tanks.push(TankAlarms { tank, alarms });
            }
            Ok(Report::Alarms {
                at: Some(at),
                tanks,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(v: f32) -> String {
        format!("{:08X}", v.to_bits())
    }

    #[test]
    fn an_inventory_of_two_tanks_is_read_field_by_field() {
        let mut d = String::from("2611231504");
        for (t, v) in [(1, 4012.5f32), (2, 0.0)] {
            d += &format!("{t:02}1000107");
            for x in [v, v - 10.0, 9000.0 - v, 40.25, 0.5, 60.0, 1.25] {
                d += &hex(x);
            }
        }
        let Report::Inventory { at, tanks } = parse(Function::Inventory, &d).unwrap() else {
            panic!()
        };
        assert_eq!(at.map(|a| a.minute), Some(4));
        assert_eq!(tanks.len(), 2);
        assert_eq!(
            (tanks[0].tank, tanks[0].product.as_str(), tanks[0].status),
            (1, "1", Some(1))
        );
        assert_eq!(
            (tanks[0].volume, tanks[0].height, tanks[0].water_volume),
            (4012.5, 40.25, Some(1.25))
        );
        assert_eq!(tanks[1].ullage, 9000.0);
    }

    #[test]
    fn deliveries_and_alarms_are_read_with_their_counts() {
        let mut d = String::from("2611231504");
        d += "0120226112214002611221430";
        d += "0A";
        for x in [
            1000.0f32, 990.0, 0.0, 60.0, 6000.0, 5980.0, 0.0, 58.0, 12.0, 60.0,
        ] {
            d += &hex(x);
        }
        d += "261123100026112310300A";
        for x in [
            6000.0f32, 5980.0, 0.0, 58.0, 7000.0, 6980.0, 0.0, 58.0, 60.0, 66.0,
        ] {
            d += &hex(x);
        }
        d += "02300";
        let Report::Deliveries { tanks, .. } = parse(Function::Deliveries, &d).unwrap() else {
            panic!()
        };
        assert_eq!(tanks.len(), 2);
        assert_eq!(tanks[0].deliveries.len(), 2);
        let first = &tanks[0].deliveries[0];
        assert_eq!((first.start.hour, first.end.minute), (14, 30));
        assert_eq!(
            (first.start_volume, first.end_volume, first.end_height),
            (1000.0, 6000.0, 60.0)
        );
        assert_eq!((tanks[1].tank, tanks[1].deliveries.len()), (2, 0));

        let Report::Alarms { tanks, .. } =
            parse(Function::Alarms, "2611231504010203040200").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            tanks[0].alarms,
            vec![TankAlarm::Known(3), TankAlarm::Known(4)]
        );
        assert!(tanks[1].alarms.is_empty());
    }

    #[test]
    fn truncated_or_garbled_data_is_an_error_that_says_where() {
        let mut d = String::from("26112315040110001");
        d += "07";
        d += &hex(1.0);
        let e = parse(Function::Inventory, &d).unwrap_err();
        assert!(e.contains("data ends"), "{e}");
        let e = parse(Function::Inventory, "26112315").unwrap_err();
        assert!(e.contains("report time"), "{e}");
        let e = parse(Function::Inventory, "2611231504011000103").unwrap_err();
        assert!(e.contains("3 fields, at least 6"), "{e}");
        let e = parse(Function::Alarms, "261123150401zz").unwrap_err();
        assert!(e.contains("not hex"), "{e}");
        let e = parse(Function::Deliveries, "2611231504011x").unwrap_err();
        assert!(e.contains("delivery count"), "{e}");
        assert!(parse(Function::Alarms, "2611231504\u{e9}").is_err());
        // an empty report (no tanks) is valid
        assert!(matches!(
            parse(Function::Alarms, "2611231504"),
            Ok(Report::Alarms { tanks, .. }) if tanks.is_empty()
        ));
    }
}
