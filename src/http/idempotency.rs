//! The `Idempotency-Key` header and the claim/replay step shared by `POST /items` and
//! `POST /process`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::{ApiError, ApiResult};
use super::extract::header_error;
use crate::store::Db;
use crate::store::idempotency::{self, Claim, KeyRef, StoredResponse};

pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");
const MAX_LEN: usize = 255;

/// A key as sent: a structured-field string (`"abc"`) or a bare token (`abc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let key = if let Some(inner) = raw.strip_prefix('"') {
            let inner = inner.strip_suffix('"')?;
            let mut key = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next()? {
                        escaped @ ('"' | '\\') => key.push(escaped),
                        _ => return None,
                    },
                    '"' => return None,
                    ' '..='~' => key.push(c),
                    _ => return None,
                }
            }
            key
        } else {
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~:/".contains(c);
            if !raw.chars().all(token) {
                return None;
            }
            raw.to_string()
        };
        (!key.is_empty() && key.len() <= MAX_LEN).then_some(IdempotencyKey(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `Option<IdempotencyKey>` from the request; a malformed key is 422 under `header`.
#[derive(Debug, Clone)]
pub struct MaybeIdempotencyKey(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeIdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(&HEADER) else {
            return Ok(MaybeIdempotencyKey(None));
        };
        value
            .to_str()
            .ok()
            .and_then(IdempotencyKey::parse)
            .map(|key| MaybeIdempotencyKey(Some(key)))
            .ok_or_else(|| {
                header_error(
                    HEADER.as_str(),
                    "value_error",
                    "Idempotency-Key must be a string of 1 to 255 visible characters",
                )
            })
    }
}

/// The fingerprint of a request body: SHA-256 of its canonical JSON (object keys sorted), so
/// whitespace and key order do not make the same request look different.
pub fn fingerprint(body: &Value) -> Vec<u8> {
    let canonical = serde_json::to_vec(body).expect("a JSON value serialises");
    Sha256::digest(&canonical).to_vec()
}

/// What to do with a request that may carry a key.
pub enum Begin {
    /// Do the work (storing the response under the key, if there is one).
    Proceed,
    /// Answer this without doing anything.
    Answer(Response),
}

pub async fn begin(db: &Db, key: Option<&KeyRef<'_>>, body: &Value) -> ApiResult<Begin> {
    match key {
        None => Ok(Begin::Proceed),
        Some(key) => begin_with_fingerprint(db, key, &fingerprint(body)).await,
    }
}

/// [`begin`] for a request whose fingerprint the handler made itself (a body too large to
/// hold as a `Value`).
pub async fn begin_with_fingerprint(
    db: &Db,
    key: &KeyRef<'_>,
    fingerprint: &[u8],
) -> ApiResult<Begin> {
    Ok(match idempotency::claim(db, key, fingerprint).await? {
        Claim::Fresh => Begin::Proceed,
        Claim::Replay(stored) => Begin::Answer(replay(&stored)),
        Claim::Mismatch => {
            return Err(header_error(
                HEADER.as_str(),
                "idempotency_key_reused",
                "This Idempotency-Key was already used with a different request body",
            ));
        }
        Claim::InFlight => {
            return Err(ApiError::conflict(
                "A request with this Idempotency-Key is still being processed",
            ));
        }
    })
}

/// Gives the key back after the work failed, so the client may retry with it. When the
/// release itself fails (the disk that refused the work may refuse it too), it is retried in
/// the background until it lands or the claim would count as abandoned anyway: otherwise the
/// client's retry would meet a 409 for minutes after the storage came back.
pub async fn abandon(db: &Db, key: Option<&KeyRef<'_>>) {
    let Some(key) = key else { return };
    let Err(error) = idempotency::release(db, key).await else {
        return;
    };
    tracing::warn!(%error, "could not release an idempotency key; retrying in the background");
    let (db, key) = (db.clone(), key.to_owned_key());
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now()
            + std::time::Duration::from_millis(idempotency::ABANDONED_MS as u64);
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            if idempotency::release(&db, &key.as_key_ref()).await.is_ok() {
                return;
            }
        }
    });
}

/// Builds a JSON response that can be stored and replayed byte for byte.
pub fn stored_json(
    status: StatusCode,
    headers: &[(HeaderName, String)],
    body: &impl serde::Serialize,
) -> StoredResponse {
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    StoredResponse {
        status: i32::from(status.as_u16()),
        headers: serde_json::to_string(&pairs).expect("header pairs serialise"),
        body: serde_json::to_vec(body).expect("a response body serialises"),
    }
}

/// The HTTP response a stored response stands for.
pub fn replay(stored: &StoredResponse) -> Response {
    let status = u16::try_from(stored.status)
        .ok()
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = (status, stored.body.clone()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let pairs: Vec<(String, String)> = serde_json::from_str(&stored.headers).unwrap_or_default();
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.insert(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_strings_or_tokens() {
        assert_eq!(
            IdempotencyKey::parse("\"8e03-ab\"").unwrap().as_str(),
            "8e03-ab"
        );
        assert_eq!(IdempotencyKey::parse("abc123").unwrap().as_str(), "abc123");
        assert_eq!(IdempotencyKey::parse(r#""a\"b""#).unwrap().as_str(), "a\"b");
        for bad in [
            "",
            "\"\"",
            "\"open",
            "two words",
            "\"bad\\n\"",
            &"x".repeat(256),
        ] {
            assert!(IdempotencyKey::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn fingerprints_ignore_key_order() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":2}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{ "b": 2, "a": 1 }"#).unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&serde_json::json!({"a": 2})));
    }
}
