//! The wall clock, read in one place: Unix milliseconds, the unit of every recorded time
//! (attestations' `seen_at`, decisions' `decided_at`, events' `at`).

/// Current time in Unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
