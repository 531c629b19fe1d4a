//! Memory of the in-process limiter when a million distinct clients pass by, and after the
//! housekeeping sweep forgets them. Ignored by default (it is a measurement, and slow in a
//! debug build); run it with
//!
//!     cargo test --test limits_memory -- --ignored --nocapture   (add --release for speed)
//!
//! Measured on the 2-core development machine, debug build, mimalloc as in the server
//! (2026-12-01, `cargo test --test limits_memory -- --ignored --nocapture`):
//!
//!     1000000 clients in 15.77s (~62 B per key). VmRSS: before 9136 KiB;
//!     first million 69700 KiB; after the sweep 69716 KiB; second million 65468 KiB
//!
//! So a million live clients cost about 60 MiB (a 16-byte digest and an 8-byte state per
//! key, plus the map's overhead), the sweep forgets them, and a second million reuses that
//! memory instead of adding to it. The assertions keep generous bounds, to catch a leak or a
//! sweep that stops working rather than allocator noise.

use std::time::Duration;

use governor::clock::FakeRelativeClock;
use larder::limits::RateLimiter;
use larder::limits::memory::InProcessLimiter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CLIENTS: usize = 1_000_000;

/// Resident memory of this process in KiB, from /proc/self/status.
fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status (Linux)");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// Sends `CLIENTS` distinct clients, one request each, numbered from `first`.
fn pass_by(limiter: &InProcessLimiter<FakeRelativeClock>, first: usize) {
    for n in first..first + CLIENTS {
        assert!(limiter.decide(&format!("client-{n}")).allowed);
    }
    assert_eq!(limiter.tracked_keys(), CLIENTS);
}

/// One request takes one 0.6 s cell, so a minute later every client is back at a whole quota
/// and the sweep forgets them all.
fn sweep(limiter: &InProcessLimiter<FakeRelativeClock>, clock: &FakeRelativeClock) {
    clock.advance(Duration::from_secs(61));
    limiter.evict_stale();
    assert_eq!(limiter.tracked_keys(), 0);
}

#[test]
#[ignore = "a measurement: cargo test --test limits_memory -- --ignored --nocapture"]
fn a_million_clients_are_forgotten_after_the_sweep() {
    let clock = FakeRelativeClock::default();
    let limiter = InProcessLimiter::with_clock("100/60s".parse().unwrap(), clock.clone());
    let before = resident_kib();

    let started = std::time::Instant::now();
    pass_by(&limiter, 0);
    let elapsed = started.elapsed();
    let first_million = resident_kib();
    sweep(&limiter, &clock);
    let swept = resident_kib();

    // The allocator keeps freed pages for reuse rather than handing them back at once, so
    // "bounded" shows as a second million costing (almost) nothing more than the first.
    pass_by(&limiter, CLIENTS);
    let second_million = resident_kib();
    sweep(&limiter, &clock);

    let per_key = ((first_million - before) * 1024) as f64 / CLIENTS as f64;
    println!(
        "{CLIENTS} clients in {elapsed:.2?} (~{per_key:.0} B per key). VmRSS: before {before} KiB; \
         first million {first_million} KiB; after the sweep {swept} KiB; \
         second million {second_million} KiB"
    );
    assert!(
        first_million - before < 256 * 1024,
        "a million keys took over 256 MiB"
    );
    assert!(
        second_million < first_million + (first_million - before) / 4,
        "a second million after the sweep grew memory by more than a quarter of the first"
    );
}
