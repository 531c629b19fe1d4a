//! One-time password reset tokens, stored as digests, valid until `expires_at_ms`.

use super::{Db, StoreResult, now_millis};

/// Stores a reset token for the active account with this email key; the account's id and
/// email when there is one (else nothing is stored).
#[tracing::instrument(target = "larder::spans::db", name = "password_resets.create", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn create(
    db: &Db,
    email_key: &str,
    digest: &[u8],
    expires_at_ms: i64,
) -> StoreResult<Option<(i64, String)>> {
    let account: Option<(i64, String)> = with_reader!(db, |pool| {
        sqlx::query_as("select id, email from users where email_key = $1 and is_active")
            .bind(email_key)
            .fetch_optional(pool)
            .await?
    });
    let Some((user_id, email)) = account else {
        return Ok(None);
    };
    db.write(async {
        with_writer!(db, |pool| {
            sqlx::query(
                "insert into password_resets (token_hash, user_id, expires_at_ms) values ($1, $2, $3)",
            )
            .bind(digest)
            .bind(user_id)
            .bind(expires_at_ms)
            .execute(pool)
            .await?;
        });
        Ok(())
    })
    .await?;
    Ok(Some((user_id, email)))
}

/// The user id and email a live reset token belongs to (the token stays unspent).
#[tracing::instrument(target = "larder::spans::db", name = "password_resets.owner", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn owner(db: &Db, digest: &[u8]) -> StoreResult<Option<(i64, String)>> {
    let sql = "select u.id, u.email from password_resets r join users u on u.id = r.user_id \
               where r.token_hash = $1 and r.expires_at_ms > $2 and u.is_active";
    let owner = with_reader!(db, |pool| {
        sqlx::query_as::<_, (i64, String)>(sql)
            .bind(digest)
            .bind(now_millis())
            .fetch_optional(pool)
            .await?
    });
    Ok(owner)
}

/// Spends a live reset token; the user it belonged to, or `None` when it was unknown,
/// expired or already spent (of two racing confirmations, one wins).
#[tracing::instrument(target = "larder::spans::db", name = "password_resets.spend", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn spend(db: &Db, digest: &[u8]) -> StoreResult<Option<i64>> {
    let sql = "delete from password_resets where token_hash = $1 and expires_at_ms > $2 \
               returning user_id";
    db.write(async {
        let spent = with_writer!(db, |pool| {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(digest)
                .bind(now_millis())
                .fetch_all(pool)
                .await?
        });
        Ok(spent.into_iter().next())
    })
    .await
}
