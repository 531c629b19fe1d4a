//! The shared limiter: one atomic GCRA step per request in Redis (a Lua script run by EVALSHA,
//! timed by Redis's own clock), so every larder process counts against one limit. When Redis
//! cannot answer in time, the in-process limiter answers instead: Redis being down or hung
//! never fails a request and never holds one up for more than `CALL_TIMEOUT`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::key::ClientKey;
use super::memory::InProcessLimiter;
use super::outage::Outage;
use super::{Decision, RateLimiter, ceil_secs};
use crate::config::RateLimitSpec;

/// The longest a request waits for Redis before the in-process limiter decides.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// The longest one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

pub struct RedisLimiter {
    spec: RateLimitSpec,
    prefix: String,
    script: redis::Script,
    connection: Arc<Connection>,
    fallback: InProcessLimiter,
    outage: Outage,
}

/// Why Redis did not decide a request.
#[derive(Debug, thiserror::Error)]
enum Unanswered {
    #[error("Redis failed a moment ago")]
    CoolingOff,
    #[error("not connected to Redis yet")]
    NotConnected,
    #[error("Redis did not answer within {CALL_TIMEOUT:?}")]
    TimedOut,
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("the rate-limit script answered {0:?}")]
    BadAnswer(Vec<i64>),
}

impl RedisLimiter {
    /// Tries to connect once, briefly; if Redis is not there yet larder starts anyway, answers
    /// from the in-process limiter, and connects on a later request.
    pub async fn connect(url: &str, prefix: &str, spec: RateLimitSpec) -> anyhow::Result<Self> {
        Ok(Self::with_connection(
            Connection::open(url).await?,
            prefix,
            spec,
        ))
    }

    /// A limiter on a connection it shares with the throttles.
    pub fn with_connection(connection: Arc<Connection>, prefix: &str, spec: RateLimitSpec) -> Self {
        RedisLimiter {
            spec,
            prefix: prefix.to_string(),
            script: redis::Script::new(include_str!("gcra.lua")),
            connection,
            fallback: InProcessLimiter::new(spec),
            outage: Outage::default(),
        }
    }

    /// Whether a connection to Redis has been made (it may have broken since).
    pub fn connected(&self) -> bool {
        self.connection.manager.get().is_some()
    }

    fn redis_key(&self, client: &str) -> String {
        format!(
            "{}ratelimit:{}",
            self.prefix,
            ClientKey::of(client).to_hex()
        )
    }

    async fn shared_decision(&self, client: &str) -> Result<Decision, Unanswered> {
        if self.outage.cooling_off() {
            return Err(Unanswered::CoolingOff);
        }
        let mut manager = self.connection.manager().ok_or(Unanswered::NotConnected)?;
        let interval =
            (self.spec.window.as_micros() / u128::from(self.spec.requests)).max(1) as u64;
        let mut invocation = self.script.key(self.redis_key(client));
        invocation.arg(interval).arg(self.spec.requests);
        let call = invocation.invoke_async::<Vec<i64>>(&mut manager);
        let answer = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| Unanswered::TimedOut)??;
        let &[allowed, remaining, wait_us] = answer.as_slice() else {
            return Err(Unanswered::BadAnswer(answer));
        };
        let wait = ceil_secs(Duration::from_micros(wait_us.max(0) as u64));
        Ok(Decision {
            allowed: allowed == 1,
            remaining: remaining.clamp(0, i64::from(self.spec.requests)) as u32,
            reset_secs: if allowed == 1 { wait } else { wait.max(1) },
        })
    }
}

impl RateLimiter for RedisLimiter {
    fn check<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            match self.shared_decision(key).await {
                Ok(decision) => {
                    self.outage.answered();
                    decision
                }
                Err(unanswered) => {
                    self.outage.fell_back();
                    if !matches!(unanswered, Unanswered::CoolingOff) {
                        self.outage.failed(&unanswered);
                    }
                    self.fallback.decide(key)
                }
            }
        })
    }

    /// Redis expires idle keys itself (each lives until it is back at a whole quota); only
    /// the fallback's state needs sweeping.
    fn evict_stale(&self) {
        self.fallback.evict_stale();
    }
}

/// The connection, made at most once; afterwards the manager reconnects by itself. One per
/// process, shared by the rate limiter and the throttles.
pub struct Connection {
    client: redis::Client,
    manager: OnceLock<ConnectionManager>,
    connecting: AtomicBool,
}

impl Connection {
    /// Tries to connect once, briefly; if Redis is not there yet, later calls connect in the
    /// background and the in-process state answers meanwhile.
    pub async fn open(url: &str) -> anyhow::Result<Arc<Self>> {
        let connection = Arc::new(Connection {
            client: redis::Client::open(url)?,
            manager: OnceLock::new(),
            connecting: AtomicBool::new(false),
        });
        if let Err(error) = connection.attempt().await {
            tracing::warn!(%error, "Redis cannot answer yet: limits are counted in this process until it does");
        }
        Ok(connection)
    }

    async fn attempt(&self) -> Result<(), redis::RedisError> {
        // Few retries, short timeouts: a request never waits for them (it falls back first),
        // and the cool-off decides when Redis is tried again.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = tokio::time::timeout(
            CONNECT_TIMEOUT * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| {
            redis::RedisError::from((redis::ErrorKind::Io, "connecting to Redis timed out"))
        })??;
        let _ = self.manager.set(manager);
        tracing::info!("connected to Redis: rate limits are shared between processes");
        Ok(())
    }

    /// The manager if connected; otherwise starts one attempt in the background (unless one
    /// is under way) so this request is not held up by it.
    pub(super) fn manager(self: &Arc<Self>) -> Option<ConnectionManager> {
        if let Some(manager) = self.manager.get() {
            return Some(manager.clone());
        }
        if !self.connecting.swap(true, Ordering::AcqRel) {
            let connection = Arc::clone(self);
            tokio::spawn(async move {
                if let Err(error) = connection.attempt().await {
                    tracing::debug!(%error, "connecting to Redis failed");
                }
                connection.connecting.store(false, Ordering::Release);
            });
        }
        None
    }
}

/// Connects to `url` and sends `PING` (`larder check`), within a few seconds.
pub async fn ping(url: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let answer = tokio::time::timeout(CONNECT_TIMEOUT * 2, async {
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
    })
    .await
    .map_err(|_| anyhow::anyhow!("no answer within {:?}", CONNECT_TIMEOUT * 2))??;
    anyhow::ensure!(answer == "PONG", "PING was answered {answer:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_redis_is_answered_from_the_process() {
        let spec: RateLimitSpec = "2/60s".parse().unwrap();
        let limiter = RedisLimiter::connect("redis://127.0.0.1:1", "test:", spec)
            .await
            .unwrap();
        assert!(!limiter.connected());
        assert!(limiter.check("a").await.allowed);
        assert!(limiter.check("a").await.allowed);
        let refused = limiter.check("a").await;
        assert!(!refused.allowed);
        assert!(refused.reset_secs >= 1);
    }
}
