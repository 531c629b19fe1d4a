//! Users: registration, the caller, and deletion by an admin.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::client::ClientAddress;
use super::error::{ApiError, ApiResult, ProblemBody, ValidationProblemBody};
use super::extract::{Body, IdPath};
use super::openapi::{BadId, NotJson, NotJsonMediaType, TooLarge, Unauthorized, UserNotFound};
use crate::auth::password;
use crate::domain::user::{NewUser, Role};
use crate::http::auth_user::AuthUser;
use crate::http::state::AppState;
use crate::store::users::{self, Deletion, Registration, User};

/// A user as the API shows it: never the password or its hash.
// The row is `store::users::User`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = User)]
pub struct UserView<'a> {
    #[schema(example = 1)]
    pub id: i64,
    #[schema(example = "ann@example.com")]
    pub email: &'a str,
    pub full_name: Option<&'a str>,
    #[schema(example = "user")]
    pub role: &'a str,
    #[serde(serialize_with = "crate::domain::time::rfc3339")]
    pub created_at: DateTime<Utc>,
}

impl<'a> From<&'a User> for UserView<'a> {
    fn from(user: &'a User) -> Self {
        UserView {
            id: user.id,
            email: &user.email,
            full_name: user.full_name.as_deref(),
            role: &user.role,
            created_at: user.created_at,
        }
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(me))
        .routes(routes!(get_user))
        .routes(routes!(delete_user))
}

/// What `POST /users` accepts.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct UserCreate {
    #[schema(format = "email", max_length = 254, example = "ann@example.com")]
    email: String,
    #[schema(
        min_length = 8,
        max_length = 256,
        pattern = r"^[^\u0000]*$",
        example = "correct horse battery"
    )]
    password: String,
    #[schema(max_length = 200, pattern = r"^[^\u0000]*$", example = "Ann Example")]
    full_name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    #[schema(example = true)]
    pub deleted: bool,
}

/// Register a user. Nobody becomes admin this way.
#[utoipa::path(post, path = "/users", tag = "users",
    request_body(content = UserCreate, content_type = "application/json"),
    responses(
        (status = 201, description = "The user was created", body = UserView,
            headers(("Location" = String, description = "/users/{id}"))),
        (status = 400, response = NotJson),
        (status = 409, description = "User already exists", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, response = TooLarge),
        (status = 415, response = NotJsonMediaType),
        (status = 422, description = "A field is missing or invalid", body = ValidationProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Too many registrations from this address", body = ProblemBody, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    ))]
pub async fn register(
    State(state): State<AppState>,
    client: ClientAddress,
    Body(new_user): Body<NewUser>,
) -> ApiResult<Response> {
    if let Some(wait) = state.limits.registrations.count(client.key()).await {
        return Err(ApiError::too_many(
            "Too many registrations from this address, please try later",
            wait,
        ));
    }
    let hash = password::hash(&new_user.password).await.map_err(|error| {
        tracing::error!(%error, "hashing a password failed");
        ApiError::internal()
    })?;
    let registration = users::insert(
        &state.db,
        &new_user.email,
        &hash,
        new_user.full_name.as_deref(),
        Role::User,
    )
    .await?;
    match registration {
        Registration::Created(user) => Ok((
            StatusCode::CREATED,
            [(header::LOCATION, format!("/users/{}", user.id))],
            Json(UserView::from(&user)),
        )
            .into_response()),
        Registration::EmailTaken => Err(ApiError::conflict("User already exists")),
    }
}

/// The caller.
#[utoipa::path(get, path = "/users/me", tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = UserView),
        (status = 401, response = Unauthorized),
    ))]
pub async fn me(user: AuthUser) -> Response {
    Json(UserView::from(&user.0)).into_response()
}

/// A user: the caller themselves, or anyone for an admin.
#[utoipa::path(get, path = "/users/{user_id}", tag = "users",
    security(("bearer" = [])),
    params(("user_id" = i64, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 401, response = Unauthorized),
        (status = 403, description = "Another user, and the caller is not an admin", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, response = UserNotFound),
        (status = 422, response = BadId),
    ))]
pub async fn get_user(
    State(state): State<AppState>,
    caller: AuthUser,
    IdPath(user_id): IdPath,
) -> ApiResult<Response> {
    if caller.id() == user_id {
        return Ok(Json(UserView::from(&caller.0)).into_response());
    }
    if !caller.is_admin() {
        return Err(ApiError::forbidden("Not enough permissions"));
    }
    users::find(&state.db, user_id)
        .await?
        .map(|user| Json(UserView::from(&user)).into_response())
        .ok_or_else(|| ApiError::not_found("User not found"))
}

/// Delete a user, their items and their jobs. Admins only.
#[utoipa::path(delete, path = "/admin/users/{user_id}", tag = "users",
    security(("bearer" = [])),
    params(("user_id" = i64, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The user was deleted", body = Deleted),
        (status = 401, response = Unauthorized),
        (status = 403, description = "Only admins can delete", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, response = UserNotFound),
        (status = 409, description = "The user is the last admin", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, response = BadId),
    ))]
pub async fn delete_user(
    State(state): State<AppState>,
    caller: AuthUser,
    IdPath(user_id): IdPath,
) -> ApiResult<Json<Deleted>> {
    if !caller.is_admin() {
        return Err(ApiError::forbidden("Only admins can delete"));
    }
    match users::delete(&state.db, user_id).await? {
        Deletion::Deleted => Ok(Json(Deleted { deleted: true })),
        Deletion::NotFound => Err(ApiError::not_found("User not found")),
        Deletion::LastAdmin => Err(ApiError::conflict("Cannot remove the last admin")),
    }
}
