//! Login throttling: after too many failed logins for one email or from one address within
//! the window, `/auth/token` answers 429 until the oldest failure leaves the window.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_FAILURES: usize = 10;
pub const WINDOW: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginThrottle {
    /// How long until `keys` may try again, if any of them is blocked now.
    pub fn blocked(&self, keys: &[&str], now: Instant) -> Option<Duration> {
        let mut failures = self.failures.lock().expect("throttle lock");
        keys.iter()
            .filter_map(|key| {
                let times = failures.get_mut(*key)?;
                prune(times, now);
                (times.len() >= MAX_FAILURES).then(|| WINDOW.saturating_sub(now - times[0]))
            })
            .max()
    }

    pub fn record_failure(&self, keys: &[&str], now: Instant) {
        let mut failures = self.failures.lock().expect("throttle lock");
        for key in keys {
            let times = failures.entry((*key).to_string()).or_default();
            prune(times, now);
            times.push_back(now);
            if times.len() > MAX_FAILURES {
                times.pop_front();
            }
        }
    }

    pub fn forget(&self, key: &str) {
        self.failures.lock().expect("throttle lock").remove(key);
    }

    /// Drops keys whose failures have all left the window, so memory stays bounded.
    pub fn sweep(&self, now: Instant) {
        let mut failures = self.failures.lock().expect("throttle lock");
        failures.retain(|_, times| {
            prune(times, now);
            !times.is_empty()
        });
    }
}

fn prune(times: &mut VecDeque<Instant>, now: Instant) {
    while times
        .front()
        .is_some_and(|&t| now.duration_since(t) >= WINDOW)
    {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_ten_failures_and_recovers_after_the_window() {
        let throttle = LoginThrottle::default();
        let start = Instant::now();
        for i in 0..MAX_FAILURES {
            assert_eq!(throttle.blocked(&["email:a"], start), None, "attempt {i}");
            throttle.record_failure(&["email:a", "ip:1"], start);
        }
        assert!(throttle.blocked(&["email:a"], start).is_some());
        assert!(throttle.blocked(&["email:b", "ip:1"], start).is_some());
        assert_eq!(throttle.blocked(&["email:b", "ip:2"], start), None);
        assert_eq!(throttle.blocked(&["email:a"], start + WINDOW), None);
        throttle.sweep(start + WINDOW);
        assert!(throttle.failures.lock().unwrap().is_empty());
    }
}
