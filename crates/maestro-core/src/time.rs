//! Wall-clock timestamps in RFC 3339 UTC.

/// The current time as RFC 3339 UTC with microseconds, e.g. `2026-11-24T04:41:06.123456Z`.
pub fn now_rfc3339() -> String {
    format!("{:.6}", jiff::Timestamp::now())
}
