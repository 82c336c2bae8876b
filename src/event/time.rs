//! The timestamps an event may carry, and the one its entry id implies.

use jiff::Timestamp;

use super::Malformed;

/// RFC 3339 (`2024-05-01T12:00:00Z`, any offset), a date-time without offset (read as UTC),
/// or a Unix epoch number written as text.
pub(super) fn parse_timestamp(value: &str) -> Result<Timestamp, Malformed> {
    let v = value.trim();
    let invalid = || Malformed::InvalidTimestamp { value: value.chars().take(64).collect() };
    if let Ok(t) = v.parse::<Timestamp>() {
        return Ok(t);
    }
    if let Ok(dt) = v.parse::<jiff::civil::DateTime>() {
        return dt.to_zoned(jiff::tz::TimeZone::UTC).map(|z| z.timestamp()).map_err(|_| invalid());
    }
    v.parse::<f64>().ok().and_then(epoch_timestamp).ok_or_else(invalid)
}

/// Epoch seconds, or milliseconds when the number is too large to be seconds (after year 5138).
pub(super) fn epoch_timestamp(n: f64) -> Option<Timestamp> {
    if !n.is_finite() {
        return None;
    }
    let millis = if n.abs() < 1e11 { n * 1000.0 } else { n };
    if millis.abs() > 1e15 {
        return None;
    }
    Timestamp::from_millisecond(millis.round() as i64).ok()
}

/// The time encoded in a stream entry ID (`<ms>-<seq>`): when Redis received the entry.
pub(crate) fn entry_timestamp(entry_id: &str) -> Option<Timestamp> {
    let ms: i64 = entry_id.split('-').next()?.parse().ok()?;
    Timestamp::from_millisecond(ms).ok()
}
