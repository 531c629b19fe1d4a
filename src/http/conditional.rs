//! Conditional requests (RFC 9110 §13): `If-Match` with strong comparison, `If-None-Match`
//! with weak comparison, `If-Unmodified-Since` and `If-Modified-Since` against
//! `Last-Modified`, evaluated in the order of RFC 9110 §13.2.2.

use std::time::{Duration, SystemTime};

use axum::http::header::{
    IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_UNMODIFIED_SINCE, LAST_MODIFIED,
};
use axum::http::{HeaderMap, HeaderValue};
use chrono::{DateTime, Utc};

/// What the preconditions of a request say about the current representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Go on with the request.
    Holds,
    /// A `GET`/`HEAD` whose client copy is current: 304.
    NotModified,
    /// 412.
    Failed,
}

/// The validators of the current representation.
#[derive(Debug, Clone, Copy)]
pub struct Validators<'a> {
    /// The strong entity tag, with its quotes.
    pub etag: &'a str,
    pub last_modified: DateTime<Utc>,
}

/// RFC 9110 §13.2.2: `If-Match`, else `If-Unmodified-Since`; then `If-None-Match`, else (on
/// a read) `If-Modified-Since`. An HTTP-date that cannot be read is ignored.
pub fn evaluate(headers: &HeaderMap, read: bool, current: Validators<'_>) -> Precondition {
    let modified = whole_seconds(current.last_modified);
    if headers.contains_key(IF_MATCH) {
        if !if_match_allows(headers, current.etag) {
            return Precondition::Failed;
        }
    } else if date(headers, &IF_UNMODIFIED_SINCE).is_some_and(|since| modified > since) {
        return Precondition::Failed;
    }
    if headers.contains_key(IF_NONE_MATCH) {
        if if_none_match_hits(headers, current.etag) {
            return if read {
                Precondition::NotModified
            } else {
                Precondition::Failed
            };
        }
    } else if read && date(headers, &IF_MODIFIED_SINCE).is_some_and(|since| modified <= since) {
        return Precondition::NotModified;
    }
    Precondition::Holds
}

/// `Last-Modified` for a representation changed at `at` (HTTP-dates have whole seconds).
pub fn last_modified(at: DateTime<Utc>) -> (axum::http::HeaderName, HeaderValue) {
    let date = httpdate::fmt_http_date(whole_seconds(at));
    (
        LAST_MODIFIED,
        HeaderValue::from_str(&date).expect("an HTTP-date is header text"),
    )
}

fn whole_seconds(at: DateTime<Utc>) -> SystemTime {
    let seconds = u64::try_from(at.timestamp()).unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}

/// The date a header gives, if it is sent once and is a valid HTTP-date.
fn date(headers: &HeaderMap, name: &axum::http::HeaderName) -> Option<SystemTime> {
    let mut lines = headers.get_all(name).iter();
    let value = lines.next()?;
    if lines.next().is_some() {
        return None;
    }
    httpdate::parse_http_date(value.to_str().ok()?).ok()
}

/// The entity tags a header lists: `None` for `*`, else the tags with their quotes.
fn tags(value: &str) -> Option<Vec<(bool, &str)>> {
    if value.trim() == "*" {
        return None;
    }
    Some(
        value
            .split(',')
            .map(str::trim)
            .filter(|tag| !tag.is_empty())
            .map(|tag| match tag.strip_prefix("W/") {
                Some(opaque) => (true, opaque),
                None => (false, tag),
            })
            .collect(),
    )
}

/// Every line of the header as one list (RFC 9110 §5.3); `None` when it was not sent.
fn header(headers: &HeaderMap, name: &axum::http::HeaderName) -> Option<String> {
    let lines: Vec<&str> = headers
        .get_all(name)
        .iter()
        // An unreadable value matches nothing, which is the safe answer for both headers.
        .map(|v| v.to_str().unwrap_or("\"\u{0}\""))
        .collect();
    (!lines.is_empty()).then(|| lines.join(","))
}

/// Whether `If-Match` was sent at all.
pub fn has_if_match(headers: &HeaderMap) -> bool {
    headers.contains_key(IF_MATCH)
}

/// `If-Match` allows the write: absent, `*`, or one of its strong tags equals `current`.
fn if_match_allows(headers: &HeaderMap, current: &str) -> bool {
    match header(headers, &IF_MATCH) {
        None => true,
        Some(value) => match tags(&value) {
            None => true,
            Some(tags) => tags.iter().any(|&(weak, tag)| !weak && tag == current),
        },
    }
}

