//! Users: registration, the caller's own account (profile, password, deletion), and what
//! admins do (list, change, delete).

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
use super::extract::{Body, IdPath, JsonValue, QueryParams, query_error};
use super::openapi::{BadId, NotJson, NotJsonMediaType, TooLarge, Unauthorized, UserNotFound};
use crate::auth::password;
use crate::domain::user::{AccountChange, Email, NewUser, PasswordChange, ProfileChange, Role};
use crate::http::auth_user::AuthUser;
use crate::http::state::AppState;
use crate::limits::key::ClientKey;
use crate::store::users::{self, Change, Deletion, Filter, Registration, User, UserChange};

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
    /// False once an admin deactivated the account: it cannot log in.
    pub is_active: bool,
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
            is_active: user.is_active,
            created_at: user.created_at,
        }
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register, list_users))
        .routes(routes!(me, update_me, delete_me))
        .routes(routes!(change_password))
        .routes(routes!(get_user, update_user))
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
    ApiError::unless_throttled(
        state.limits.registrations.count(client.key()).await,
        "Too many registrations from this address, please try later",
    )?;
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
        Deletion::LastAdmin => Err(ApiError::conflict(LAST_ADMIN)),
    }
}

/// The refusal of a change that would leave no active admin.
const LAST_ADMIN: &str = "Cannot remove the last admin";

const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;

#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage<'a> {
    pub users: Vec<UserView<'a>>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Users by id, a page at a time. Admins only.
#[utoipa::path(get, path = "/users", tag = "users",
    security(("bearer" = [])),
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Users per page (default 20)"),
        ("cursor" = Option<String>, Query, pattern = "^[0-9]{1,18}$", description = "The `next_cursor` of the previous page"),
        ("email" = Option<String>, Query, max_length = 254, description = "Only emails that start with this (any case)"),
        ("role" = Option<String>, Query, pattern = "^(user|admin)$", description = "Only users of this role"),
    ),
    responses(
        (status = 200, description = "A page of users", body = UserPage),
        (status = 401, response = Unauthorized),
        (status = 403, description = "The caller is not an admin", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "A bad limit, cursor, email or role", body = ValidationProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn list_users(
    State(state): State<AppState>,
    caller: AuthUser,
    QueryParams(query): QueryParams,
) -> ApiResult<Response> {
    if !caller.is_admin() {
        return Err(ApiError::forbidden("Not enough permissions"));
    }
    let limit = match query.get("limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => match raw.parse::<i64>() {
            Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => limit,
            Ok(_) => {
                return Err(query_error(
                    "limit",
                    "less_than_equal",
                    "Input should be between 1 and 100",
                ));
            }
            Err(_) => {
                return Err(query_error(
                    "limit",
                    "int_parsing",
                    "Input should be a valid integer, unable to parse string as an integer",
                ));
            }
        },
    };
    let after = match query.get("cursor") {
        None => 0,
        Some(cursor)
            if !cursor.is_empty()
                && cursor.len() <= 18
                && cursor.bytes().all(|b| b.is_ascii_digit()) =>
        {
            cursor.parse().unwrap_or(0)
        }
        Some(_) => return Err(query_error("cursor", "value_error", "Invalid cursor")),
    };
    let email_prefix = match query.get("email") {
        Some(email) if email.chars().count() > 254 => {
            return Err(query_error(
                "email",
                "string_too_long",
                "String should have at most 254 characters",
            ));
        }
        Some(email) if email.contains('\0') => {
            return Err(query_error(
                "email",
                "string_pattern_mismatch",
                "String should not contain NUL characters",
            ));
        }
        Some(email) => Some(email.trim().to_lowercase()),
        None => None,
    };
    let role = match query.get("role").map(String::as_str) {
        None => None,
        Some("user") => Some(Role::User),
        Some("admin") => Some(Role::Admin),
        Some(_) => {
            return Err(query_error(
                "role",
                "enum",
                "Input should be 'user' or 'admin'",
            ));
        }
    };
    let filter = Filter {
        email_prefix: email_prefix.as_deref(),
        role,
    };
    let mut found = users::list(&state.db, after, limit + 1, &filter).await?;
    let next_cursor = if found.len() as i64 > limit {
        found.truncate(limit as usize);
        found.last().map(|user| user.id.to_string())
    } else {
        None
    };
    Ok(Json(UserPage {
        users: found.iter().map(UserView::from).collect(),
        next_cursor,
    })
    .into_response())
}

/// What `PATCH /users/me` accepts: only the fields present change.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct UserUpdateMe {
    // Absent leaves the email as it is; it cannot be removed, so `null` is not allowed.
    #[schema(
        nullable = false,
        format = "email",
        max_length = 254,
        example = "ann@example.com"
    )]
    email: Option<String>,
    /// `null` removes the name.
    #[schema(max_length = 200, pattern = r"^[^\u0000]*$", example = "Ann Example")]
    full_name: Option<String>,
}

