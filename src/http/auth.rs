//! The OAuth2 password flow's token endpoint, and the route that proves a token works.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::client::ClientAddress;
use super::error::{ApiError, ApiResult, ProblemBody, ValidationProblemBody};
use super::extract::FormOrJson;
use super::openapi::{TooLarge, Unauthorized};
use crate::auth::password;
use crate::domain::user::Credentials;
use crate::http::auth_user::AuthUser;
use crate::http::state::AppState;
use crate::store::users;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(token))
        .routes(routes!(protected))
}

/// The OAuth2 password grant's fields (`grant_type`, `scope` and client fields are ignored).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct TokenRequest {
    #[schema(pattern = r"^[^\u0000]*$", example = "ann@example.com")]
    username: String,
    #[schema(pattern = r"^[^\u0000]*$", example = "correct horse battery")]
    password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    #[schema(example = "bearer")]
    pub token_type: &'static str,
    #[schema(example = 3600)]
    pub expires_in: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Secret {
    #[schema(example = "secret")]
    pub data: &'static str,
}

/// Exchange an email and password for a bearer token.
#[utoipa::path(post, path = "/auth/token", tag = "auth",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "A bearer token", body = TokenResponse,
            headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "The body cannot be parsed", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Incorrect email or password", body = ProblemBody, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 413, response = TooLarge),
        (status = 415, description = "Neither a form nor JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing", body = ValidationProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed logins", body = ProblemBody, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    ))]
pub async fn token(
    State(state): State<AppState>,
    client: ClientAddress,
    FormOrJson(credentials): FormOrJson<Credentials>,
) -> ApiResult<Response> {
    let account = credentials.username.trim().to_lowercase();
    // Failures count per (account, address) and per address: an attacker elsewhere cannot
    // lock the owner out, and one address cannot spray passwords over many accounts.
    let pair = client.key_with(&account);
    let address = client.key();
    let (pair_wait, address_wait) = tokio::join!(
        state.limits.failed_logins.blocked(pair),
        state.limits.failed_logins_by_address.blocked(address),
    );
    if let Some(wait) = pair_wait.max(address_wait) {
        return Err(ApiError::too_many(
            "Too many failed login attempts, please try later",
            wait,
        ));
    }
    let account = users::credentials(&state.db, &account).await?;
    let (user_id, stored) = match account {
        Some((id, hash)) => (Some(id), Some(hash)),
        None => (None, None),
    };
    let verified = password::verify(credentials.password, stored)
        .await
        .map_err(|error| {
            tracing::error!(%error, "verifying a password failed");
            ApiError::internal()
        })?;
    let Some(user_id) = user_id.filter(|_| verified) else {
        tokio::join!(
            state.limits.failed_logins.count(pair),
            state.limits.failed_logins_by_address.count(address),
        );
        return Err(ApiError::unauthorized("Incorrect email or password", false));
    };
    // A success clears only its own (account, address) count: the address's count stays, so
    // logging in to one's own account does not reset a spraying budget.
    state.limits.failed_logins.clear(pair).await;
    let access_token = state.tokens.issue(user_id).map_err(|error| {
        tracing::error!(%error, "signing a token failed");
        ApiError::internal()
    })?;
    let body = TokenResponse {
        access_token,
        token_type: "bearer",
        expires_in: state.tokens.ttl_secs(),
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

/// A resource only a valid token reaches.
#[utoipa::path(get, path = "/protected", tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The secret", body = Secret),
        (status = 401, response = Unauthorized),
    ))]
pub async fn protected(_user: AuthUser) -> Json<Secret> {
    Json(Secret { data: "secret" })
}
