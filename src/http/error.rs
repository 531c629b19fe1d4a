//! One error type for every answer that is not a success, rendered as RFC 9457 problem+json.
//!
//! Handlers and extractors return [`ApiError`]; its response carries a [`Problem`] in its
//! extensions and the request-context middleware renders it with the request's path and id.
//! Responses made elsewhere (axum's 405, a timeout layer's 408...) get a problem body there too.

use std::borrow::Cow;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;

pub type ApiResult<T> = Result<T, ApiError>;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// The domain's field error is what a 422 lists (`http` adds `body`/`query`/… in front).
pub use crate::domain::error::FieldError;

/// One failing field, as FastAPI reports it: `loc` starts with `body`, `query`, `path` or
/// `header`.
#[derive(Serialize, ToSchema)]
#[schema(as = FieldError)]
#[allow(dead_code)]
pub struct FieldErrorSchema {
    #[schema(example = json!(["body", "price"]))]
    loc: Vec<LocPart>,
    msg: String,
    #[serde(rename = "type")]
    kind: String,
}

/// One step of a `loc`: a name (`"body"`, `"price"`) or the index of a list element.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum LocPart {
    Name(String),
    Index(i64),
}

/// What the middleware needs to render the body; travels in the response extensions.
#[derive(Debug, Clone)]
pub struct Problem {
    pub kind: &'static str,
    pub detail: Cow<'static, str>,
    pub errors: Option<Vec<FieldError>>,
    /// An OAuth 2.0 error code (RFC 6749 §5.2), for the token endpoint's refusals.
    pub oauth_error: Option<&'static str>,
}

/// The problem document (RFC 9457), as every error answer carries it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemBody<'a> {
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    pub kind: &'a str,
    #[schema(example = "Not Found")]
    pub title: &'a str,
    #[schema(example = 404)]
    pub status: u16,
    #[schema(example = "Item not found")]
    pub detail: &'a str,
    #[schema(example = "/items/42")]
    pub instance: &'a str,
    pub request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<FieldErrorSchema>>)]
    pub errors: Option<&'a [FieldError]>,
    /// The OAuth 2.0 error code (RFC 6749 §5.2) of a refused token request, e.g.
    /// `invalid_grant`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "invalid_grant")]
    pub error: Option<&'a str>,
}

/// The 422 problem document: the problem fields plus one entry per failing field.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationProblemBody {
    #[serde(rename = "type")]
    #[schema(example = "/problems/validation")]
    pub kind: String,
    #[schema(example = "Unprocessable Content")]
    pub title: String,
    #[schema(example = 422)]
    pub status: u16,
    pub detail: String,
    pub instance: String,
    pub request_id: String,
    #[schema(value_type = Vec<FieldErrorSchema>)]
    pub errors: Vec<FieldError>,
}

/// An error answer. Boxed, so `Result<T, ApiError>` stays small on the happy path.
#[derive(Debug)]
pub struct ApiError(Box<ErrorParts>);

