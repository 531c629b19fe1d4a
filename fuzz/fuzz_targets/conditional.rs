//! `If-Match` / `If-None-Match` with arbitrary header bytes. The bytes before the first NUL
//! are the current ETag, the rest the header value (used when `HeaderValue` accepts it).
#![no_main]

use axum::http::header::{IF_MATCH, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use larder::http::conditional::{has_if_match, if_match_allows, if_none_match_hits};
use libfuzzer_sys::fuzz_target;

fn with(name: HeaderName, value: HeaderValue) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(name, value);
    headers
}

fuzz_target!(|data: &[u8]| {
    let (current, raw) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&b"\"1-1\""[..], data),
    };
    let current = String::from_utf8_lossy(current);
    let current = current.as_ref();

    assert!(if_match_allows(&HeaderMap::new(), current), "no If-Match must allow");
    assert!(!if_none_match_hits(&HeaderMap::new(), current), "no If-None-Match must miss");
    assert!(!has_if_match(&HeaderMap::new()));

    if let Ok(value) = HeaderValue::from_bytes(raw) {
        let allows = if_match_allows(&with(IF_MATCH, value.clone()), current);
        let hits = if_none_match_hits(&with(IF_NONE_MATCH, value.clone()), current);
        assert!(has_if_match(&with(IF_MATCH, value.clone())));
        // Strong comparison implies weak comparison.
        assert!(!allows || hits, "If-Match allowed but If-None-Match missed: {value:?}");
        if value.to_str().is_ok_and(|text| text.trim() == "*") {
            assert!(allows && hits, "`*` must match any current representation");
        }
    }

    // The current tag itself, alone or in a list, is a strong match; its weak form only a
    // weak one.
    // (ETags larder makes are visible ASCII; a non-ASCII header value reads as no match.)
    let plain = !current.is_empty()
        && current.bytes().all(|b| (0x20..0x7f).contains(&b))
        && current == current.trim()
        && !current.contains(',')
        && !current.starts_with("W/")
        && current != "*";
    if plain {
        for listed in [current.to_string(), format!("\"x\", {current}"), format!("{current} ,W/\"y\"")] {
            if let Ok(value) = HeaderValue::from_str(&listed) {
                assert!(if_match_allows(&with(IF_MATCH, value.clone()), current), "{listed:?}");
                assert!(if_none_match_hits(&with(IF_NONE_MATCH, value), current), "{listed:?}");
            }
        }
        if let Ok(value) = HeaderValue::from_str(&format!("W/{current}")) {
            assert!(!if_match_allows(&with(IF_MATCH, value.clone()), current), "weak tag matched strongly");
            assert!(if_none_match_hits(&with(IF_NONE_MATCH, value), current));
        }
    }
});
