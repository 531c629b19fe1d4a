//! Conditional requests (RFC 9110 §13): `If-Match` with strong comparison, `If-None-Match`
//! with weak comparison.

use axum::http::HeaderMap;
use axum::http::header::{IF_MATCH, IF_NONE_MATCH};

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
pub fn if_match_allows(headers: &HeaderMap, current: &str) -> bool {
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