/// `If-None-Match` matches the current representation, so a GET answers 304.
pub fn if_none_match_hits(headers: &HeaderMap, current: &str) -> bool {
    match header(headers, &IF_NONE_MATCH) {
        None => false,
        Some(value) => match tags(&value) {
            None => true,
            Some(tags) => tags.iter().any(|&(_, tag)| tag == current),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(name: axum::http::HeaderName, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn if_match_is_strong() {
        assert!(if_match_allows(&HeaderMap::new(), "\"1-1\""));
        assert!(if_match_allows(&with(IF_MATCH, "*"), "\"1-1\""));
        assert!(if_match_allows(
            &with(IF_MATCH, "\"0-9\", \"1-1\""),
            "\"1-1\""
        ));
        assert!(!if_match_allows(&with(IF_MATCH, "W/\"1-1\""), "\"1-1\""));
        assert!(!if_match_allows(&with(IF_MATCH, "\"1-2\""), "\"1-1\""));
    }

    #[test]
    fn several_header_lines_are_one_list() {
        let mut headers = with(IF_MATCH, "\"0-9\"");
        headers.append(IF_MATCH, HeaderValue::from_static("\"1-1\""));
        assert!(if_match_allows(&headers, "\"1-1\""));
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 500_000_000).unwrap()
    }

    const CHANGED: i64 = 1_700_000_000;

    fn current() -> Validators<'static> {
        Validators {
            etag: "\"1-2\"",
            last_modified: at(CHANGED),
        }
    }

    fn dated(name: axum::http::HeaderName, seconds: i64) -> HeaderMap {
        let date =
            httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds as u64));
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(&date).unwrap());
        headers
    }

    #[test]
    fn if_unmodified_since_fails_only_after_a_later_change() {
        let current = current();
        let before = dated(IF_UNMODIFIED_SINCE, CHANGED - 1);
        assert_eq!(evaluate(&before, false, current), Precondition::Failed);
        // The same second counts as unmodified: HTTP-dates have no fractions.
        let same = dated(IF_UNMODIFIED_SINCE, CHANGED);
        assert_eq!(evaluate(&same, false, current), Precondition::Holds);
        let garbage = with(IF_UNMODIFIED_SINCE, "yesterday");
        assert_eq!(evaluate(&garbage, false, current), Precondition::Holds);
    }

    #[test]
    fn if_match_takes_precedence_over_if_unmodified_since() {
        let mut headers = dated(IF_UNMODIFIED_SINCE, CHANGED - 100);
        headers.insert(IF_MATCH, HeaderValue::from_static("\"1-2\""));
        assert_eq!(evaluate(&headers, false, current()), Precondition::Holds);
    }

    #[test]
    fn if_modified_since_answers_not_modified_on_reads_only() {
        let current = current();
        let later = dated(IF_MODIFIED_SINCE, CHANGED);
        assert_eq!(evaluate(&later, true, current), Precondition::NotModified);
        assert_eq!(evaluate(&later, false, current), Precondition::Holds);
        let earlier = dated(IF_MODIFIED_SINCE, CHANGED - 1);
        assert_eq!(evaluate(&earlier, true, current), Precondition::Holds);
    }

    #[test]
    fn if_none_match_takes_precedence_over_if_modified_since() {
        let mut headers = dated(IF_MODIFIED_SINCE, CHANGED + 100);
        headers.insert(IF_NONE_MATCH, HeaderValue::from_static("\"0-0\""));
        assert_eq!(evaluate(&headers, true, current()), Precondition::Holds);
        headers.insert(IF_NONE_MATCH, HeaderValue::from_static("W/\"1-2\""));
        assert_eq!(
            evaluate(&headers, true, current()),
            Precondition::NotModified
        );
        assert_eq!(evaluate(&headers, false, current()), Precondition::Failed);
    }

    #[test]
    fn last_modified_is_an_http_date_in_whole_seconds() {
        let (name, value) = last_modified(at(0));
        assert_eq!(name, LAST_MODIFIED);
        assert_eq!(value, "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn if_none_match_is_weak() {
        assert!(!if_none_match_hits(&HeaderMap::new(), "\"1-1\""));
        assert!(if_none_match_hits(
            &with(IF_NONE_MATCH, "W/\"1-1\""),
            "\"1-1\""
        ));
        assert!(if_none_match_hits(&with(IF_NONE_MATCH, "*"), "\"1-1\""));
        assert!(!if_none_match_hits(
            &with(IF_NONE_MATCH, "\"1-2\""),
            "\"1-1\""
        ));
    }
}
