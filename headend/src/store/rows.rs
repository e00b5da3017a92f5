//! Pure pieces of the telemetry store, shared by both backends: which
//! reading is the newest per point, the hourly rollup arithmetic, the
//! cumulative ack of a group, and the day partitions of a time range.

use std::collections::HashMap;

use tankwatch_proto::v1;

use crate::domain::Quality;

/// One hour in milliseconds: the rollup bucket.
pub const HOUR_MS: i64 = 3_600_000;
/// One day in milliseconds: the PostgreSQL partition width.
pub const DAY_MS: i64 = 86_400_000;

/// A point's identity: one row of `points`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PointKey {
    pub site: String,
    pub asset: String,
    pub field: String,
    pub unit: String,
    pub source: String,
}

impl PointKey {
    pub fn of(site: &str, r: &v1::Reading) -> PointKey {
        PointKey {
            site: site.to_string(),
            asset: r.asset_id.clone(),
            field: r.field.clone(),
            unit: r.unit.clone(),
            source: r.source.clone(),
        }
    }
}

/// The value a reading row stores: none for a bad reading (it carries no
/// information), else the value.
pub fn stored_value(r: &v1::Reading) -> Option<f64> {
    match Quality::from_proto(r.quality) {
        Quality::Bad => None,
        _ => Some(r.value),
    }
}

/// The newest reading of each (asset, field) in `batches`, by (source
/// time, seq): what `latest_values` is moved to.
pub fn newest_per_field(batches: &[v1::TelemetryBatch]) -> Vec<&v1::Reading> {
    let mut newest: HashMap<(&str, &str), &v1::Reading> = HashMap::new();
    for r in batches.iter().flat_map(|b| &b.readings) {
        let e = newest
            .entry((r.asset_id.as_str(), r.field.as_str()))
            .or_insert(r);
        if (r.source_ts_ms, r.seq) >= (e.source_ts_ms, e.seq) {
            *e = r;
        }
    }
    let mut v: Vec<_> = newest.into_values().collect();
    v.sort_by(|a, b| (&a.asset_id, &a.field).cmp(&(&b.asset_id, &b.field)));
    v
}

/// The cumulative ack a group of batches asks for: the highest last seq of
/// its non-preview batches (0, which never raises an ack, if all are
/// previews).
pub fn ack_to(batches: &[v1::TelemetryBatch]) -> i64 {
    batches
        .iter()
        .filter(|b| !b.preview)
        .map(|b| b.last_seq as i64)
        .max()
        .unwrap_or(0)
}

/// One hour of one point: what `rollups_hourly` holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rollup {
    pub n: i64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub last_ts_ms: i64,
    pub last_seq: i64,
    pub last: f64,
}

impl Rollup {
    fn of(ts_ms: i64, seq: i64, v: f64) -> Rollup {
        Rollup {
            n: 1,
            min: v,
            max: v,
            sum: v,
            last_ts_ms: ts_ms,
            last_seq: seq,
            last: v,
        }
    }

    /// Both hours' readings together (the merge a database upsert does).
    pub fn merge(&mut self, o: &Rollup) {
        self.n += o.n;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum += o.sum;
        if (o.last_ts_ms, o.last_seq) >= (self.last_ts_ms, self.last_seq) {
            self.last_ts_ms = o.last_ts_ms;
            self.last_seq = o.last_seq;
            self.last = o.last;
        }
    }
}

/// The start of the hour that holds `ts_ms` (floor, also before 1970).
pub fn hour_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// The start of the UTC day that holds `ts_ms`.
pub fn day_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(DAY_MS) * DAY_MS
}

/// Rollups of newly stored readings, keyed by (point, hour).
#[derive(Debug, Default)]
pub struct Rollups(pub HashMap<(i64, i64), Rollup>);

impl Rollups {
    /// Adds a reading that was stored now (never one that was already
    /// there: a redelivery must not count twice). Readings without a value
    /// (bad) are not rolled up.
    pub fn add(&mut self, point: i64, ts_ms: i64, seq: i64, value: Option<f64>) {
        let Some(v) = value else { return };
        let r = Rollup::of(ts_ms, seq, v);
        self.0
            .entry((point, hour_of(ts_ms)))
            .and_modify(|e| e.merge(&r))
            .or_insert(r);
    }

    pub fn absorb(&mut self, other: Rollups) {
        for (k, r) in other.0 {
            self.0.entry(k).and_modify(|e| e.merge(&r)).or_insert(r);
        }
    }
}

/// The name of the PostgreSQL partition for the UTC day starting at
/// `day_ms`: `readings_pYYYYMMDD`.
pub fn partition_name(day_ms: i64) -> String {
    let (y, m, d) = civil_from_days(day_ms.div_euclid(DAY_MS));
    format!("readings_p{y:04}{m:02}{d:02}")
}

