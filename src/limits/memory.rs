//! The in-process limiter: governor's keyed GCRA, with an injectable clock for tests.

use std::num::NonZeroU32;

use futures::future::BoxFuture;
use governor::Quota;
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;

use super::key::ClientKey;
use super::{Decision, RateLimiter, ceil_secs};
use crate::config::RateLimitSpec;

type Keyed<C> = governor::RateLimiter<
    ClientKey,
    DefaultKeyedStateStore<ClientKey>,
    C,
    StateInformationMiddleware,
>;

pub struct InProcessLimiter<C: Clock = DefaultClock> {
    limiter: Keyed<C>,
    clock: C,
    spec: RateLimitSpec,
}

/// `q` requests per `w`: a burst of `q`, one more every `w / q`.
pub fn quota(spec: &RateLimitSpec) -> Quota {
    let burst = NonZeroU32::new(spec.requests).expect("the spec has at least one request");
    let per_cell = spec.window / spec.requests;
    Quota::with_period(per_cell.max(std::time::Duration::from_nanos(1)))
        .expect("a positive period")
        .allow_burst(burst)
}

impl InProcessLimiter<DefaultClock> {
    pub fn new(spec: RateLimitSpec) -> Self {
        Self::with_clock(spec, DefaultClock::default())
    }
}

impl<C: Clock + Clone> InProcessLimiter<C> {
    pub fn with_clock(spec: RateLimitSpec, clock: C) -> Self {
        let limiter = governor::RateLimiter::dashmap_with_clock(quota(&spec), clock.clone())
            .with_middleware::<StateInformationMiddleware>();
        InProcessLimiter {
            limiter,
            clock,
            spec,
        }
    }

    pub fn decide(&self, key: &str) -> Decision {
        let per_cell = self.spec.window / self.spec.requests;
        match self.limiter.check_key(&ClientKey::of(key)) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                // governor keeps the arrival time private; the cells in use, rounded up,
                // overstate the time to a whole quota by less than one cell, never understate it.
                let used = self.spec.requests.saturating_sub(remaining);
                Decision {
                    allowed: true,
                    remaining,
                    reset_secs: ceil_secs(per_cell * used),
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Decision {
                    allowed: false,
                    remaining: 0,
                    reset_secs: ceil_secs(wait).max(1),
                }
            }
        }
    }

    pub fn tracked_keys(&self) -> usize {
        self.limiter.len()
    }
}

impl<C> RateLimiter for InProcessLimiter<C>
where
    C: Clock + Clone + Send + Sync,
    C::Instant: Reference + Send + Sync,
{
    fn check<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Decision> {
        let decision = self.decide(key);
        Box::pin(async move { decision })
    }

    fn evict_stale(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use std::time::Duration;

    fn limiter(spec: &str) -> (InProcessLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (
            InProcessLimiter::with_clock(spec.parse().unwrap(), clock.clone()),
            clock,
        )
    }

    #[test]
    fn exactly_q_pass_in_a_burst_then_the_next_waits_one_cell() {
        let (limiter, clock) = limiter("100/60s");
        for i in 0..100 {
            let decision = limiter.decide("a");
            assert!(decision.allowed, "request {i}");
            assert_eq!(decision.remaining, 99 - i);
        }
        let refused = limiter.decide("a");
        assert_eq!(
            refused,
            Decision {
                allowed: false,
                remaining: 0,
                reset_secs: 1
            }
        );
        // Another client is not affected.
        assert!(limiter.decide("b").allowed);
        // One cell (0.6 s) later exactly one more request passes.
        clock.advance(Duration::from_millis(600));
        assert!(limiter.decide("a").allowed);
        assert!(!limiter.decide("a").allowed);
    }

    #[test]
    fn reset_counts_the_time_to_a_whole_quota() {
        let (limiter, clock) = limiter("10/10s");
        let first = limiter.decide("a");
        assert_eq!((first.remaining, first.reset_secs), (9, 1));
        for _ in 0..9 {
            limiter.decide("a");
        }
        let refused = limiter.decide("a");
        assert!(!refused.allowed);
        assert_eq!(refused.reset_secs, 1);
        clock.advance(Duration::from_secs(10));
        let after = limiter.decide("a");
        assert!(after.allowed);
        assert_eq!(after.remaining, 9);
    }

    #[test]
    fn reset_never_understates_the_time_to_a_whole_quota() {
        // 10 per 10 s: one cell is 1 s. Three requests at 0 s put the quota whole at 3 s.
        let (limiter, clock) = limiter("10/10s");
        for _ in 0..3 {
            limiter.decide("a");
        }
        // At 2.5 s, a fourth request makes it whole at 4 s, 1.5 s from now: t may round up
        // to the cell (2 s) but never down to 1 s.
        clock.advance(Duration::from_millis(2500));
        let decision = limiter.decide("a");
        assert_eq!((decision.allowed, decision.remaining), (true, 8));
        assert_eq!(decision.reset_secs, 2);
    }

    #[test]
    fn stale_keys_are_evicted() {
        let (limiter, clock) = limiter("5/1s");
        for i in 0..1000 {
            limiter.decide(&format!("client-{i}"));
        }
        assert_eq!(limiter.tracked_keys(), 1000);
        clock.advance(Duration::from_secs(2));
        limiter.evict_stale();
        assert_eq!(limiter.tracked_keys(), 0);
    }
}
