//! `Prefer: return=minimal` (RFC 7240 §4.2): a write answered without the representation.

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;

pub const PREFER: HeaderName = HeaderName::from_static("prefer");
pub const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

/// Whether the request asks for `return=minimal`.
#[derive(Debug, Clone, Copy)]
pub struct PreferMinimal(pub bool);

impl<S: Sync> FromRequestParts<S> for PreferMinimal {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PreferMinimal(prefers_minimal(&parts.headers)))
    }
}

/// Each preference is `token [= value] *(; parameter)`, the list comma-separated over any
/// number of lines; names are case-insensitive. An unknown preference is ignored.
fn prefers_minimal(headers: &HeaderMap) -> bool {
    headers
        .get_all(PREFER)
        .iter()
        .filter_map(|line| line.to_str().ok())
        .flat_map(|line| line.split(','))
        .filter_map(|preference| preference.split(';').next())
        .filter_map(|preference| preference.split_once('='))
        .any(|(name, value)| {
            name.trim().eq_ignore_ascii_case("return")
                && value
                    .trim()
                    .trim_matches('"')
                    .eq_ignore_ascii_case("minimal")
        })
}

/// A successful answer without its body: 200 becomes 204, a 201 stays 201 (with its
/// `Location`); the validators (`ETag`, `Last-Modified`) stay. Other answers pass unchanged.
pub fn minimal(preference: PreferMinimal, response: Response) -> Response {
    if !preference.0 || !response.status().is_success() {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    if parts.status == StatusCode::OK {
        parts.status = StatusCode::NO_CONTENT;
    }
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        PREFERENCE_APPLIED,
        HeaderValue::from_static("return=minimal"),
    );
    Response::from_parts(parts, Body::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefer(lines: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(PREFER, HeaderValue::from_static(line));
        }
        headers
    }

    #[test]
    fn return_minimal_is_found_in_any_spelling() {
        assert!(prefers_minimal(&prefer(&["return=minimal"])));
        assert!(prefers_minimal(&prefer(&["Return = \"minimal\""])));
        assert!(prefers_minimal(&prefer(&[
            "respond-async, return=minimal; x=1"
        ])));
        assert!(prefers_minimal(&prefer(&["wait=5", "return=minimal"])));
    }

    #[test]
    fn other_preferences_are_not_minimal() {
        assert!(!prefers_minimal(&HeaderMap::new()));
        assert!(!prefers_minimal(&prefer(&["return=representation"])));
        assert!(!prefers_minimal(&prefer(&["minimal"])));
        assert!(!prefers_minimal(&prefer(&[
            "handling=lenient; return=minimal"
        ])));
    }

    #[test]
    fn a_minimal_answer_keeps_the_status_class_and_the_validators() {
        let mut ok = Response::new(Body::from("{}"));
        ok.headers_mut()
            .insert(header::ETAG, HeaderValue::from_static("\"1-1\""));
        ok.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let answer = minimal(PreferMinimal(true), ok);
        assert_eq!(answer.status(), StatusCode::NO_CONTENT);
        assert_eq!(answer.headers()[header::ETAG], "\"1-1\"");
        assert_eq!(answer.headers()[PREFERENCE_APPLIED], "return=minimal");
        assert!(!answer.headers().contains_key(header::CONTENT_TYPE));

        let mut created = Response::new(Body::from("{}"));
        *created.status_mut() = StatusCode::CREATED;
        assert_eq!(
            minimal(PreferMinimal(true), created).status(),
            StatusCode::CREATED
        );

        let mut refused = Response::new(Body::from("{}"));
        *refused.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        let answer = minimal(PreferMinimal(true), refused);
        assert!(!answer.headers().contains_key(PREFERENCE_APPLIED));
    }
}
