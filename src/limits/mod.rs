//! Rate limiting and throttles. The rate limiter of `GET /api/data` is one trait with an
//! in-process GCRA limiter (governor) and, for many processes, a Redis one; every answer of a
//! limited route carries the draft-ietf-httpapi-ratelimit-headers. The throttles (failed
//! logins, registrations) count events in fixed windows (`throttle`). With Redis, all of them
//! share one connection and every process counts against one budget.

pub mod key;
pub mod memory;
pub mod outage;
pub mod redis;
pub mod throttle;

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use futures::future::BoxFuture;

use crate::config::{RateLimitSpec, Settings};
use throttle::Throttle;

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

/// Every limit of the service, built from the settings.
pub struct Limits {
    /// `GET /api/data`, per `client`.
    pub data: SharedLimiter,
    /// Failed logins per (account, client address).
    pub failed_logins: Throttle,
    /// Failed logins per client address, whatever the account.
    pub failed_logins_by_address: Throttle,
    /// Registrations per client address.
    pub registrations: Throttle,
    /// Password-reset requests per client address (the registrations' setting).
    pub password_resets: Throttle,
}

impl Limits {
    /// Shared through Redis when `redis_url` is set, else in this process. Redis being down
    /// at start is not an error (see [`redis::Connection::open`]).
    pub async fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let connection = match &settings.redis_url {
            Some(url) => Some(redis::Connection::open(url).await?),
            None => None,
        };
        let prefix = &settings.redis_prefix;
        let data: SharedLimiter = match &connection {
            Some(connection) => Arc::new(redis::RedisLimiter::with_connection(
                Arc::clone(connection),
                prefix,
                settings.rate_limit,
            )),
            None => Arc::new(memory::InProcessLimiter::new(settings.rate_limit)),
        };
        let throttle = |name, spec| match &connection {
            Some(connection) => Throttle::shared(name, spec, Arc::clone(connection), prefix),
            None => Throttle::local(name, spec),
        };
        Ok(Limits {
            data,
            failed_logins: throttle("login", settings.login_limit),
            failed_logins_by_address: throttle("login-address", settings.login_address_limit),
            registrations: throttle("registration", settings.registration_limit),
            password_resets: throttle("password-reset", settings.registration_limit),
        })
    }

    /// Forgets state that no longer limits anyone, so memory stays bounded.
    pub fn evict_stale(&self) {
        self.data.evict_stale();
        self.failed_logins.evict_stale();
        self.failed_logins_by_address.evict_stale();
        self.registrations.evict_stale();
        self.password_resets.evict_stale();
    }
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
