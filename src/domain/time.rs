//! How timestamps go on the wire: RFC 3339 in UTC (`Z`), with the sub-second digits they have.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serializer;

/// The same text as chrono's own `Serialize`, formatted once into a string. chrono's impl
/// goes through `collect_str`, which serde_json escapes one character at a time: on a page
/// of 20 items (40 timestamps) that was more than half of the request's instructions.
pub fn rfc3339<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde::Serialize;

    use super::*;

    #[derive(Serialize)]
    struct Wire(#[serde(serialize_with = "rfc3339")] DateTime<Utc>);

    #[test]
    fn writes_exactly_what_chrono_writes_at_every_precision() {
        let second = Utc.with_ymd_and_hms(2026, 12, 1, 20, 25, 31).unwrap();
        for nanos in [0, 120_000_000, 123_456_000, 123_456_789, 5] {
            let at = second + chrono::Duration::nanoseconds(nanos);
            let ours = serde_json::to_string(&Wire(at)).unwrap();
            assert_eq!(ours, serde_json::to_string(&at).unwrap());
            assert!(ours.starts_with("\"2026-12-01T20:25:31") && ours.ends_with("Z\""));
        }
    }
}
