//! Extractors whose rejection is always an [`ApiError`], so every failure speaks problem+json:
//! bodies (media type, size, syntax, shape), path parameters, query strings and headers.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::Value;
use uuid::Uuid;

use super::error::{ApiError, FieldError};
use crate::http::state::AppState;

/// The media types a JSON body may be sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
}

/// The body's media type, if it is one larder reads; no `Content-Type` is read as JSON.
fn body_kind(headers: &HeaderMap) -> Option<BodyKind> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Some(BodyKind::Json);
    };
    let value = value.to_str().ok()?;
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Some(BodyKind::Json)
    } else if essence == "application/x-www-form-urlencoded" {
        Some(BodyKind::Form)
    } else {
        None
    }
}

/// Whether a body is sent as JSON (no `Content-Type` counts as JSON), for handlers that
/// read their body themselves.
pub fn is_json_body(headers: &HeaderMap) -> bool {
    body_kind(headers) == Some(BodyKind::Json)
}

/// The largest body the body extractors read (`LARDER_MAX_BODY`). Read from the state
/// rather than set per request by `DefaultBodyLimit`, whose request extension costs every
/// request, bodiless ones too.
pub trait BodyLimit {
    fn body_limit(&self) -> u64;
}

impl BodyLimit for AppState {
    fn body_limit(&self) -> u64 {
        self.settings.max_body
    }
}

/// Reads the whole body within `limit` bytes: 413 past it (at once when `Content-Length`
/// says so), without buffering the rest.
pub async fn read_limited(request: Request, limit: u64) -> Result<Bytes, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(ApiError::payload_too_large());
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|error| {
            let inner = error.into_inner();
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(inner.as_ref());
            while let Some(error) = source {
                if error.is::<http_body_util::LengthLimitError>() {
                    return ApiError::payload_too_large();
                }
                source = error.source();
            }
            ApiError::new(StatusCode::BAD_REQUEST, "Could not read the request body")
        })
}

pub fn missing_body() -> ApiError {
    ApiError::field(FieldError::new(
        vec!["body".into()],
        "missing",
        "Field required",
    ))
}

/// Parses JSON text; syntax errors (including invalid UTF-8 and excessive nesting) are 400.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(missing_body());
    }
    serde_json::from_slice(bytes)
        .map_err(|error| ApiError::malformed_json(format!("Malformed JSON: {error}")))
}

/// A JSON body, syntax-checked but of any shape.
#[derive(Debug)]
pub struct JsonValue(pub Value);

impl<S: BodyLimit + Send + Sync> FromRequest<S> for JsonValue {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if body_kind(request.headers()) != Some(BodyKind::Json) {
            return Err(ApiError::unsupported_media_type("application/json"));
        }
        let bytes = read_limited(request, state.body_limit()).await?;
        parse_json(&bytes).map(JsonValue)
    }
}

/// A JSON body turned into the domain type `T`; shape errors are 422 under `body`.
#[derive(Debug)]
pub struct Body<T>(pub T);

/// Converts a parsed body into a domain value, reporting errors FastAPI-style under `body`.
pub fn into_domain<T>(value: &Value) -> Result<T, ApiError>
where
    T: for<'a> TryFrom<&'a Value, Error = Vec<FieldError>>,
{
    T::try_from(value).map_err(|errors| {
        ApiError::validation(errors.into_iter().map(|e| e.under("body")).collect())
    })
}

impl<S, T> FromRequest<S> for Body<T>
where
    S: BodyLimit + Send + Sync,
    T: for<'a> TryFrom<&'a Value, Error = Vec<FieldError>>,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let JsonValue(value) = JsonValue::from_request(request, state).await?;
        into_domain(&value).map(Body)
    }
}

/// A body sent as a form or as JSON (the token endpoint takes both), turned into `T`.
#[derive(Debug)]
pub struct FormOrJson<T>(pub T);

