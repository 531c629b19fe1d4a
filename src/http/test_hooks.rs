//! Routes that exist only with `LARDER_TEST_HOOKS=1`, so tests can prove fault handling.

use axum::Router;
use axum::routing::get;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/__test/panic", get(panic))
}

async fn panic() -> &'static str {
    panic!("a handler panicked on purpose")
}
