//! `AuthUser` as a handler argument: a route's need for a token is visible in its signature.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::domain::user::Role;
use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::store::users::{self, User};

/// The caller, proven by a valid bearer token of a live session of an active user; the
/// second field is the session's id.
#[derive(Debug, Clone)]
pub struct AuthUser(pub User, pub String);

impl AuthUser {
    pub fn id(&self) -> i64 {
        self.0.id
    }

    pub fn session_id(&self) -> &str {
        &self.1
    }

    pub fn is_admin(&self) -> bool {
        self.0.role() == Role::Admin
    }

    /// The caller may act on something `owner_id` owns: they own it or are an admin.
    pub fn may_change(&self, owner_id: i64) -> bool {
        self.id() == owner_id || self.is_admin()
    }
}

/// The bearer token in `Authorization`, if the header uses the Bearer scheme.
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(token) = bearer(parts) else {
            return Err(ApiError::unauthorized("Not authenticated", false));
        };
        let invalid = || ApiError::unauthorized("Could not validate credentials", true);
        let verified = state.tokens.verify(token).ok_or_else(invalid)?;
        // One query every time (user and session by primary key), so the token of a deleted
        // or deactivated user or of a revoked session stops working at once, whichever
        // process revoked it, and one issued before the user's password was last set too.
        let user = users::for_session(&state.db, verified.user_id, &verified.session_id)
            .await?
            .filter(|user| verified.issued_at >= user.tokens_valid_after)
            .ok_or_else(invalid)?;
        Ok(AuthUser(user, verified.session_id))
    }
}

/// The caller if a token was sent; a bad token is still a 401.
#[derive(Debug, Clone)]
pub struct MaybeAuthUser(pub Option<AuthUser>);

impl FromRequestParts<AppState> for MaybeAuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if parts.headers.contains_key(AUTHORIZATION) {
            AuthUser::from_request_parts(parts, state)
                .await
                .map(|user| MaybeAuthUser(Some(user)))
        } else {
            Ok(MaybeAuthUser(None))
        }
    }
}
