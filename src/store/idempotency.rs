//! Idempotency keys (draft-ietf-httpapi-idempotency-key-header), kept per user and route.
//!
//! A key is claimed by inserting its row (`on conflict do nothing` decides who does the
//! work); the response is written in the same transaction as the effect it describes.

use super::{Db, StoreResult, now_millis};

/// How long a key is kept.
pub const RETENTION_MS: i64 = 24 * 60 * 60 * 1000;
/// A claim older than this with no response belongs to a request that died: take it over.
pub const ABANDONED_MS: i64 = 2 * 60 * 1000;

#[derive(Debug, Clone, Copy)]
pub struct KeyRef<'a> {
    pub user_id: i64,
    pub scope: &'static str,
    pub key: &'a str,
}

impl KeyRef<'_> {
    pub fn to_owned_key(&self) -> OwnedKey {
        OwnedKey {
            user_id: self.user_id,
            scope: self.scope,
            key: self.key.to_string(),
        }
    }
}

/// A key that can travel to another task (the group-commit writer).
#[derive(Debug, Clone)]
pub struct OwnedKey {
    pub user_id: i64,
    pub scope: &'static str,
    pub key: String,
}

impl OwnedKey {
    pub fn as_key_ref(&self) -> KeyRef<'_> {
        KeyRef {
            user_id: self.user_id,
            scope: self.scope,
            key: &self.key,
        }
    }
}

/// A response as it is replayed: status, the headers worth repeating, the exact body bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: i32,
    /// A JSON array of `[name, value]` pairs.
    pub headers: String,
    pub body: Vec<u8>,
}

#[derive(Debug)]
pub enum Claim {
    /// This request owns the key: do the work and store the response.
    Fresh,
    /// The same request was answered before: send this again.
    Replay(StoredResponse),
    /// The key was used with another body.
    Mismatch,
    /// The first request with this key is still running.
    InFlight,
}

pub(crate) const COMPLETE: &str = "update idempotency_keys set status = $1, response_headers = $2, response_body = $3 \
     where user_id = $4 and scope = $5 and key = $6";

/// Stores the answer of a claimed key inside the caller's open transaction `$tx`, on either
/// backend (a macro for the reason `with_writer!` is one: the transaction types differ), so
/// the key's answer and the effect it describes commit together.
macro_rules! store_answer {
    ($tx:expr, $key:expr, $response:expr) => {
        sqlx::query($crate::store::idempotency::COMPLETE)
            .bind($response.status)
            .bind(&$response.headers)
            .bind(&$response.body)
            .bind($key.user_id)
            .bind($key.scope)
            .bind(&$key.key)
            .execute(&mut *$tx)
            .await
    };
}
pub(crate) use store_answer;

type KeyRow = (Vec<u8>, Option<i32>, Option<String>, Option<Vec<u8>>, i64);

#[tracing::instrument(target = "larder::spans::db", name = "idempotency.claim", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn claim(db: &Db, key: &KeyRef<'_>, request_hash: &[u8]) -> StoreResult<Claim> {
    db.write(async {
    let insert = "insert into idempotency_keys (user_id, scope, key, request_hash, created_at_ms) \
                  values ($1, $2, $3, $4, $5) on conflict do nothing";
    let select = "select request_hash, status, response_headers, response_body, created_at_ms \
                  from idempotency_keys where user_id = $1 and scope = $2 and key = $3";
    // Takes over an expired key, or a claim whose request died before answering.
    let take_over = "update idempotency_keys set request_hash = $4, created_at_ms = $5, status = null, \
                     response_headers = null, response_body = null \
                     where user_id = $1 and scope = $2 and key = $3 and created_at_ms = $6";
    let now = now_millis();
    with_writer!(db, |pool| {
        let inserted = sqlx::query(insert)
            .bind(key.user_id)
            .bind(key.scope)
            .bind(key.key)
            .bind(request_hash)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected();
        if inserted == 1 {
            return Ok(Claim::Fresh);
        }
        let row: Option<KeyRow> = sqlx::query_as(select)
            .bind(key.user_id)
            .bind(key.scope)
            .bind(key.key)
            .fetch_optional(pool)
            .await?;
        let Some((hash, status, headers, body, created_at)) = row else {
            // Swept between the two statements: the key is free again.
            return Box::pin(claim(db, key, request_hash)).await;
        };
        let expired = created_at < now - RETENTION_MS;
        let abandoned = status.is_none() && created_at < now - ABANDONED_MS;
        if expired || abandoned {
            let taken = sqlx::query(take_over)
                .bind(key.user_id)
                .bind(key.scope)
                .bind(key.key)
                .bind(request_hash)
                .bind(now)
                .bind(created_at)
                .execute(pool)
                .await?
                .rows_affected();
            return Ok(if taken == 1 {
                Claim::Fresh
            } else {
                Claim::InFlight
            });
        }
        if hash != request_hash {
            return Ok(Claim::Mismatch);
        }
        Ok(match (status, headers, body) {
            (Some(status), Some(headers), Some(body)) => Claim::Replay(StoredResponse {
                status,
                headers,
                body,
            }),
            _ => Claim::InFlight,
        })
    })
}).await
}

/// Gives a claimed key back after the request failed, so the client may retry it.
#[tracing::instrument(target = "larder::spans::db", name = "idempotency.release", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn release(db: &Db, key: &KeyRef<'_>) -> StoreResult<()> {
    db.write(async {
    let sql = "delete from idempotency_keys where user_id = $1 and scope = $2 and key = $3 and status is null";
    with_writer!(db, |pool| {
        sqlx::query(sql)
            .bind(key.user_id)
            .bind(key.scope)
            .bind(key.key)
            .execute(pool)
            .await?;
    });
    Ok(())
}).await
}

/// Removes keys past their 24 hours; returns how many.
#[tracing::instrument(target = "larder::spans::db", name = "idempotency.sweep", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn sweep(db: &Db) -> StoreResult<u64> {
    db.write(async {
        let sql = "delete from idempotency_keys where created_at_ms < $1";
        let removed = with_writer!(db, |pool| {
            sqlx::query(sql)
                .bind(now_millis() - RETENTION_MS)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(removed)
    })
    .await
}
