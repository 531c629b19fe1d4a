//! The caller's sessions: list the live ones, end one.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ProblemBody};
use super::extract::TextPath;
use super::openapi::Unauthorized;
use crate::http::auth_user::AuthUser;
use crate::http::state::AppState;
use crate::store::sessions;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_sessions))
        .routes(routes!(end_session))
}

/// A live session: one login and the refreshes that followed it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Session)]
pub struct SessionView {
    #[schema(example = "3f1c2a9be0d84b7f9a6c5d4e3b2a1f00")]
    pub id: String,
    #[serde(serialize_with = "crate::domain::time::rfc3339")]
    pub created_at: DateTime<Utc>,
    /// The login or the last refresh.
    #[serde(serialize_with = "crate::domain::time::rfc3339")]
    pub last_used_at: DateTime<Utc>,
    #[schema(example = "curl/8.5.0")]
    pub user_agent: Option<String>,
    /// Whether the token of this request belongs to it.
    pub current: bool,
}

/// The caller's live sessions, oldest first.
#[utoipa::path(get, path = "/users/me/sessions", tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's live sessions", body = Vec<SessionView>),
        (status = 401, response = Unauthorized),
    ))]
pub async fn list_sessions(
    State(state): State<AppState>,
    caller: AuthUser,
) -> ApiResult<Json<Vec<SessionView>>> {
    let sessions = sessions::live(&state.db, caller.id()).await?;
    Ok(Json(
        sessions
            .into_iter()
            .map(|session| SessionView {
                current: session.id == caller.session_id(),
                id: session.id,
                created_at: session.created_at,
                last_used_at: session.last_used_at,
                user_agent: session.user_agent,
            })
            .collect(),
    ))
}

/// End one of the caller's sessions: its access and refresh tokens stop working at once.
#[utoipa::path(delete, path = "/users/me/sessions/{session_id}", tag = "users",
    security(("bearer" = [])),
    params(("session_id" = String, Path, description = "The session's id")),
    responses(
        (status = 204, description = "The session is over"),
        (status = 401, response = Unauthorized),
        (status = 404, description = "Session not found (or not the caller's)", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn end_session(
    State(state): State<AppState>,
    caller: AuthUser,
    TextPath(session_id): TextPath,
) -> ApiResult<StatusCode> {
    if sessions::revoke(&state.db, caller.id(), &session_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("Session not found"))
    }
}
