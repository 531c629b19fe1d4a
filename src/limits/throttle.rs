//! Throttles: count events per key (failed logins, registrations) in a fixed window that
//! starts with the key's first event, and say how long a key over its limit must wait.
//!
//! In process the counts live in a size-capped map (moka) whose entries expire with their
//! window, so whatever a client sends, a throttle holds at most [`CAPACITY`] fixed-size keys.
//! With Redis every process counts against one budget (an atomic script per event); when
//! Redis cannot answer in time, the in-process counts decide, as for the rate limiter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::ops::compute::Op;
use moka::sync::Cache;

use super::key::ClientKey;
use super::outage::Outage;
use super::redis::{CALL_TIMEOUT, Connection};
use crate::config::RateLimitSpec;

/// The most keys one throttle keeps in process. About 100 bytes each with moka's bookkeeping,
/// so at most a few MiB; past it the least useful keys go first (moka's TinyLFU admission
/// keeps a flood of one-off keys from pushing out counts that are being hit).
pub const CAPACITY: u64 = 50_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    events: u32,
}

pub struct Throttle {
    /// Names the throttle in Redis keys.
    name: &'static str,
    spec: RateLimitSpec,
    local: Cache<ClientKey, Window>,
    shared: Option<Shared>,
}

struct Shared {
    connection: Arc<Connection>,
    prefix: String,
    script: redis::Script,
    outage: Outage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Reads the count without adding to it.
    Peek,
    /// Adds one event.
    Count,
    /// Forgets the key's events.
    Clear,
}

impl Throttle {
    /// A throttle of `spec.requests` events per `spec.window`, in this process only.
    pub fn local(name: &'static str, spec: RateLimitSpec) -> Self {
        Throttle {
            name,
            spec,
            local: Cache::builder()
                .max_capacity(CAPACITY)
                // A write starts or continues a window, so an entry untouched for a whole window
                // is over and may go.
                .time_to_live(spec.window)
                .build(),
            shared: None,
        }
    }

    /// The same throttle counted in Redis, shared by every process on `connection`.
    pub fn shared(
        name: &'static str,
        spec: RateLimitSpec,
        connection: Arc<Connection>,
        prefix: &str,
    ) -> Self {
        Throttle {
            shared: Some(Shared {
                connection,
                prefix: prefix.to_string(),
                script: redis::Script::new(include_str!("window.lua")),
                outage: Outage::default(),
            }),
            ..Self::local(name, spec)
        }
    }

    pub fn spec(&self) -> RateLimitSpec {
        self.spec
    }

    /// How long `key` must wait, if it has already used its whole budget.
    pub async fn blocked(&self, key: ClientKey) -> Option<Duration> {
        let (events, left) = self.step(key, Step::Peek).await;
        (events >= self.spec.requests).then_some(left)
    }

    /// Counts one event for `key`; answers how long to wait if this event is over the budget.
    pub async fn count(&self, key: ClientKey) -> Option<Duration> {
        let (events, left) = self.step(key, Step::Count).await;
        (events > self.spec.requests).then_some(left)
    }

    /// Forgets `key`'s events.
    pub async fn clear(&self, key: ClientKey) {
        self.step(key, Step::Clear).await;
    }

    /// Keys in this process's map (pending expiries may still count).
    pub fn tracked_keys(&self) -> u64 {
        self.local.run_pending_tasks();
        self.local.entry_count()
    }

    /// Lets the map drop expired entries now rather than on its next writes.
    pub fn evict_stale(&self) {
        self.local.run_pending_tasks();
    }

    /// The events in `key`'s current window (after this step) and the time left in it.
    async fn step(&self, key: ClientKey, step: Step) -> (u32, Duration) {
        if step == Step::Clear {
            // Also in process: these counts decide whenever Redis cannot.
            self.local.invalidate(&key);
        }
        if let Some(shared) = &self.shared {
            match self.shared_step(shared, key, step).await {
                Ok(answer) => {
                    shared.outage.answered();
                    return answer;
                }
                Err(error) => {
                    shared.outage.fell_back();
                    if let Some(error) = error {
                        shared.outage.failed(&error);
                    }
                }
            }
        }
        self.local_step(key, step, Instant::now())
    }

