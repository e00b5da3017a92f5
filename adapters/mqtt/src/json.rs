//! Values and timestamps out of JSON payloads by dotted path, pure.

use serde_json::Value;

/// The value at `path` (`a.b.0.c`: object keys and array indexes).
pub fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, key| match v {
        Value::Object(m) => m.get(key),
        Value::Array(a) => a.get(key.parse::<usize>().ok()?),
        _ => None,
    })
}

/// A number, a numeric string or a boolean (1/0) as f64.
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A timestamp: Unix ms (a number; seconds when below 10^11) or RFC 3339
/// text (`2026-11-23T10:00:00Z`, `...+01:00`, fractions allowed).
pub fn timestamp(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => {
            let x = n.as_f64()?;
            if !x.is_finite() || x < 0.0 {
                return None;
            }
            Some(if x < 1e11 {
                (x * 1000.0) as i64
            } else {
                x as i64
            })
        }
        Value::String(s) => rfc3339_ms(s),
        _ => None,
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]` to Unix ms.
pub fn rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || !s.is_ascii() {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = s.get(start..i)?;
        if frac.is_empty() {
            return None;
        }
        ms = format!("{frac:0<3}").get(..3)?.parse::<i64>().ok()?;
    }
    let offset_min = match s.get(i..)? {
        "Z" | "z" => 0,
        o if o.len() == 6 && matches!(&o[..1], "+" | "-") && &o[3..4] == ":" => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>().ok()? * 60 + o[4..6].parse::<i64>().ok()?)
        }
        _ => return None,
    };
    // days from civil (Howard Hinnant's algorithm)
    let (yy, mm) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) - offset_min * 60) * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_reach_into_objects_and_arrays() {
        let v = json!({"level": {"volume": 1234.5}, "tanks": [{"t": 1}, {"t": "2.5"}], "ok": true});
        assert_eq!(at(&v, "level.volume").and_then(number), Some(1234.5));
        assert_eq!(at(&v, "tanks.1.t").and_then(number), Some(2.5));
        assert_eq!(at(&v, "ok").and_then(number), Some(1.0));
        assert!(at(&v, "tanks.9.t").is_none() && at(&v, "level.x").is_none());
        assert!(at(&v, "level").and_then(number).is_none());
    }

    #[test]
    fn timestamps_are_unix_ms_seconds_or_rfc3339() {
        assert_eq!(
            timestamp(&json!(1_700_000_000_123_i64)),
            Some(1_700_000_000_123)
        );
        assert_eq!(timestamp(&json!(1_700_000_000)), Some(1_700_000_000_000));
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_ms("2026-11-23T10:00:00.5Z"),
            Some(1_795_428_000_500)
        );
        assert_eq!(
            rfc3339_ms("2026-11-23T11:00:00+01:00"),
            Some(1_795_428_000_000)
        );
        for bad in [
            "2026-13-01T00:00:00Z",
            "yesterday",
            "2026-11-23T10:00:00",
            "2026-11-23T10:00:00.Z",
        ] {
            assert!(rfc3339_ms(bad).is_none(), "{bad}");
        }
        assert!(timestamp(&json!(-5)).is_none());
    }
}
