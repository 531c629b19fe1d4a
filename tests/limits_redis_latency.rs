//! What one rate-limit decision costs through Redis (one EVALSHA round trip) next to the
//! in-process limiter. Ignored by default (a measurement that needs Redis); run it with
//!
//!     LARDER_TEST_REDIS_URL=redis://127.0.0.1:6379 \
//!         cargo test --test limits_redis_latency -- --ignored --nocapture
//!
//! Measured on the 2-core development machine, debug build, local Redis 7.0 (2026-12-01):
//!
//!     Redis:      5000 checks: p50 160.1µs, p99 220.6µs, max 3.0ms
//!     in process: 5000 checks: p50 5.6µs, p99 7.2µs, max 59.4µs
//!
//! So the shared limit adds about 0.15 ms (a loopback round trip) to `GET /api/data`, far
//! inside the 250 ms after which a request stops waiting for Redis.

use std::time::{Duration, Instant};

use larder::limits::RateLimiter;
use larder::limits::memory::InProcessLimiter;
use larder::limits::redis::RedisLimiter;

const CHECKS: usize = 5_000;

/// (p50, p99, max) of `CHECKS` sequential decisions for distinct-enough clients.
async fn latencies(limiter: &dyn RateLimiter) -> (Duration, Duration, Duration) {
    let mut samples = Vec::with_capacity(CHECKS);
    for n in 0..CHECKS {
        let client = format!("latency-{}", n % 100);
        let started = Instant::now();
        limiter.check(&client).await;
        samples.push(started.elapsed());
    }
    samples.sort();
    (
        samples[CHECKS / 2],
        samples[CHECKS * 99 / 100],
        samples[CHECKS - 1],
    )
}

#[tokio::test]
#[ignore = "a measurement that needs Redis: see the module comment"]
async fn one_decision_through_redis_costs_one_round_trip() {
    let url = std::env::var("LARDER_TEST_REDIS_URL").expect("LARDER_TEST_REDIS_URL");
    let spec = "1000/1s".parse().unwrap();
    let prefix = format!("larder-latency:{}:", uuid::Uuid::new_v4().simple());
    let redis = RedisLimiter::connect(&url, &prefix, spec).await.unwrap();
    assert!(redis.connected());
    let in_process = InProcessLimiter::new(spec);

    let (p50, p99, max) = latencies(&redis).await;
    println!("Redis:      {CHECKS} checks: p50 {p50:.1?}, p99 {p99:.1?}, max {max:.1?}");
    let (p50, p99, max) = latencies(&in_process).await;
    println!("in process: {CHECKS} checks: p50 {p50:.1?}, p99 {p99:.1?}, max {max:.1?}");
}