#[derive(Debug)]
struct ErrorParts {
    status: StatusCode,
    problem: Problem,
    headers: HeaderMap,
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<Cow<'static, str>>) -> Self {
        ApiError(Box::new(ErrorParts {
            status,
            problem: Problem {
                kind: "about:blank",
                detail: detail.into(),
                errors: None,
                oauth_error: None,
            },
            headers: HeaderMap::new(),
        }))
    }

    pub fn with_type(mut self, kind: &'static str) -> Self {
        self.0.problem.kind = kind;
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.insert(name, value);
        self
    }

    pub fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.0.headers.extend(headers);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    pub fn detail(&self) -> &str {
        &self.0.problem.detail
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let mut error = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Validation failed")
            .with_type("/problems/validation");
        error.0.problem.errors = Some(errors);
        error
    }

    /// 400 with an OAuth 2.0 error code (RFC 6749 §5.2) as the `error` member.
    pub fn oauth(code: &'static str, detail: &'static str) -> Self {
        let mut error = ApiError::new(StatusCode::BAD_REQUEST, detail)
            .with_header(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        error.0.problem.oauth_error = Some(code);
        error
    }

    pub fn field(error: FieldError) -> Self {
        ApiError::validation(vec![error])
    }

    pub fn malformed_json(detail: impl Into<Cow<'static, str>>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, detail).with_type("/problems/malformed-json")
    }

    pub fn not_found(detail: &'static str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn forbidden(detail: &'static str) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, detail)
    }

    pub fn conflict(detail: &'static str) -> Self {
        ApiError::new(StatusCode::CONFLICT, detail)
    }

    pub fn precondition_failed() -> Self {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "The item has changed: If-Match, If-Unmodified-Since or If-None-Match does not hold",
        )
    }

    pub fn unsupported_media_type(expected: &'static str) -> Self {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Unsupported media type: expected {expected}"),
        )
    }

    pub fn payload_too_large() -> Self {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large")
    }

    pub fn internal() -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
    }

    pub fn database() -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Database error")
    }

    /// 507 (RFC 4918 §11.5): the write cannot be stored because the disk is full.
    pub fn insufficient_storage() -> Self {
        ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "Insufficient storage")
    }

    /// 429 with `Retry-After` in whole seconds (at least 1).
    pub fn too_many(
        detail: impl Into<Cow<'static, str>>,
        retry_after: std::time::Duration,
    ) -> Self {
        let seconds = crate::limits::ceil_secs(retry_after).max(1);
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, detail)
            .with_header(header::RETRY_AFTER, HeaderValue::from(seconds))
    }

    /// A throttle's verdict as a result: 429 (with `detail` and the wait) when it says to
    /// wait, else nothing to stop the request.
    pub fn unless_throttled(
        wait: Option<std::time::Duration>,
        detail: &'static str,
    ) -> Result<(), Self> {
        match wait {
            Some(wait) => Err(ApiError::too_many(detail, wait)),
            None => Ok(()),
        }
    }

    pub fn unavailable(detail: &'static str) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, detail)
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    }

    /// 401 as RFC 6750 asks: `WWW-Authenticate: Bearer`, with `error="invalid_token"` when a
    /// token was sent but cannot be used.
    pub fn unauthorized(detail: &'static str, token_was_sent: bool) -> Self {
        let challenge = if token_was_sent {
            r#"Bearer error="invalid_token""#
        } else {
            "Bearer"
        };
        ApiError::new(StatusCode::UNAUTHORIZED, detail).with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                ApiError::unavailable("Database unavailable, try again shortly")
            }
            // Logged once, when the fault starts (`store::storage::StorageHealth`).
            StoreError::Full(cause) => {
                tracing::debug!(error = %cause, "storage full");
                ApiError::insufficient_storage()
            }
            StoreError::Fault(cause) => {
                tracing::debug!(error = %cause, "storage fault");
                ApiError::unavailable("Storage unavailable, try again later")
            }
            StoreError::Database(cause) => {
                tracing::error!(error = %cause, "database error");
                ApiError::database()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let parts = *self.0;
        let mut response = parts.status.into_response();
        response.headers_mut().extend(parts.headers);
        response.extensions_mut().insert(parts.problem);
        response
    }
}

/// The problem a bare error response (one that was not made from an [`ApiError`]) stands for.
pub fn problem_for_status(status: StatusCode) -> Problem {
    let detail: &'static str = match status {
        StatusCode::NOT_FOUND => "Not Found",
        StatusCode::METHOD_NOT_ALLOWED => "Method Not Allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "Request body is too large",
        StatusCode::REQUEST_TIMEOUT => "Request timed out",
        StatusCode::SERVICE_UNAVAILABLE => "Service unavailable",
        StatusCode::INTERNAL_SERVER_ERROR => "Internal server error",
        other => other.canonical_reason().unwrap_or("Error"),
    };
    Problem {
        kind: "about:blank",
        detail: Cow::Borrowed(detail),
        errors: None,
        oauth_error: None,
    }
}

/// Serialises a problem for a request; `title` is the status phrase.
pub fn render_problem(
    status: StatusCode,
    problem: &Problem,
    instance: &str,
    request_id: &str,
) -> Vec<u8> {
    let body = ProblemBody {
        kind: problem.kind,
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        detail: &problem.detail,
        instance,
        request_id,
        errors: problem.errors.as_deref(),
        error: problem.oauth_error,
    };
    serde_json::to_vec(&body).expect("a problem body always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_body_has_every_member() {
        let problem = Problem {
            kind: "/problems/validation",
            detail: "Validation failed".into(),
            errors: Some(vec![
                FieldError::new(vec!["price".into()], "missing", "Field required").under("body"),
            ]),
            oauth_error: None,
        };
        let body = render_problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            &problem,
            "/items",
            "req-1",
        );
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "type": "/problems/validation",
                "title": "Unprocessable Entity",
                "status": 422,
                "detail": "Validation failed",
                "instance": "/items",
                "request_id": "req-1",
                "errors": [{"loc": ["body", "price"], "msg": "Field required", "type": "missing"}]
            })
        );
    }

    #[test]
    fn unauthorized_names_the_invalid_token() {
        let error = ApiError::unauthorized("Could not validate credentials", true);
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer error="invalid_token""#
        );
    }
}