    fn local_step(&self, key: ClientKey, step: Step, now: Instant) -> (u32, Duration) {
        let current = |window: Window| now.duration_since(window.started) < self.spec.window;
        let window = match step {
            Step::Clear => None,
            Step::Peek => self.local.get(&key).filter(|w| current(*w)),
            Step::Count => {
                let counted = self.local.entry(key).and_compute_with(|entry| {
                    Op::Put(
                        match entry.map(|e| e.into_value()).filter(|w| current(*w)) {
                            Some(window) => Window {
                                events: window.events.saturating_add(1),
                                ..window
                            },
                            None => Window {
                                started: now,
                                events: 1,
                            },
                        },
                    )
                });
                counted.into_entry().map(|entry| entry.into_value())
            }
        };
        match window {
            Some(window) => (
                window.events,
                self.spec
                    .window
                    .saturating_sub(now.duration_since(window.started)),
            ),
            None => (0, Duration::ZERO),
        }
    }

    /// `Err(None)` when Redis was not asked (cooling off, not connected yet).
    async fn shared_step(
        &self,
        shared: &Shared,
        key: ClientKey,
        step: Step,
    ) -> Result<(u32, Duration), Option<String>> {
        if shared.outage.cooling_off() {
            return Err(None);
        }
        let Some(mut manager) = shared.connection.manager() else {
            return Err(None);
        };
        let mut invocation = shared.script.key(self.redis_key(&shared.prefix, key));
        invocation
            .arg(match step {
                Step::Peek => "peek",
                Step::Count => "count",
                Step::Clear => "clear",
            })
            .arg(self.spec.window.as_millis().max(1) as u64);
        let call = invocation.invoke_async::<(i64, i64)>(&mut manager);
        let (events, left_ms) = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| Some(format!("Redis did not answer within {CALL_TIMEOUT:?}")))?
            .map_err(|error| Some(error.to_string()))?;
        Ok((
            events.clamp(0, i64::from(u32::MAX)) as u32,
            Duration::from_millis(left_ms.max(0) as u64),
        ))
    }

    fn redis_key(&self, prefix: &str, key: ClientKey) -> String {
        format!("{prefix}throttle:{}:{}", self.name, key.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(spec: &str) -> Throttle {
        Throttle::local("test", spec.parse().unwrap())
    }

    #[test]
    fn blocks_at_the_limit_until_the_window_ends() {
        let throttle = throttle("3/60s");
        let key = ClientKey::of("a");
        let start = Instant::now();
        for expected in 1..=3 {
            let (events, left) = throttle.local_step(key, Step::Count, start);
            assert_eq!(events, expected);
            assert_eq!(left, Duration::from_secs(60));
        }
        let later = start + Duration::from_secs(20);
        assert_eq!(
            throttle.local_step(key, Step::Peek, later),
            (3, Duration::from_secs(40))
        );
        // Another key has its own count.
        assert_eq!(
            throttle.local_step(ClientKey::of("b"), Step::Peek, later),
            (0, Duration::ZERO)
        );
        // A window that is over starts afresh.
        let after = start + Duration::from_secs(60);
        assert_eq!(throttle.local_step(key, Step::Peek, after).0, 0);
        assert_eq!(throttle.local_step(key, Step::Count, after).0, 1);
    }

    #[tokio::test]
    async fn count_reports_the_event_over_the_budget_and_clear_forgets() {
        let throttle = throttle("2/60s");
        let key = ClientKey::of("a");
        assert_eq!(throttle.count(key).await, None);
        assert_eq!(throttle.blocked(key).await, None);
        assert_eq!(throttle.count(key).await, None);
        assert!(throttle.blocked(key).await.is_some());
        let wait = throttle
            .count(key)
            .await
            .expect("the third is over a budget of 2");
        assert!(wait > Duration::from_secs(59) && wait <= Duration::from_secs(60));
        throttle.clear(key).await;
        assert_eq!(throttle.blocked(key).await, None);
    }

    #[test]
    fn the_map_is_capped() {
        let throttle = throttle("5/1h");
        let now = Instant::now();
        for i in 0..(CAPACITY + 20_000) {
            throttle.local_step(ClientKey::of(&i.to_string()), Step::Count, now);
        }
        assert!(throttle.tracked_keys() <= CAPACITY);
    }
}
