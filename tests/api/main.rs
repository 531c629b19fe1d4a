//! larder's black-box suite: every test starts the real server on port 0 with a fresh
//! database and talks HTTP to it, once on SQLite and once on PostgreSQL.

mod helpers;
mod hooks;

mod accounts;
mod admin_cli;
mod auth;
mod cache;
mod faults;
mod foundation;
mod hostile;
mod item_listing;
mod items;
mod job_controls;
mod jobs;
mod limits;
mod openapi;
mod operations;
mod password_reset;
mod process;
mod statuses;
mod storage;
mod sweeps;
mod throttles;
mod traces;
mod upgrade;

/// Under `CI=true` no test may be skipped for want of a service or of root: a build without
/// PostgreSQL, Redis or root fails here (those tests are then ignored, see `build.rs`).
#[test]
fn every_outside_service_is_there_under_ci() {
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        assert!(
            cfg!(larder_test_postgres) && helpers::postgres_url().is_some(),
            "CI=true: LARDER_TEST_DATABASE_URL must be set when the tests are built and run"
        );
        assert!(
            cfg!(larder_test_redis) && helpers::redis_url().is_some(),
            "CI=true: LARDER_TEST_REDIS_URL must be set when the tests are built and run"
        );
        if !cfg!(larder_test_root) {
            panic!(
                "CI=true: the tests must be built and run as root (the storage-fault tests mount filesystems)"
            );
        }
    }
}
