//! Tells the test suite which outside services this build can reach, so a test that needs an
//! absent one is reported as ignored (skipped), never as passed. Nothing here reaches the
//! binary: the two cfgs are read by `tests/api` only.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(larder_test_postgres)");
    println!("cargo::rustc-check-cfg=cfg(larder_test_redis)");
    for (variable, cfg) in [
        ("LARDER_TEST_DATABASE_URL", "larder_test_postgres"),
        ("LARDER_TEST_REDIS_URL", "larder_test_redis"),
    ] {
        println!("cargo::rerun-if-env-changed={variable}");
        if std::env::var(variable).is_ok_and(|value| !value.is_empty()) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}
