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
}
