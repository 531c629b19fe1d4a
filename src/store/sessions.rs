//! Sessions and their refresh tokens. A login starts a session; each refresh spends the
//! session's current refresh token and stores the next (rotation); a spent token presented
//! again revokes the whole session (RFC 9700 §4.14). Tokens are stored as digests only.

use chrono::{DateTime, Utc};

use super::{Db, StoreResult, now_millis};

/// Ends every session of the user `$1`.
pub(crate) const REVOKE_ALL: &str =
    "update sessions set revoked = true where user_id = $1 and not revoked";

/// A live session, as its owner sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Session {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub user_agent: Option<String>,
}

/// A new session's row and its first refresh token's digest.
pub struct NewSession<'a> {
    pub id: &'a str,
    pub user_id: i64,
    pub user_agent: Option<&'a str>,
    pub refresh_digest: &'a [u8],
    pub expires_at_ms: i64,
}

/// Starts a session with its first refresh token.
#[tracing::instrument(target = "larder::spans::db", name = "sessions.start", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn start(db: &Db, session: &NewSession<'_>) -> StoreResult<()> {
    db.write(async {
        let now = Utc::now();
        with_writer!(db, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "insert into sessions (id, user_id, created_at, last_used_at, user_agent, expires_at_ms) \
                 values ($1, $2, $3, $3, $4, $5)",
            )
            .bind(session.id)
            .bind(session.user_id)
            .bind(now)
            .bind(session.user_agent)
            .bind(session.expires_at_ms)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "insert into refresh_tokens (token_hash, session_id, expires_at_ms) values ($1, $2, $3)",
            )
            .bind(session.refresh_digest)
            .bind(session.id)
            .bind(session.expires_at_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    })
    .await
}

/// What presenting a refresh token came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Refresh {
    /// The token was live: it is spent now, and the next one is stored.
    Rotated { user_id: i64, session_id: String },
    /// Unknown, expired, of a revoked session or an inactive user: nothing changed.
    Invalid,
    /// Already spent: a replay, so the session is revoked.
    Reused,
}

/// Spends the refresh token with digest `old` and stores `new` in its place, in one
/// transaction. Spending is one conditional update, so of two requests racing with the same
/// token exactly one rotates it, and the other counts as a replay.
#[tracing::instrument(target = "larder::spans::db", name = "sessions.refresh", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn refresh(db: &Db, old: &[u8], new: &[u8], expires_at_ms: i64) -> StoreResult<Refresh> {
    db.write(async {
        let now_ms = now_millis();
        let outcome = with_writer!(db, |pool| {
            let mut tx = pool.begin().await?;
            let spent: Option<String> = sqlx::query_scalar(
                "update refresh_tokens set spent = true \
                 where token_hash = $1 and not spent and expires_at_ms > $2 returning session_id",
            )
            .bind(old)
            .bind(now_ms)
            .fetch_optional(&mut *tx)
            .await?;
            match spent {
                Some(session_id) => {
                    let user_id: Option<i64> = sqlx::query_scalar(
                        "select s.user_id from sessions s join users u on u.id = s.user_id \
                         where s.id = $1 and not s.revoked and u.is_active",
                    )
                    .bind(&session_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    match user_id {
                        Some(user_id) => {
                            sqlx::query(
                                "insert into refresh_tokens (token_hash, session_id, expires_at_ms) \
                                 values ($1, $2, $3)",
                            )
                            .bind(new)
                            .bind(&session_id)
                            .bind(expires_at_ms)
                            .execute(&mut *tx)
                            .await?;
                            sqlx::query(
                                "update sessions set last_used_at = $2, expires_at_ms = $3 where id = $1",
                            )
                            .bind(&session_id)
                            .bind(Utc::now())
                            .bind(expires_at_ms)
                            .execute(&mut *tx)
                            .await?;
                            tx.commit().await?;
                            Refresh::Rotated {
                                user_id,
                                session_id,
                            }
                        }
                        None => {
                            tx.commit().await?;
                            Refresh::Invalid
                        }
                    }
                }
                None => {
                    let replayed: Option<String> = sqlx::query_scalar(
                        "select session_id from refresh_tokens where token_hash = $1 and spent",
                    )
                    .bind(old)
                    .fetch_optional(&mut *tx)
                    .await?;
                    match replayed {
                        Some(session_id) => {
                            sqlx::query("update sessions set revoked = true where id = $1")
                                .bind(&session_id)
                                .execute(&mut *tx)
                                .await?;
                            tx.commit().await?;
                            Refresh::Reused
                        }
                        None => {
                            tx.rollback().await?;
                            Refresh::Invalid
                        }
                    }
                }
            }
        });
        if outcome == Refresh::Reused {
            db.users_changed();
        }
        Ok(outcome)
    })
    .await
}

