//! The wall clock, read in one place (the pure rules take the time as
//! input; see `domain`).

/// Milliseconds since the Unix epoch (0 before it: a clock that far off
/// is refused by the checks that use the time).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// [`now_ms`] as a point in time.
pub fn now() -> crate::domain::UnixMs {
    crate::domain::UnixMs::from_ms(now_ms())
}
