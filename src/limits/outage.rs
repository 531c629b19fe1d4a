//! Bookkeeping for a Redis that cannot answer: how long to leave it alone, how often to say so
//! in the log, and how many requests the in-process limiter answered instead.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The metric counting requests answered by the in-process limiter because Redis could not.
pub const FALLBACK_METRIC: &str = "ratelimit_redis_fallback_total";

/// After a failure, requests skip Redis this long: a hung Redis then costs one timeout per
/// cool-off, not one per request.
const COOL_OFF: Duration = Duration::from_secs(1);
/// At most one warning this often while Redis stays down: a log line per request would bury
/// everything else.
const LOG_EVERY: Duration = Duration::from_secs(30);

pub struct Outage {
    epoch: Instant,
    /// Milliseconds since `epoch` before which Redis is not tried again.
    retry_at: AtomicU64,
    /// Milliseconds since `epoch` of the last warning, `u64::MAX` before the first.
    logged_at: AtomicU64,
    /// Fallback answers since the last warning, reported with the next one.
    unreported: AtomicU64,
    down: AtomicBool,
}

impl Default for Outage {
    fn default() -> Self {
        metrics::describe_counter!(
            FALLBACK_METRIC,
            "Rate-limit decisions made in process because Redis could not answer"
        );
        // Registered at zero so dashboards see the series before the first outage.
        metrics::counter!(FALLBACK_METRIC).increment(0);
        Outage {
            epoch: Instant::now(),
            retry_at: AtomicU64::new(0),
            logged_at: AtomicU64::new(u64::MAX),
            unreported: AtomicU64::new(0),
            down: AtomicBool::new(false),
        }
    }
}

impl Outage {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether Redis failed so recently that it should not be asked now.
    pub fn cooling_off(&self) -> bool {
        self.now_ms() < self.retry_at.load(Ordering::Relaxed)
    }

    /// Redis failed: leave it alone for a while, and warn unless a warning went out lately.
    pub fn failed(&self, error: &dyn Display) {
        let now = self.now_ms();
        self.retry_at
            .store(now + COOL_OFF.as_millis() as u64, Ordering::Relaxed);
        self.down.store(true, Ordering::Relaxed);
        let last = self.logged_at.load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= LOG_EVERY.as_millis() as u64;
        // Only the thread that wins the exchange logs, so a burst of failures logs once.
        if due
            && self
                .logged_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let fallbacks = self.unreported.swap(0, Ordering::Relaxed);
            tracing::warn!(
                %error,
                fallbacks_since_last_warning = fallbacks,
                "Redis cannot answer: rate limits are counted in this process until it does"
            );
        }
    }

    /// Counts one request answered by the in-process limiter.
    pub fn fell_back(&self) {
        self.unreported.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(FALLBACK_METRIC).increment(1);
    }

    /// Redis answered: say so once if it had been down.
    pub fn answered(&self) {
        if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::Relaxed) {
            self.logged_at.store(u64::MAX, Ordering::Relaxed);
            tracing::info!("Redis answers again: rate limits are shared between processes again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_cools_off_and_an_answer_ends_the_outage() {
        let outage = Outage::default();
        assert!(!outage.cooling_off());
        outage.failed(&"connection refused");
        assert!(outage.cooling_off());
        assert!(outage.down.load(Ordering::Relaxed));
        outage.answered();
        assert!(!outage.down.load(Ordering::Relaxed));
    }
}
