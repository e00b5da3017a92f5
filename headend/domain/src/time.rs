//! Times as the API takes them: RFC 3339 or Unix milliseconds.

/// Latest time RFC 3339 can write (9999-12-31T23:59:59.999Z), Unix ms.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// RFC 3339 with its offset (`2026-11-22T10:00:00Z`,
/// `2026-11-22T11:00:00+01:00`) or Unix milliseconds, as Unix ms. A time
/// without an offset is refused, never guessed to be UTC (issue 27: a
/// local time read as UTC put an ETA an hour off, silently).
pub fn parse(v: &str) -> Option<i64> {
    if let Ok(ms) = v.parse::<i64>() {
        return Some(ms);
    }
    let t: jiff::Timestamp = v.trim().parse().ok()?;
    Some(t.as_millisecond())
}

/// What to tell a client that gave a time we cannot read.
pub const HOW: &str = "use RFC 3339 with its offset (2026-11-22T10:00:00Z or 2026-11-22T11:00:00+01:00) or Unix milliseconds";

/// A stored time as RFC 3339, or `None` when it is not a time we can
/// write (0, negative, or past year 9999).
pub fn rfc3339(ms: i64) -> Option<String> {
    if !(1..=MAX_TIME_MS).contains(&ms) {
        return None;
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
    Some(humantime::format_rfc3339_millis(t).to_string())
}

/// A point in time: Unix milliseconds, UTC. What SQL stores (`BIGINT`)
/// and what the API prints as RFC 3339 (`*_at`) beside the number
/// (`*_ms`). A type of its own so that a time cannot be added to a
/// duration by mistake or passed where a count is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixMs(i64);

impl UnixMs {
    pub const fn from_ms(ms: i64) -> UnixMs {
        UnixMs(ms)
    }

    pub const fn ms(self) -> i64 {
        self.0
    }

    /// RFC 3339 with its offset, or Unix ms ([`parse`]).
    pub fn parse(v: &str) -> Option<UnixMs> {
        parse(v).map(UnixMs)
    }

    /// As RFC 3339, when it is a time RFC 3339 can write ([`rfc3339`]).
    pub fn rfc3339(self) -> Option<String> {
        rfc3339(self.0)
    }

    /// `ms` later (earlier when negative), saturating.
    pub fn plus_ms(self, ms: i64) -> UnixMs {
        UnixMs(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to this time (negative when `earlier` is later).
    pub fn since(self, earlier: UnixMs) -> i64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// Stored and wire times are Unix ms; this names the conversion.
impl From<i64> for UnixMs {
    fn from(ms: i64) -> UnixMs {
        UnixMs(ms)
    }
}

impl std::fmt::Display for UnixMs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.rfc3339() {
            Some(t) => f.write_str(&t),
            None => write!(f, "{} ms", self.0),
        }
    }
}

impl serde::Serialize for UnixMs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.0)
    }
}

/// Read as it is written: an integer of Unix ms (a stored JSON payload).
impl<'de> serde::Deserialize<'de> for UnixMs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        i64::deserialize(d).map(UnixMs)
    }
}

impl sqlx::Type<sqlx::Any> for UnixMs {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <i64 as sqlx::Type<sqlx::Any>>::type_info()
    }
}

impl<'q> sqlx::Encode<'q, sqlx::Any> for UnixMs {
    fn encode_by_ref(
        &self,
        buf: &mut <sqlx::Any as sqlx::Database>::ArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <i64 as sqlx::Encode<'q, sqlx::Any>>::encode(self.0, buf)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Any> for UnixMs {
    fn decode(
        v: <sqlx::Any as sqlx::Database>::ValueRef<'r>,
    ) -> Result<Self, sqlx::error::BoxDynError> {
        Ok(UnixMs(<i64 as sqlx::Decode<'r, sqlx::Any>>::decode(v)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_from_rfc3339_or_ms_and_only_writable_ones_print() {
        assert_eq!(parse("1000"), Some(1000));
        assert_eq!(parse("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse("yesterday"), None);
        // offsets are honoured; a time without one is refused, not taken as UTC
        let utc = parse("2026-12-05T07:00:00Z").unwrap();
        assert_eq!(parse("2026-12-05T08:00:00+01:00"), Some(utc));
        assert_eq!(parse("2026-12-05T02:00:00-05:00"), Some(utc));
        assert_eq!(parse("2026-12-05T07:00:00.000Z"), Some(utc));
        assert_eq!(parse("2026-12-05T08:00:00"), None);
        assert_eq!(parse("2026-12-05"), None);
        assert_eq!(rfc3339(1000).as_deref(), Some("1970-01-01T00:00:01.000Z"));
        assert_eq!(rfc3339(0), None);
        assert_eq!(rfc3339(MAX_TIME_MS + 1), None);
        assert!(rfc3339(MAX_TIME_MS).is_some());
    }

    #[test]
    fn a_timestamp_prints_as_rfc3339_counts_in_ms_and_saturates() {
        let t = UnixMs::parse("2026-12-05T07:00:00Z").unwrap();
        assert_eq!(t.to_string(), "2026-12-05T07:00:00.000Z");
        assert_eq!(t.plus_ms(1500).since(t), 1500);
        assert_eq!(UnixMs::from_ms(i64::MAX).plus_ms(1).ms(), i64::MAX);
        assert_eq!(UnixMs::from_ms(0).to_string(), "0 ms");
        assert!(UnixMs::from_ms(1) < UnixMs::from_ms(2));
    }
}
