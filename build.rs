//! Tells the test suite which outside services this build can reach, and whether it runs as
//! root (the storage-fault tests mount filesystems), so a test that needs what is absent is
//! reported as ignored (skipped), never as passed. Nothing here reaches the binary: the
//! cfgs are read by `tests/api` only. It also rebuilds the crate when a migration changes.

fn main() {
    // `sqlx::migrate!` embeds the migrations: a new file must rebuild the crate.
    println!("cargo::rerun-if-changed=migrations");
    println!("cargo::rustc-check-cfg=cfg(larder_test_postgres)");
    println!("cargo::rustc-check-cfg=cfg(larder_test_redis)");
    println!("cargo::rustc-check-cfg=cfg(larder_test_root)");
    if running_as_root() {
        println!("cargo::rustc-cfg=larder_test_root");
    }
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

/// Whether the effective user is root, from `/proc/self/status` (`Uid: real effective …`).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1).map(|id| id == "0"))
            .unwrap_or(false)
    })
}
