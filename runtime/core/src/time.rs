//! Timestamps as StackStorm writes them: RFC 3339, UTC, microseconds.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now, formatted like `2026-11-21T23:55:00.123456Z`.
pub fn now_rfc3339() -> String {
    format_rfc3339(OffsetDateTime::now_utc())
}

/// Format a UTC instant like `2026-11-21T23:55:00.123456Z`.
pub fn format_rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let micros = t.microsecond();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        micros
    )
}

/// The instant `after` from now, formatted like [`now_rfc3339`].
pub fn rfc3339_in(after: std::time::Duration) -> String {
    let then = time::Duration::try_from(after)
        .ok()
        .and_then(|d| OffsetDateTime::now_utc().checked_add(d))
        .unwrap_or_else(OffsetDateTime::now_utc);
    format_rfc3339(then)
}

/// The instant `ago` before now, formatted like [`now_rfc3339`].
/// Saturates at the Unix epoch.
pub fn rfc3339_ago(ago: std::time::Duration) -> String {
    let then = time::Duration::try_from(ago)
        .ok()
        .and_then(|ago| OffsetDateTime::now_utc().checked_sub(ago))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .max(OffsetDateTime::UNIX_EPOCH);
    format_rfc3339(then)
}

/// Parse any RFC 3339 timestamp.
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// A Unix time in seconds, formatted like [`now_rfc3339`]. Saturates at
/// the largest time `time` can hold.
pub fn rfc3339_of_unix(secs: u64) -> String {
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc());
    format_rfc3339(t)
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_microseconds_and_parses_back() {
        let s = now_rfc3339();
        assert_eq!(s.len(), "2026-11-21T23:55:00.123456Z".len());
        assert!(parse_rfc3339(&s).is_some());
    }
}