/// The UTC day that a partition name stands for (its start, ms), or None
/// for a name that is not a day partition.
pub fn partition_day(name: &str) -> Option<i64> {
    let digits = name.strip_prefix("readings_p")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i64 = digits[0..4].parse().ok()?;
    let m: u32 = digits[4..6].parse().ok()?;
    let d: u32 = digits[6..8].parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, m, d) * DAY_MS)
}

// Howard Hinnant's civil-calendar algorithms (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(seq: u64, asset: &str, ts: i64, q: v1::Quality) -> v1::Reading {
        v1::Reading {
            seq,
            asset_id: asset.into(),
            field: "volume".into(),
            value: seq as f64,
            quality: q as i32,
            source_ts_ms: ts,
            ..Default::default()
        }
    }

    #[test]
    fn rollups_count_min_max_sum_and_the_last_value_per_point_and_hour() {
        let mut r = Rollups::default();
        r.add(1, 10 * HOUR_MS + 5, 1, Some(4.0));
        r.add(1, 10 * HOUR_MS + 1, 2, Some(9.0)); // older, arrives later
        r.add(1, 10 * HOUR_MS + 7, 3, None); // bad: not rolled up
        r.add(1, 11 * HOUR_MS, 4, Some(1.0)); // next hour
        r.add(2, 10 * HOUR_MS, 5, Some(2.0)); // other point
        let h = r.0[&(1, 10 * HOUR_MS)];
        assert_eq!((h.n, h.min, h.max, h.sum), (2, 4.0, 9.0, 13.0));
        assert_eq!((h.last_ts_ms, h.last), (10 * HOUR_MS + 5, 4.0));
        assert_eq!(r.0[&(1, 11 * HOUR_MS)].n, 1);
        assert_eq!(r.0[&(2, 10 * HOUR_MS)].n, 1);
        assert_eq!(r.0.len(), 3);
    }

    #[test]
    fn merging_rollups_in_any_order_gives_the_same_hour() {
        let mut a = Rollups::default();
        let mut b = Rollups::default();
        a.add(1, 100, 1, Some(1.0));
        a.add(1, 300, 3, Some(3.0));
        b.add(1, 200, 2, Some(2.0));
        let mut ab = Rollups::default();
        ab.absorb(a);
        ab.absorb(b);
        let mut one = Rollups::default();
        for (ts, seq, v) in [(200, 2, 2.0), (300, 3, 3.0), (100, 1, 1.0)] {
            one.add(1, ts, seq, Some(v));
        }
        assert_eq!(ab.0, one.0);
        assert_eq!(one.0[&(1, 0)].last, 3.0);
    }

    #[test]
    fn hours_and_days_floor_also_before_1970() {
        assert_eq!(hour_of(HOUR_MS + 1), HOUR_MS);
        assert_eq!(hour_of(-1), -HOUR_MS);
        assert_eq!(day_of(-1), -DAY_MS);
        assert_eq!(day_of(DAY_MS * 3 + 5), DAY_MS * 3);
    }

    #[test]
    fn partition_names_round_trip_through_the_calendar() {
        // 2026-11-23T00:00:00Z
        let day = 1_795_392_000_000;
        assert_eq!(partition_name(day), "readings_p20261123");
        assert_eq!(partition_day("readings_p20261123"), Some(day));
        assert_eq!(partition_name(0), "readings_p19700101");
        assert_eq!(partition_name(day_of(-1)), "readings_p19691231");
        for d in (-800..40_000).step_by(37) {
            let ms = d * DAY_MS;
            assert_eq!(partition_day(&partition_name(ms)), Some(ms), "day {d}");
        }
        for bad in [
            "readings_default",
            "readings_p2026112",
            "readings_p20261340",
            "x",
        ] {
            assert_eq!(partition_day(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_newest_reading_per_field_wins_by_source_time_then_seq() {
        let b = v1::TelemetryBatch {
            readings: vec![
                reading(1, "t1", 50, v1::Quality::Good),
                reading(2, "t1", 40, v1::Quality::Good),
                reading(3, "t2", 10, v1::Quality::Bad),
                reading(4, "t2", 10, v1::Quality::Good),
            ],
            ..Default::default()
        };
        let n = newest_per_field(std::slice::from_ref(&b));
        assert_eq!(n.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 4]);
    }

    #[test]
    fn previews_never_raise_the_ack() {
        let b = |last, preview| v1::TelemetryBatch {
            last_seq: last,
            preview,
            ..Default::default()
        };
        assert_eq!(ack_to(&[b(5, false), b(9, true)]), 5);
        assert_eq!(ack_to(&[b(9, true)]), 0);
    }

    #[test]
    fn a_bad_reading_stores_no_value() {
        assert_eq!(stored_value(&reading(1, "t", 0, v1::Quality::Bad)), None);
        assert_eq!(
            stored_value(&reading(1, "t", 0, v1::Quality::Unspecified)),
            None
        );
        assert_eq!(
            stored_value(&reading(7, "t", 0, v1::Quality::Uncertain)),
            Some(7.0)
        );
    }
}
