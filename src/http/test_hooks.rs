//! Routes that exist only with `LARDER_TEST_HOOKS=1`, so tests can prove fault handling:
//! a handler that panics, and one that stays in flight for a while (graceful shutdown).

use std::time::Duration;

use axum::Router;
use axum::routing::get;

use crate::http::extract::QueryParams;
use crate::state::AppState;

/// The hooks' paths: a handler that panics, and one that sleeps `?ms=` milliseconds.
pub const PATHS: [&str; 2] = ["/__test/panic", "/__test/sleep"];

pub fn router() -> Router<AppState> {
    let [panic_path, sleep_path] = PATHS;
    Router::new()
        .route(panic_path, get(panic))
        .route(sleep_path, get(sleep))
}

async fn panic() -> &'static str {
    panic!("a handler panicked on purpose")
}

async fn sleep(QueryParams(query): QueryParams) -> &'static str {
    let millis = query
        .get("ms")
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(1000u64);
    tokio::time::sleep(Duration::from_millis(millis.min(60_000))).await;
    "slept"
}