/// Revokes the session of the refresh token with this digest, if there is one.
#[tracing::instrument(target = "larder::spans::db", name = "sessions.revoke_by_refresh", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn revoke_by_refresh(db: &Db, digest: &[u8]) -> StoreResult<bool> {
    let sql = "update sessions set revoked = true \
               where id = (select session_id from refresh_tokens where token_hash = $1) and not revoked";
    db.write(async {
        let revoked = with_writer!(db, |pool| {
            sqlx::query(sql)
                .bind(digest)
                .execute(pool)
                .await?
                .rows_affected()
        });
        db.users_changed();
        Ok(revoked > 0)
    })
    .await
}

/// Revokes the session `session_id` of `user_id`; false when the user has no such live
/// session.
#[tracing::instrument(target = "larder::spans::db", name = "sessions.revoke", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn revoke(db: &Db, user_id: i64, session_id: &str) -> StoreResult<bool> {
    let sql = "update sessions set revoked = true where id = $1 and user_id = $2 and not revoked";
    db.write(async {
        let revoked = with_writer!(db, |pool| {
            sqlx::query(sql)
                .bind(session_id)
                .bind(user_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        db.users_changed();
        Ok(revoked > 0)
    })
    .await
}

/// Ends every session of the user.
#[tracing::instrument(target = "larder::spans::db", name = "sessions.revoke_all", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn revoke_all(db: &Db, user_id: i64) -> StoreResult<u64> {
    db.write(async {
        let revoked = with_writer!(db, |pool| {
            sqlx::query(REVOKE_ALL)
                .bind(user_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        db.users_changed();
        Ok(revoked)
    })
    .await
}

/// The user's live sessions (not revoked, refresh not expired), oldest first.
#[tracing::instrument(target = "larder::spans::db", name = "sessions.live", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn live(db: &Db, user_id: i64) -> StoreResult<Vec<Session>> {
    let sql = "select id, created_at, last_used_at, user_agent from sessions \
               where user_id = $1 and not revoked and expires_at_ms > $2 \
               order by created_at, id";
    let sessions = with_reader!(db, |pool| {
        sqlx::query_as::<_, Session>(sql)
            .bind(user_id)
            .bind(now_millis())
            .fetch_all(pool)
            .await?
    });
    Ok(sessions)
}

/// Forgets what can no longer be used: expired refresh tokens and password resets, and
/// sessions that are revoked or expired (a token naming a session that is gone is refused
/// just as one naming a revoked session).
#[tracing::instrument(target = "larder::spans::db", name = "sessions.sweep", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn sweep(db: &Db) -> StoreResult<()> {
    let now = now_millis();
    db.write(async {
        with_writer!(db, |pool| {
            for sql in [
                "delete from refresh_tokens where expires_at_ms <= $1",
                "delete from sessions where revoked or expires_at_ms <= $1",
                "delete from password_resets where expires_at_ms <= $1",
            ] {
                sqlx::query(sql).bind(now).execute(pool).await?;
            }
        });
        Ok(())
    })
    .await
}
