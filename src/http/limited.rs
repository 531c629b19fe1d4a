//! `POST /validate` and the rate-limited `GET /api/data`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, FieldError, ProblemBody, ValidationProblemBody};
use super::extract::{JsonValue, header_error};
use super::openapi::{NotJsonMediaType, TooLarge};
use crate::domain::fields::not_an_object;
use crate::http::state::AppState;
use crate::limits::{self, Decision};
use crate::store::items;

/// The header naming the rate-limited client.
pub const CLIENT: HeaderName = HeaderName::from_static("client");

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(validate))
        .routes(routes!(api_data))
}

/// What `POST /validate` accepts: a JSON object whose `required_field` is truthy (not
/// `null`, `false`, `0`, `""`, `[]` or `{}`); other members are allowed and ignored.
#[derive(ToSchema)]
#[schema(example = json!({"required_field": "present"}))]
#[allow(dead_code)]
pub struct ValidateInput {
    /// Any JSON value; a falsy one counts as missing (400).
    #[schema(value_type = Value, example = "present")]
    required_field: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Valid {
    #[schema(example = "valid")]
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Data<'a> {
    pub data: Vec<ItemSummaryView<'a>>,
}

/// What `GET /api/data` shows of an item.
// The row is `store::items::ItemSummary`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ItemSummary)]
pub struct ItemSummaryView<'a> {
    pub id: i64,
    pub name: &'a str,
}

/// Python's truthiness, which FastAPI's `if not body.get("required_field")` relies on.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Check that a JSON object has a truthy `required_field`.
#[utoipa::path(post, path = "/validate", tag = "limits",
    request_body(content = ValidateInput, content_type = "application/json", description = "Any JSON object with a truthy `required_field`"),
    responses(
        (status = 200, description = "The object is valid", body = Valid),
        (status = 400, description = "required_field is missing, or the body is not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, response = TooLarge),
        (status = 415, response = NotJsonMediaType),
        (status = 422, description = "The body is JSON but not an object", body = ValidationProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn validate(JsonValue(body): JsonValue) -> ApiResult<Json<Valid>> {
    let Value::Object(object) = &body else {
        let error: FieldError = not_an_object().under("body");
        return Err(ApiError::field(error));
    };
    if !object.get("required_field").is_some_and(truthy) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "required_field is missing",
        ));
    }
    Ok(Json(Valid { status: "valid" }))
}

/// The newest items (at most 20), rate limited per `client` header.
#[utoipa::path(get, path = "/api/data", tag = "limits",
    params(("client" = String, Header, description = "Who is asking; limits are counted per value")),
    responses(
        (status = 200, description = "The newest items, newest first", body = Data, headers(
            ("RateLimit-Policy" = String, description = "\"default\";q=<requests>;w=<window seconds>"),
            ("RateLimit" = String, description = "\"default\";r=<requests left>;t=<seconds until the quota is whole>"))),
        (status = 422, description = "The client header is missing (nothing is counted)", body = ValidationProblemBody, content_type = "application/problem+json", headers(
            ("RateLimit-Policy" = String, description = "The policy"),
            ("RateLimit" = String, description = "\"default\";r=<requests>;t=0: nothing was counted"))),
        (status = 429, description = "Too many requests, please try later", body = ProblemBody, content_type = "application/problem+json", headers(
            ("Retry-After" = u32, description = "Whole seconds until the next request may pass (at least 1; equal to t)"),
            ("RateLimit-Policy" = String, description = "The policy"),
            ("RateLimit" = String, description = "\"default\";r=0;t=<seconds until the next request may pass>"))),
        (status = 500, description = "Database error", body = ProblemBody, content_type = "application/problem+json", headers(
            ("RateLimit-Policy" = String, description = "The policy"),
            ("RateLimit" = String, description = "The client's state"))),
        (status = 503, description = "The database cannot be reached", body = ProblemBody, content_type = "application/problem+json", headers(
            ("Retry-After" = u32, description = "Seconds to wait before retrying"),
            ("RateLimit-Policy" = String, description = "The policy"),
            ("RateLimit" = String, description = "The client's state"))),
    ))]
pub async fn api_data(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let spec = &state.settings.rate_limit;
    let Some(client) = headers.get(&CLIENT) else {
        // Every answer of a limited route states the policy; a request without a client is
        // counted against nobody, so it reports a whole quota.
        let untouched = Decision {
            allowed: true,
            remaining: spec.requests,
            reset_secs: 0,
        };
        return Err(header_error("client", "missing", "Field required")
            .with_headers(limits::headers(spec, &untouched)));
    };
    let client = String::from_utf8_lossy(client.as_bytes());
    let decision = state.limits.data.check(&client).await;
    let limit_headers = limits::headers(spec, &decision);
    if !decision.allowed {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests, please try later",
        )
        .with_headers(limit_headers));
    }
    // The request was counted, so even a failure reports the client's state.
    let data = match items::newest(&state.db, 20).await {
        Ok(data) => data,
        Err(error) => return Err(ApiError::from(error).with_headers(limit_headers)),
    };
    let data = data
        .iter()
        .map(|item| ItemSummaryView {
            id: item.id,
            name: &item.name,
        })
        .collect();
    Ok((limit_headers, Json(Data { data })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn truthiness_is_pythons() {
        for falsy in [
            json!(null),
            json!(false),
            json!(0),
            json!(0.0),
            json!(""),
            json!([]),
            json!({}),
        ] {
            assert!(!truthy(&falsy), "{falsy}");
        }
        for truthy_value in [
            json!(true),
            json!(1),
            json!(-0.5),
            json!("x"),
            json!([0]),
            json!({"a": 0}),
        ] {
            assert!(truthy(&truthy_value), "{truthy_value}");
        }
    }
}
