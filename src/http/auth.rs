//! The OAuth2 token endpoint (password and refresh-token grants), token revocation
//! (RFC 7009), and the route that proves a token works.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::client::ClientAddress;
use super::error::{ApiError, ApiResult, ProblemBody, ValidationProblemBody};
use super::extract::FormOrJson;
use super::openapi::{TooLarge, Unauthorized};
use crate::auth::{password, secret};
use crate::domain::user::{Credentials, Grant, Revocation};
use crate::http::auth_user::AuthUser;
use crate::http::state::AppState;
use crate::store::sessions::{self, NewSession, Refresh};
use crate::store::{now_millis, users};

/// How long a refresh token lives (each refresh issues a new one).
pub const REFRESH_TTL_SECS: u64 = 30 * 24 * 60 * 60;
/// The longest `User-Agent` kept with a session.
const USER_AGENT_MAX: usize = 256;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(token))
        .routes(routes!(revoke))
        .routes(routes!(protected))
}

/// The token endpoint's fields: the password grant (the default) takes `username` and
/// `password`; `grant_type=refresh_token` takes `refresh_token`. `scope` and client fields
/// are ignored.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct TokenRequest {
    // Absent or empty is `password` (the form a login page posts).
    #[schema(pattern = r"^(password|refresh_token)?$", example = "password")]
    grant_type: Option<String>,
    #[schema(pattern = r"^[^\u0000]*$", example = "ann@example.com")]
    username: Option<String>,
    #[schema(pattern = r"^[^\u0000]*$", example = "correct horse battery")]
    password: Option<String>,
    // No length limit documented: it is read only with `grant_type=refresh_token`, where a
    // token that is not a live one (too long included) is 400 `invalid_grant`.
    refresh_token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    #[schema(example = "bearer")]
    pub token_type: &'static str,
    #[schema(example = 900)]
    pub expires_in: u64,
    /// Opaque and single use: `grant_type=refresh_token` exchanges it for a new pair.
    pub refresh_token: String,
    #[schema(example = 2592000)]
    pub refresh_expires_in: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Secret {
    #[schema(example = "secret")]
    pub data: &'static str,
}

/// Log in (password grant) or exchange a refresh token (refresh-token grant).
#[utoipa::path(post, path = "/auth/token", tag = "auth",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "An access token and a refresh token", body = TokenResponse,
            headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "The body cannot be parsed, or the refresh token is unknown, expired or spent (`error`: `invalid_grant`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Incorrect email or password", body = ProblemBody, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 403, description = "Inactive user (the password was right)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, response = TooLarge),
        (status = 415, description = "Neither a form nor JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing", body = ValidationProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed logins", body = ProblemBody, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    ))]
pub async fn token(
    State(state): State<AppState>,
    client: ClientAddress,
    headers: HeaderMap,
    FormOrJson(grant): FormOrJson<Grant>,
) -> ApiResult<Response> {
    match grant {
        Grant::Password(credentials) => login(state, client, &headers, credentials).await,
        Grant::RefreshToken(token) => refresh(state, &token).await,
    }
}

async fn login(
    state: AppState,
    client: ClientAddress,
    headers: &HeaderMap,
    credentials: Credentials,
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
    ApiError::unless_throttled(
        pair_wait.max(address_wait),
        "Too many failed login attempts, please try later",
    )?;
    let account = users::credentials(&state.db, &account).await?;
    let (stored, active) = match &account {
        Some(account) => (Some(account.password_hash.clone()), account.is_active),
        None => (None, false),
    };
    let verified = password::verify(credentials.password, stored)
        .await
        .map_err(|error| {
            tracing::error!(%error, "verifying a password failed");
            ApiError::internal()
        })?;
    let Some(user_id) = account.map(|account| account.id).filter(|_| verified) else {
        tokio::join!(
            state.limits.failed_logins.count(pair),
            state.limits.failed_logins_by_address.count(address),
        );
        return Err(ApiError::unauthorized("Incorrect email or password", false));
    };
    // A success clears only its own (account, address) count: the address's count stays, so
    // logging in to one's own account does not reset a spraying budget.
    state.limits.failed_logins.clear(pair).await;
    // Said only to whoever knows the password.
    if !active {
        return Err(ApiError::forbidden("Inactive user"));
    }
    let session_id = secret::new_session_id();
    let refresh_token = secret::new_token();
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .map(|agent| match agent.char_indices().nth(USER_AGENT_MAX) {
            Some((end, _)) => &agent[..end],
            None => agent,
        });
    sessions::start(
        &state.db,
        &NewSession {
            id: &session_id,
            user_id,
            user_agent,
            refresh_digest: &secret::digest(&refresh_token),
            expires_at_ms: refresh_expiry_ms(),
        },
    )
    .await?;
    token_answer(&state, user_id, &session_id, refresh_token)
}

async fn refresh(state: AppState, presented: &str) -> ApiResult<Response> {
    let next = secret::new_token();
    let outcome = sessions::refresh(
        &state.db,
        &secret::digest(presented),
        &secret::digest(&next),
        refresh_expiry_ms(),
    )
    .await?;
    match outcome {
        Refresh::Rotated {
            user_id,
            session_id,
        } => token_answer(&state, user_id, &session_id, next),
        Refresh::Invalid | Refresh::Reused => {
            if outcome == Refresh::Reused {
                tracing::warn!("a spent refresh token was presented again: its session is revoked");
            }
            Err(ApiError::oauth(
                "invalid_grant",
                "The refresh token is invalid, expired or already used",
            ))
        }
    }
}

fn refresh_expiry_ms() -> i64 {
    now_millis() + REFRESH_TTL_SECS as i64 * 1000
}

fn token_answer(
    state: &AppState,
    user_id: i64,
    session_id: &str,
    refresh_token: String,
) -> ApiResult<Response> {
    let access_token = state.tokens.issue(user_id, session_id).map_err(|error| {
        tracing::error!(%error, "signing a token failed");
        ApiError::internal()
    })?;
    let body = TokenResponse {
        access_token,
        token_type: "bearer",
        expires_in: state.tokens.ttl_secs(),
        refresh_token,
        refresh_expires_in: REFRESH_TTL_SECS,
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

/// What `POST /auth/revoke` takes (RFC 7009): an access or a refresh token.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct RevokeRequest {
    /// An access token or a refresh token.
    token: String,
    /// Ignored: larder tells the two apart itself.
    #[schema(example = "refresh_token")]
    token_type_hint: Option<String>,
}

/// The (empty) answer of a revocation.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {}

/// Revoke a token (RFC 7009): its whole session ends, access and refresh tokens alike.
/// The answer is the same whether the token was known or not.
#[utoipa::path(post, path = "/auth/revoke", tag = "auth",
    // Only the form is documented (RFC 7009's encoding); JSON is accepted too. One schema
    // under two media types breaks openapi-python-client (its issue #1451).
    request_body(content = RevokeRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The token no longer works (or never did)", body = Revoked),
        (status = 400, description = "The body cannot be parsed", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, response = TooLarge),
        (status = 415, description = "Neither a form nor JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`token` is missing", body = ValidationProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    FormOrJson(revocation): FormOrJson<Revocation>,
) -> ApiResult<Response> {
    match state.tokens.verify(&revocation.token) {
        Some(access) => {
            sessions::revoke(&state.db, access.user_id, &access.session_id).await?;
        }
        None => {
            sessions::revoke_by_refresh(&state.db, &secret::digest(&revocation.token)).await?;
        }
    }
    Ok((
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Json(Revoked {}),
    )
        .into_response())
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
