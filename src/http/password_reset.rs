//! Password recovery: a one-time link by mail, then a new password that ends every session.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::client::ClientAddress;
use super::error::{ApiError, ApiResult, FieldError, ProblemBody, ValidationProblemBody};
use super::extract::Body;
use super::openapi::{NotJson, NotJsonMediaType, TooLarge};
use crate::auth::{password, secret};
use crate::domain::user::{Email, Password, ResetConfirm, ResetRequest};
use crate::http::state::AppState;
use crate::store::{now_millis, password_resets, users};

/// How long a reset link works.
pub const RESET_TTL_MINUTES: i64 = 60;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(request_reset))
        .routes(routes!(confirm_reset))
}

/// What `POST /auth/password-reset` accepts.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct PasswordResetRequest {
    #[schema(format = "email", max_length = 254, example = "ann@example.com")]
    email: String,
}

/// What `POST /auth/password-reset/confirm` accepts.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct PasswordResetConfirm {
    /// The token of the mailed link.
    #[schema(max_length = 512)]
    token: String,
    #[schema(
        min_length = 8,
        max_length = 256,
        pattern = r"^[^\u0000]*$",
        example = "a brand new passphrase"
    )]
    new_password: String,
}

/// The answer to a reset request: the same whether or not the email has an account.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResetAccepted {
    #[schema(example = "If the email belongs to an account, a reset link has been sent to it")]
    pub detail: &'static str,
}

/// Ask for a password-reset link. The answer does not tell whether the email has an account.
#[utoipa::path(post, path = "/auth/password-reset", tag = "auth",
    request_body(content = PasswordResetRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "A link goes out if the email belongs to an active account", body = ResetAccepted),
        (status = 400, response = NotJson),
        (status = 413, response = TooLarge),
        (status = 415, response = NotJsonMediaType),
        (status = 422, description = "The email is missing or malformed", body = ValidationProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Too many reset requests from this address", body = ProblemBody, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    ))]
pub async fn request_reset(
    State(state): State<AppState>,
    client: ClientAddress,
    Body(request): Body<ResetRequest>,
) -> ApiResult<Response> {
    ApiError::unless_throttled(
        state.limits.password_resets.count(client.key()).await,
        "Too many password reset requests from this address, please try later",
    )?;
    let token = secret::new_token();
    let expires_at_ms = now_millis() + RESET_TTL_MINUTES * 60 * 1000;
    let account = password_resets::create(
        &state.db,
        &request.email.key(),
        &secret::digest(&token),
        expires_at_ms,
    )
    .await?;
    if let Some((_, email)) = account {
        let link = format!("{}?token={token}", state.settings.password_reset_url);
        // Sent after the answer: its time does not tell whether the account exists.
        let state = state.clone();
        tokio::spawn(async move {
            state
                .mailer
                .password_reset(&email, &link, RESET_TTL_MINUTES)
                .await;
        });
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(ResetAccepted {
            detail: "If the email belongs to an account, a reset link has been sent to it",
        }),
    )
        .into_response())
}

/// Set a new password with a reset link's token: every session of the user ends.
#[utoipa::path(post, path = "/auth/password-reset/confirm", tag = "auth",
    request_body(content = PasswordResetConfirm, content_type = "application/json"),
    responses(
        (status = 204, description = "The password is set; every session of the user is over"),
        (status = 400, description = "Invalid or expired token (or the body is not JSON)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, response = TooLarge),
        (status = 415, response = NotJsonMediaType),
        (status = 422, description = "A field is missing, or the password breaks the policy", body = ValidationProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn confirm_reset(
    State(state): State<AppState>,
    Body(confirm): Body<ResetConfirm>,
) -> ApiResult<StatusCode> {
    let invalid = || ApiError::new(StatusCode::BAD_REQUEST, "Invalid or expired token");
    let digest = secret::digest(&confirm.token);
    let (_, email) = password_resets::owner(&state.db, &digest)
        .await?
        .ok_or_else(invalid)?;
    // The policy's email rule, now that the account is known.
    let owner = Email::parse(&email).ok();
    let new_password =
        Password::parse(confirm.new_password.expose(), owner.as_ref()).map_err(|error| {
            ApiError::field(FieldError::new(
                vec!["body".into(), "new_password".into()],
                &error.kind,
                error.msg,
            ))
        })?;
    let hash = password::hash(&new_password).await.map_err(|error| {
        tracing::error!(%error, "hashing a password failed");
        ApiError::internal()
    })?;
    let user_id = password_resets::spend(&state.db, &digest)
        .await?
        .ok_or_else(invalid)?;
    users::set_password(&state.db, user_id, &hash).await?;
    Ok(StatusCode::NO_CONTENT)
}
