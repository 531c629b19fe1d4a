//! 406 Not Acceptable (RFC 9110 §12.5.1, §15.5.7): the media types each route answers with,
//! read from the OpenAPI document, so what a route is documented to send and what its
//! `Accept` check admits are one list.

use std::collections::BTreeSet;
use std::str::FromStr;

use axum::http::{HeaderMap, StatusCode, header};
use headers_accept::Accept;
use mediatype::{MediaType, MediaTypeBuf};
use serde_json::Value;

use super::error::{ApiError, PROBLEM_JSON};

/// What every route may answer with: JSON, and problem documents for its errors.
const ALWAYS: [&str; 2] = ["application/json", PROBLEM_JSON];

/// Per route template, the media types its operations are documented to answer with.
#[derive(Debug, Clone)]
pub struct Produces {
    matcher: matchit::Router<Vec<MediaTypeBuf>>,
}

impl Produces {
    /// The media types of every response of every operation of each path in `document`
    /// (an OpenAPI document as JSON; shared responses are followed through their `$ref`).
    /// Paths the document does not describe (the docs pages, test routes) are not checked.
    pub fn from_openapi(document: &Value) -> Self {
        let mut matcher = matchit::Router::new();
        let Some(paths) = document["paths"].as_object() else {
            return Produces { matcher };
        };
        for (template, item) in paths {
            let mut types: BTreeSet<String> = ALWAYS.iter().map(|t| (*t).to_owned()).collect();
            let operations = item.as_object().into_iter().flat_map(|ops| ops.values());
            for response in operations.filter_map(|op| op["responses"].as_object()) {
                for answer in response.values() {
                    let answer = resolve(document, answer);
                    if let Some(content) = answer["content"].as_object() {
                        types.extend(content.keys().cloned());
                    }
                }
            }
            // Parameters (`text/plain; version=0.0.4`) play no part in matching `Accept`.
            let parsed = types
                .iter()
                .filter_map(|name| name.split(';').next())
                .filter_map(|essence| MediaTypeBuf::from_str(essence.trim()).ok())
                .collect();
            let _ = matcher.insert(template.as_str(), parsed);
        }
        Produces { matcher }
    }

    /// The 406 for a request to `path` whose `Accept` admits none of the types the route
    /// answers with; `None` when it admits one, when `Accept` is absent or unreadable
    /// (treated as absent, RFC 9110 §12.5.1), or when no documented route has the path.
    pub fn refusal(&self, path: &str, headers: &HeaderMap) -> Option<ApiError> {
        let found = self.matcher.at(path).ok()?;
        let value = accept_value(headers)?;
        if value.trim().is_empty() {
            // An empty `Accept` names no preference: treated as absent.
            return None;
        }
        let accept = Accept::from_str(&value).ok()?;
        let available: Vec<MediaType<'_>> = found.value.iter().map(|t| t.to_ref()).collect();
        if accept.negotiate(available.iter()).is_some() {
            return None;
        }
        let names: Vec<String> = found.value.iter().map(ToString::to_string).collect();
        Some(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            format!(
                "None of the media types in Accept can be sent; available: {}",
                names.join(", ")
            ),
        ))
    }
}

/// A response object, or the shared one its `$ref` names.
fn resolve<'a>(document: &'a Value, answer: &'a Value) -> &'a Value {
    match answer["$ref"].as_str() {
        Some(reference) => reference
            .strip_prefix("#/")
            .map(|pointer| format!("/{pointer}"))
            .and_then(|pointer| document.pointer(&pointer))
            .unwrap_or(answer),
        None => answer,
    }
}

/// Every `Accept` line as one list (RFC 9110 §5.3).
fn accept_value(headers: &HeaderMap) -> Option<String> {
    let mut lines = headers.get_all(header::ACCEPT).iter();
    let first = lines.next()?.to_str().ok()?.to_owned();
    lines.try_fold(first, |mut all, line| {
        all.push_str(", ");
        all.push_str(line.to_str().ok()?);
        Some(all)
    })
}

/// Whether an `Accept` value admits JSON at a glance (the values clients send most), so
/// the common request skips parsing it.
pub fn plainly_admits_json(value: &[u8]) -> bool {
    matches!(
        value,
        b"*/*" | b"application/json" | b"application/problem+json" | b"application/json, */*"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde_json::json;

    fn produces() -> Produces {
        Produces::from_openapi(&json!({
            "paths": {
                "/items/{item_id}": {"get": {"responses": {
                    "200": {"content": {"application/json": {}}},
                    "404": {"$ref": "#/components/responses/NotFound"},
                }}},
                "/metrics": {"get": {"responses": {
                    "200": {"content": {"text/plain; version=0.0.4": {}}},
                }}},
            },
            "components": {"responses": {
                "NotFound": {"content": {"application/problem+json": {}}},
            }},
        }))
    }

    fn accept(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn json_wildcards_and_problem_documents_are_admitted() {
        let produces = produces();
        for value in [
            "application/json",
            "*/*",
            "application/*",
            "application/problem+json",
            "text/html, application/json;q=0.1",
        ] {
            assert!(
                produces.refusal("/items/1", &accept(value)).is_none(),
                "{value}"
            );
        }
        assert!(produces.refusal("/items/1", &HeaderMap::new()).is_none());
    }

    #[test]
    fn an_accept_that_admits_nothing_the_route_sends_is_refused() {
        let produces = produces();
        for value in [
            "text/html",
            "application/xml",
            "application/json;q=0",
            "image/*",
        ] {
            let refusal = produces.refusal("/items/1", &accept(value));
            assert!(refusal.is_some(), "{value}");
        }
    }

    #[test]
    fn a_route_s_other_documented_types_count() {
        let produces = produces();
        assert!(
            produces
                .refusal("/metrics", &accept("text/plain"))
                .is_none()
        );
        assert!(
            produces
                .refusal("/items/1", &accept("text/plain"))
                .is_some()
        );
    }

    #[test]
    fn undocumented_paths_and_unreadable_values_are_not_checked() {
        let produces = produces();
        assert!(
            produces
                .refusal("/docs/index.html", &accept("text/html"))
                .is_none()
        );
        assert!(produces.refusal("/items/1", &accept("nonsense")).is_none());
        assert!(produces.refusal("/items/1", &accept("")).is_none());
    }

    #[test]
    fn the_common_values_are_seen_at_a_glance() {
        assert!(plainly_admits_json(b"*/*"));
        assert!(plainly_admits_json(b"application/json"));
        assert!(!plainly_admits_json(b"text/html"));
    }
}
