//! Rate limiting: one trait, an in-process GCRA limiter (governor) and, for many processes,
//! a Redis one. Every answer of a limited route carries the draft-ietf-httpapi-ratelimit-headers.

pub mod key;
pub mod memory;
pub mod outage;
pub mod redis;

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use futures::future::BoxFuture;

use crate::config::{RateLimitSpec, Settings};

/// The outcome of one request against a client's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests the client may still make at once after this one.
    pub remaining: u32,
    /// Seconds until the quota is whole again; for a refused request, until the next one
    /// is allowed (so `Retry-After` is never earlier than `t`).
    pub reset_secs: u64,
}

pub trait RateLimiter: Send + Sync {
    /// Counts one request for `key` and says whether it may go ahead.
    fn check<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Decision>;
    /// Drops state of keys that are back at full quota, so memory stays bounded.
    fn evict_stale(&self) {}
}

pub type SharedLimiter = Arc<dyn RateLimiter>;

/// The limiter the settings ask for: shared through Redis when `redis_url` is set, else in
/// this process. Redis being down at start is not an error (see [`redis::RedisLimiter`]).
pub async fn from_settings(settings: &Settings) -> anyhow::Result<SharedLimiter> {
    Ok(match &settings.redis_url {
        Some(url) => Arc::new(
            redis::RedisLimiter::connect(url, &settings.redis_prefix, settings.rate_limit).await?,
        ),
        None => Arc::new(memory::InProcessLimiter::new(settings.rate_limit)),
    })
}

pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// `RateLimit-Policy` and `RateLimit` for a decision under `spec`.
pub fn headers(spec: &RateLimitSpec, decision: &Decision) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let policy = format!("\"default\";q={};w={}", spec.requests, spec.window_secs());
    let state = format!(
        "\"default\";r={};t={}",
        decision.remaining, decision.reset_secs
    );
    headers.insert(
        RATELIMIT_POLICY,
        HeaderValue::from_str(&policy).expect("ascii"),
    );
    headers.insert(RATELIMIT, HeaderValue::from_str(&state).expect("ascii"));
    if !decision.allowed {
        headers.insert(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from(decision.reset_secs.max(1)),
        );
    }
    headers
}

/// Whole seconds, rounded up, at least 1 when anything is left to wait.
pub fn ceil_secs(duration: std::time::Duration) -> u64 {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        0
    } else {
        nanos.div_ceil(1_000_000_000) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values() {
        let spec: RateLimitSpec = "100/60s".parse().unwrap();
        let headers = headers(
            &spec,
            &Decision {
                allowed: true,
                remaining: 99,
                reset_secs: 1,
            },
        );
        assert_eq!(headers["ratelimit-policy"], "\"default\";q=100;w=60");
        assert_eq!(headers["ratelimit"], "\"default\";r=99;t=1");
        assert!(!headers.contains_key("retry-after"));
        let refused = headers_for_refusal(&spec);
        assert_eq!(refused["retry-after"], "3");
        assert_eq!(refused["ratelimit"], "\"default\";r=0;t=3");
    }

    fn headers_for_refusal(spec: &RateLimitSpec) -> HeaderMap {
        headers(
            spec,
            &Decision {
                allowed: false,
                remaining: 0,
                reset_secs: 3,
            },
        )
    }

    #[test]
    fn seconds_round_up() {
        use std::time::Duration;
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1000)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1001)), 2);
    }
}