/// Change the caller's name or email.
#[utoipa::path(patch, path = "/users/me", tag = "users",
    security(("bearer" = [])),
    request_body(content = UserUpdateMe, content_type = "application/json"),
    responses(
        (status = 200, description = "The changed user", body = UserView),
        (status = 400, response = NotJson),
        (status = 401, response = Unauthorized),
        (status = 409, description = "User already exists (the email is taken)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, response = TooLarge),
        (status = 415, response = NotJsonMediaType),
        (status = 422, description = "A field is invalid", body = ValidationProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn update_me(
    State(state): State<AppState>,
    caller: AuthUser,
    Body(change): Body<ProfileChange>,
) -> ApiResult<Response> {
    let change = UserChange {
        email: change.email.as_ref(),
        full_name: change.full_name.as_ref().map(Option::as_deref),
        ..UserChange::default()
    };
    match users::change(&state.db, caller.id(), &change).await? {
        // The account was deleted while this request ran: its token is no longer valid, as
        // the next request would be told.
        Change::NotFound => Err(ApiError::unauthorized(
            "Could not validate credentials",
            true,
        )),
        outcome => changed(outcome),
    }
}

/// A change's outcome as an answer.
fn changed(outcome: Change) -> ApiResult<Response> {
    match outcome {
        Change::Changed(user) => Ok(Json(UserView::from(&user)).into_response()),
        Change::NotFound => Err(ApiError::not_found("User not found")),
        Change::EmailTaken => Err(ApiError::conflict("User already exists")),
        Change::LastAdmin => Err(ApiError::conflict(LAST_ADMIN)),
    }
}

/// What `PUT /users/me/password` accepts.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct PasswordUpdate {
    #[schema(pattern = r"^[^\u0000]*$", example = "correct horse battery")]
    current_password: String,
    #[schema(
        min_length = 8,
        max_length = 256,
        pattern = r"^[^\u0000]*$",
        example = "a brand new passphrase"
    )]
    new_password: String,
}

/// Change the caller's password: every session of the caller ends, this one too.
#[utoipa::path(put, path = "/users/me/password", tag = "users",
    security(("bearer" = [])),
    request_body(content = PasswordUpdate, content_type = "application/json"),
    responses(
        (status = 204, description = "The password is changed; every earlier token is refused"),
        (status = 400, response = NotJson),
        (status = 401, response = Unauthorized),
        (status = 403, description = "Incorrect password", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, response = TooLarge),
        (status = 415, response = NotJsonMediaType),
        (status = 422, description = "A field is missing, the new password breaks the policy or equals the current one", body = ValidationProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong current passwords", body = ProblemBody, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    ))]
pub async fn change_password(
    State(state): State<AppState>,
    caller: AuthUser,
    JsonValue(body): JsonValue,
) -> ApiResult<StatusCode> {
    let owner = Email::parse(&caller.0.email).map_err(|_| ApiError::internal())?;
    let change = PasswordChange::parse(&body, &owner).map_err(|errors| {
        ApiError::validation(errors.into_iter().map(|e| e.under("body")).collect())
    })?;
    // Wrong current passwords are counted per account in the login throttle (its per-pair
    // budget, `LARDER_LOGIN_LIMIT`): a stolen token is no way around it to guess the
    // password. Per account only: only the token's holder can spend this budget, and the
    // peer address is attached to POST requests only (`server`).
    let pair = ClientKey::of(&format!("password-change\n{}", owner.key()));
    ApiError::unless_throttled(
        state.limits.failed_logins.blocked(pair).await,
        "Too many failed login attempts, please try later",
    )?;
    let stored = users::password_hash(&state.db, caller.id()).await?;
    let verified = password::verify(change.current_password, stored)
        .await
        .map_err(|error| {
            tracing::error!(%error, "verifying a password failed");
            ApiError::internal()
        })?;
    if !verified {
        state.limits.failed_logins.count(pair).await;
        return Err(ApiError::forbidden("Incorrect password"));
    }
    let hash = password::hash(&change.new_password)
        .await
        .map_err(|error| {
            tracing::error!(%error, "hashing a password failed");
            ApiError::internal()
        })?;
    users::set_password(&state.db, caller.id(), &hash).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete the caller's account, with their items and jobs.
#[utoipa::path(delete, path = "/users/me", tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "The account is deleted"),
        (status = 401, response = Unauthorized),
        (status = 409, description = "The caller is the last active admin", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn delete_me(State(state): State<AppState>, caller: AuthUser) -> ApiResult<StatusCode> {
    match users::delete(&state.db, caller.id()).await? {
        // Gone already (a concurrent delete): the outcome the caller asked for.
        Deletion::Deleted | Deletion::NotFound => Ok(StatusCode::NO_CONTENT),
        Deletion::LastAdmin => Err(ApiError::conflict(LAST_ADMIN)),
    }
}

/// What `PATCH /users/{user_id}` accepts: only the fields present change.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct UserUpdate {
    #[schema(nullable = false, pattern = "^(user|admin)$", example = "admin")]
    role: Option<String>,
    #[schema(nullable = false)]
    is_active: Option<bool>,
    #[schema(max_length = 200, pattern = r"^[^\u0000]*$", example = "Ann Example")]
    full_name: Option<String>,
}

/// Change a user's role, activity or name. Admins only. Deactivating a user ends their
/// sessions; nobody can demote or deactivate the last active admin.
#[utoipa::path(patch, path = "/users/{user_id}", tag = "users",
    security(("bearer" = [])),
    params(("user_id" = i64, Path, description = "The user's id")),
    request_body(content = UserUpdate, content_type = "application/json"),
    responses(
        (status = 200, description = "The changed user", body = UserView),
        (status = 400, response = NotJson),
        (status = 401, response = Unauthorized),
        (status = 403, description = "The caller is not an admin", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, response = UserNotFound),
        (status = 409, description = "The change would leave no active admin", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, response = TooLarge),
        (status = 415, response = NotJsonMediaType),
        (status = 422, description = "A bad id or field", body = ValidationProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn update_user(
    State(state): State<AppState>,
    caller: AuthUser,
    IdPath(user_id): IdPath,
    Body(change): Body<AccountChange>,
) -> ApiResult<Response> {
    if !caller.is_admin() {
        return Err(ApiError::forbidden("Not enough permissions"));
    }
    let change = UserChange {
        role: change.role,
        is_active: change.is_active,
        full_name: change.full_name.as_ref().map(Option::as_deref),
        ..UserChange::default()
    };
    changed(users::change(&state.db, user_id, &change).await?)
}