impl<S, T> FromRequest<S> for FormOrJson<T>
where
    S: BodyLimit + Send + Sync,
    T: for<'a> TryFrom<&'a Value, Error = Vec<FieldError>>,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let kind = body_kind(request.headers()).ok_or_else(|| {
            ApiError::unsupported_media_type(
                "application/x-www-form-urlencoded or application/json",
            )
        })?;
        let bytes = read_limited(request, state.body_limit()).await?;
        let value = match kind {
            BodyKind::Json => parse_json(&bytes)?,
            BodyKind::Form => {
                let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
                    .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "Malformed form body"))?;
                let mut object = serde_json::Map::new();
                for (name, value) in pairs {
                    object.entry(name).or_insert(Value::String(value));
                }
                Value::Object(object)
            }
        };
        into_domain(&value).map(FormOrJson)
    }
}

/// The one path parameter of a route, by name and raw value.
async fn path_param(parts: &mut Parts) -> Result<(String, String), ApiError> {
    let params = RawPathParams::from_request_parts(parts, &())
        .await
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "Invalid path parameter"))?;
    params
        .iter()
        .next()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .ok_or_else(ApiError::internal)
}

/// An integer id from the path; anything else is 422 with `loc: ["path", name]`.
#[derive(Debug, Clone, Copy)]
pub struct IdPath(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let (name, value) = path_param(parts).await?;
        value.parse().map(IdPath).map_err(|_| {
            ApiError::field(FieldError::new(
                vec!["path".into(), name.into()],
                "int_parsing",
                "Input should be a valid integer, unable to parse string as an integer",
            ))
        })
    }
}

/// A path parameter as text (an unknown value is the handler's 404, never a 422).
#[derive(Debug, Clone)]
pub struct TextPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for TextPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let (_, value) = path_param(parts).await?;
        Ok(TextPath(value))
    }
}

/// A UUID from the path; anything else is 422 with `loc: ["path", name]`.
#[derive(Debug, Clone, Copy)]
pub struct UuidPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for UuidPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let (name, value) = path_param(parts).await?;
        Uuid::try_parse(&value).map(UuidPath).map_err(|_| {
            ApiError::field(FieldError::new(
                vec!["path".into(), name.into()],
                "uuid_parsing",
                "Input should be a valid UUID",
            ))
        })
    }
}

/// The query string as name → value (the first of repeated names wins).
#[derive(Debug, Default)]
pub struct QueryParams(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "Malformed query string"))?;
        let mut params = HashMap::new();
        for (name, value) in pairs {
            params.entry(name).or_insert(value);
        }
        Ok(QueryParams(params))
    }
}

/// A 422 for a query parameter, as FastAPI reports it.
pub fn query_error(name: &str, kind: &str, msg: impl Into<String>) -> ApiError {
    ApiError::field(FieldError::new(
        vec!["query".into(), name.into()],
        kind,
        msg,
    ))
}

/// A 422 for a request header, as FastAPI reports it.
pub fn header_error(name: &str, kind: &str, msg: impl Into<String>) -> ApiError {
    ApiError::field(FieldError::new(
        vec!["header".into(), name.into()],
        kind,
        msg,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn kind_of(content_type: Option<&'static str>) -> Option<BodyKind> {
        let mut headers = HeaderMap::new();
        if let Some(value) = content_type {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
        }
        body_kind(&headers)
    }

    #[test]
    fn media_types() {
        assert_eq!(kind_of(None), Some(BodyKind::Json));
        assert_eq!(
            kind_of(Some("application/json; charset=utf-8")),
            Some(BodyKind::Json)
        );
        assert_eq!(
            kind_of(Some("application/merge-patch+json")),
            Some(BodyKind::Json)
        );
        assert_eq!(kind_of(Some("Application/JSON")), Some(BodyKind::Json));
        assert_eq!(
            kind_of(Some("application/x-www-form-urlencoded")),
            Some(BodyKind::Form)
        );
        assert_eq!(kind_of(Some("text/plain")), None);
        assert_eq!(kind_of(Some("multipart/form-data; boundary=x")), None);
    }

    #[test]
    fn json_syntax_errors_are_400_and_empty_bodies_422() {
        assert_eq!(
            parse_json(b"{").unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            parse_json(b"\xff").unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
        let deep = "[".repeat(10_000);
        assert_eq!(
            parse_json(deep.as_bytes()).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            parse_json(b"  ").unwrap_err().status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(parse_json(b"[1]").unwrap(), serde_json::json!([1]));
    }
}
