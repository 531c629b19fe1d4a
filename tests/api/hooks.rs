//! Fault hooks the tests inject through the app builder (`Application::build_with`); none of
//! them exists in the release binary: a handler that panics, one that stays in flight for a
//! while, and a job kind that panics.

use std::time::Duration;

use axum::Router;
use axum::http::Uri;
use axum::routing::get;
use futures::future::BoxFuture;
use larder::app::Extensions;
use larder::http::ExtraRoutes;
use larder::http::state::AppState;
use larder::jobs::context::{JobContext, JobError, Outcome};
use larder::jobs::{Job, Kinds};
use larder::store::jobs::Claimed;

pub const PANIC_PATH: &str = "/__test/panic";
pub const SLEEP_PATH: &str = "/__test/sleep";

/// The hooks, as the harness hands them to every test server.
pub fn extensions() -> Extensions {
    Extensions {
        routes: ExtraRoutes {
            router: Router::<AppState>::new()
                .route(PANIC_PATH, get(panic))
                .route(SLEEP_PATH, get(sleep)),
            templates: vec![PANIC_PATH.into(), SLEEP_PATH.into()],
        },
        kinds: Kinds::default().with(PanickingJob),
    }
}

async fn panic() -> &'static str {
    panic!("a handler panicked on purpose")
}

/// Sleeps `?ms=` milliseconds (default 1000, at most a minute).
async fn sleep(uri: Uri) -> &'static str {
    let millis = uri
        .query()
        .and_then(|query| query.strip_prefix("ms="))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(1000u64)
        .min(60_000);
    tokio::time::sleep(Duration::from_millis(millis)).await;
    "slept"
}

/// `test_panic`: every attempt panics.
struct PanickingJob;

impl Job for PanickingJob {
    fn kind(&self) -> &'static str {
        "test_panic"
    }

    fn run<'a>(
        &'a self,
        _: &'a Claimed,
        _: &'a JobContext,
    ) -> BoxFuture<'a, Result<Outcome, JobError>> {
        Box::pin(async { panic!("a job panicked on purpose") })
    }
}
