//! ISO 8601 timestamps for the meta API and event history (the `time`
//! crate's calendar), and the parsing of the HTTP bridge's signed
//! requests' timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// The current UTC time as `2026-11-23T18:14:12.469Z`.
pub fn now_iso8601() -> String {
    iso8601(SystemTime::now())
}

/// `t` in UTC as `2026-11-23T18:14:12.469Z` (the epoch for earlier times).
pub fn iso8601(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format_unix_millis(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Format milliseconds since the Unix epoch as ISO 8601 UTC, with
/// milliseconds (a time past the year 9999 reads as the epoch).
pub fn format_unix_millis(ms: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    at.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_default()
}

/// An RFC 3339 UTC timestamp (`2011-10-14T16:59:51.123Z`, fraction
/// optional) as Unix seconds; `None` for anything else.
pub fn parse_utc(ts: &str) -> Option<f64> {
    // Strictly `T` and `Z`, as the bridge's clients send it (RFC 3339
    // would also take a space and offsets).
    if !ts.ends_with('Z') || ts.as_bytes().get(10) != Some(&b'T') {
        return None;
    }
    let at = OffsetDateTime::parse(ts, &Rfc3339).ok()?;
    Some(at.unix_timestamp_nanos() as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(format_unix_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_unix_millis(951_782_400_123),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            format_unix_millis(1_795_457_652_469),
            "2026-11-23T18:14:12.469Z"
        );
        assert_eq!(format_unix_millis(-5), "1969-12-31T23:59:59.995Z");
    }

    #[test]
    fn timestamps_with_and_without_fractions() {
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_utc("2011-10-14T16:59:51Z"), Some(1_318_611_591.0));
        assert_eq!(parse_utc("2011-10-14T16:59:51.5Z"), Some(1_318_611_591.5));
        assert_eq!(parse_utc("2011-10-14 16:59:51Z"), None);
        assert_eq!(parse_utc("2011-13-14T16:59:51Z"), None);
        assert_eq!(parse_utc("2011-10-14T16:59:51"), None);
    }
}
